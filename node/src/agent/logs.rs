//! The agent's log service (`AgentService.Logs`), which the API server
//! dials for `kubectl logs`, and the index of pods the whole `AgentService`
//! shares (its exec and port-forward calls live in [`super::exec`], its
//! resource metrics in [`super::metrics`]).
//!
//! Logs are the files `pods/<uid>/logs/<container>/<restartCount>.log`: the
//! current instance is the highest number, `previous` the one below it.
//! Supported: `tail_lines`, `limit_bytes`, `follow` (the file is polled every
//! 200 ms until the instance exits or the client goes away). `timestamps`
//! and `since_seconds` are ignored: the exec runtime stores plain bytes
//! without per-line times.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use k8s_openapi::api::core::v1::Pod;
use keel_proto::keelnode::agent_service_server::{AgentService, AgentServiceServer};
use keel_proto::keelnode::{
    ExecInput, LogChunk, LogsRequest, PortForwardInput, StatsRequest, StatsResponse,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::runtime::Runtime;

const POLL: Duration = Duration::from_millis(200);
const CHUNK: usize = 64 * 1024;

/// (namespace, name) → what the agent serves for that pod.
type Entries = HashMap<(String, String), PodEntry>;

/// One pod, as the agent's streaming services need it.
#[derive(Debug, Clone)]
pub struct PodEntry {
    pub uid: String,
    /// Init containers, then app containers.
    pub containers: Vec<String>,
    /// `status.podIP` once reported (the node's IP for hostNetwork pods).
    pub ip: Option<String>,
}

/// Pods known to the agent, for finding their log files.
pub struct PodIndex {
    root: PathBuf,
    pods: Mutex<Entries>,
}

impl PodIndex {
    pub fn new(root: PathBuf) -> Self {
        PodIndex {
            root,
            pods: Mutex::new(HashMap::new()),
        }
    }

    pub fn upsert(&self, pod: &Pod) {
        let m = &pod.metadata;
        let key = (
            m.namespace.clone().unwrap_or_else(|| "default".into()),
            m.name.clone().unwrap_or_default(),
        );
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .chain(s.containers.iter())
            })
            .map(|c| c.name.clone())
            .collect();
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty());
        if let (Ok(mut pods), Some(uid)) = (self.pods.lock(), m.uid.clone()) {
            pods.insert(
                key,
                PodEntry {
                    uid,
                    containers,
                    ip,
                },
            );
        }
    }

    pub fn remove(&self, uid: &str) {
        if let Ok(mut pods) = self.pods.lock() {
            pods.retain(|_, e| e.uid != uid);
        }
    }

    /// The pod `namespace/name`, or NOT_FOUND.
    pub fn pod(&self, namespace: &str, name: &str) -> Result<PodEntry, Status> {
        self.pods
            .lock()
            .map_err(|_| Status::internal("index lock poisoned"))?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "pod {name:?} in namespace {namespace:?} is not on this node"
                ))
            })
    }

    /// The pod's uid and the container a request names (empty: the only
    /// one), or NOT_FOUND / INVALID_ARGUMENT naming the choices.
    pub fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<(String, String), Status> {
        let entry = self.pod(namespace, pod)?;
        let name = pick_container(pod, container, &entry.containers)?;
        Ok((entry.uid, name))
    }

    /// The log file a request asks for.
    pub fn locate(&self, req: &LogsRequest) -> Result<PathBuf, Status> {
        let (uid, container) = self.container(&req.namespace, &req.pod, &req.container)?;
        let dir = self
            .root
            .join("pods")
            .join(&uid)
            .join("logs")
            .join(&container);
        let mut numbers = log_numbers(&dir);
        numbers.sort_unstable();
        let n = match req.previous {
            false => numbers.last().copied().ok_or_else(|| {
                Status::not_found(format!(
                    "container {container:?} in pod {:?} is waiting to start",
                    req.pod
                ))
            })?,
            true => numbers.iter().rev().nth(1).copied().ok_or_else(|| {
                Status::not_found(format!(
                    "previous terminated container {container:?} in pod {:?} not found",
                    req.pod
                ))
            })?,
        };
        Ok(dir.join(format!("{n}.log")))
    }
}

