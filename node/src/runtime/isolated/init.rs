//! The container init: `keel __init <container-dir>`, spawned by the
//! supervisor (already inside the container's new PID namespace, so this
//! process is PID 1 there). It joins the cgroups, creates the mount, UTS and
//! IPC namespaces, assembles the root filesystem, `pivot_root`s into it,
//! drops privileges and `execve`s the container process, which keeps PID 1
//! and the supervisor as its parent (so exit codes and re-adoption work as
//! with the exec runtime).
//!
//! Start errors are written to fd 3 (a close-on-exec pipe the supervisor
//! reads): EOF without a message means the `execve` succeeded.
//!
//! Every mount is made inside the private mount namespace, so none is
//! visible on the host and all vanish with the container's last process.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::caps;
use super::plan::{resolve_user, under_any, IsolationRecord, NetworkMode, RootSource};
use crate::runtime::images::ProcessSpec;
use crate::runtime::steps::{open_steps_file, Steps};
use crate::runtime::supervisor::{read_json, ContainerRecord, SPEC_FILE};

/// The descriptor start errors are reported on.
pub const REPORT_FD: i32 = 3;
/// Host directories a `RootSource::Host` root shows read-only.
pub const HOST_DIRS: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// Device nodes every container gets (bound from the host's).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Where the host's root stays, briefly, after `pivot_root`.
const OLD_ROOT: &str = "/.keel-old-root";

