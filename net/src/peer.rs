//! Peer RPC: a client with one lazily connected channel per peer address,
//! and a server that hands every call to a [`PeerHandler`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_proto::keelraft::raft_peer_client::RaftPeerClient;
use keel_proto::keelraft::raft_peer_server::{RaftPeer, RaftPeerServer};
use keel_proto::keelraft::RaftMessage;
use tonic::transport::Channel;

use crate::Transport;
use tonic::{Request, Response, Status};

/// Large enough for a snapshot of a big store in one message.
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerMethod {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Forward,
}

/// Why a peer call failed. Only `Refused` proves the request never left
/// this process; callers may retry exactly those without risking a second
/// apply.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer's host actively refused the connection (nobody listens:
    /// the process is dead or restarting). The request was not sent.
    #[error("peer {addr} refused the connection: {msg}")]
    Refused { addr: String, msg: String },
    #[error("peer {addr} unreachable: {msg}")]
    Unreachable { addr: String, msg: String },
    #[error("peer {addr}: call timed out after {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u128 },
    #[error("peer {addr}: {status}")]
    Remote { addr: String, status: Status },
}

/// Serves peer calls. Implemented by the store.
#[tonic::async_trait]
pub trait PeerHandler: Send + Sync + 'static {
    async fn handle(&self, method: PeerMethod, data: Vec<u8>) -> Result<Vec<u8>, Status>;
}

/// Calls peers by address; channels are created on first use and kept.
#[derive(Default, Clone)]
pub struct PeerClient {
    transport: Transport,
    tls: Option<Arc<crate::TlsConfig>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerClient {
    pub fn new(transport: Transport) -> Self {
        PeerClient {
            transport,
            tls: None,
            channels: Arc::default(),
        }
    }

    /// Dials peers over mutual TLS (real TCP only).
    pub fn with_tls(transport: Transport, tls: Option<Arc<crate::TlsConfig>>) -> Self {
        PeerClient {
            tls,
            ..PeerClient::new(transport)
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, PeerError> {
        let mut map = self.channels.lock().expect("channel map poisoned");
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ch = match &self.tls {
            Some(tls) => self.transport.tls_channel(addr, tls.clone()),
            None => self.transport.channel(addr),
        }
        .map_err(|e| PeerError::Unreachable {
            addr: addr.into(),
            msg: e.to_string(),
        })?;
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// One call with a deadline. Never waits longer than `timeout`.
    pub async fn call(
        &self,
        addr: &str,
        method: PeerMethod,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, PeerError> {
        let ch = self.channel(addr)?;
        let mut client = RaftPeerClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut req = Request::new(RaftMessage { data });
        req.set_timeout(timeout);
        let fut = async {
            match method {
                PeerMethod::AppendEntries => client.append_entries(req).await,
                PeerMethod::Vote => client.vote(req).await,
                PeerMethod::InstallSnapshot => client.install_snapshot(req).await,
                PeerMethod::Forward => client.forward(req).await,
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(PeerError::Timeout {
                addr: addr.into(),
                timeout_ms: timeout.as_millis(),
            }),
            Ok(Ok(resp)) => Ok(resp.into_inner().data),
            Ok(Err(status)) => Err(classify(addr, status, timeout)),
        }
    }
}

fn classify(addr: &str, status: Status, timeout: Duration) -> PeerError {
    if connection_refused(&status) {
        return PeerError::Refused {
            addr: addr.into(),
            msg: status.message().into(),
        };
    }
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown
            if status.message().contains("transport") =>
        {
            PeerError::Unreachable {
                addr: addr.into(),
                msg: status.message().into(),
            }
        }
        tonic::Code::Unavailable => PeerError::Unreachable {
            addr: addr.into(),
            msg: status.message().into(),
        },
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => PeerError::Timeout {
            addr: addr.into(),
            timeout_ms: timeout.as_millis(),
        },
        _ => PeerError::Remote {
            addr: addr.into(),
            status,
        },
    }
}

struct Service {
    handler: Arc<dyn PeerHandler>,
}

impl Service {
    async fn dispatch(
        &self,
        method: PeerMethod,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let data = self.handler.handle(method, req.into_inner().data).await?;
        Ok(Response::new(RaftMessage { data }))
    }
}

#[tonic::async_trait]
impl RaftPeer for Service {
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(PeerMethod::AppendEntries, req).await
    }
    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(PeerMethod::Vote, req).await
    }
    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(PeerMethod::InstallSnapshot, req).await
    }
    async fn forward(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(PeerMethod::Forward, req).await
    }
}

/// The gRPC service to mount on a tonic server.
pub fn peer_server(handler: Arc<dyn PeerHandler>) -> RaftPeerServer<impl RaftPeer> {
    RaftPeerServer::new(Service { handler })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// True when the call failed because connecting was refused: a request is
/// only written to an established connection, so this one was never sent.
fn connection_refused(status: &Status) -> bool {
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cause = e.source();
    }
    false
}
