//! The `exec` runtime: containers are real processes on the host.
//!
//! Layout under the state directory:
//! ```text
//! <state-dir>/lock                    flock held by the live runtime instance
//! <state-dir>/containers/<id>/spec.json, running.json, exit.json, supervisor.log
//! ```
//! Each container runs under a supervisor (see [`super::supervisor`]): the
//! supervisor is `<keel binary> __supervise <dir>` in its own session, the
//! container process is its child in its own process group (pgid = its pid),
//! stdout and stderr appended as plain bytes to the spec's `log_path` (both
//! streams interleaved in write order; no CRI timestamps yet).
//!
//! Guarantees:
//! - One runtime instance per state directory at a time ([`RuntimeError::Busy`]).
//! - Containers outlive the runtime: a new instance lists them (running or
//!   exited with their real exit code, recorded by the supervisor) and can stop
//!   and remove them. Pids are checked against their `/proc` start time, so a
//!   reused pid is never signalled.
//! - `stop` signals the container's whole process group, so children started
//!   by the container are terminated too; when the main process exits, the
//!   supervisor SIGKILLs whatever is left of its group.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, BufReader};

use super::images::ImageResolver;
use super::steps::{read_steps, ProcessSteps, Steps};
use super::supervisor::{
    kill_group, now_ms, read_json, write_json_atomic, ContainerRecord, ExitRecord, RunningRecord,
    EXIT_FILE, RUNNING_FILE, SPEC_FILE, SUPERVISOR_LOG_FILE,
};
use super::{
    BoxFuture, ContainerId, ContainerInfo, ContainerSpec, ContainerState, ContainerStats,
    ExecRequest, ExecSession, Result, Runtime, RuntimeError,
};

/// How long `start` waits for the supervisor to report the container started.
const START_TIMEOUT_MS: u64 = 30_000;
/// How long `stop` waits after SIGKILL for the supervisor to record the exit.
const KILL_TIMEOUT_MS: u64 = 10_000;
const POLL_MS: u64 = 20;

/// Configuration of an [`ExecRuntime`].
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Where container records live; must be stable across agent restarts.
    pub state_dir: PathBuf,
    /// The keel binary (or a stand-in with the same internal modes, see
    /// [`crate::run_internal_mode`]): runs supervisors and built-in images.
    pub keel_binary: PathBuf,
    /// Local image directory; see [`super::images`].
    pub image_dir: Option<PathBuf>,
}

/// The exec runtime. See the module docs for layout and guarantees.
#[derive(Debug)]
pub struct ExecRuntime {
    config: ExecConfig,
    images: ImageResolver,
    containers_dir: PathBuf,
    /// Holds the state directory's flock for the lifetime of this instance.
    _lock: File,
}

impl ExecRuntime {
    /// Opens (creating if needed) the state directory and takes its lock.
    pub fn new(config: ExecConfig) -> Result<Self> {
        let containers_dir = config.state_dir.join("containers");
        std::fs::create_dir_all(&containers_dir)
            .map_err(|e| RuntimeError::io(format!("create {}", containers_dir.display()), e))?;
        let lock = lock_state_dir(&config.state_dir)?;
        Ok(ExecRuntime {
            images: ImageResolver::new(config.keel_binary.clone(), config.image_dir.clone()),
            config,
            containers_dir,
            _lock: lock,
        })
    }

    pub fn config(&self) -> &ExecConfig {
        &self.config
    }

    pub(crate) fn container_dir(&self, id: &ContainerId) -> Result<PathBuf> {
        let valid = !id.0.is_empty()
            && id
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !id.0.starts_with('.');
        let dir = self.containers_dir.join(&id.0);
        if valid && dir.join(SPEC_FILE).is_file() {
            Ok(dir)
        } else {
            Err(RuntimeError::NotFound(id.clone()))
        }
    }

    async fn start_container(&self, spec: &ContainerSpec) -> Result<ContainerId> {
        // Host processes cannot be put into an image's rootfs: running an
        // OCI image here would silently run host binaries instead.
        if spec.image_root.is_some() {
            return Err(RuntimeError::InvalidSpec(format!(
                "image {} is an OCI image; it needs the isolating runtime (--runtime keel, root)",
                spec.image
            )));
        }
        let mut steps = Steps::start("runtime");
        let process = self.images.resolve(spec)?;
        steps.mark("resolve image");
        let id = new_container_id(spec);
        let record = ContainerRecord {
            spec: spec.clone(),
            process,
            created_at_ms: now_ms(),
            isolation: None,
        };
        self.launch(&id, record, steps).await
    }

