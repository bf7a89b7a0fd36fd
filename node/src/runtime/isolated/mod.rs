//! The isolating runtime (`--runtime keel`): containers are supervised
//! processes exactly as in the exec runtime (same state directory layout,
//! supervisor, logs, re-adoption after an agent restart), but each runs in
//! its own PID, mount, UTS and IPC namespaces, `pivot_root`ed into its image
//! rootfs, inside a cgroup carrying its requests and limits, as the
//! securityContext's user with a reduced capability set and `no_new_privs`.
//!
//! Network: in loopback mode pods share the agent's network namespace, so no
//! network namespace is created; in netns mode containers join the pod's
//! namespace the agent pinned ([`plan::NetworkMode`], [`crate::podnet`]).
//!
//! What each container sees:
//! - `/`: an overlay of the image rootfs (read-only lower) with a writable
//!   upper layer in the container's state directory (read-only when
//!   `readOnlyRootFilesystem`). Built-in images (`keel/echo`, `keel/pause`)
//!   and local images without `rootfs/` get a tmpfs root showing the host's
//!   `/usr`, `/bin`, `/sbin`, `/lib*` read-only (their binaries are host
//!   binaries) plus the keel binary at its host path; `keel/host` also gets
//!   the host's `/etc` read-only, by design (it runs the host's userland);
//! - `/proc` (its own PID namespace), `/sys` read-only, a minimal `/dev`;
//! - `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` written for the pod;
//! - volumes at their `mountPath` (`readOnly` enforced, `subPath` applied by
//!   the agent).
//!
//! Why hand-written with `nix` rather than youki's `libcontainer`: the
//! supervisor must stay the container process's parent (that is how exit
//! codes survive agent restarts and how re-adoption works), while
//! libcontainer forks and tracks its own init/intermediate processes and
//! keeps its own state directory, which would duplicate (and fight) the
//! supervisor's records. The few hundred lines here (unshare, mount,
//! pivot_root, setns, cgroup files) reuse every piece of the exec runtime
//! instead, build in seconds, and handle this host's cgroup v1 + v2-hybrid
//! layout explicitly. Measured (`keel-bench runtime-steps`, README
//! "Benchmarks: pods"): the namespace and mount steps take a few ms of a
//! start; process starts, cgroup joins and fsynced records dominate. Every
//! start's steps are recorded ([`crate::runtime::steps`]).
//!
//! IPC and UTS namespaces are per pod (pinned by bind mounts under
//! `<state>/pods/<uid>/ns` until the pod's last container is removed); PID
//! namespaces are per container, or per pod with `shareProcessNamespace`
//! (see [`podpid`]: a pause process is the namespace's PID 1 and reaps
//! orphans). `seccompProfile: RuntimeDefault` installs [`seccomp`]'s
//! default filter; `Localhost` profiles are refused at start.

pub mod caps;
pub mod cgroup;
mod image;
pub mod init;
pub mod nsenter;
pub mod plan;
pub mod podpid;
pub mod seccomp;
pub mod sweep;
mod ttyproxy;

use std::io::Read;
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use cgroup::{CgroupLayout, ContainerCgroup};
use plan::{IsolationRecord, NetworkMode, UserSpec};

use super::exec::{new_container_id, read_record, ExecConfig, ExecRuntime};
use super::steps::{ProcessSteps, Steps};
use super::supervisor::{
    now_ms, open_log, read_json, set_termination_signals, write_json_atomic, ContainerRecord,
    ExitRecord, SPEC_FILE,
};
use super::{
    BoxFuture, ContainerId, ContainerInfo, ContainerSpec, ContainerState, ContainerStats,
    ExecRequest, ExecSession, Mount, Result, Runtime, RuntimeError, SeccompProfile,
};

/// First argument of the container init mode: `<keel> __init <container-dir>`.
pub const INIT_ARG: &str = "__init";
/// First argument of the exec mode: `<keel> __nsenter <container-dir> -- <command...>`.
pub const NSENTER_ARG: &str = "__nsenter";
const WARNINGS_FILE: &str = "warnings.json";
const RESOLV_CONF_ENV: &str = crate::dns::resolv_conf::RESOLV_CONF_ENV;

