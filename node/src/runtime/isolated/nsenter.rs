//! `exec` into an isolated container: `keel __nsenter <container-dir> --
//! <command...>` joins the container's cgroups and its IPC, UTS, PID and
//! mount namespaces (those of its main process), then forks so the command
//! is inside the PID namespace, and runs it as the container's user with the
//! container's capabilities, environment and working directory. The parent
//! stays outside, waits and exits with the command's status (128 + signal
//! when killed), so the exec session sees the real exit code. On a
//! terminal the command gets a pseudo-terminal of the container's own
//! devpts (see [`super::ttyproxy`]).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::{anyhow, Context};
use nix::sched::{setns, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use super::init::drop_privileges;
use super::plan::resolve_user;
use crate::runtime::supervisor::{
    read_json, ContainerRecord, RunningRecord, RUNNING_FILE, SPEC_FILE,
};

/// Entry point of `keel __nsenter <dir> -- <command...>`; never returns.
pub fn run_nsenter(dir: &Path, command: &[String]) -> ! {
    match enter_and_run(dir, command) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("keel exec: {e:#}");
            std::process::exit(126)
        }
    }
}

fn enter_and_run(dir: &Path, command: &[String]) -> anyhow::Result<i32> {
    let record: ContainerRecord =
        read_json(&dir.join(SPEC_FILE))?.ok_or_else(|| anyhow!("missing {SPEC_FILE}"))?;
    let iso = record
        .isolation
        .as_ref()
        .ok_or_else(|| anyhow!("not an isolated container"))?;
    let running: RunningRecord =
        read_json(&dir.join(RUNNING_FILE))?.ok_or_else(|| anyhow!("container is not running"))?;
    if !running.main.is_alive() {
        return Err(anyhow!("container is not running"));
    }
    let pid = running.main.pid;
    // Open every namespace first: after joining the mount namespace the
    // host's /proc is gone.
    let mut namespaces = Vec::new();
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{pid}/ns/{name}");
        namespaces.push((
            File::open(&path).with_context(|| format!("open {path}"))?,
            flag,
        ));
    }
    // The pid could have been reused between the check and the opens.
    if !running.main.is_alive() {
        return Err(anyhow!("container is not running"));
    }
    for procs in iso.cgroup.procs_files() {
        std::fs::write(&procs, "0").with_context(|| format!("join {}", procs.display()))?;
    }
    for (file, flag) in &namespaces {
        setns(file, *flag).with_context(|| format!("setns {flag:?}"))?;
    }
    drop(namespaces);
    // SAFETY: isatty has no preconditions.
    if unsafe { libc::isatty(0) } == 1 {
        return super::ttyproxy::run(|| run_child(&record, iso, command));
    }
    // SAFETY: this process is single-threaded (an internal mode started by
    // exec), so the child may run arbitrary code.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            let err = run_child(&record, iso, command);
            eprintln!("keel exec: {err:#}");
            std::process::exit(127)
        }
        ForkResult::Parent { child } => {
            // The session's signals target the whole process group; the
            // child is in it, so this process only has to wait.
            loop {
                match waitpid(child, None).context("waitpid")? {
                    WaitStatus::Exited(_, code) => return Ok(code),
                    WaitStatus::Signaled(_, sig, _) => return Ok(128 + sig as i32),
                    _ => continue,
                }
            }
        }
    }
}

pub(super) fn run_child(
    record: &ContainerRecord,
    iso: &super::plan::IsolationRecord,
    command: &[String],
) -> anyhow::Error {
    let Some(program) = command.first() else {
        return anyhow!("exec needs a command");
    };
    let (uid, gid) = match resolve_user(&iso.user) {
        Ok(ids) => ids,
        Err(e) => return anyhow!(e),
    };
    if let Err(e) = drop_privileges(iso, uid, gid) {
        return e;
    }
    let process = &record.process;
    let workdir = if process.working_dir.is_dir() {
        process.working_dir.as_path()
    } else {
        Path::new("/")
    };
    let err = std::process::Command::new(program)
        .args(&command[1..])
        .env_clear()
        .envs(process.env.iter().map(|(k, v)| (k, v)))
        .current_dir(workdir)
        .exec();
    anyhow!("exec {program:?}: {err}")
}
