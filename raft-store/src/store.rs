//! The `Store`: the Rust API that in-process callers and the gRPC services
//! use. Same semantics as etcd's v3 API: writes go through raft (a
//! follower forwards them to the leader), reads are linearizable unless
//! asked to be serializable.
//!
//! Errors: every call is bounded by the request timeout; without a leader
//! or quorum it fails with `Unavailable` (`NoLeader`, `Timeout`,
//! `LeaderChanged`) rather than hanging. A write whose outcome is unknown
//! (leader lost mid-flight) reports `LeaderChanged` or `Timeout`, as etcd
//! does; it is never retried internally, so it is applied at most once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use keel_net::{PeerClient, PeerHandler, PeerMethod};
use keel_proto::etcdserverpb::{
    request_op::Request, response_op::Response, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest,
    TxnResponse,
};
use openraft::alias::{SnapshotMetaOf, VoteOf};
use openraft::async_runtime::WatchReceiver;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use openraft::{Config, ReadPolicy, SnapshotPolicy};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::db::{Db, Identity};
use crate::error::StoreError;
use crate::forwarder::{self, Forwarder};
use crate::lessor::Lessor;
pub use crate::log_store::Durability;
use crate::log_store::{decode, encode, LogStore};
use crate::mvcc::{self, TxnLimits};
use crate::network::Network;
use crate::state_machine::{SmShared, StateMachine};
use crate::types::{member_id, Command, CommandOutput, CommandResponse, Member, NodeId, Raft};
use crate::watch::{run_watcher, WatchCtl, WatchOut, WatchSpec};

#[path = "check_quorum.rs"]
mod check_quorum;
#[path = "leader_watch.rs"]
mod leader_watch;

/// etcd's largest lease TTL.
pub const MAX_LEASE_TTL_S: i64 = 9_000_000_000;

#[derive(Debug, Clone)]
pub enum AutoCompaction {
    Off,
    /// Keep the last N revisions.
    Revisions(i64),
    /// Keep the revisions of the last period.
    Periodic(Duration),
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// Address peers reach this replica at (`host:port`).
    pub peer_addr: String,
    /// Address clients reach this replica at, published to `MemberList`.
    pub client_addr: String,
    /// `(name, peer_addr)` of every initial member; empty: just this one.
    pub initial_cluster: Vec<(String, String)>,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub request_timeout: Duration,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    /// Build a snapshot (and purge the log) every this many entries.
    pub snapshot_logs: u64,
    pub auto_compaction: AutoCompaction,
    /// Smallest lease TTL granted (etcd: 1.5 election timeouts).
    pub min_lease_ttl_s: i64,
    /// Sockets for peer RPC (real TCP, or turmoil's in simulations).
    pub transport: keel_net::Transport,
    pub durability: Durability,
    /// Test-only: a deliberately broken guarantee, so the chaos checkers
    /// can show they catch it. The `keel` binary never sets it.
    pub mutation: Mutation,
    /// With an empty data dir: bootstrap (`New`) or join a running cluster
    /// as a member added by `MemberAdd` (`Existing`).
    pub initial_cluster_state: crate::membership::InitialClusterState,
    /// Mutual TLS for peer RPC (real TCP only). The store points its
    /// member check at the live raft membership once raft is up.
    pub peer_tls: Option<Arc<keel_net::TlsConfig>>,
}

/// Bugs the chaos tests inject on purpose (mutation testing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mutation {
    #[default]
    None,
    /// "Linearizable" reads served from local state, without read-index.
    StaleReads,
    /// Acknowledge about one put in ten without replicating it.
    AckUncommittedPuts,
    /// Watchers silently skip some events.
    DropWatchEvents,
    /// Once the first leader is replaced, every write fails: the cluster
    /// never recovers (a liveness bug).
    WedgeAfterElections,
}

impl StoreConfig {
    pub fn new(
        name: &str,
        data_dir: impl Into<PathBuf>,
        peer_addr: &str,
        client_addr: &str,
    ) -> Self {
        StoreConfig {
            name: name.into(),
            data_dir: data_dir.into(),
            peer_addr: peer_addr.into(),
            client_addr: client_addr.into(),
            initial_cluster: Vec::new(),
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            request_timeout: Duration::from_secs(5),
            heartbeat_ms: 100,
            election_timeout_ms: 1000,
            snapshot_logs: 10_000,
            auto_compaction: AutoCompaction::Off,
            min_lease_ttl_s: 2,
            transport: keel_net::Transport::Tcp,
            durability: Durability::GroupCommit,
            mutation: Mutation::None,
            initial_cluster_state: Default::default(),
            peer_tls: None,
        }
    }

    fn members(&self) -> BTreeMap<NodeId, Member> {
        let list = if self.initial_cluster.is_empty() {
            vec![(self.name.clone(), self.peer_addr.clone())]
        } else {
            self.initial_cluster.clone()
        };
        list.into_iter()
            .map(|(name, peer_addr)| (member_id(&name), Member { name, peer_addr }))
            .collect()
    }

