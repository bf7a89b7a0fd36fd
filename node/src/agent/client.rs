//! The agent's connection to the control plane.
//!
//! Authenticates with a bearer token or a client certificate (a node
//! identity). One HTTP/2 channel, shared by every task (calls are multiplexed), to one
//! of the configured servers at a time. A call that fails for a transport
//! reason (unavailable, deadline, cancelled, unknown) drops the channel and
//! moves to the next server, so the next call of any task fails over.
//! Unary calls carry a deadline; streams rely on HTTP/2 keepalives to notice
//! a dead server.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use keel_proto::keelnode::node_service_client::NodeServiceClient;
use keel_proto::keelnode::{
    DeletePodRequest, EventReport, GetObjectRequest, HeartbeatRequest, PodEvent, PodStatusReport,
    RegisterRequest, WatchPodsRequest,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status, Streaming};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type NodeClient = NodeServiceClient<InterceptedService<Channel, Auth>>;

/// See the module docs.
pub struct ControlClient {
    servers: Vec<String>,
    tls: Option<ClientTlsConfig>,
    auth: Auth,
    /// The node's client certificate, read at each connect (rotation
    /// swaps it, then [`ControlClient::reconnect`]s).
    identity: Option<super::rotation::NodeIdentity>,
    current: Mutex<Current>,
}

struct Current {
    index: usize,
    channel: Option<Channel>,
}

impl ControlClient {
    pub fn new(
        servers: Vec<String>,
        token: Option<String>,
        ca_pem: Option<Vec<u8>>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!servers.is_empty(), "no control-plane server configured");
        let auth = match token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .context("token is not valid header text")?,
            ),
            None => None,
        };
        // keel's API listener offers h2 by ALPN; accept a server that
        // negotiates nothing, too (gRPC implies HTTP/2). The node's client
        // certificate is added at each connect (see `with_identity`).
        let tls = ca_pem.map(|pem| {
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(pem))
                .assume_http2(true)
        });
        Ok(ControlClient {
            servers,
            tls,
            auth: Auth(auth),
            identity: None,
            current: Mutex::new(Current {
                index: 0,
                channel: None,
            }),
        })
    }

    /// Authenticates with `identity`'s client certificate (as well as the
    /// token, if any).
    pub fn with_identity(mut self, identity: Option<super::rotation::NodeIdentity>) -> Self {
        self.identity = identity;
        self
    }

    /// Drops the channel so the next call connects afresh (with the
    /// current client certificate); calls in flight finish on the old one.
    pub fn reconnect(&self) {
        if let Ok(mut cur) = self.current.lock() {
            cur.channel = None;
        }
    }

    /// A client on the current server, connecting (trying each server once,
    /// starting with the current one) when there is no channel.
    pub async fn node(&self) -> Result<NodeClient, Status> {
        let start = match self.current.lock() {
            Ok(cur) => {
                if let Some(ch) = &cur.channel {
                    return Ok(self.wrap(ch.clone()));
                }
                cur.index
            }
            Err(_) => return Err(Status::internal("client lock poisoned")),
        };
        let mut last = Status::unavailable("no server reachable");
        for i in 0..self.servers.len() {
            let index = (start + i) % self.servers.len();
            match self.connect(&self.servers[index]).await {
                Ok(ch) => {
                    if let Ok(mut cur) = self.current.lock() {
                        cur.index = index;
                        cur.channel = Some(ch.clone());
                    }
                    return Ok(self.wrap(ch));
                }
                Err(e) => {
                    tracing::debug!(server = %self.servers[index], error = %e, "connect failed");
                    last = Status::unavailable(format!("{}: {e:#}", self.servers[index]));
                }
            }
        }
        // Next attempt starts with the server after this round's first.
        if let Ok(mut cur) = self.current.lock() {
            cur.index = (start + 1) % self.servers.len();
        }
        Err(last)
    }

    fn wrap(&self, ch: Channel) -> NodeClient {
        NodeServiceClient::with_interceptor(ch, self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    async fn connect(&self, url: &str) -> anyhow::Result<Channel> {
        let mut ep = Endpoint::from_shared(url.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        if url.starts_with("https://") {
            let mut tls = self
                .tls
                .clone()
                .context("https server but no CA configured")?;
            if let Some(id) = &self.identity {
                let c = id.current();
                tls = tls.identity(tonic::transport::Identity::from_pem(c.cert_pem, c.key_pem));
            }
            ep = ep.tls_config(tls)?;
        }
        Ok(ep.connect().await?)
    }

    /// Records a failed call: transport-level failures drop the channel and
    /// move on to the next server.
    pub fn failed(&self, status: &Status) {
        let transport = matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
        );
        if !transport {
            return;
        }
        if let Ok(mut cur) = self.current.lock() {
            if cur.channel.take().is_some() {
                cur.index = (cur.index + 1) % self.servers.len();
                tracing::debug!(server = %self.servers[cur.index], "switching server");
            }
        }
    }

    fn check<T>(&self, r: Result<tonic::Response<T>, Status>) -> Result<T, Status> {
        match r {
            Ok(resp) => Ok(resp.into_inner()),
            Err(s) => {
                self.failed(&s);
                Err(s)
            }
        }
    }

    pub async fn register(&self, node_json: Vec<u8>) -> Result<Vec<u8>, Status> {
        let r = self
            .node()
            .await?
            .register(unary(RegisterRequest { node_json }))
            .await;
        Ok(self.check(r)?.node_json)
    }

    pub async fn heartbeat(
        &self,
        node_name: &str,
        lease_duration_seconds: i32,
        node_status_json: Vec<u8>,
    ) -> Result<(), Status> {
        let req = HeartbeatRequest {
            node_name: node_name.to_string(),
            lease_duration_seconds,
            node_status_json,
        };
        let r = self.node().await?.heartbeat(unary(req)).await;
        self.check(r).map(drop)
    }

    pub async fn watch_pods(
        &self,
        node_name: &str,
        from_revision: i64,
    ) -> Result<Streaming<PodEvent>, Status> {
        let req = WatchPodsRequest {
            node_name: node_name.to_string(),
            from_revision,
        };
        let r = self.node().await?.watch_pods(req).await;
        self.check(r)
    }

    pub async fn report_status(&self, report: PodStatusReport) -> Result<(), Status> {
        let r = self.node().await?.report_pod_status(unary(report)).await;
        self.check(r).map(drop)
    }

    pub async fn delete_pod(&self, namespace: &str, name: &str, uid: &str) -> Result<(), Status> {
        let req = DeletePodRequest {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
        };
        let r = self.node().await?.delete_pod(unary(req)).await;
        self.check(r).map(drop)
    }

    /// A ConfigMap or Secret as JSON; `Ok(None)` when it does not exist.
    pub async fn get_object(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<serde_json::Value>, Status> {
        let req = GetObjectRequest {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let r = self.node().await?.get_object(unary(req)).await;
        match self.check(r) {
            Ok(resp) => serde_json::from_slice(&resp.object_json)
                .map(Some)
                .map_err(|e| Status::internal(format!("{kind} {namespace}/{name}: bad JSON: {e}"))),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }

    pub async fn record_event(&self, event_json: Vec<u8>) -> Result<(), Status> {
        let r = self
            .node()
            .await?
            .record_event(unary(EventReport { event_json }))
            .await;
        self.check(r).map(drop)
    }
}

fn unary<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.set_timeout(CALL_TIMEOUT);
    req
}