/// Configuration of an [`IsolatedRuntime`].
#[derive(Debug, Clone)]
pub struct IsolatedConfig {
    pub exec: ExecConfig,
    /// Where the cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup_mount: PathBuf,
    /// Cgroup of all pods, relative to each hierarchy's root (`keel`).
    pub cgroup_parent: String,
    /// `pids.max` of every container; `None` = unlimited.
    pub pids_limit: Option<u64>,
    /// Netns mode: the agent's `<root>/pods`, under which it pins each
    /// pod's network namespace ([`crate::podnet::pin_path`]). A container
    /// of a pod with a pinned namespace joins it; one without (hostNetwork
    /// pods) runs in the agent's. `None`: loopback mode, always the agent's.
    pub pod_netns_root: Option<PathBuf>,
}

impl IsolatedConfig {
    /// The defaults for an agent: state in `state_dir`, cgroups under
    /// `/sys/fs/cgroup/.../keel`, at most 4096 processes per container.
    pub fn new(exec: ExecConfig) -> Self {
        IsolatedConfig {
            exec,
            cgroup_mount: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "keel".into(),
            pids_limit: Some(4096),
            pod_netns_root: None,
        }
    }
}

/// What keeps this host from running the isolating runtime (empty: nothing).
/// The agent falls back to `exec` and prints these.
pub fn missing_features(cgroup_mount: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("not running as root".to_string());
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = filesystems.lines().any(|l| l.ends_with("\toverlay"))
        || Path::new("/sys/module/overlay").exists();
    if !overlay {
        missing.push("no overlayfs".to_string());
    }
    for ns in ["pid", "mnt", "uts", "ipc"] {
        if !Path::new("/proc/self/ns").join(ns).exists() {
            missing.push(format!("no {ns} namespaces"));
        }
    }
    for c in CgroupLayout::detect(cgroup_mount).missing_controllers() {
        missing.push(format!("no {c} cgroup controller"));
    }
    missing
}

/// The isolating runtime. See the module docs.
#[derive(Debug)]
pub struct IsolatedRuntime {
    inner: ExecRuntime,
    config: IsolatedConfig,
    layout: CgroupLayout,
}

impl IsolatedRuntime {
    /// Opens the state directory (see [`ExecRuntime::new`]) and detects the
    /// cgroup layout.
    pub fn new(config: IsolatedConfig) -> Result<Self> {
        let inner = ExecRuntime::new(config.exec.clone())?;
        let layout = CgroupLayout::detect(&config.cgroup_mount);
        Ok(IsolatedRuntime {
            inner,
            config,
            layout,
        })
    }

