//! `exec` for the docker runtime: Docker's exec API (create, start
//! attached, resize, inspect for the exit code), behind the same
//! [`ExecSession`] channels as the exec runtime.
//!
//! Limit: Docker has no call to kill an exec'd process, so when the client
//! goes away the attached connection is closed (the process gets EOF on
//! stdin and a closed terminal with a TTY) rather than killed.

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::ResizeExecOptions;
use bollard::Docker;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::session::{ExecInput, ExecOutput, ExecRequest, ExecSession, TermSize, SESSION_QUEUE};
use super::{ContainerId, Result, RuntimeError};

/// Starts `req.command` in container `id`.
pub(crate) async fn exec(
    docker: &Docker,
    id: &ContainerId,
    req: ExecRequest,
) -> Result<ExecSession> {
    let fail = |what: &str, e: bollard::errors::Error| {
        let msg = super::docker::message_of(&e);
        match super::docker::status_of(&e) {
            Some(404) => RuntimeError::NotFound(id.clone()),
            Some(409) => RuntimeError::InvalidSpec(format!("container {id} is not running: {msg}")),
            _ => RuntimeError::Other(format!("docker exec {what} in {id}: {msg}")),
        }
    };
    let options = CreateExecOptions::<String> {
        attach_stdin: Some(req.stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(req.tty),
        cmd: Some(req.command.clone()),
        ..Default::default()
    };
    let exec_id = docker
        .create_exec(&id.0, options)
        .await
        .map_err(|e| fail("create", e))?
        .id;
    let start = StartExecOptions {
        detach: false,
        tty: req.tty,
        output_capacity: None,
    };
    let (output, mut input) = match docker
        .start_exec(&exec_id, Some(start))
        .await
        .map_err(|e| fail("start", e))?
    {
        StartExecResults::Attached { output, input } => (output, input),
        StartExecResults::Detached => {
            return Err(RuntimeError::Other(
                "docker started the exec detached".into(),
            ))
        }
    };
    if let Some(size) = req.size {
        resize(docker, &exec_id, size).await;
    }
    let (in_tx, mut in_rx) = mpsc::channel(SESSION_QUEUE);
    let (out_tx, out_rx) = mpsc::channel(SESSION_QUEUE);
    let d = docker.clone();
    let eid = exec_id.clone();
    tokio::spawn(async move {
        let mut open = true;
        while let Some(msg) = in_rx.recv().await {
            match msg {
                ExecInput::Stdin(b) if open => {
                    open = input.write_all(&b).await.is_ok() && input.flush().await.is_ok();
                }
                ExecInput::Stdin(_) => {}
                ExecInput::CloseStdin => {
                    let _ = input.shutdown().await;
                    open = false;
                }
                ExecInput::Resize(size) => resize(&d, &eid, size).await,
            }
        }
        let _ = input.shutdown().await;
    });
    let d = docker.clone();
    tokio::spawn(async move {
        let mut output = output;
        while let Some(item) = output.next().await {
            let out = match item {
                Ok(bollard::container::LogOutput::StdErr { message }) => {
                    ExecOutput::Stderr(message.to_vec())
                }
                Ok(bollard::container::LogOutput::StdOut { message })
                | Ok(bollard::container::LogOutput::Console { message }) => {
                    ExecOutput::Stdout(message.to_vec())
                }
                Ok(_) => continue,
                Err(_) => break,
            };
            if out_tx.send(out).await.is_err() {
                return;
            }
        }
        let _ = out_tx
            .send(ExecOutput::Exit(exit_code(&d, &exec_id).await))
            .await;
    });
    Ok(ExecSession {
        input: in_tx,
        output: out_rx,
    })
}

/// The exit code once Docker has recorded it (the output can end a moment
/// before the exec is marked finished); -1 if it never says.
async fn exit_code(docker: &Docker, exec_id: &str) -> i32 {
    for _ in 0..100 {
        match docker.inspect_exec(exec_id).await {
            Ok(r) if r.running != Some(true) => {
                return r
                    .exit_code
                    .and_then(|c| i32::try_from(c).ok())
                    .unwrap_or(-1)
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            Err(_) => return -1,
        }
    }
    -1
}

async fn resize(docker: &Docker, exec_id: &str, size: TermSize) {
    let options = ResizeExecOptions {
        h: i32::from(size.height),
        w: i32::from(size.width),
    };
    if let Err(e) = docker.resize_exec(exec_id, options).await {
        tracing::debug!(exec = exec_id, error = %e, "docker exec resize failed");
    }
}
