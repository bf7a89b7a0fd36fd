//! `AgentService.Exec` and `AgentService.PortForward`: the agent's side of
//! `kubectl exec`, `attach`, `cp` and `port-forward`. The API server bridges
//! the client's WebSocket (or SPDY) streams to these calls.
//!
//! Every check that can fail happens before the response stream starts, so
//! the API server can still answer the client's upgrade with an HTTP
//! `Status`: NOT_FOUND for a pod or container not on this node,
//! FAILED_PRECONDITION for a container that is not running (or a pod
//! without an IP), INVALID_ARGUMENT for a malformed first message.
//!
//! Attach, in the exec runtime: the supervisor owns the main process' stdio
//! and writes stdout and stderr to the log file, so attach follows that file
//! from its current end (both streams interleaved, as `stdout`) until the
//! container exits, then reports its exit code. Attaching stdin is not
//! supported (the process' stdin is /dev/null).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use keel_proto::keelnode::exec_input::Input;
use keel_proto::keelnode::exec_output::Output;
use keel_proto::keelnode::port_forward_input::Input as PfInput;
use keel_proto::keelnode::{
    ExecExit, ExecInput, ExecOutput, ExecStart, PortForwardInput, PortForwardOutput,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::logs::PodIndex;
use crate::runtime::{self, ContainerId, ContainerState, Runtime, RuntimeError, TermSize};

pub type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecOutput, Status>> + Send>>;
pub type PortForwardStream = Pin<Box<dyn Stream<Item = Result<PortForwardOutput, Status>> + Send>>;

const ATTACH_POLL: Duration = Duration::from_millis(200);
const READ_CHUNK: usize = 32 * 1024;

/// Serves one `Exec` call; see the module docs.
pub async fn exec(
    index: &PodIndex,
    runtime: Arc<dyn Runtime>,
    mut input: Streaming<ExecInput>,
) -> Result<ExecStream, Status> {
    let start = match input.message().await? {
        Some(ExecInput {
            input: Some(Input::Start(start)),
        }) => start,
        _ => {
            return Err(Status::invalid_argument(
                "the first message of an exec must be `start`",
            ))
        }
    };
    let (uid, container) = index.container(&start.namespace, &start.pod, &start.container)?;
    let (id, log_path) = running_container(runtime.as_ref(), &uid, &container, &start.pod).await?;
    if start.attach {
        return attach(runtime, id, log_path, &start);
    }
    if start.command.is_empty() {
        return Err(Status::invalid_argument(
            "exec needs a command (the `command` query parameter)",
        ));
    }
    let req = runtime::ExecRequest {
        command: start.command.clone(),
        stdin: start.stdin,
        tty: start.tty,
        size: start.size.and_then(term_size),
    };
    let session = runtime
        .exec(&id, req)
        .await
        .map_err(|e| runtime_status(&container, e))?;
    tokio::spawn(forward_input(input, session.input));
    let (stdout, stderr) = (start.stdout, start.stderr);
    let output = ReceiverStream::new(session.output).filter_map(move |o| {
        let out = match o {
            runtime::ExecOutput::Stdout(b) => stdout.then_some(Output::Stdout(b)),
            runtime::ExecOutput::Stderr(b) => stderr.then_some(Output::Stderr(b)),
            runtime::ExecOutput::Exit(code) => Some(Output::Exit(ExecExit {
                code,
                message: String::new(),
            })),
        };
        futures::future::ready(out.map(|o| Ok(ExecOutput { output: Some(o) })))
    });
    Ok(Box::pin(output))
}

/// Client input → the session, until the client's stream ends (then the
/// process reads EOF).
async fn forward_input(mut input: Streaming<ExecInput>, to: mpsc::Sender<runtime::ExecInput>) {
    while let Ok(Some(msg)) = input.message().await {
        let item = match msg.input {
            Some(Input::Stdin(b)) => runtime::ExecInput::Stdin(b),
            Some(Input::Resize(size)) => match term_size(size) {
                Some(s) => runtime::ExecInput::Resize(s),
                None => continue,
            },
            Some(Input::CloseStdin(true)) => runtime::ExecInput::CloseStdin,
            _ => continue,
        };
        if to.send(item).await.is_err() {
            return;
        }
    }
}

fn term_size(s: keel_proto::keelnode::TerminalSize) -> Option<TermSize> {
    let width = u16::try_from(s.width).ok().filter(|w| *w > 0)?;
    let height = u16::try_from(s.height).ok().filter(|h| *h > 0)?;
    Some(TermSize { width, height })
}

/// The running instance of a pod's container, and its log file.
async fn running_container(
    runtime: &dyn Runtime,
    uid: &str,
    container: &str,
    pod: &str,
) -> Result<(ContainerId, PathBuf), Status> {
    let list = runtime
        .list()
        .await
        .map_err(|e| Status::unavailable(format!("list containers: {e}")))?;
    list.into_iter()
        .rfind(|c| {
            c.spec.pod_uid == uid && c.spec.container_name == container && c.state.is_running()
        })
        .map(|c| (c.id, c.spec.log_path))
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "container {container:?} in pod {pod:?} is not running"
            ))
        })
}