    /// How container `id`'s start went, step by step, in each process that
    /// took part (see [`super::steps`]); empty for a container started
    /// before steps were recorded.
    pub fn start_steps(&self, id: &ContainerId) -> Result<Vec<ProcessSteps>> {
        let dir = self.container_dir(id)?;
        read_steps(&dir).map_err(|e| RuntimeError::io(format!("read the start steps of {id}"), e))
    }

    /// The image resolver of this runtime (shared with runtimes built on it).
    pub(crate) fn images(&self) -> &ImageResolver {
        &self.images
    }

    /// Where container `id`'s record lives (the directory may not exist yet).
    pub(crate) fn new_container_dir(&self, id: &ContainerId) -> PathBuf {
        self.containers_dir.join(&id.0)
    }

    /// Writes `record` as container `id` and starts its supervisor; on
    /// failure the container directory is removed again. `steps` (the
    /// caller's, see [`super::steps`]) gets this part's steps and is
    /// appended to the container's steps file once the container runs.
    pub(crate) async fn launch(
        &self,
        id: &ContainerId,
        record: ContainerRecord,
        mut steps: Steps,
    ) -> Result<ContainerId> {
        let dir = self.containers_dir.join(&id.0);
        std::fs::create_dir_all(&dir)
            .and_then(|()| write_json_atomic(&dir.join(SPEC_FILE), &record))
            .map_err(|e| RuntimeError::io(format!("write {}", dir.display()), e))?;
        steps.mark("write spec.json");
        match self.spawn_supervisor(&dir, &mut steps).await {
            Ok(()) => {
                steps.append_to_dir(&dir);
                tracing::debug!(container = %id, pod = %record.spec.pod_name, steps_us = ?steps.record().steps, "container started");
                Ok(id.clone())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Spawns the supervisor and waits for its one-line start report.
    async fn spawn_supervisor(&self, dir: &Path, steps: &mut Steps) -> Result<()> {
        let log = File::create(dir.join(SUPERVISOR_LOG_FILE))
            .map_err(|e| RuntimeError::io("create supervisor log", e))?;
        let mut command = tokio::process::Command::new(&self.config.keel_binary);
        command
            .arg(crate::SUPERVISE_ARG)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(false);
        // SAFETY: setsid is async-signal-safe. Own session: the supervisor
        // must not receive the agent's terminal signals (Ctrl-C).
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| {
            RuntimeError::io(format!("spawn {}", self.config.keel_binary.display()), e)
        })?;
        steps.mark("spawn supervisor");
        let stdout = child.stdout.take().expect("piped stdout");
        // Reap the supervisor whenever it exits, so it never lingers as a zombie.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let read = reader.read_line(&mut line);
        let report = tokio::time::timeout(Duration::from_millis(START_TIMEOUT_MS), read).await;
        steps.mark("await supervisor report");
        match report {
            Ok(Ok(_)) => supervisor_report(line.trim_end(), dir),
            Ok(Err(e)) => Err(RuntimeError::io("read supervisor report", e)),
            Err(_) => Err(RuntimeError::StartFailed(
                "supervisor did not report in time".into(),
            )),
        }
    }

    pub(crate) fn observe(&self, dir: &Path) -> Result<ContainerState> {
        let record: ContainerRecord = read_record(dir, SPEC_FILE)?;
        let running: Option<RunningRecord> = read_opt(dir, RUNNING_FILE)?;
        let started_at_ms = running
            .as_ref()
            .map_or(record.created_at_ms, |r| r.started_at_ms);
        if let Some(exit) = read_opt::<ExitRecord>(dir, EXIT_FILE)? {
            return Ok(exited(exit, started_at_ms));
        }
        if let Some(r) = &running {
            if r.supervisor.is_alive() || r.main.is_alive() {
                return Ok(ContainerState::Running {
                    started_at: time_from_ms(started_at_ms),
                });
            }
        }
        // No record yet: a start in progress (possibly by another task or
        // an aborted caller). Declaring it lost here would write an exit
        // record the starting container could never undo.
        if running.is_none() && now_ms().saturating_sub(record.created_at_ms) < START_TIMEOUT_MS {
            return Ok(ContainerState::Running {
                started_at: time_from_ms(record.created_at_ms),
            });
        }
        // Both gone: the supervisor may have just written its record.
        if let Some(exit) = read_opt::<ExitRecord>(dir, EXIT_FILE)? {
            return Ok(exited(exit, started_at_ms));
        }
        Ok(exited(record_unknown_exit(dir)?, started_at_ms))
    }

    pub(crate) async fn stop_container(
        &self,
        id: &ContainerId,
        grace_ms: u64,
    ) -> Result<ContainerState> {
        let dir = self.container_dir(id)?;
        let state = self.observe(&dir)?;
        if !state.is_running() {
            return Ok(state);
        }
        tracing::debug!(container = %id, grace_ms, "stopping container");
        self.signal(&dir, libc::SIGTERM)?;
        if let Some(state) = self.wait_exited(&dir, grace_ms).await? {
            return Ok(state);
        }
        tracing::debug!(container = %id, "grace period over, sending SIGKILL");
        self.signal(&dir, libc::SIGKILL)?;
        match self.wait_exited(&dir, KILL_TIMEOUT_MS).await? {
            Some(state) => Ok(state),
            None => Err(RuntimeError::Other(format!(
                "container {id} survived SIGKILL"
            ))),
        }
    }

    /// Signals the container's process group while it is known to be ours.
    fn signal(&self, dir: &Path, signal: libc::c_int) -> Result<()> {
        if let Some(r) = read_opt::<RunningRecord>(dir, RUNNING_FILE)? {
            let exited = dir.join(EXIT_FILE).exists();
            if !exited && (r.supervisor.is_alive() || r.main.is_alive()) {
                kill_group(r.main.pid, signal);
            }
        }
        Ok(())
    }

    async fn wait_exited(&self, dir: &Path, timeout_ms: u64) -> Result<Option<ContainerState>> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            let state = self.observe(dir)?;
            if !state.is_running() {
                return Ok(Some(state));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    pub(crate) fn list_containers(&self) -> Result<Vec<ContainerInfo>> {
        let entries = std::fs::read_dir(&self.containers_dir)
            .map_err(|e| RuntimeError::io("list containers", e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| RuntimeError::io("list containers", e))?;
            let id = ContainerId(entry.file_name().to_string_lossy().into_owned());
            // A directory without spec.json is an aborted start: not a container.
            let Ok(dir) = self.container_dir(&id) else {
                continue;
            };
            let record: ContainerRecord = read_record(&dir, SPEC_FILE)?;
            let state = self.observe(&dir)?;
            out.push((
                record.created_at_ms,
                ContainerInfo {
                    id,
                    spec: record.spec,
                    state,
                },
            ));
        }
        out.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        Ok(out.into_iter().map(|(_, info)| info).collect())
    }

    /// `exec` in a running container: a host process with its environment
    /// and working directory (see [`super::hostexec`]).
    fn exec_in(&self, id: &ContainerId, req: &ExecRequest) -> Result<ExecSession> {
        let dir = self.container_dir(id)?;
        if !self.observe(&dir)?.is_running() {
            return Err(RuntimeError::InvalidSpec(format!(
                "container {id} is not running"
            )));
        }
        let record: ContainerRecord = read_record(&dir, SPEC_FILE)?;
        super::hostexec::spawn(&record.process, req)
    }

    /// Usage of the container's process group (see [`super::procfs::group_usage`]).
    fn container_stats(&self, id: &ContainerId) -> Result<ContainerStats> {
        let dir = self.container_dir(id)?;
        let running: Option<RunningRecord> = read_opt(&dir, RUNNING_FILE)?;
        let main = match running {
            Some(r) if !dir.join(EXIT_FILE).exists() && r.main.is_alive() => r.main,
            _ => {
                return Err(RuntimeError::InvalidSpec(format!(
                    "container {id} is not running"
                )))
            }
        };
        let usage = super::procfs::group_usage(main.pid);
        Ok(ContainerStats {
            cpu_usage_ns: usage.cpu_ns,
            memory_working_set_bytes: usage.rss_bytes,
            timestamp: SystemTime::now(),
        })
    }

    pub(crate) fn remove_container(&self, id: &ContainerId) -> Result<()> {
        let dir = self.container_dir(id)?;
        if self.observe(&dir)?.is_running() {
            return Err(RuntimeError::StillRunning(id.clone()));
        }
        std::fs::remove_dir_all(&dir).map_err(|e| RuntimeError::io(format!("remove {id}"), e))
    }
}

impl Runtime for ExecRuntime {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn start<'a>(&'a self, spec: &'a ContainerSpec) -> BoxFuture<'a, Result<ContainerId>> {
        Box::pin(self.start_container(spec))
    }

    fn state<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ContainerState>> {
        Box::pin(async move { self.observe(&self.container_dir(id)?) })
    }

    fn stop<'a>(
        &'a self,
        id: &'a ContainerId,
        grace_ms: u64,
    ) -> BoxFuture<'a, Result<ContainerState>> {
        Box::pin(self.stop_container(id, grace_ms))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ContainerInfo>>> {
        Box::pin(async move { self.list_containers() })
    }

    fn stats<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ContainerStats>> {
        Box::pin(async move { self.container_stats(id) })
    }

    fn remove<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.remove_container(id) })
    }

    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        req: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecSession>> {
        Box::pin(async move { self.exec_in(id, &req) })
    }
}

