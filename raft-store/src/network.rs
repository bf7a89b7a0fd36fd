//! openraft's network over keel-net: raft messages are bincode-encoded into
//! the peer service's byte payload.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keel_net::{PeerClient, PeerError, PeerMethod};
use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::errors::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::log_store::{decode, encode};
use crate::stats::StoreStats;
use crate::types::{Member, NodeId, TypeConfig};

/// Snapshots can be large; give them more time than a heartbeat.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Network {
    pub client: PeerClient,
    /// Where heartbeat round trips are recorded.
    pub stats: Arc<StoreStats>,
    /// How long an AppendEntries call may take at least (see
    /// [`PeerConn::append_entries`]).
    pub append_timeout: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Self::Network {
        PeerConn {
            target,
            addr: node.peer_addr.clone(),
            client: self.client.clone(),
            stats: self.stats.clone(),
            append_timeout: self.append_timeout,
        }
    }
}

pub struct PeerConn {
    target: NodeId,
    addr: String,
    client: PeerClient,
    stats: Arc<StoreStats>,
    append_timeout: Duration,
}

fn to_rpc_error(e: PeerError) -> RPCError<TypeConfig> {
    match e {
        PeerError::Unreachable { .. } | PeerError::Refused { .. } => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl PeerConn {
    async fn call<Req, Resp>(
        &self,
        method: PeerMethod,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let out = self
            .client
            .call(&self.addr, method, data, timeout)
            .await
            .map_err(to_rpc_error)?;
        decode(&out).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConn {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // A heartbeat (no entries) costs the follower next to nothing, so
        // its round trip is the network's: etcd's peer RTT metric.
        let started = rpc.entries.is_empty().then(tokio::time::Instant::now);
        // openraft offers 3/4 of a heartbeat interval (75 ms by default).
        // On a loaded machine a follower that appends and syncs a large
        // batch answers later than that; giving up then throws away a
        // healthy follower's acknowledgement, resends the same entries
        // (more load) and, after the check-quorum lease without acks,
        // deposed a leader whose followers were all up (seen with 500
        // hollow nodes on 2 cores). A follower is only suspect after an
        // election timeout, so wait up to half of one.
        let timeout = option.soft_ttl().max(self.append_timeout);
        let res: Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>> =
            self.call(PeerMethod::AppendEntries, &rpc, timeout).await?;
        if let Some(t) = started {
            self.stats.observe_rtt(self.target, t.elapsed());
        }
        res.map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let res: Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>> =
            self.call(PeerMethod::Vote, &rpc, option.soft_ttl()).await?;
        res.map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    /// Sent over the forward RPC (see `ForwardRequest::PreVote`). openraft's
    /// default grants every pre-vote, which would leave PreVote without
    /// effect.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let body = encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let req = crate::store::ForwardRequest::PreVote(body);
        let res: Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>> = self
            .call(PeerMethod::Forward, &req, option.soft_ttl())
            .await?;
        res.map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req: (VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>, Vec<u8>) =
            (vote, snapshot.meta, snapshot.snapshot);
        let fut = async {
            let res: Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>> = self
                .call(PeerMethod::InstallSnapshot, &req, SNAPSHOT_TIMEOUT)
                .await
                .map_err(StreamingError::from)?;
            res.map_err(|e| StreamingError::Network(NetworkError::new(&e)))
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = fut => r,
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        crate::membership::send_transfer_leader(&self.client, &self.addr, req, option.soft_ttl())
            .await
    }
}
