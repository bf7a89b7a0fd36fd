//! `exec` for the exec runtime: a host process with the container's
//! environment and working directory (the runtime has no namespaces or
//! cgroups to enter yet, and containers run as the agent's user, so the
//! exec'd process does too).
//!
//! Without a TTY the process gets pipes (stdin only when asked) in its own
//! process group; with one it gets a fresh pseudo-terminal (`openpty`) as
//! its controlling terminal in a new session, and `Resize` is `TIOCSWINSZ`
//! on the master. Either way the process group is SIGKILLed when the client
//! goes away (the output receiver is dropped).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::images::ProcessSpec;
use super::session::{ExecInput, ExecOutput, ExecRequest, ExecSession, TermSize, SESSION_QUEUE};
use super::supervisor::kill_group;
use super::{Result, RuntimeError};

const READ_CHUNK: usize = 32 * 1024;
/// ^D: what ends input on a terminal in canonical mode.
const TTY_EOF: u8 = 0x04;

/// Starts `req.command` as described in the module docs.
pub(crate) fn spawn(process: &ProcessSpec, req: &ExecRequest) -> Result<ExecSession> {
    let Some(program) = req.command.first() else {
        return Err(RuntimeError::InvalidSpec("exec needs a command".into()));
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(&req.command[1..])
        .env_clear()
        .envs(process.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&process.working_dir);
    spawn_command(cmd, program, req)
}

/// Runs a prepared `cmd` as the exec session's process (stdio, tty, process
/// group and cleanup as described in the module docs). `program` names it
/// in errors. Used by runtimes that wrap the command (e.g. to enter
/// namespaces first).
pub(crate) fn spawn_command(
    cmd: std::process::Command,
    program: &str,
    req: &ExecRequest,
) -> Result<ExecSession> {
    let start_failed =
        |e: std::io::Error| RuntimeError::StartFailed(format!("exec {program:?}: {e}"));
    match req.tty {
        false => spawn_piped(cmd, req.stdin).map_err(start_failed),
        true => spawn_tty(cmd, req.size).map_err(start_failed),
    }
}

fn spawn_piped(cmd: std::process::Command, stdin: bool) -> std::io::Result<ExecSession> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pgid = child.id().map_or(0, |p| p as i32);
    let (in_tx, in_rx) = mpsc::channel(SESSION_QUEUE);
    let (out_tx, out_rx) = mpsc::channel(SESSION_QUEUE);
    tokio::spawn(feed_stdin(in_rx, child.stdin.take(), None));
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let exited = {
            let output = async {
                tokio::join!(
                    pump(stdout, &out_tx, ExecOutput::Stdout),
                    pump(stderr, &out_tx, ExecOutput::Stderr)
                );
                child.wait().await
            };
            tokio::select! {
                status = output => Some(status),
                () = out_tx.closed() => None,
            }
        };
        finish(exited, child, pgid, &out_tx).await;
    });
    Ok(ExecSession {
        input: in_tx,
        output: out_rx,
    })
}

fn spawn_tty(
    mut cmd: std::process::Command,
    size: Option<TermSize>,
) -> std::io::Result<ExecSession> {
    let winsize = size.map(winsize);
    let pty = nix::pty::openpty(winsize.as_ref(), None).map_err(std::io::Error::from)?;
    cmd.stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave));
    // SAFETY: setsid and ioctl are async-signal-safe. A new session makes
    // the pty the controlling terminal (job control, ^C) and the process
    // the leader of its own group.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn()?;
    // The slave's copies in `cmd` must go, or the master never sees EOF.
    drop(cmd);
    let pgid = child.id().map_or(0, |p| p as i32);
    let master: OwnedFd = pty.master;
    let reader = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
    let writer = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
    let (in_tx, in_rx) = mpsc::channel(SESSION_QUEUE);
    let (out_tx, out_rx) = mpsc::channel(SESSION_QUEUE);
    tokio::spawn(feed_stdin(in_rx, Some(writer), Some(master)));
    tokio::spawn(async move {
        let exited = {
            let output = async {
                pump(Some(reader), &out_tx, ExecOutput::Stdout).await;
                child.wait().await
            };
            tokio::select! {
                status = output => Some(status),
                () = out_tx.closed() => None,
            }
        };
        finish(exited, child, pgid, &out_tx).await;
    });
    Ok(ExecSession {
        input: in_tx,
        output: out_rx,
    })
}

/// Reports the exit, or (the client went away) kills the process group
/// and reaps the process.
async fn finish(
    exited: Option<std::io::Result<ExitStatus>>,
    mut child: tokio::process::Child,
    pgid: i32,
    out: &mpsc::Sender<ExecOutput>,
) {
    match exited {
        Some(status) => {
            let _ = out.send(ExecOutput::Exit(exit_code(status))).await;
        }
        None => {
            kill_group(pgid, libc::SIGKILL);
            let _ = child.wait().await;
        }
    }
}