fn lock_state_dir(state_dir: &Path) -> Result<File> {
    let path = state_dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| RuntimeError::io(format!("open {}", path.display()), e))?;
    // SAFETY: flock on a valid descriptor owned by `file`.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(RuntimeError::Busy(state_dir.to_path_buf()));
    }
    Ok(file)
}

/// `<pod uid>_<container name>_<nanos hex>`: unique per start, readable in `ls`.
pub(crate) fn new_container_id(spec: &ContainerSpec) -> ContainerId {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    ContainerId(format!(
        "{}_{}_{nanos:x}",
        clean(&spec.pod_uid),
        clean(&spec.container_name)
    ))
}

fn supervisor_report(line: &str, dir: &Path) -> Result<()> {
    if line == "ok" {
        return Ok(());
    }
    if let Some(message) = line.strip_prefix("error ") {
        return Err(RuntimeError::StartFailed(message.to_string()));
    }
    let log = std::fs::read_to_string(dir.join(SUPERVISOR_LOG_FILE)).unwrap_or_default();
    Err(RuntimeError::StartFailed(format!(
        "supervisor exited without a report: {}",
        log.trim()
    )))
}

/// Records (once) that a container's outcome was lost, so every later
/// observation reports the same finish time.
fn record_unknown_exit(dir: &Path) -> Result<ExitRecord> {
    let exit = ExitRecord {
        code: 137,
        signal: None,
        reason: "ContainerStatusUnknown".into(),
        message: "supervisor and container exited without recording the exit status".into(),
        finished_at_ms: now_ms(),
    };
    write_json_atomic(&dir.join(EXIT_FILE), &exit)
        .map_err(|e| RuntimeError::io(format!("write {}", dir.display()), e))?;
    Ok(exit)
}