    async fn start_container(&self, spec: &ContainerSpec) -> Result<ContainerId> {
        let mut steps = Steps::start("runtime");
        let exec = &self.config.exec;
        let resolved = image::resolve(
            spec,
            self.inner.images(),
            &exec.keel_binary,
            exec.image_dir.as_deref(),
        )?;
        let sec = &spec.security;
        let capabilities = caps::effective_set(
            sec.privileged,
            &sec.capabilities_add,
            &sec.capabilities_drop,
        )
        .map_err(RuntimeError::InvalidSpec)?;
        let seccomp = match &sec.seccomp {
            SeccompProfile::Unconfined => false,
            SeccompProfile::RuntimeDefault => true,
            SeccompProfile::Localhost(profile) => {
                return Err(RuntimeError::InvalidSpec(format!(
                    "seccompProfile Localhost ({profile:?}) is not supported by the keel runtime; use RuntimeDefault or Unconfined"
                )))
            }
        };
        for m in &spec.mounts {
            if !m.destination.is_absolute() {
                return Err(RuntimeError::InvalidSpec(format!(
                    "volume {:?}: mountPath {} is not absolute",
                    m.name,
                    m.destination.display()
                )));
            }
        }
        steps.mark("resolve image and security");
        let id = new_container_id(spec);
        let dir = self.inner.new_container_dir(&id);
        let io = |what: &str| {
            let what = format!("{what} in {}", dir.display());
            move |e| RuntimeError::io(what, e)
        };
        let (upper_dir, work_dir, merged_dir) =
            (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
        for d in [&upper_dir, &work_dir, &merged_dir] {
            std::fs::create_dir_all(d).map_err(io("create layers"))?;
        }
        steps.mark("create layer dirs");
        let binds = pod_files(spec, &dir)
            .map(|etc| spec.mounts.iter().cloned().chain(etc).collect())
            .map_err(io("write /etc files"));
        let binds: Vec<Mount> = match binds {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        steps.mark("write /etc files");
        let created = cgroup::create(
            &self.layout,
            &self.config.cgroup_parent,
            &spec.pod_uid,
            &id.0,
            &spec.resources,
            self.config.pids_limit,
        );
        let (cgroup, warnings) = match created {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(RuntimeError::io("create cgroups", e));
            }
        };
        for w in &warnings {
            tracing::warn!(pod = %spec.pod_name, container = %spec.container_name, "{w}");
        }
        let _ = write_json_atomic(&dir.join(WARNINGS_FILE), &warnings);
        steps.mark("create cgroups");
        let isolation = IsolationRecord {
            hostname: hostname(&spec.pod_name),
            root: resolved.root,
            read_only_root: sec.read_only_root_filesystem,
            merged_dir,
            upper_dir,
            work_dir,
            binds,
            user: UserSpec {
                run_as_user: sec.run_as_user,
                run_as_group: sec.run_as_group,
                image_user: resolved.image_user,
            },
            capabilities,
            no_new_privs: !sec.privileged && !sec.allow_privilege_escalation.unwrap_or(false),
            privileged: sec.privileged,
            network: self.network_mode(&spec.pod_uid),
            cgroup: cgroup.clone(),
            pod_ns_dir: Some(self.pod_ns_dir(&spec.pod_uid)),
            share_pid: sec.share_process_namespace,
            seccomp,
        };
        let record = ContainerRecord {
            spec: spec.clone(),
            process: resolved.process,
            created_at_ms: now_ms(),
            isolation: Some(isolation),
        };
        let started = self.inner.launch(&id, record, steps).await;
        if started.is_err() {
            let _ = cgroup.remove();
        }
        started
    }

    fn isolation(&self, dir: &Path) -> Result<IsolationRecord> {
        let record: ContainerRecord = read_record(dir, SPEC_FILE)?;
        record
            .isolation
            .ok_or_else(|| RuntimeError::Other(format!("{} is not isolated", dir.display())))
    }

    /// Which network a container of pod `pod_uid` joins (see
    /// [`IsolatedConfig::pod_netns_root`]).
    fn network_mode(&self, pod_uid: &str) -> NetworkMode {
        let pin = self
            .config
            .pod_netns_root
            .as_ref()
            .filter(|_| !pod_uid.contains('/') && pod_uid != ".." && pod_uid != ".")
            .map(|root| crate::podnet::pin_path(root, pod_uid));
        match pin {
            Some(netns) if crate::podnet::ns::is_pinned(&netns) => NetworkMode::Pod { netns },
            _ => NetworkMode::Host,
        }
    }

    /// `<state>/pods/<uid>/ns`: the pins of a pod's IPC and UTS namespaces.
    fn pod_ns_dir(&self, pod_uid: &str) -> PathBuf {
        self.config
            .exec
            .state_dir
            .join("pods")
            .join(pod_dir_name(pod_uid))
            .join("ns")
    }

    /// The agent's startup sweep (see [`sweep`]): removes the namespace
    /// pins, pause processes, cgroups and mounts of pods none of whose
    /// containers runs any more, and leaves running pods alone. Call it
    /// when the agent starts, before it starts containers.
    /// Errors: the state directory cannot be listed.
    pub fn sweep_stale(&self) -> Result<sweep::SweepReport> {
        let containers = self.inner.list_containers()?;
        let live: Vec<&ContainerInfo> =
            containers.iter().filter(|c| c.state.is_running()).collect();
        let input = sweep::SweepInput {
            state_dir: &self.config.exec.state_dir,
            layout: &self.layout,
            cgroup_parent: &self.config.cgroup_parent,
            live_pod_dirs: live.iter().map(|c| pod_dir_name(&c.spec.pod_uid)).collect(),
            live_pod_cgroups: live
                .iter()
                .map(|c| format!("pod{}", cgroup::clean(&c.spec.pod_uid)))
                .collect(),
            dead_pod_cgroups: containers
                .iter()
                .map(|c| format!("pod{}", cgroup::clean(&c.spec.pod_uid)))
                .collect(),
            live_containers: live.iter().map(|c| c.id.0.clone()).collect(),
        };
        Ok(sweep::sweep(&input))
    }

    fn remove_container(&self, id: &ContainerId) -> Result<()> {
        let dir = self.inner.container_dir(id)?;
        if self.inner.observe(&dir)?.is_running() {
            return Err(RuntimeError::StillRunning(id.clone()));
        }
        let record: ContainerRecord = read_record(&dir, SPEC_FILE)?;
        if let Some(iso) = &record.isolation {
            iso.cgroup
                .remove()
                .map_err(|e| RuntimeError::io(format!("remove cgroups of {id}"), e))?;
        }
        self.inner.remove_container(id)?;
        // The pod's last container is gone: unpin its namespaces.
        let pod_uid = &record.spec.pod_uid;
        let others = self.inner.list_containers()?;
        let ns_dir = record.isolation.and_then(|i| i.pod_ns_dir);
        if let Some(ns_dir) = ns_dir.filter(|_| !others.iter().any(|c| &c.spec.pod_uid == pod_uid))
        {
            init::release_pod_namespaces(&ns_dir)
                .map_err(|e| RuntimeError::io(format!("release {}", ns_dir.display()), e))?;
            if let Some(pod_dir) = ns_dir.parent() {
                let _ = std::fs::remove_dir(pod_dir);
            }
        }
        Ok(())
    }

    fn exec_in(&self, id: &ContainerId, req: &ExecRequest) -> Result<ExecSession> {
        let dir = self.inner.container_dir(id)?;
        if !self.inner.observe(&dir)?.is_running() {
            return Err(RuntimeError::InvalidSpec(format!(
                "container {id} is not running"
            )));
        }
        let Some(program) = req.command.first() else {
            return Err(RuntimeError::InvalidSpec("exec needs a command".into()));
        };
        let mut cmd = std::process::Command::new(&self.config.exec.keel_binary);
        cmd.arg(NSENTER_ARG)
            .arg(&dir)
            .arg("--")
            .args(&req.command)
            .env_clear();
        super::hostexec::spawn_command(cmd, program, req)
    }

    fn stats_of(&self, id: &ContainerId) -> Result<ContainerStats> {
        let dir = self.inner.container_dir(id)?;
        let iso = self.isolation(&dir)?;
        let (cpu_usage_ns, memory_working_set_bytes) = iso
            .cgroup
            .usage()
            .map_err(|e| RuntimeError::io(format!("read cgroups of {id}"), e))?;
        Ok(ContainerStats {
            cpu_usage_ns,
            memory_working_set_bytes,
            timestamp: std::time::SystemTime::now(),
        })
    }

    /// How container `id`'s start went, step by step (see [`super::steps`]):
    /// the runtime's, the supervisor's and the container init's steps.
    pub fn start_steps(&self, id: &ContainerId) -> Result<Vec<ProcessSteps>> {
        self.inner.start_steps(id)
    }

    /// The cgroup of container `id` (for tests and diagnostics).
    pub fn cgroup(&self, id: &ContainerId) -> Result<ContainerCgroup> {
        Ok(self.isolation(&self.inner.container_dir(id)?)?.cgroup)
    }
}

impl Runtime for IsolatedRuntime {
    fn name(&self) -> &'static str {
        "keel"
    }

