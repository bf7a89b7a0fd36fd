//! The container supervisor: a tiny mode of the keel binary
//! (`keel __supervise <container-dir>`) that runs one container process and
//! records its outcome on disk.
//!
//! Why a separate process: the container's exit status can be read only by its
//! parent. With a supervisor as parent, the exit code survives an agent restart
//! (the supervisor lives in its own session and outlives the agent), and a new
//! runtime instance reads it from `exit.json`.
//!
//! Protocol with the runtime (files in the container directory):
//! - `spec.json` ([`ContainerRecord`]) is written by the runtime before spawning;
//! - `running.json` ([`RunningRecord`]) is written by the supervisor once the
//!   container process exists; then it prints `ok` on stdout (or `error <msg>`
//!   if the process could not be started, after writing `exit.json` with reason
//!   `StartError`) and stops using stdout;
//! - `exit.json` ([`ExitRecord`]) is written once the container process exited,
//!   after every other process of its process group was SIGKILLed (a container
//!   ends with its main process, as with Docker).
//!
//! Every file is written atomically (temp file + rename).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::images::ProcessSpec;
use super::isolated::plan::IsolationRecord;
use super::procfs::ProcessIdentity;
use super::steps::Steps;
use super::ContainerSpec;

pub(crate) const SPEC_FILE: &str = "spec.json";
pub(crate) const RUNNING_FILE: &str = "running.json";
pub(crate) const EXIT_FILE: &str = "exit.json";
pub(crate) const SUPERVISOR_LOG_FILE: &str = "supervisor.log";

/// `spec.json`: what was asked and what is executed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContainerRecord {
    pub spec: ContainerSpec,
    pub process: ProcessSpec,
    pub created_at_ms: u64,
    /// Set by the isolating runtime: the supervisor then runs the process
    /// through the container init in a new PID namespace (see
    /// [`super::isolated`]); `process` paths are then container paths.
    #[serde(default)]
    pub isolation: Option<IsolationRecord>,
}

/// `running.json`: who to watch and signal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunningRecord {
    pub supervisor: ProcessIdentity,
    /// The container's main process; also the id of its process group.
    pub main: ProcessIdentity,
    pub started_at_ms: u64,
}

/// `exit.json`: the final outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: String,
    pub finished_at_ms: u64,
}