fn runtime_status(container: &str, e: RuntimeError) -> Status {
    match e {
        RuntimeError::NotFound(_) | RuntimeError::InvalidSpec(_) => {
            Status::failed_precondition(format!("container {container:?} is not running: {e}"))
        }
        RuntimeError::Unsupported(m) => Status::unimplemented(m),
        RuntimeError::StartFailed(m) => Status::internal(format!(
            "error executing command in container {container:?}: {m}"
        )),
        other => Status::internal(other.to_string()),
    }
}

/// `kubectl attach`: follows the log from its end; see the module docs.
fn attach(
    runtime: Arc<dyn Runtime>,
    id: ContainerId,
    log_path: PathBuf,
    start: &ExecStart,
) -> Result<ExecStream, Status> {
    if start.stdin {
        return Err(Status::failed_precondition(
            "attaching stdin is not supported: the container's stdin is /dev/null in keel's exec runtime",
        ));
    }
    let (tx, rx) = mpsc::channel(16);
    let offset = std::fs::metadata(&log_path).map_or(0, |m| m.len());
    let wanted = start.stdout || start.stderr;
    tokio::spawn(async move {
        let code = follow(&log_path, offset, wanted, runtime.as_ref(), &id, &tx).await;
        let exit = Output::Exit(ExecExit {
            code,
            message: String::new(),
        });
        let _ = tx.send(Ok(ExecOutput { output: Some(exit) })).await;
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Sends what is appended to `path` until the container exits; returns
/// its exit code.
async fn follow(
    path: &Path,
    mut offset: u64,
    wanted: bool,
    runtime: &dyn Runtime,
    id: &ContainerId,
    tx: &mpsc::Sender<Result<ExecOutput, Status>>,
) -> i32 {
    loop {
        let state = runtime.state(id).await;
        let new = read_from(path, offset).await;
        offset += new.len() as u64;
        if wanted && !new.is_empty() {
            let out = ExecOutput {
                output: Some(Output::Stdout(new)),
            };
            if tx.send(Ok(out)).await.is_err() {
                return 0;
            }
        }
        match state {
            Ok(ContainerState::Running { .. }) => {}
            Ok(s) => return s.exit_code().unwrap_or(0),
            Err(_) => return 137,
        }
        if tx.is_closed() {
            return 0;
        }
        tokio::time::sleep(ATTACH_POLL).await;
    }
}

async fn read_from(path: &Path, offset: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Ok(mut f) = tokio::fs::File::open(path).await {
        if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
            let _ = f.read_to_end(&mut buf).await;
        }
    }
    buf
}

/// Serves one `PortForward` call: a TCP connection to the pod's IP and port
/// (the node's address for hostNetwork pods), spliced with the stream.
pub async fn port_forward(
    index: &PodIndex,
    mut input: Streaming<PortForwardInput>,
) -> Result<PortForwardStream, Status> {
    let start = match input.message().await? {
        Some(PortForwardInput {
            input: Some(PfInput::Start(start)),
        }) => start,
        _ => {
            return Err(Status::invalid_argument(
                "the first message of a port-forward must be `start`",
            ))
        }
    };
    let port = u16::try_from(start.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            Status::invalid_argument(format!("port {} is not in 1-65535", start.port))
        })?;
    let entry = index.pod(&start.namespace, &start.pod)?;
    let ip: std::net::IpAddr = entry
        .ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| {
            Status::failed_precondition(format!("pod {:?} has no IP address yet", start.pod))
        })?;
    let sock = tokio::net::TcpStream::connect((ip, port))
        .await
        .map_err(|e| {
            Status::unavailable(format!(
                "error forwarding port {port} to pod {:?}, uid {}: connect {ip}:{port}: {e}",
                start.pod, entry.uid
            ))
        })?;
    let (mut read, mut write) = sock.into_split();
    tokio::spawn(async move {
        while let Ok(Some(msg)) = input.message().await {
            match msg.input {
                Some(PfInput::Data(b)) if write.write_all(&b).await.is_err() => return,
                Some(PfInput::CloseWrite(true)) => break,
                _ => {}
            }
        }
        let _ = write.shutdown().await;
    });
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let out = PortForwardOutput {
                        data: buf[..n].to_vec(),
                    };
                    if tx.send(Ok(out)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}