    fn start<'a>(&'a self, spec: &'a ContainerSpec) -> BoxFuture<'a, Result<ContainerId>> {
        Box::pin(self.start_container(spec))
    }

    fn state<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ContainerState>> {
        Box::pin(async move { self.inner.observe(&self.inner.container_dir(id)?) })
    }

    fn stop<'a>(
        &'a self,
        id: &'a ContainerId,
        grace_ms: u64,
    ) -> BoxFuture<'a, Result<ContainerState>> {
        Box::pin(self.inner.stop_container(id, grace_ms))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ContainerInfo>>> {
        Box::pin(async move { self.inner.list_containers() })
    }

    fn remove<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.remove_container(id) })
    }

    fn stats<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ContainerStats>> {
        Box::pin(async move { self.stats_of(id) })
    }

    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        req: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecSession>> {
        Box::pin(async move { self.exec_in(id, &req) })
    }

    fn warnings(&self, id: &ContainerId) -> Vec<String> {
        self.inner
            .container_dir(id)
            .ok()
            .and_then(|dir| read_json(&dir.join(WARNINGS_FILE)).ok().flatten())
            .unwrap_or_default()
    }
}

/// A pod uid as a directory name under `<state>/pods`.
fn pod_dir_name(pod_uid: &str) -> String {
    pod_uid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A pod name as a hostname (at most 63 bytes, as the kubelet truncates).
fn hostname(pod_name: &str) -> String {
    let mut h: String = pod_name.chars().take(63).collect();
    while h.ends_with(['-', '.']) {
        h.pop();
    }
    if h.is_empty() {
        h.push_str("pod");
    }
    h
}

/// Writes the pod's `/etc/hosts` and `/etc/hostname` into `dir` and returns
/// them and `/etc/resolv.conf` (the pod's, from `KEEL_RESOLV_CONF`, else
/// the host's) as read-only binds.
fn pod_files(spec: &ContainerSpec, dir: &Path) -> std::io::Result<Vec<Mount>> {
    let env = |k: &str| {
        spec.env
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let name = hostname(&spec.pod_name);
    let ip = env("POD_IP").unwrap_or_else(|| "127.0.0.1".into());
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "# Kubernetes-managed hosts file (keel).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{name}\n"
        ),
    )?;
    let hostname_file = dir.join("hostname");
    std::fs::write(&hostname_file, format!("{name}\n"))?;
    let resolv = env(RESOLV_CONF_ENV)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/etc/resolv.conf"));
    let bind = |name: &str, source: PathBuf, dest: &str| Mount {
        name: name.into(),
        source,
        destination: dest.into(),
        read_only: true,
    };
    let mut out = vec![
        bind("etc-hosts", hosts, "/etc/hosts"),
        bind("etc-hostname", hostname_file, "/etc/hostname"),
    ];
    if resolv.is_file() {
        out.push(bind("etc-resolv-conf", resolv, "/etc/resolv.conf"));
    }
    Ok(out)
}