/// Applies the session's input until its sender is dropped. `tty` is the
/// pty master, for resizes; on a tty, end of input is ^D.
async fn feed_stdin<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<ExecInput>,
    mut stdin: Option<W>,
    tty: Option<OwnedFd>,
) {
    while let Some(msg) = rx.recv().await {
        match msg {
            ExecInput::Stdin(bytes) => {
                if let Some(w) = stdin.as_mut() {
                    let ok = w.write_all(&bytes).await.is_ok() && w.flush().await.is_ok();
                    if !ok {
                        stdin = None;
                    }
                }
            }
            ExecInput::CloseStdin => {
                if let (Some(w), true) = (stdin.as_mut(), tty.is_some()) {
                    let _ = w.write_all(&[TTY_EOF]).await;
                    let _ = w.flush().await;
                }
                stdin = None;
            }
            ExecInput::Resize(size) => {
                if let Some(fd) = &tty {
                    resize(fd, size);
                }
            }
        }
    }
}

/// Copies `from` into the channel as `wrap(bytes)` until EOF, an error
/// (a pty master reads EIO once the terminal is gone) or a closed channel.
async fn pump<R: AsyncRead + Unpin>(
    from: Option<R>,
    to: &mpsc::Sender<ExecOutput>,
    wrap: fn(Vec<u8>) -> ExecOutput,
) {
    let Some(mut from) = from else { return };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.send(wrap(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn winsize(size: TermSize) -> libc::winsize {
    libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// TIOCSWINSZ on the master; the kernel sends SIGWINCH to the foreground
/// group. A failure (terminal gone) is not worth reporting.
fn resize(master: &OwnedFd, size: TermSize) {
    let ws = winsize(size);
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the fd is open.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

fn exit_code(status: std::io::Result<ExitStatus>) -> i32 {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => -1,
        },
        Err(_) => -1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process() -> ProcessSpec {
        ProcessSpec {
            program: "unused".into(),
            args: vec![],
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("GREETING".into(), "hi".into()),
            ],
            working_dir: "/tmp".into(),
            log_path: "/dev/null".into(),
        }
    }

    fn req(cmd: &[&str], stdin: bool, tty: bool) -> ExecRequest {
        ExecRequest {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            stdin,
            tty,
            size: tty.then_some(TermSize {
                width: 100,
                height: 40,
            }),
        }
    }

    /// Collects (stdout, stderr, exit code).
    async fn collect(mut s: ExecSession) -> (String, String, i32) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match s.output.recv().await.expect("an exit before the end") {
                ExecOutput::Stdout(b) => out.extend(b),
                ExecOutput::Stderr(b) => err.extend(b),
                ExecOutput::Exit(code) => {
                    assert!(s.output.recv().await.is_none(), "nothing after exit");
                    return (
                        String::from_utf8_lossy(&out).into(),
                        String::from_utf8_lossy(&err).into(),
                        code,
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn pipes_env_cwd_and_exit_code() {
        let r = req(
            &["sh", "-c", "echo $GREETING; pwd; echo oops >&2; exit 3"],
            false,
            false,
        );
        let (out, err, code) = collect(spawn(&process(), &r).unwrap()).await;
        assert_eq!(out, "hi\n/tmp\n");
        assert_eq!(err, "oops\n");
        assert_eq!(code, 3);
    }

    #[tokio::test]
    async fn stdin_then_eof() {
        let s = spawn(&process(), &req(&["cat"], true, false)).unwrap();
        s.input
            .send(ExecInput::Stdin(b"abc\n".to_vec()))
            .await
            .unwrap();
        s.input.send(ExecInput::CloseStdin).await.unwrap();
        let (out, _, code) = collect(s).await;
        assert_eq!((out.as_str(), code), ("abc\n", 0));
    }

    #[tokio::test]
    async fn tty_has_a_terminal_of_the_asked_size_and_resizes() {
        let mut s = spawn(
            &process(),
            &req(
                &["sh", "-c", "tty; stty size; read x; stty size"],
                true,
                true,
            ),
        )
        .unwrap();
        // Resize only once the first size was printed.
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("40 100") {
            match s.output.recv().await {
                Some(ExecOutput::Stdout(b)) => seen.extend(b),
                other => panic!("{other:?} before the first size; got {seen:?}"),
            }
        }
        s.input
            .send(ExecInput::Resize(TermSize {
                width: 120,
                height: 50,
            }))
            .await
            .unwrap();
        s.input
            .send(ExecInput::Stdin(b"go\n".to_vec()))
            .await
            .unwrap();
        let (out, err, code) = collect(s).await;
        let first = String::from_utf8_lossy(&seen);
        assert!(first.contains("/dev/pts/"), "{first:?}");
        assert!(out.contains("50 120"), "{out:?}");
        assert_eq!((err.as_str(), code), ("", 0));
    }

    #[tokio::test]
    async fn missing_program_fails_to_start() {
        let e = spawn(&process(), &req(&["/no/such/program"], false, false)).unwrap_err();
        assert!(matches!(e, RuntimeError::StartFailed(_)), "{e}");
    }

    #[tokio::test]
    async fn dropping_the_output_kills_the_process() {
        let s = spawn(
            &process(),
            &req(&["sh", "-c", "echo $$; exec sleep 600"], false, false),
        )
        .unwrap();
        let mut output = s.output;
        let pid: i32 = match output.recv().await.unwrap() {
            ExecOutput::Stdout(b) => String::from_utf8_lossy(&b).trim().parse().unwrap(),
            other => panic!("{other:?}"),
        };
        drop(output);
        let gone = async {
            // SAFETY: signal 0 only checks existence.
            while unsafe { libc::kill(pid, 0) } == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), gone)
            .await
            .expect("the process is killed");
    }
}
