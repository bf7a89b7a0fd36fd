//! The pod's shared PID namespace (`shareProcessNamespace: true`).
//!
//! A PID namespace dies with its PID 1, and nobody can enter a dead one, so
//! a pod-wide namespace needs an init that outlives every container: the
//! pod's first container's supervisor creates the namespace and starts a
//! pause-like process in it (`keel __pause <empty-dir>`, PID 1 there),
//! which reaps the zombies orphaned processes leave and otherwise sleeps.
//! The namespace is pinned at `<pod ns dir>/pid` and the pause process
//! recorded in `<pod ns dir>/pause.json`; later containers (and restarts)
//! join it with `setns`. [`release`] kills the pause process when the pod's
//! last container is removed, which ends the namespace.
//!
//! The pause process is chrooted into an empty directory and runs as
//! `nobody` with no capabilities and not dumpable, so a container cannot
//! reach the host's filesystem through `/proc/1/root`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::runtime::procfs::ProcessIdentity;
use crate::runtime::supervisor::{read_json, write_json_atomic};

/// First argument of the pause mode: `<keel> __pause <empty-dir>`.
pub const PAUSE_ARG: &str = "__pause";
const PIN: &str = "pid";
const PAUSE_FILE: &str = "pause.json";
const PAUSE_ROOT: &str = "pause-root";
const NOBODY: u32 = 65534;

/// Supervisor side: puts the calling process's future children into the
/// pod's PID namespace, creating it (with its pause process) when it does
/// not exist or its pause process is gone. Call before spawning the init.
/// Errors: the namespace cannot be created, pinned or joined.
pub fn enter(ns_dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(ns_dir).map_err(|e| format!("create {}: {e}", ns_dir.display()))?;
    let lock = File::create(ns_dir.join("lock")).map_err(|e| format!("pod lock: {e}"))?;
    // SAFETY: flock on a descriptor owned by `lock`; released when it drops.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("lock: {}", std::io::Error::last_os_error()));
    }
    let pin = ns_dir.join(PIN);
    if pause_alive(ns_dir) && super::init::is_ns_pin(&pin) {
        let file = File::open(&pin).map_err(|e| format!("open {}: {e}", pin.display()))?;
        return setns(&file, CloneFlags::CLONE_NEWPID)
            .map_err(|e| format!("join the pod's PID namespace: {e}"));
    }
    // A stale pin (the pause process died, or a reboot): start over.
    let _ = umount2(&pin, MntFlags::MNT_DETACH);
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare PID namespace: {e}"))?;
    let root = ns_dir.join(PAUSE_ROOT);
    std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .arg(PAUSE_ARG)
        .arg(&root)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid and signal are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            crate::runtime::supervisor::set_termination_signals(libc::SIG_DFL);
            libc::setsid();
            Ok(())
        });
    }
    let pause = command
        .spawn()
        .map_err(|e| format!("start the pod's pause process: {e}"))?;
    let pid = pause.id() as i32;
    let identity = ProcessIdentity::of(pid).ok_or("the pod's pause process exited at once")?;
    if std::fs::symlink_metadata(&pin).is_err() {
        File::create(&pin).map_err(|e| format!("create {}: {e}", pin.display()))?;
    }
    mount(
        Some(Path::new(&format!("/proc/{pid}/ns/pid"))),
        &pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("pin the pod's PID namespace: {e}"))?;
    write_json_atomic(&ns_dir.join(PAUSE_FILE), &identity)
        .map_err(|e| format!("record the pause process: {e}"))?;
    Ok(())
}

/// Whether the pod's pause process (recorded in `ns_dir`) still runs.
pub fn pause_alive(ns_dir: &Path) -> bool {
    read_json::<ProcessIdentity>(&ns_dir.join(PAUSE_FILE))
        .ok()
        .flatten()
        .is_some_and(|p| p.is_alive())
}

/// Ends the pod's PID namespace: kills its pause process (which takes every
/// process left in the namespace with it) and unpins it. Nothing to do for
/// a pod without a shared PID namespace.
pub fn release(ns_dir: &Path) {
    if let Ok(Some(pause)) = read_json::<ProcessIdentity>(&ns_dir.join(PAUSE_FILE)) {
        if pause.is_alive() {
            // SAFETY: kill has no memory-safety requirements; the identity
            // check above guards against a reused pid.
            unsafe { libc::kill(pause.pid, libc::SIGKILL) };
        }
    }
    let _ = umount2(&ns_dir.join(PIN), MntFlags::MNT_DETACH);
}

/// Entry point of `keel __pause <empty-dir>`; never returns. PID 1 of a
/// pod's PID namespace: drops everything it does not need, then reaps
/// children until killed (SIGKILL from the host; signals from inside the
/// namespace do not reach an init without handlers).
pub fn run_pause(root: &Path) -> ! {
    if let Err(e) = confine(root) {
        eprintln!("keel pause: {e}");
        std::process::exit(1);
    }
    let mut chld = nix::sys::signal::SigSet::empty();
    chld.add(nix::sys::signal::Signal::SIGCHLD);
    let _ = chld.thread_block();
    loop {
        reap();
        let _ = chld.wait();
    }
}

/// Reaps every exited child without blocking.
fn reap() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

fn confine(root: &Path) -> nix::Result<()> {
    nix::unistd::chroot(root)?;
    nix::unistd::chdir("/")?;
    let nobody = nix::unistd::Gid::from_raw(NOBODY);
    nix::unistd::setgroups(&[nobody])?;
    nix::unistd::setgid(nobody)?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(NOBODY))?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    Ok(())
}