/// Supervisor side: spawns the container init in a new PID namespace (the
/// init is its PID 1), or in the pod's shared one, and waits until it has
/// exec'd the container process or reported why it could not.
pub(crate) fn spawn_isolated(
    dir: &Path,
    iso: &IsolationRecord,
    log_path: &Path,
    steps: &mut Steps,
) -> std::result::Result<std::process::Child, String> {
    match (&iso.pod_ns_dir, iso.share_pid) {
        (Some(ns_dir), true) => podpid::enter(ns_dir)?,
        _ => nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
            .map_err(|e| format!("unshare PID namespace: {e}"))?,
    }
    steps.mark("PID namespace");
    let log = open_log(log_path).map_err(|e| format!("open log {}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (mut reader, writer) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    let write_fd = fds[1];
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .arg(INIT_ARG)
        .arg(dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0);
    // SAFETY: only async-signal-safe calls (signal, dup2, fcntl).
    unsafe {
        command.pre_exec(move || {
            set_termination_signals(libc::SIG_DFL);
            let target = init::REPORT_FD;
            if write_fd == target {
                if libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(write_fd, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    steps.mark("open log and report pipe");
    let spawned = command.spawn();
    drop(writer);
    let mut child = spawned.map_err(|e| format!("spawn the container init: {e}"))?;
    steps.mark("spawn init");
    let mut message = String::new();
    let _ = reader.read_to_string(&mut message);
    steps.mark("await init report");
    if message.is_empty() {
        return Ok(child);
    }
    let _ = child.wait();
    Err(message)
}

/// Supervisor side: a container whose cgroup saw an OOM kill is
/// `OOMKilled` (its code stays the real one, 137 when the main process was
/// the victim), as the kubelet reports it.
pub(crate) fn classify_exit(iso: &IsolationRecord, exit: &mut ExitRecord) {
    if iso.cgroup.oom_kills().unwrap_or(0) > 0 {
        exit.reason = "OOMKilled".into();
        exit.message = "the container exceeded its memory limit".into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_truncated_like_the_kubelet() {
        assert_eq!(hostname("web-0"), "web-0");
        let long = format!("{}-x", "a".repeat(62));
        assert_eq!(hostname(&long), "a".repeat(62));
        assert_eq!(hostname(""), "pod");
    }
}