fn pick_container(pod: &str, asked: &str, containers: &[String]) -> Result<String, Status> {
    if asked.is_empty() {
        return match containers {
            [only] => Ok(only.clone()),
            _ => Err(Status::invalid_argument(format!(
                "a container name must be specified for pod {pod}, choose one of: [{}]",
                containers.join(" ")
            ))),
        };
    }
    match containers.iter().any(|c| c == asked) {
        true => Ok(asked.to_string()),
        false => Err(Status::not_found(format!(
            "container {asked:?} is not valid for pod {pod:?}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

fn log_numbers(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect()
}

struct Svc {
    index: Arc<PodIndex>,
    runtime: Arc<dyn Runtime>,
    sampler: Arc<super::metrics::Sampler>,
}

type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Svc {
    type LogsStream = LogStream;
    type ExecStream = super::exec::ExecStream;
    type PortForwardStream = super::exec::PortForwardStream;

    async fn exec(
        &self,
        req: Request<tonic::Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        super::exec::exec(&self.index, self.runtime.clone(), req.into_inner())
            .await
            .map(Response::new)
    }

    async fn port_forward(
        &self,
        req: Request<tonic::Streaming<PortForwardInput>>,
    ) -> Result<Response<Self::PortForwardStream>, Status> {
        super::exec::port_forward(&self.index, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn stats(&self, _req: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        Ok(Response::new(super::metrics::to_proto(
            &self.sampler.snapshot(),
        )))
    }

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<LogStream>, Status> {
        let req = req.into_inner();
        let path = self.index.locate(&req)?;
        let (tx, rx) = mpsc::channel(16);
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            if let Err(s) = stream_log(&path, &req, runtime, &tx).await {
                let _ = tx.send(Err(s)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

type Tx = mpsc::Sender<Result<LogChunk, Status>>;

/// Sends the (tailed, limited) file, then follows it if asked.
async fn stream_log(
    path: &Path,
    req: &LogsRequest,
    runtime: Arc<dyn Runtime>,
    tx: &Tx,
) -> Result<(), Status> {
    let data = tokio::fs::read(path)
        .await
        .map_err(|e| Status::not_found(format!("read log: {e}")))?;
    let mut offset = data.len() as u64;
    let start = tail_start(&data, req.tail_lines);
    let mut budget = match req.limit_bytes > 0 {
        true => u64::try_from(req.limit_bytes).unwrap_or(u64::MAX),
        false => u64::MAX,
    };
    if !send(tx, &data[start..], &mut budget).await || !req.follow {
        return Ok(());
    }
    let mut idle_polls = 0u32;
    loop {
        tokio::time::sleep(POLL).await;
        let new = read_from(path, offset).await?;
        offset += new.len() as u64;
        if !send(tx, &new, &mut budget).await {
            return Ok(());
        }
        idle_polls = if new.is_empty() { idle_polls + 1 } else { 0 };
        // Check liveness about once a second, and only when quiet.
        if idle_polls % 5 == 4 && !instance_running(runtime.as_ref(), path).await {
            let rest = read_from(path, offset).await?;
            send(tx, &rest, &mut budget).await;
            return Ok(());
        }
    }
}

/// Sends `bytes` within the budget; false when done (budget spent or the
/// client went away).
async fn send(tx: &Tx, bytes: &[u8], budget: &mut u64) -> bool {
    let allowed = usize::try_from(*budget)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    for chunk in bytes[..allowed].chunks(CHUNK) {
        if tx
            .send(Ok(LogChunk {
                data: chunk.to_vec(),
            }))
            .await
            .is_err()
        {
            return false;
        }
    }
    *budget -= allowed as u64;
    *budget > 0 && !tx.is_closed()
}

async fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>, Status> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Status::not_found(format!("read log: {e}")))?;
    f.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(buf)
}

async fn instance_running(runtime: &dyn Runtime, path: &Path) -> bool {
    match runtime.list().await {
        Ok(list) => list
            .iter()
            .any(|c| c.spec.log_path == path && c.state.is_running()),
        Err(_) => false,
    }
}

/// Where the last `tail` lines start (`tail < 0`: everything).
fn tail_start(data: &[u8], tail: i64) -> usize {
    let Ok(tail) = usize::try_from(tail) else {
        return 0;
    };
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == tail {
                return i + 1;
            }
        }
    }
    match tail {
        0 => data.len(),
        _ => 0,
    }
}

/// Serves the `AgentService` (gRPC) and, on the same port over HTTP/1 or
/// HTTP/2, the kubelet-style `GET /metrics/resource`, until the task is
/// aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    index: Arc<PodIndex>,
    runtime: Arc<dyn Runtime>,
    sampler: Arc<super::metrics::Sampler>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let svc = AgentServiceServer::new(Svc {
        index,
        runtime,
        sampler: sampler.clone(),
    });
    let mut routes = tonic::service::Routes::new(svc);
    let metrics = axum::routing::get(move || {
        let text = super::metrics::prom::render(&sampler.snapshot());
        async move {
            (
                [(
                    http::header::CONTENT_TYPE,
                    super::metrics::prom::CONTENT_TYPE,
                )],
                text,
            )
        }
    });
    let mut router = std::mem::take(routes.axum_router_mut()).route("/metrics/resource", metrics);
    if tls.is_some() {
        router = router.layer(axum::middleware::from_fn(super::serving::authorize));
    }
    *routes.axum_router_mut() = router;
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes);
    let served = match tls {
        Some(cfg) => {
            server
                .serve_with_incoming(super::serving::tls_incoming(listener, cfg))
                .await
        }
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            server.serve_with_incoming(incoming).await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "log server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_lines() {
        let d = b"a\nb\nc\n";
        assert_eq!(&d[tail_start(d, 2)..], b"b\nc\n");
        assert_eq!(&d[tail_start(d, 10)..], d);
        assert_eq!(&d[tail_start(d, -1)..], d);
        assert_eq!(&d[tail_start(d, 0)..], b"");
        let e = b"a\nb";
        assert_eq!(&e[tail_start(e, 1)..], b"b");
    }

    #[test]
    fn container_choice() {
        let two = vec!["a".to_string(), "b".to_string()];
        let e = pick_container("p", "", &two).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("choose one of: [a b]"),
            "{}",
            e.message()
        );
        assert_eq!(pick_container("p", "", &two[..1]).unwrap(), "a");
        assert_eq!(
            pick_container("p", "x", &two).unwrap_err().code(),
            tonic::Code::NotFound
        );
    }
}