    /// The cluster's identity: a hash of its initial membership.
    pub fn cluster_id(&self) -> u64 {
        let mut s: Vec<String> = self
            .members()
            .values()
            .map(|m| format!("{}={}", m.name, m.peer_addr))
            .collect();
        s.sort();
        member_id(&s.join(","))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenStoreError {
    #[error(transparent)]
    Db(#[from] crate::db::OpenError),
    #[error("state machine: {0}")]
    State(#[from] std::io::Error),
    #[error("raft: {0}")]
    Raft(String),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Requests a replica sends to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ForwardRequest {
    Write(Command),
    ReadIndex,
    LeaseKeepAlive(i64),
    LeaseTimeToLive(i64),
    /// Membership changes and queries (see [`crate::membership`]).
    Membership(crate::membership::MembershipRequest),
    /// A PreVote round's `VoteRequest` (bincode), answered by any replica.
    /// It rides on the forward RPC so the peer protocol needs no new
    /// method; a replica that does not know it refuses, which counts as
    /// "would not grant".
    PreVote(Vec<u8>),
    /// Several writes and read-index requests in one RPC, answered by a
    /// `ForwardResponse::Batch` in the same order (see `crate::forwarder`).
    Batch(Vec<ForwardRequest>),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ForwardResponse {
    Write(Result<CommandResponse, StoreError>),
    ReadIndex(u64),
    Lease(Result<(i64, i64), StoreError>),
    NotLeader,
    Membership(crate::membership::MembershipResult),
    Batch(Vec<ForwardResponse>),
}

struct Inner {
    raft: Raft,
    sm: Arc<SmShared>,
    id: NodeId,
    cluster_id: u64,
    peers: PeerClient,
    cfg: StoreConfig,
    lessor: Lessor,
    membership: crate::membership::MembershipState,
    /// The leader whose peer port was found refusing connections (0: none);
    /// see `leader_watch`.
    dead_leader: std::sync::atomic::AtomicU64,
    /// When an append from the current leader was last accepted; see
    /// `check_quorum`.
    leader_heard_at: std::sync::Mutex<Instant>,
    stats: Arc<crate::stats::StoreStats>,
    /// Writes and read-index requests on their way to the leader.
    forwarder: Forwarder,
}

/// A handle to this replica's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Lease details for `LeaseTimeToLive`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseInfo {
    pub id: i64,
    pub ttl_s: i64,
    pub granted_ttl_s: i64,
    pub keys: Vec<Vec<u8>>,
}

/// A member as `MemberList` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_addr: String,
    pub client_addr: Option<String>,
}

/// Status for `Maintenance.Status`.
#[derive(Debug, Clone)]
pub struct StoreStatus {
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub revision: i64,
    pub db_size_bytes: i64,
}

/// The members peer certificates must name: the raft membership (voters
/// and learners), or the configured initial members while raft has none.
fn member_source(raft: &Raft, initial: &BTreeMap<NodeId, Member>) -> keel_net::tls::MemberSource {
    let raft = raft.clone();
    let initial: Vec<(String, String)> = initial
        .values()
        .map(|m| (m.name.clone(), m.peer_addr.clone()))
        .collect();
    Arc::new(move || {
        let metrics = raft.metrics();
        let m = metrics.borrow_watched();
        let live: Vec<(String, String)> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(_, n)| (n.name.clone(), n.peer_addr.clone()))
            .collect();
        if live.is_empty() {
            initial.clone()
        } else {
            live
        }
    })
}

impl Store {
    /// Opens the data dir and starts this replica's raft node. Peers must be
    /// served with [`Store::peer_handler`] for the cluster to form.
    pub async fn open(cfg: StoreConfig) -> Result<Store, OpenStoreError> {
        let members = cfg.members();
        if !members.contains_key(&member_id(&cfg.name)) {
            return Err(OpenStoreError::Config(format!(
                "--initial-cluster does not name this member {:?}",
                cfg.name
            )));
        }
        let peers = PeerClient::with_tls(cfg.transport, cfg.peer_tls.clone());
        let identity = crate::membership::resolve_identity(&cfg, &peers).await?;
        let (id, cluster_id) = (identity.id, identity.cluster_id);
        let db = Db::open(
            &cfg.data_dir,
            &Identity {
                cluster: format!("{cluster_id:016x}"),
                member: cfg.name.clone(),
            },
        )?;
        let fresh = db.fresh;
        if fresh {
            crate::membership::record_identity(&db, &identity)?;
        }
        let membership = crate::membership::MembershipState::new(db.clone());
        let limits = TxnLimits {
            max_ops: cfg.max_txn_ops,
        };
        let sm = StateMachine::open(db.clone(), limits)?;
        let shared = sm.shared.clone();
        let raft_config = Config {
            cluster_name: format!("{cluster_id:016x}"),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_ms,
            election_timeout_max: cfg.election_timeout_ms * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs),
            max_in_snapshot_log_to_keep: cfg.snapshot_logs.min(1000),
            // A replica that was partitioned away campaigns only if a
            // quorum would elect it, so it can't depose a healthy leader
            // when it returns.
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| OpenStoreError::Config(e.to_string()))?;
        let cfg_durability = cfg.durability;
        let stats = Arc::new(crate::stats::StoreStats::new());
        let network = Network {
            client: peers.clone(),
            stats: stats.clone(),
            append_timeout: Duration::from_millis(cfg.election_timeout_ms / 2),
        };
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            network,
            LogStore::new(db, cfg_durability),
            sm,
        )
        .await
        .map_err(|e| OpenStoreError::Raft(e.to_string()))?;
        // A dir written by a restore or --force-new-cluster holds state but
        // no raft yet (crate::restore): it bootstraps like a fresh one. A
        // member that joined a running cluster never bootstraps: the
        // cluster adds it.
        if let Some(m) = cfg.peer_tls.as_ref().and_then(|t| t.members()) {
            m.set_source(member_source(&raft, &members));
        }
        let bootstrap = !identity.joined
            && (fresh
                || !raft
                    .is_initialized()
                    .await
                    .map_err(|e| OpenStoreError::Raft(e.to_string()))?);
        if bootstrap {
            // Every fresh member proposes the same initial membership; raft
            // keeps exactly one.
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!("initialize: {e}");
            }
        }
        let store = Store {
            inner: Arc::new(Inner {
                raft,
                sm: shared,
                id,
                cluster_id,
                forwarder: Forwarder::new(peers.clone()),
                peers,
                cfg,
                lessor: Lessor::default(),
                membership,
                dead_leader: Default::default(),
                leader_heard_at: std::sync::Mutex::new(Instant::now()),
                stats,
            }),
        };
        store.spawn_background();
        crate::membership::spawn(&store);
        Ok(store)
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn member_id(&self) -> u64 {
        self.inner.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    pub fn peer_handler(&self) -> Arc<dyn PeerHandler> {
        Arc::new(self.clone())
    }

    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
    }

    /// The response header etcd attaches to everything.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        let term = self.inner.raft.metrics().borrow_watched().current_term;
        ResponseHeader {
            cluster_id: self.inner.cluster_id,
            member_id: self.inner.id,
            revision,
            raft_term: term,
        }
    }