fn exited(exit: ExitRecord, started_at_ms: u64) -> ContainerState {
    ContainerState::Exited {
        code: exit.code,
        signal: exit.signal,
        reason: exit.reason,
        message: exit.message,
        started_at: time_from_ms(started_at_ms),
        finished_at: time_from_ms(exit.finished_at_ms),
    }
}

fn time_from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn read_opt<T: serde::de::DeserializeOwned>(dir: &Path, file: &str) -> Result<Option<T>> {
    read_json(&dir.join(file))
        .map_err(|e| RuntimeError::io(format!("read {}", dir.join(file).display()), e))
}

pub(crate) fn read_record<T: serde::de::DeserializeOwned>(dir: &Path, file: &str) -> Result<T> {
    read_opt(dir, file)?.ok_or_else(|| {
        RuntimeError::io(
            format!("read {}", dir.join(file).display()),
            std::io::ErrorKind::NotFound.into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> ExecConfig {
        ExecConfig {
            state_dir: dir.to_path_buf(),
            keel_binary: "/nonexistent/keel".into(),
            image_dir: None,
        }
    }

    #[test]
    fn second_instance_on_same_state_dir_is_busy_until_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let first = ExecRuntime::new(config(dir.path())).unwrap();
        assert!(matches!(
            ExecRuntime::new(config(dir.path())),
            Err(RuntimeError::Busy(_))
        ));
        drop(first);
        ExecRuntime::new(config(dir.path())).unwrap();
    }

    #[test]
    fn container_ids_are_path_safe_and_unique() {
        let spec = ContainerSpec {
            pod_uid: "a/b".into(),
            pod_name: "p".into(),
            pod_namespace: "n".into(),
            container_name: "../c".into(),
            image: "keel/pause".into(),
            command: vec![],
            args: vec![],
            env: vec![],
            working_dir: None,
            log_path: "/tmp/l".into(),
            image_root: None,
            resources: Default::default(),
            mounts: Vec::new(),
            security: Default::default(),
        };
        let a = new_container_id(&spec);
        assert!(!a.0.contains('/') && !a.0.starts_with('.'), "{a}");
        assert_ne!(a, new_container_id(&spec));
    }

    #[test]
    fn invalid_ids_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let rt = ExecRuntime::new(config(dir.path())).unwrap();
        for bad in ["", "..", "../x", "a/b"] {
            let id = ContainerId(bad.into());
            assert!(matches!(
                rt.container_dir(&id),
                Err(RuntimeError::NotFound(_))
            ));
        }
    }
}