impl ExitRecord {
    pub(crate) fn from_status(status: ExitStatus) -> Self {
        let (code, signal) = match (status.code(), status.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            (None, None) => (-1, None),
        };
        let reason = if code == 0 { "Completed" } else { "Error" };
        ExitRecord {
            code,
            signal,
            reason: reason.to_string(),
            message: String::new(),
            finished_at_ms: now_ms(),
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(value)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads a JSON file; `Ok(None)` if it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Entry point of supervisor mode; never returns. The cli dispatches
/// `keel __supervise <dir>` here (see [`crate::run_internal_mode`]).
pub fn run_supervisor(container_dir: &Path) -> ! {
    let code = match supervise(container_dir) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("keel supervisor {}: {e:#}", container_dir.display());
            1
        }
    };
    std::process::exit(code)
}

fn supervise(dir: &Path) -> anyhow::Result<()> {
    // The runtime signals only the container's process group, but a terminal or
    // a careless `kill` must not take the supervisor down with the container.
    set_termination_signals(libc::SIG_IGN);
    let mut steps = Steps::start("supervisor");
    let record: ContainerRecord =
        read_json(&dir.join(SPEC_FILE))?.ok_or_else(|| anyhow::anyhow!("missing {SPEC_FILE}"))?;
    steps.mark("read spec.json");
    let started_at_ms = now_ms();
    let spawned = match &record.isolation {
        Some(iso) => {
            super::isolated::spawn_isolated(dir, iso, &record.process.log_path, &mut steps)
        }
        None => {
            let spawned = spawn_container(&record.process);
            steps.mark("spawn container process");
            spawned
        }
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(message) => return report_start_error(dir, message),
    };
    let main_pid = child.id() as i32;
    let running = RunningRecord {
        supervisor: own_identity()?,
        main: ProcessIdentity::of(main_pid)
            .ok_or_else(|| anyhow::anyhow!("container process {main_pid} vanished"))?,
        started_at_ms,
    };
    write_json_atomic(&dir.join(RUNNING_FILE), &running)?;
    steps.mark("write running.json");
    steps.append_to_dir(dir);
    report_to_runtime("ok");
    let status = child.wait()?;
    kill_group(main_pid, libc::SIGKILL);
    let mut exit = ExitRecord::from_status(status);
    if let Some(iso) = &record.isolation {
        super::isolated::classify_exit(iso, &mut exit);
    }
    write_json_atomic(&dir.join(EXIT_FILE), &exit)?;
    Ok(())
}

fn report_start_error(dir: &Path, message: String) -> anyhow::Result<()> {
    let record = ExitRecord {
        code: 128,
        signal: None,
        reason: "StartError".to_string(),
        message: message.clone(),
        finished_at_ms: now_ms(),
    };
    write_json_atomic(&dir.join(EXIT_FILE), &record)?;
    report_to_runtime(&format!("error {}", message.replace('\n', " ")));
    Ok(())
}

fn own_identity() -> anyhow::Result<ProcessIdentity> {
    let pid = std::process::id() as i32;
    ProcessIdentity::of(pid).ok_or_else(|| anyhow::anyhow!("cannot read /proc/{pid}/stat"))
}

/// Tells the waiting runtime how the start went, then points stdout at
/// /dev/null so a later agent exit (closed pipe) cannot disturb the supervisor.
fn report_to_runtime(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 on two valid descriptors; fd 1 stays valid.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

fn spawn_container(process: &ProcessSpec) -> Result<std::process::Child, String> {
    let log = open_log(&process.log_path)
        .map_err(|e| format!("open log {}: {e}", process.log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let mut command = Command::new(&process.program);
    command
        .args(&process.args)
        .env_clear()
        .envs(process.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&process.working_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0);
    // SAFETY: only async-signal-safe calls (signal) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            set_termination_signals(libc::SIG_DFL);
            Ok(())
        });
    }
    command.spawn().map_err(|e| {
        format!(
            "exec {:?} in {}: {e}",
            process.program,
            process.working_dir.display()
        )
    })
}

pub(crate) fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Sets SIGTERM, SIGINT and SIGHUP to `disposition`. Async-signal-safe.
pub(crate) fn set_termination_signals(disposition: libc::sighandler_t) {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installing SIG_IGN/SIG_DFL has no memory-safety requirements.
        unsafe { libc::signal(sig, disposition) };
    }
}

/// Sends `signal` to process group `pgid`; a group that no longer exists is fine.
pub(crate) fn kill_group(pgid: i32, signal: libc::c_int) {
    if pgid > 1 {
        // SAFETY: kill has no memory-safety requirements; negative pid = group.
        unsafe { libc::kill(-pgid, signal) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_maps_like_kubernetes() {
        let ok = ExitRecord::from_status(ExitStatus::from_raw(0));
        assert_eq!((ok.code, ok.reason.as_str()), (0, "Completed"));
        let three = ExitRecord::from_status(ExitStatus::from_raw(3 << 8));
        assert_eq!((three.code, three.reason.as_str()), (3, "Error"));
        let killed = ExitRecord::from_status(ExitStatus::from_raw(libc::SIGKILL));
        assert_eq!((killed.code, killed.signal), (137, Some(9)));
    }

    #[test]
    fn json_round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        assert!(read_json::<ExitRecord>(&path).unwrap().is_none());
        let rec = ExitRecord::from_status(ExitStatus::from_raw(0));
        write_json_atomic(&path, &rec).unwrap();
        let back: ExitRecord = read_json(&path).unwrap().unwrap();
        assert_eq!(back.code, 0);
    }
}