/// Entry point of `keel __init <dir>`; never returns.
pub fn run_init(dir: &Path) -> ! {
    let steps = Steps::start("init");
    // SAFETY: the supervisor put the report pipe at fd 3; nothing else owns it.
    let mut report = unsafe { File::from_raw_fd(REPORT_FD) };
    // SAFETY: fcntl on a descriptor we own: close it on the final execve.
    unsafe { libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    let err = match setup_and_exec(dir, steps) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = write!(report, "{err:#}");
    let _ = report.flush();
    std::process::exit(127)
}

/// Sets the container up and execs its process, timing each step into
/// `steps` (written to the container's steps file just before the exec,
/// through a descriptor opened while the host's paths are still visible).
fn setup_and_exec(dir: &Path, mut steps: Steps) -> anyhow::Result<std::convert::Infallible> {
    let mut steps_file = open_steps_file(dir).ok();
    let record: ContainerRecord =
        read_json(&dir.join(SPEC_FILE))?.ok_or_else(|| anyhow!("missing {SPEC_FILE}"))?;
    let iso = record
        .isolation
        .as_ref()
        .ok_or_else(|| anyhow!("{SPEC_FILE} has no isolation record"))?;
    steps.mark("read spec.json");
    for procs in iso.cgroup.procs_files() {
        std::fs::write(&procs, "0").with_context(|| format!("join {}", procs.display()))?;
    }
    steps.mark("join cgroups");
    match &iso.pod_ns_dir {
        Some(ns_dir) => pod_namespaces(ns_dir, &iso.hostname)?,
        None => {
            unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
                .context("unshare UTS and IPC namespaces")?;
            nix::unistd::sethostname(&iso.hostname).context("sethostname")?;
        }
    }
    steps.mark("UTS and IPC namespaces");
    match &iso.network {
        // Loopback mode: the host's network namespace.
        NetworkMode::Host => {}
        // Netns mode: the namespace the agent made and pinned for the pod.
        NetworkMode::Pod { netns } => {
            let file = File::open(netns)
                .with_context(|| format!("open the pod's network namespace {}", netns.display()))?;
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .context("join the pod's network namespace")?;
        }
    }
    steps.mark("network namespace");
    unshare(CloneFlags::CLONE_NEWNS).context("unshare the mount namespace")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make / private")?;
    steps.mark("mount namespace");
    assemble_root(iso)?;
    steps.mark("assemble root");
    // Opened before pivot_root, mounted after it: a mount destination then
    // resolves inside the container's root, so an image's symlinks cannot
    // point a volume at a host path.
    let sources = iso
        .binds
        .iter()
        .map(|m| open_path(&m.source).with_context(|| format!("volume {:?}", m.name)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let devices = DEVICES
        .iter()
        .map(|d| open_path(&Path::new("/dev").join(d)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let host_dev = match iso.privileged {
        true => Some(open_path(Path::new("/dev"))?),
        false => None,
    };
    steps.mark("open bind sources");
    enter_root(&iso.merged_dir)?;
    steps.mark("pivot_root");
    mount_proc_sys(iso.privileged)?;
    steps.mark("mount /proc and /sys");
    match &host_dev {
        Some(dev) => bind(&fd_path(dev), Path::new("/dev"), false, true)?,
        None => {
            harden_proc(&devices[0])?;
            steps.mark("mask /proc");
            mount_dev(&devices)?;
        }
    }
    steps.mark("mount /dev");
    for (m, src) in iso.binds.iter().zip(&sources) {
        let is_dir = src.metadata().map(|m| m.is_dir()).unwrap_or(false);
        create_target(&m.destination, is_dir)
            .with_context(|| format!("mountPath {} of {:?}", m.destination.display(), m.name))?;
        bind(&fd_path(src), &m.destination, m.read_only, true)
            .with_context(|| format!("mount {:?} at {}", m.name, m.destination.display()))?;
    }
    drop(sources);
    drop(devices);
    drop(host_dev);
    steps.mark("bind volumes and /etc files");
    detach_old_root()?;
    steps.mark("detach old root");
    let process = &record.process;
    // Kubernetes creates a missing workingDir; a read-only root cannot.
    let _ = std::fs::create_dir_all(&process.working_dir);
    if iso.read_only_root {
        remount_ro(Path::new("/")).context("read-only root filesystem")?;
    }
    let (uid, gid) = resolve_user(&iso.user).map_err(|e| anyhow!(e))?;
    drop_privileges(iso, uid, gid)?;
    steps.mark("user and privileges");
    if let Some(file) = steps_file.as_mut() {
        steps.append_to(file);
    }
    drop(steps_file);
    Err(exec_process(process))
}

/// Joins the pod's IPC and UTS namespaces, or (first container of the pod,
/// or after a reboot emptied the pins) creates them, sets the hostname and
/// pins them by bind-mounting their namespace files into `ns_dir` (still in
/// the host's mount namespace, so the pins outlive this container). A lock
/// file serialises concurrent starts in one pod.
fn pod_namespaces(ns_dir: &Path, hostname: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(ns_dir).with_context(|| format!("create {}", ns_dir.display()))?;
    let lock = File::create(ns_dir.join("lock")).context("pod namespace lock")?;
    // SAFETY: flock on a descriptor owned by `lock`; released when it drops.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "lock {}: {}",
            ns_dir.display(),
            std::io::Error::last_os_error()
        );
    }
    let kinds = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
    ];
    let pinned = |p: &Path| is_ns_pin(p);
    if kinds.iter().all(|(k, _)| pinned(&ns_dir.join(k))) {
        for (kind, flag) in kinds {
            let file = File::open(ns_dir.join(kind))?;
            nix::sched::setns(&file, flag)
                .with_context(|| format!("join the pod's {kind} namespace"))?;
        }
        return Ok(());
    }
    unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
        .context("unshare UTS and IPC namespaces")?;
    nix::unistd::sethostname(hostname).context("sethostname")?;
    for (kind, _) in kinds {
        let pin = ns_dir.join(kind);
        if pinned(&pin) {
            let _ = umount2(&pin, MntFlags::MNT_DETACH);
        }
        create_target(&pin, false)?;
        let own = PathBuf::from(format!("/proc/self/ns/{kind}"));
        mount(
            Some(&own),
            &pin,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("pin the pod's {kind} namespace"))?;
    }
    Ok(())
}

/// Whether `path` is a bind mount of a namespace file (a live pin).
pub fn is_ns_pin(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    // The statfs type is i64 or i32 depending on the target.
    #[allow(clippy::unnecessary_cast)]
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 as i64 == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Unpins a pod's namespaces (after its last container is removed) and
/// ends its shared PID namespace, if it has one.
///
/// The network namespace pin (`net`, netns mode) is left in place: it
/// belongs to the pod's network, which outlives container restarts and is
/// torn down (veth first) when the pod itself goes away.
pub fn release_pod_namespaces(ns_dir: &Path) -> std::io::Result<()> {
    super::podpid::release(ns_dir);
    for kind in ["ipc", "uts"] {
        let _ = umount2(&ns_dir.join(kind), MntFlags::MNT_DETACH);
    }
    if is_ns_pin(&ns_dir.join("net")) {
        for entry in std::fs::read_dir(ns_dir)?.flatten() {
            if entry.file_name() != "net" {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        return Ok(());
    }
    match std::fs::remove_dir_all(ns_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn exec_process(process: &ProcessSpec) -> anyhow::Error {
    let err = std::process::Command::new(&process.program)
        .args(&process.args)
        .env_clear()
        .envs(process.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&process.working_dir)
        .exec();
    anyhow!(
        "exec {:?} in {}: {err}",
        process.program,
        process.working_dir.display()
    )
}

/// Drops capabilities outside the container's set, sets `no_new_privs`
/// and switches to `uid`/`gid` (only `gid` as supplementary group).
pub fn drop_privileges(iso: &IsolationRecord, uid: u32, gid: u32) -> anyhow::Result<()> {
    if !iso.privileged {
        caps::drop_bounding(iso.capabilities).context("drop capabilities")?;
    }
    // Before the user switch: installing a filter without `no_new_privs`
    // needs CAP_SYS_ADMIN, which the switch clears.
    if iso.seccomp && !iso.privileged {
        super::seccomp::apply_default().context("seccomp RuntimeDefault")?;
    }
    if iso.no_new_privs {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            bail!("no_new_privs: {}", std::io::Error::last_os_error());
        }
    }
    let gid_t = nix::unistd::Gid::from_raw(gid);
    nix::unistd::setgroups(&[gid_t]).context("setgroups")?;
    nix::unistd::setgid(gid_t).context("setgid")?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).context("setuid")?;
    Ok(())
}

/// Mounts the container's root at `merged_dir` (still in host paths).
fn assemble_root(iso: &IsolationRecord) -> anyhow::Result<()> {
    let merged = &iso.merged_dir;
    match &iso.root {
        RootSource::Image { lower } => {
            for p in [lower, &iso.upper_dir, &iso.work_dir] {
                let s = p.to_string_lossy();
                if s.contains(',') || s.contains(':') {
                    bail!("overlay path {s:?} contains ',' or ':'");
                }
            }
            let options = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                iso.upper_dir.display(),
                iso.work_dir.display()
            );
            mount(
                Some("overlay"),
                merged,
                Some("overlay"),
                MsFlags::empty(),
                Some(options.as_str()),
            )
            .with_context(|| format!("overlay mount of {}", lower.display()))?;
        }
        RootSource::Host { etc, extra } => {
            mount(
                Some("tmpfs"),
                merged,
                Some("tmpfs"),
                MsFlags::MS_NOSUID,
                Some("mode=755"),
            )
            .context("tmpfs root")?;
            let mut shown: Vec<&str> = HOST_DIRS.to_vec();
            if *etc {
                shown.push("etc");
            }
            for d in &shown {
                let host = Path::new("/").join(d);
                let target = merged.join(d);
                match std::fs::symlink_metadata(&host) {
                    Ok(m) if m.file_type().is_symlink() => {
                        symlink(std::fs::read_link(&host)?, &target)?;
                    }
                    Ok(m) if m.is_dir() => {
                        std::fs::create_dir(&target)?;
                        bind(&host, &target, true, true)?;
                    }
                    _ => {}
                }
            }
            for p in extra.iter().filter(|p| !under_any(p, &shown)) {
                let rel = p.strip_prefix("/").unwrap_or(p);
                let target = merged.join(rel);
                create_target(&target, p.is_dir())?;
                bind(p, &target, true, true)?;
            }
            let tmp = merged.join("tmp");
            std::fs::create_dir_all(&tmp)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))?;
        }
    }
    Ok(())
}

/// `pivot_root` into `merged`, keeping the old root at [`OLD_ROOT`] until
/// [`detach_old_root`]: a bind mount's source must still be attached in
/// this namespace when it is mounted.
fn enter_root(merged: &Path) -> anyhow::Result<()> {
    nix::unistd::chdir(merged).context("chdir to the new root")?;
    std::fs::create_dir_all(OLD_ROOT.trim_start_matches('/'))
        .context("create the old root's mount point")?;
    nix::unistd::pivot_root(".", OLD_ROOT.trim_start_matches('/')).context("pivot_root")?;
    nix::unistd::chdir("/").context("chdir /")?;
    Ok(())
}

fn detach_old_root() -> anyhow::Result<()> {
    umount2(OLD_ROOT, MntFlags::MNT_DETACH).context("detach the old root")?;
    std::fs::remove_dir(OLD_ROOT).context("remove the old root's mount point")?;
    Ok(())
}

fn mount_proc_sys(privileged: bool) -> anyhow::Result<()> {
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    std::fs::create_dir_all("/proc")?;
    mount(Some("proc"), "/proc", Some("proc"), hardened, None::<&str>).context("mount /proc")?;
    std::fs::create_dir_all("/sys")?;
    let ro = if privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        hardened | ro,
        None::<&str>,
    )
    .context("mount /sys")?;
    Ok(())
}

/// What Docker hides in `/proc` of unprivileged containers: kernel memory
/// and timers masked (`/dev/null` over files, an empty read-only tmpfs
/// over directories), kernel knobs read-only.
fn harden_proc(dev_null: &File) -> anyhow::Result<()> {
    const MASKED: [&str; 8] = [
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
    ];
    const READ_ONLY: [&str; 5] = [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ];
    for path in MASKED.iter().map(Path::new).filter(|p| p.exists()) {
        if path.is_dir() {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .with_context(|| format!("mask {}", path.display()))?;
        } else {
            bind(&fd_path(dev_null), path, false, false)
                .with_context(|| format!("mask {}", path.display()))?;
        }
    }
    for path in READ_ONLY.iter().map(Path::new).filter(|p| p.exists()) {
        bind(path, path, true, true)?;
    }
    Ok(())
}

/// A minimal `/dev`: a tmpfs with the host's harmless device nodes, a
/// private devpts, `/dev/shm` and the usual symlinks.
fn mount_dev(devices: &[File]) -> anyhow::Result<()> {
    std::fs::create_dir_all("/dev")?;
    mount(
        Some("tmpfs"),
        "/dev",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .context("mount /dev")?;
    for (name, fd) in DEVICES.iter().zip(devices) {
        let target = Path::new("/dev").join(name);
        create_target(&target, false)?;
        bind(&fd_path(fd), &target, false, false).with_context(|| format!("/dev/{name}"))?;
    }
    std::fs::create_dir("/dev/pts")?;
    mount(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .context("mount /dev/pts")?;
    symlink("pts/ptmx", "/dev/ptmx")?;
    std::fs::create_dir("/dev/shm")?;
    mount(
        Some("shm"),
        "/dev/shm",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .context("mount /dev/shm")?;
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, Path::new("/dev").join(link))?;
    }
    Ok(())
}

fn open_path(path: &Path) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("open {}", path.display()))
}

fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Creates a mount target: a directory, or an empty file (parents created).
fn create_target(target: &Path, dir: bool) -> std::io::Result<()> {
    if dir {
        return std::fs::create_dir_all(target);
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::symlink_metadata(target).is_err() {
        File::create(target)?;
    }
    Ok(())
}

fn bind(source: &Path, target: &Path, read_only: bool, recursive: bool) -> anyhow::Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(source), target, None::<&str>, flags, None::<&str>)
        .with_context(|| format!("bind {} on {}", source.display(), target.display()))?;
    if read_only {
        remount_ro(target)?;
    }
    Ok(())
}

/// Makes one mount point read-only, keeping its other flags.
fn remount_ro(target: &Path) -> anyhow::Result<()> {
    let current = nix::sys::statvfs::statvfs(target)
        .with_context(|| format!("statvfs {}", target.display()))?
        .flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    use nix::sys::statvfs::FsFlags;
    for (has, keep) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if current.contains(has) {
            flags |= keep;
        }
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .with_context(|| format!("remount {} read-only", target.display()))?;
    Ok(())
}