    pub fn current_revision(&self) -> i64 {
        self.inner.sm.read().mvcc.current_revision()
    }

    /// The applied state's compaction point: a read or watch from below
    /// this revision fails with `Compacted`.
    pub fn compact_revision(&self) -> i64 {
        self.inner.sm.read().mvcc.compact_revision()
    }

    /// A cheap probe of whether this replica is the leader, which stays
    /// valid (answering false) after the store is gone and holds nothing of
    /// it: for fault injectors that target the leader.
    /// Leadership as check-quorum sees it (see `check_quorum`).
    pub fn leadership_probe(&self) -> impl Fn() -> bool + 'static {
        // raft's own state, not the check-quorum view: that one reads the
        // clock, and fault injectors call this outside the replica's
        // runtime, where a simulation's clock is the wall clock and would
        // make a seed's faults differ between runs.
        let rx = self.inner.raft.metrics();
        move || rx.borrow_watched().state.is_leader()
    }

    /// The leader this replica acts on: `None` without one, and also while
    /// this replica leads without a quorum or has not heard from its leader
    /// within the leader lease (check-quorum, see `check_quorum`).
    pub fn current_leader(&self) -> Option<NodeId> {
        self.acting_leader()
    }

    /// The replica's raft metrics (etcd names), for `/metrics`.
    pub fn stats(&self) -> &crate::stats::StoreStats {
        &self.inner.stats
    }

    pub(crate) fn membership_state(&self) -> &crate::membership::MembershipState {
        &self.inner.membership
    }

    pub(crate) fn peer_client(&self) -> &PeerClient {
        &self.inner.peers
    }

    pub(crate) fn leader_member(&self) -> Option<(NodeId, Member)> {
        // Borrowed, not cloned: this runs on every request.
        let heard_ago = self.leader_heard_ago();
        let rx = self.inner.raft.metrics();
        let m = rx.borrow_watched();
        let leader = check_quorum::acting_leader(&m, self.lease(), heard_ago)?;
        let node = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node))
    }

    // ---- reads ----

    /// Waits until this replica's state reflects every write acknowledged
    /// before the call (raft read-index, via the leader when a follower).
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.inner.cfg.request_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.unavailable_error());
            }
            match self.leader_member() {
                None => {}
                Some((leader, _)) if leader == self.inner.id => {
                    let r = tokio::time::timeout(
                        left,
                        self.inner.raft.ensure_linearizable(ReadPolicy::ReadIndex),
                    )
                    .await;
                    if let Ok(Ok(_)) = r {
                        return Ok(());
                    }
                }
                Some((_, node)) => {
                    let read =
                        self.inner
                            .forwarder
                            .call(&node.peer_addr, ForwardRequest::ReadIndex, left);
                    if let Ok(ForwardResponse::ReadIndex(idx)) = read.await {
                        return self.wait_applied(idx, deadline).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20).min(left)).await;
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), StoreError> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.inner
            .raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|_| StoreError::Timeout)
    }

    fn unavailable_error(&self) -> StoreError {
        if self.current_leader().is_none() {
            StoreError::NoLeader
        } else {
            StoreError::Timeout
        }
    }

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        mvcc::check_key_range(&req.key, &req.range_end)?;
        if !req.serializable && self.inner.cfg.mutation != Mutation::StaleReads {
            self.read_barrier().await?;
        }
        let st = self.inner.sm.read();
        let mut resp = st.mvcc.range(&req)?;
        resp.header = Some(self.header(st.mvcc.current_revision()));
        Ok(resp)
    }

    // ---- writes ----

    fn check_size(&self, len: usize) -> Result<(), StoreError> {
        if len > self.inner.cfg.max_request_bytes {
            return Err(StoreError::RequestTooLarge);
        }
        Ok(())
    }

    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, StoreError> {
        if self.inner.cfg.mutation == Mutation::AckUncommittedPuts
            && req.value.iter().map(|b| *b as u32).sum::<u32>() % 10 == 0
        {
            return Ok(PutResponse {
                header: Some(self.header(self.current_revision() + 1)),
                prev_kv: None,
            });
        }
        let txn = single_op(Request::RequestPut(req));
        let resp = self.txn(txn).await?;
        match first_response(resp) {
            Some(Response::ResponsePut(mut r)) => {
                r.header = Some(self.header(r.header.map_or(0, |h| h.revision)));
                Ok(r)
            }
            _ => Err(StoreError::Internal("put produced no put response".into())),
        }
    }

    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        let txn = single_op(Request::RequestDeleteRange(req));
        let resp = self.txn(txn).await?;
        match first_response(resp) {
            Some(Response::ResponseDeleteRange(mut r)) => {
                r.header = Some(self.header(r.header.map_or(0, |h| h.revision)));
                Ok(r)
            }
            _ => Err(StoreError::Internal(
                "delete produced no delete response".into(),
            )),
        }
    }

    /// Runs a transaction. A txn of only reads is served locally after a
    /// read barrier, as etcd does; anything that writes goes through raft.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, StoreError> {
        let limits = TxnLimits {
            max_ops: self.inner.cfg.max_txn_ops,
        };
        mvcc::txn::check_txn(&req, limits)?;
        let bytes = req.encode_to_vec();
        self.check_size(bytes.len())?;
        let out = self.propose(Command::Txn(bytes)).await?;
        match out.result? {
            CommandOutput::Txn(b) => {
                let mut resp = TxnResponse::decode(b.as_slice())
                    .map_err(|e| StoreError::Internal(format!("txn response: {e}")))?;
                fill_headers(&mut resp, &self.header(out.revision));
                Ok(resp)
            }
            other => Err(StoreError::Internal(format!(
                "unexpected txn output {other:?}"
            ))),
        }
    }

    pub async fn compact(&self, revision: i64) -> Result<i64, StoreError> {
        self.propose_for_revision(Command::Compact { revision })
            .await
    }

    /// Proposes a command whose only result is the revision after it.
    async fn propose_for_revision(&self, cmd: Command) -> Result<i64, StoreError> {
        let out = self.propose(cmd).await?;
        out.result?;
        Ok(out.revision)
    }

    /// Replicates `cmd` and returns what applying it produced. Failures
    /// for want of a leader or quorum are counted for the metrics.
    // One future, no wrapper: a wrapper future deepened every caller's
    // type past rustc's query depth limit in the API's test binaries.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResponse, StoreError> {
        if self.inner.cfg.mutation == Mutation::WedgeAfterElections
            && self.inner.raft.metrics().borrow_watched().current_term > 1
        {
            return self.counted(Err(StoreError::NoLeader));
        }
        let deadline = Instant::now() + self.inner.cfg.request_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return self.counted(Err(self.unavailable_error()));
            }
            match self.leader_member() {
                None => {}
                Some((leader, _)) if leader == self.inner.id => {
                    if let Some(r) = self.propose_local(cmd.clone(), left).await {
                        return self.counted(r);
                    }
                }
                // Never sent: waiting for the next leader cannot apply it twice.
                Some((leader, _)) if self.leader_known_dead(leader) => {}
                Some((_, node)) => match self
                    .inner
                    .forwarder
                    .call(&node.peer_addr, ForwardRequest::Write(cmd.clone()), left)
                    .await
                {
                    Ok(ForwardResponse::Write(r)) => return self.counted(r),
                    // Certain: the leader did not take it. Retry.
                    Ok(ForwardResponse::NotLeader) => {}
                    Ok(_) => return Err(StoreError::Internal("bad forward answer".into())),
                    // Unknown whether the leader took it: report, never retry.
                    Err(e) => return self.counted(Err(e)),
                },
            }
            tokio::time::sleep(Duration::from_millis(20).min(left)).await;
        }
    }

    /// Counts a proposal that failed for want of a leader or quorum.
    fn counted(
        &self,
        r: Result<CommandResponse, StoreError>,
    ) -> Result<CommandResponse, StoreError> {
        if matches!(
            r,
            Err(StoreError::NoLeader | StoreError::Timeout | StoreError::LeaderChanged)
        ) {
            self.inner.stats.proposal_failed();
        }
        r
    }

    /// Proposes on this (leader) replica. `None`: raft rejected the entry
    /// before appending it (not leader, or a new leader without a valid
    /// lease yet), so retrying cannot apply it twice.
    async fn propose_local(
        &self,
        cmd: Command,
        left: Duration,
    ) -> Option<Result<CommandResponse, StoreError>> {
        use openraft::errors::RaftError;
        match tokio::time::timeout(left, self.inner.raft.client_write(cmd)).await {
            Err(_) => Some(Err(StoreError::Timeout)),
            Ok(Ok(r)) => Some(Ok(r.data)),
            Ok(Err(RaftError::APIError(e))) => write_error(e),
            Ok(Err(e)) => Some(Err(StoreError::Internal(e.to_string()))),
        }
    }

    /// Proposes a follower's batched writes in one message to raft, so they
    /// are appended together; one answer per command, in order, with the
    /// outcomes of [`Store::propose_local`] (`NotLeader` for `None`).
    async fn propose_many(&self, cmds: Vec<Command>, left: Duration) -> Vec<ForwardResponse> {
        use futures::StreamExt;
        let n = cmds.len();
        if n == 0 {
            return Vec::new();
        }
        let mut answers = Vec::with_capacity(n);
        let mut failure = StoreError::Timeout;
        let collect = async {
            let mut results = match self.inner.raft.client_write_many(cmds).await {
                Ok(results) => results,
                Err(fatal) => return Err(StoreError::Internal(fatal.to_string())),
            };
            while let Some(r) = results.next().await {
                let r = match r {
                    Ok(Ok(w)) => Some(Ok(w.response)),
                    Ok(Err(e)) => write_error(e),
                    Err(fatal) => return Err(StoreError::Internal(fatal.to_string())),
                };
                answers.push(r.map_or(ForwardResponse::NotLeader, ForwardResponse::Write));
            }
            Ok(())
        };
        match tokio::time::timeout(left, collect).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = e,
            Err(_) => {}
        }
        // The rest were taken (or may have been) but their outcome is unknown.
        answers.resize_with(n, || ForwardResponse::Write(Err(failure.clone())));
        answers
    }

    /// Sends `req` to the leader in an RPC of its own. `NotLeader` also
    /// stands for "the leader's port refused the connection": in both cases
    /// the request was not taken, and the caller's retry loop waits for the
    /// next leader. Any other failure leaves the outcome unknown and is
    /// returned.
    pub(crate) async fn forward(
        &self,
        leader: &Member,
        req: ForwardRequest,
        left: Duration,
    ) -> Result<ForwardResponse, StoreError> {
        Ok(forwarder::send(&self.inner.peers, &leader.peer_addr, &req, left).await?)
    }

    // ---- leases ----

    pub async fn lease_grant(&self, id: i64, ttl_s: i64) -> Result<(i64, i64, i64), StoreError> {
        if ttl_s > MAX_LEASE_TTL_S {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        if id < 0 {
            return Err(StoreError::Invalid("lease id must not be negative".into()));
        }
        let ttl_s = ttl_s.max(self.inner.cfg.min_lease_ttl_s);
        let id = if id == 0 {
            rand::random::<i64>().abs().max(1)
        } else {
            id
        };
        let out = self.propose(Command::LeaseGrant { id, ttl_s }).await?;
        match out.result? {
            CommandOutput::LeaseGranted { id, ttl_s } => Ok((id, ttl_s, out.revision)),
            other => Err(StoreError::Internal(format!(
                "unexpected lease output {other:?}"
            ))),
        }
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<i64, StoreError> {
        self.propose_for_revision(Command::LeaseRevoke { id }).await
    }

    /// Renews a lease; returns its TTL. Served by the leader.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, StoreError> {
        self.lease_on_leader(ForwardRequest::LeaseKeepAlive(id))
            .await
            .map(|(ttl, _)| ttl)
    }

    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseInfo, StoreError> {
        let (left, granted) = self
            .lease_on_leader(ForwardRequest::LeaseTimeToLive(id))
            .await?;
        let keys = if keys {
            let st = self.inner.sm.read();
            st.mvcc
                .lease(id)
                .map(|l| l.keys.iter().cloned().collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(LeaseInfo {
            id,
            ttl_s: left,
            granted_ttl_s: granted,
            keys,
        })
    }

    pub fn lease_ids(&self) -> Vec<i64> {
        self.inner.sm.read().mvcc.leases().map(|l| l.id).collect()
    }

    async fn lease_on_leader(&self, req: ForwardRequest) -> Result<(i64, i64), StoreError> {
        let deadline = Instant::now() + self.inner.cfg.request_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.unavailable_error());
            }
            match self.leader_member() {
                Some((leader, _)) if leader == self.inner.id => {
                    if let ForwardResponse::Lease(r) = self.serve_forward(req.clone()).await {
                        return r;
                    }
                }
                Some((_, node)) => {
                    if let Ok(ForwardResponse::Lease(r)) =
                        self.forward(&node, req.clone(), left).await
                    {
                        return r;
                    }
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(20).min(left)).await;
        }
    }

    fn lease_ttl(&self, id: i64) -> Result<i64, StoreError> {
        let st = self.inner.sm.read();
        st.mvcc
            .lease(id)
            .map(|l| l.ttl_s)
            .ok_or(StoreError::LeaseNotFound)
    }

    // ---- watch ----

    /// Starts a watcher that sends to `out` until `out` closes. Returns the
    /// control channel used for progress requests.
    pub fn watch(
        &self,
        mut spec: WatchSpec,
        out: mpsc::Sender<WatchOut>,
    ) -> Result<mpsc::Sender<WatchCtl>, StoreError> {
        mvcc::check_key_range(&spec.key, &spec.range_end)?;
        spec.drop_some_events = self.inner.cfg.mutation == Mutation::DropWatchEvents;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run_watcher(self.inner.sm.clone(), spec, out, rx));
        Ok(tx)
    }

    pub fn watcher_count(&self) -> usize {
        self.inner.sm.hub.watcher_count()
    }

    // ---- cluster ----

    pub fn members(&self) -> Vec<MemberInfo> {
        let m = self
            .inner
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        let st = self.inner.sm.read();
        m.membership()
            .nodes()
            .map(|(id, node)| MemberInfo {
                id: *id,
                name: node.name.clone(),
                peer_addr: node.peer_addr.clone(),
                client_addr: st.client_addrs.get(id).cloned(),
            })
            .collect()
    }

    pub fn status(&self) -> StoreStatus {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let size = self.db_size_bytes();
        StoreStatus {
            leader: check_quorum::acting_leader(&m, self.lease(), self.leader_heard_ago())
                .unwrap_or(0),
            raft_term: m.current_term,
            raft_index: m.last_log_index.unwrap_or(0),
            raft_applied_index: m.last_applied.map_or(0, |l| l.index),
            revision: self.current_revision(),
            db_size_bytes: size,
        }
    }

    fn db_size_bytes(&self) -> i64 {
        dir_size(&self.inner.cfg.data_dir.join("store")) as i64
    }

    /// A consistent copy of the state as a snapshot file (see
    /// [`crate::snapshot_file`]), for `Maintenance.Snapshot`. With a quorum
    /// it first waits for a read barrier, so the copy holds every write
    /// acknowledged before the call; without one (quorum lost) it copies
    /// what this replica has applied, which is what recovery needs.
    pub async fn snapshot_bytes(&self) -> Result<Vec<u8>, StoreError> {
        use openraft::RaftSnapshotBuilder;
        if let Err(e) = self.read_barrier().await {
            tracing::warn!("snapshot without a read barrier ({e}): copying the local state");
        }
        let mut sm = StateMachine {
            shared: self.inner.sm.clone(),
        };
        let snap = sm
            .build_snapshot()
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        crate::snapshot_file::encode_file(snap.meta, snap.snapshot)
            .map_err(|e| StoreError::Internal(e.to_string()))
    }

    /// etcd's HashKV: `(hash, revision, compact_revision)` at `revision`
    /// (0: current). Serializable, like etcd's.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), StoreError> {
        let st = self.inner.sm.read();
        let at = st.mvcc.check_readable(revision)?;
        Ok((
            st.mvcc.hash_at(at),
            st.mvcc.current_revision(),
            st.mvcc.compact_revision(),
        ))
    }

    // ---- background ----

    fn spawn_background(&self) {
        let s = self.clone();
        tokio::spawn(async move { s.lessor_loop().await });
        let s = self.clone();
        tokio::spawn(async move { s.publish_loop().await });
        let s = self.clone();
        tokio::spawn(async move { s.compactor_loop().await });
        let s = self.clone();
        tokio::spawn(async move { s.leader_watch_loop().await });
        let s = self.clone();
        tokio::spawn(async move { s.quorum_watch_loop().await });
    }

    fn is_running(&self) -> bool {
        self.inner
            .raft
            .metrics()
            .borrow_watched()
            .running_state
            .is_ok()
    }

    async fn lessor_loop(&self) {
        while self.is_running() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            // A leader without a quorum could not commit a revoke anyway.
            if !self.is_acting_leader() {
                self.inner.lessor.demote();
                continue;
            }
            let leases: Vec<(i64, i64)> = {
                let st = self.inner.sm.read();
                st.mvcc.leases().map(|l| (l.id, l.ttl_s)).collect()
            };
            for id in self.inner.lessor.expired(&leases, Instant::now()) {
                let s = self.clone();
                tokio::spawn(async move {
                    match s.lease_revoke(id).await {
                        Ok(_) | Err(StoreError::LeaseNotFound) => {}
                        Err(e) => tracing::warn!(lease = id, "revoking expired lease: {e}"),
                    }
                });
            }
        }
    }

    /// Whether member `id` has published a client address (has started).
    pub(crate) fn is_published_member(&self, id: u64) -> bool {
        self.inner.sm.read().client_addrs.contains_key(&id)
    }

    /// Whether this replica's client address is in the replicated member
    /// list (etcd serves clients only after this).
    pub fn is_published(&self) -> bool {
        let known = self
            .inner
            .sm
            .read()
            .client_addrs
            .get(&self.inner.id)
            .cloned();
        known.as_deref() == Some(self.inner.cfg.client_addr.as_str())
    }

    /// Waits until [`Store::is_published`]; needs a quorum.
    pub async fn wait_published(&self) {
        while !self.is_published() && self.is_running() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Announces this replica's client address once per start.
    async fn publish_loop(&self) {
        let cmd = Command::Publish {
            member_id: self.inner.id,
            client_addr: self.inner.cfg.client_addr.clone(),
        };
        while self.is_running() {
            let known = self
                .inner
                .sm
                .read()
                .client_addrs
                .get(&self.inner.id)
                .cloned();
            if known.as_deref() == Some(self.inner.cfg.client_addr.as_str()) {
                return;
            }
            if self.current_leader().is_some() && self.propose(cmd.clone()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn compactor_loop(&self) {
        let (period, keep) = match self.inner.cfg.auto_compaction {
            AutoCompaction::Off => return,
            AutoCompaction::Revisions(n) => (Duration::from_secs(5), Keep::Revisions(n)),
            AutoCompaction::Periodic(d) => ((d / 10).max(Duration::from_secs(1)), Keep::Since(d)),
        };
        let mut samples: Vec<(Instant, i64)> = Vec::new();
        while self.is_running() {
            tokio::time::sleep(period).await;
            let now = Instant::now();
            let (cur, compacted) = {
                let st = self.inner.sm.read();
                (st.mvcc.current_revision(), st.mvcc.compact_revision())
            };
            samples.push((now, cur));
            let target = match keep {
                Keep::Revisions(n) => cur - n,
                Keep::Since(d) => {
                    samples.retain(|(t, _)| now.duration_since(*t) <= d + period);
                    samples
                        .iter()
                        .find(|(t, _)| now.duration_since(*t) >= d)
                        .map_or(0, |(_, r)| *r)
                }
            };
            if self.is_acting_leader() && target > compacted {
                if let Err(e) = self.compact(target).await {
                    tracing::debug!("auto compaction to {target}: {e}");
                }
            }
        }
    }

    async fn serve_forward(&self, req: ForwardRequest) -> ForwardResponse {
        if let ForwardRequest::Membership(r) = req {
            return ForwardResponse::Membership(self.serve_membership(r).await);
        }
        if !self.is_acting_leader() {
            return ForwardResponse::NotLeader;
        }
        let timeout = self.inner.cfg.request_timeout;
        match req {
            ForwardRequest::Write(cmd) => match self.propose_local(cmd, timeout).await {
                Some(r) => ForwardResponse::Write(r),
                None => ForwardResponse::NotLeader,
            },
            // The follower waits for its own apply; the leader's need not.
            ForwardRequest::ReadIndex => match tokio::time::timeout(
                timeout,
                self.inner.raft.get_read_log_id(ReadPolicy::ReadIndex),
            )
            .await
            {
                Ok(Ok((read, _))) => ForwardResponse::ReadIndex(read.index()),
                _ => ForwardResponse::NotLeader,
            },
            ForwardRequest::LeaseKeepAlive(id) => {
                ForwardResponse::Lease(self.lease_ttl(id).map(|ttl| {
                    self.inner.lessor.keep_alive(id, ttl, Instant::now());
                    (ttl, ttl)
                }))
            }
            // Answered in `PeerHandler::handle`, never forwarded to here.
            ForwardRequest::PreVote(_) => ForwardResponse::NotLeader,
            ForwardRequest::LeaseTimeToLive(id) => ForwardResponse::Lease(
                self.lease_ttl(id)
                    .map(|ttl| (self.inner.lessor.remaining_s(id, ttl, Instant::now()), ttl)),
            ),
            ForwardRequest::Membership(_) => unreachable!("served above"),
            // Answered by `serve_batch`; batches are never nested.
            ForwardRequest::Batch(_) => ForwardResponse::NotLeader,
        }
    }

    /// Serves a follower's batch: every item concurrently, so the writes
    /// reach raft together, answered in order.
    async fn serve_batch(&self, items: Vec<ForwardRequest>) -> ForwardResponse {
        if !self.is_acting_leader() {
            return ForwardResponse::NotLeader;
        }
        let mut writes = Vec::new();
        let mut others = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            match item {
                ForwardRequest::Write(cmd) => writes.push((i, cmd)),
                other => others.push((i, other)),
            }
        }
        let (write_at, cmds): (Vec<usize>, Vec<Command>) = writes.into_iter().unzip();
        let (other_at, others): (Vec<usize>, Vec<ForwardRequest>) = others.into_iter().unzip();
        let (written, served) = futures::join!(
            self.propose_many(cmds, self.inner.cfg.request_timeout),
            futures::future::join_all(others.into_iter().map(|r| self.serve_forward(r)))
        );
        let mut answers: Vec<(usize, ForwardResponse)> = write_at
            .into_iter()
            .zip(written)
            .chain(other_at.into_iter().zip(served))
            .collect();
        answers.sort_unstable_by_key(|(i, _)| *i);
        ForwardResponse::Batch(answers.into_iter().map(|(_, a)| a).collect())
    }
}

/// What a write raft refused means for its caller: `None` when it was
/// rejected before it was appended (safe to retry elsewhere).
fn write_error(
    e: openraft::errors::ClientWriteError<crate::types::TypeConfig>,
) -> Option<Result<CommandResponse, StoreError>> {
    use openraft::errors::ClientWriteError;
    match e {
        ClientWriteError::ForwardToLeader(_) => None,
        ClientWriteError::LogEntryDiscarded(_) => Some(Err(StoreError::LeaderChanged)),
        e => Some(Err(StoreError::Internal(e.to_string()))),
    }
}

enum Keep {
    Revisions(i64),
    Since(Duration),
}

fn single_op(r: Request) -> TxnRequest {
    TxnRequest {
        compare: vec![],
        success: vec![RequestOp { request: Some(r) }],
        failure: vec![],
    }
}

fn first_response(resp: TxnResponse) -> Option<Response> {
    let header = resp.header;
    let mut r = resp.responses.into_iter().next()?.response?;
    match &mut r {
        Response::ResponsePut(p) => p.header = header,
        Response::ResponseDeleteRange(d) => d.header = header,
        Response::ResponseRange(g) => g.header = header,
        Response::ResponseTxn(t) => t.header = header,
    }
    Some(r)
}

/// etcd sets the same header on a txn and every response inside it.
fn fill_headers(resp: &mut TxnResponse, h: &ResponseHeader) {
    resp.header = Some(*h);
    for op in &mut resp.responses {
        match &mut op.response {
            Some(Response::ResponsePut(p)) => p.header = Some(*h),
            Some(Response::ResponseDeleteRange(d)) => d.header = Some(*h),
            Some(Response::ResponseRange(g)) => g.header = Some(*h),
            Some(Response::ResponseTxn(t)) => fill_headers(t, h),
            None => {}
        }
    }
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tonic::async_trait]
impl PeerHandler for Store {
    async fn handle(&self, method: PeerMethod, data: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
        let bad = |e: std::io::Error| {
            tonic::Status::invalid_argument(format!("undecodable peer message: {e}"))
        };
        let raft = &self.inner.raft;
        let out = match method {
            PeerMethod::AppendEntries => {
                let req: AppendEntriesRequest<crate::types::TypeConfig> =
                    decode(&data).map_err(bad)?;
                let resp = raft.append_entries(req).await;
                if matches!(&resp, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                    self.heard_from_leader();
                }
                encode(&resp)
            }
            PeerMethod::Vote => {
                let req: VoteRequest<crate::types::TypeConfig> = decode(&data).map_err(bad)?;
                encode(&raft.vote(req).await)
            }
            PeerMethod::InstallSnapshot => {
                type Req = (
                    VoteOf<crate::types::TypeConfig>,
                    SnapshotMetaOf<crate::types::TypeConfig>,
                    Vec<u8>,
                );
                let (vote, meta, snapshot): Req = decode(&data).map_err(bad)?;
                let snap = openraft::Snapshot { meta, snapshot };
                let resp = raft.install_full_snapshot(vote, snap).await;
                if resp.is_ok() {
                    self.heard_from_leader();
                }
                encode(&resp)
            }
            PeerMethod::Forward => match decode(&data).map_err(bad)? {
                ForwardRequest::PreVote(b) => {
                    let req: VoteRequest<crate::types::TypeConfig> = decode(&b).map_err(bad)?;
                    encode(&raft.pre_vote(req).await)
                }
                ForwardRequest::Batch(items) => encode(&self.serve_batch(items).await),
                req => encode(&self.serve_forward(req).await),
            },
        };
        out.map_err(|e| tonic::Status::internal(e.to_string()))
    }
}
