//! Runtime membership changes, etcd's Cluster API on openraft's membership.
//!
//! Every change runs on the leader, one at a time (a mutex), through
//! openraft's joint consensus. A follower forwards the request to the
//! leader. The rules and error messages are etcd's (`etcdserver/cluster`):
//!
//! - `MemberAdd` gives the new member a random 64-bit id (ids are never
//!   reused: a re-added replica gets a new one). A learner is added as an
//!   openraft learner. A voter is added as a learner too and promoted by the
//!   leader as soon as it has caught up: openraft only lets caught-up
//!   learners vote, and this way an added-but-not-started member never
//!   counts against quorum. `MemberList` reports it as a voter at once, as
//!   etcd does. The pending promotion lives in the leader's memory; if
//!   leadership changes before it happens, the member stays a learner and
//!   `member promote` finishes it.
//! - A voter add that would leave fewer started voters than a quorum of the
//!   new size is refused, and so is a voter removal that would.
//! - A removed member learns it (from its membership or by asking the
//!   leader), persists that in its data dir, and stops; it then refuses to
//!   start again with that identity.
//! - A joining replica (`initial_cluster_state = Existing`, empty data dir)
//!   learns its id and the cluster id from a peer, by its peer address.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use keel_net::{PeerClient, PeerMethod};
use openraft::async_runtime::WatchReceiver;
use openraft::raft::{TransferLeaderRequest, TransferLeaderResponse};
use openraft::{ChangeMembers, Instant as _};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::db::{Db, CF_META};
use crate::log_store::{decode, encode};
use crate::store::{ForwardRequest, ForwardResponse, OpenStoreError, StoreConfig};
use crate::types::{member_id, Member, NodeId, TypeConfig};
use crate::{Store, StoreError};

const KEY_MEMBER_ID: &[u8] = b"member_id";
const KEY_CLUSTER: &[u8] = b"cluster";
const KEY_REMOVED: &[u8] = b"removed";

/// etcd allows one learner at a time (`maxLearners`).
const MAX_LEARNERS: usize = 1;

/// How a replica with an empty data dir starts (etcd's
/// `--initial-cluster-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialClusterState {
    /// Bootstrap a new cluster from `initial_cluster`.
    #[default]
    New,
    /// Join a running cluster as a member added with `MemberAdd`.
    Existing,
}

/// Membership errors, with etcd's messages and gRPC codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MemberError {
    #[error("etcdserver: member not found")]
    NotFound,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    BadUrls,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    TransferTimeout,
    #[error("{0}")]
    Store(StoreError),
}

impl MemberError {
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        let code = match self {
            MemberError::NotFound => Code::NotFound,
            MemberError::BadUrls => Code::InvalidArgument,
            MemberError::TransferTimeout => Code::Unavailable,
            MemberError::Store(e) => return e.to_status(),
            _ => Code::FailedPrecondition,
        };
        tonic::Status::new(code, self.to_string())
    }
}

impl From<StoreError> for MemberError {
    fn from(e: StoreError) -> Self {
        MemberError::Store(e)
    }
}

impl From<MemberError> for tonic::Status {
    fn from(e: MemberError) -> Self {
        e.to_status()
    }
}

/// A membership request between replicas (inside `PeerMethod::Forward`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MembershipRequest {
    Add {
        peer_addr: String,
        learner: bool,
    },
    Promote {
        id: u64,
    },
    Remove {
        id: u64,
    },
    Update {
        id: u64,
        peer_addr: String,
    },
    /// A joined member tells the cluster its name.
    SetName {
        id: u64,
        name: String,
    },
    MoveLeader {
        to: u64,
    },
    /// Leader only: is `id` still a member of cluster `cluster_id`?
    IsMember {
        id: u64,
        cluster_id: u64,
    },
    /// Any replica: which member has this peer address?
    Lookup {
        peer_addr: String,
    },
    /// The leader hands leadership to this replica (openraft's message).
    TransferLeader(TransferLeaderRequest<TypeConfig>),
}

impl MembershipRequest {
    /// Requests any replica answers itself; the rest only the leader does.
    fn is_local(&self) -> bool {
        matches!(
            self,
            MembershipRequest::Lookup { .. } | MembershipRequest::TransferLeader(_)
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MembershipReply {
    Added {
        id: u64,
    },
    Done,
    IsMember(bool),
    /// `published`: that member has started before (its client address
    /// is in the replicated member list).
    Found {
        cluster_id: u64,
        id: Option<u64>,
        published: bool,
    },
    Transfer(TransferLeaderResponse<TypeConfig>),
    NotLeader,
}

pub(crate) type MembershipResult = Result<MembershipReply, MemberError>;

/// The leader-side state: one change at a time, and the voters added by
/// `MemberAdd` still waiting to catch up before their promotion.
pub(crate) struct MembershipState {
    ops: tokio::sync::Mutex<()>,
    pending_voters: std::sync::Mutex<BTreeSet<NodeId>>,
    removed_tx: tokio::sync::watch::Sender<bool>,
    db: Db,
}

impl MembershipState {
    pub(crate) fn new(db: Db) -> Self {
        MembershipState {
            ops: tokio::sync::Mutex::new(()),
            pending_voters: Default::default(),
            removed_tx: tokio::sync::watch::channel(false).0,
            db,
        }
    }

    fn pending(&self) -> BTreeSet<NodeId> {
        self.pending_voters.lock().expect("poisoned").clone()
    }
}

// ---- identity ----

/// Who this replica is, resolved before its store opens.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub id: NodeId,
    pub cluster_id: u64,
    /// Joined a running cluster: record the identity, never bootstrap.
    pub joined: bool,
}

struct Persisted {
    cluster: String,
    member: String,
    member_id: Option<u64>,
    removed: bool,
}

/// Reads the identity in an existing data dir without taking its lock.
fn peek(data_dir: &Path) -> Result<Option<Persisted>, OpenStoreError> {
    let store = data_dir.join("store");
    if !store.join("CURRENT").exists() {
        return Ok(None);
    }
    let opts = rocksdb::Options::default();
    let db = rocksdb::DB::open_cf_for_read_only(&opts, &store, [CF_META], false)
        .map_err(|e| OpenStoreError::Config(format!("data dir {}: {e}", store.display())))?;
    let cf = db.cf_handle(CF_META).expect("opened with meta");
    let get = |k: &[u8]| -> Result<Option<Vec<u8>>, OpenStoreError> {
        db.get_cf(cf, k)
            .map_err(|e| OpenStoreError::Config(format!("data dir {}: {e}", store.display())))
    };
    let text = |v: Option<Vec<u8>>| v.map(|v| String::from_utf8_lossy(&v).into_owned());
    Ok(Some(Persisted {
        cluster: text(get(KEY_CLUSTER)?).unwrap_or_default(),
        member: text(get(b"member")?).unwrap_or_default(),
        member_id: get(KEY_MEMBER_ID)?.and_then(|v| Some(u64::from_be_bytes(v.try_into().ok()?))),
        removed: get(KEY_REMOVED)?.is_some(),
    }))
}

fn removed_message(data_dir: &Path, name: &str, id: u64) -> String {
    format!(
        "member {name:?} ({id:x}) was removed from the cluster; data dir {} keeps that identity and \
         cannot rejoin. Add the replica again as a new member (`keel member add` or `etcdctl \
         member add`) and start it with an empty --data-dir and --initial-cluster-state existing",
        data_dir.display()
    )
}

/// Resolves this replica's member id and cluster id: from the data dir when
/// it has them, from `initial_cluster` when bootstrapping, or from a peer
/// when joining a running cluster.
pub(crate) async fn resolve_identity(
    cfg: &StoreConfig,
    peers: &PeerClient,
) -> Result<Resolved, OpenStoreError> {
    let static_identity = Resolved {
        id: member_id(&cfg.name),
        cluster_id: cfg.cluster_id(),
        joined: false,
    };
    match peek(&cfg.data_dir)? {
        Some(p) if p.removed => {
            let id = p.member_id.unwrap_or_else(|| member_id(&p.member));
            Err(OpenStoreError::Config(removed_message(
                &cfg.data_dir,
                &p.member,
                id,
            )))
        }
        Some(p) => match p.member_id {
            Some(id) => Ok(Resolved {
                id,
                cluster_id: u64::from_str_radix(&p.cluster, 16).map_err(|_| {
                    OpenStoreError::Config(format!(
                        "data dir {}: bad cluster id {:?}",
                        cfg.data_dir.display(),
                        p.cluster
                    ))
                })?,
                joined: true,
            }),
            None => Ok(static_identity),
        },
        None if cfg.initial_cluster_state == InitialClusterState::New => {
            refuse_rebootstrap(cfg, peers, &static_identity).await?;
            Ok(static_identity)
        }
        None => join_lookup(cfg, peers).await,
    }
}

/// etcd's "member has already been bootstrapped": an empty data dir with
/// `New` for a member the running cluster knows as started means its data
/// was lost. Rejoining under the old id could break raft's promises (its
/// votes are gone), so it is refused; it must come back as a new member.
/// Peers that do not answer are skipped (a normal first bootstrap).
async fn refuse_rebootstrap(
    cfg: &StoreConfig,
    peers: &PeerClient,
    me: &Resolved,
) -> Result<(), OpenStoreError> {
    let req = ForwardRequest::Membership(MembershipRequest::Lookup {
        peer_addr: cfg.peer_addr.clone(),
    });
    let data = encode(&req).map_err(OpenStoreError::State)?;
    for (name, addr) in cfg.initial_cluster.iter().filter(|(n, _)| *n != cfg.name) {
        let r = peers
            .call(
                addr,
                PeerMethod::Forward,
                data.clone(),
                Duration::from_secs(1),
            )
            .await;
        if let Ok(Ok(ForwardResponse::Membership(Ok(MembershipReply::Found {
            cluster_id,
            id: Some(id),
            published: true,
        })))) = r.map(|b| decode::<ForwardResponse>(&b))
        {
            if cluster_id == me.cluster_id && id == me.id {
                return Err(OpenStoreError::Config(format!(
                    "member {:?} ({id:x}) has already been bootstrapped (member {name:?} knows                      it), but data dir {} is empty: its data was lost. Remove it (`keel member                      remove {}`), add it back as a new member (`keel member add`) and start it                      with --initial-cluster-state existing",
                    cfg.name,
                    cfg.data_dir.display(),
                    cfg.name
                )));
            }
        }
    }
    Ok(())
}

/// Asks the other replicas of `initial_cluster` which member id was added
/// for this replica's peer address.
async fn join_lookup(cfg: &StoreConfig, peers: &PeerClient) -> Result<Resolved, OpenStoreError> {
    let others: Vec<&(String, String)> = cfg
        .initial_cluster
        .iter()
        .filter(|(n, _)| *n != cfg.name)
        .collect();
    if others.is_empty() {
        return Err(OpenStoreError::Config(
            "--initial-cluster-state existing needs the running members in --initial-cluster"
                .into(),
        ));
    }
    let req = ForwardRequest::Membership(MembershipRequest::Lookup {
        peer_addr: cfg.peer_addr.clone(),
    });
    let data = encode(&req).map_err(OpenStoreError::State)?;
    let deadline = Instant::now() + cfg.request_timeout.max(Duration::from_secs(5));
    let mut last_err = String::new();
    while Instant::now() < deadline {
        for (name, addr) in &others {
            let r = peers
                .call(
                    addr,
                    PeerMethod::Forward,
                    data.clone(),
                    Duration::from_secs(2),
                )
                .await;
            match r.map(|b| decode::<ForwardResponse>(&b)) {
                Ok(Ok(ForwardResponse::Membership(Ok(MembershipReply::Found {
                    cluster_id,
                    id,
                    ..
                })))) => {
                    return match id {
                        Some(id) => Ok(Resolved {
                            id,
                            cluster_id,
                            joined: true,
                        }),
                        None => Err(OpenStoreError::Config(format!(
                            "the cluster has no member with peer URL http://{}; add it first \
                             (`keel member add {} --peer-url http://{}` or `etcdctl member add`)",
                            cfg.peer_addr, cfg.name, cfg.peer_addr
                        ))),
                    };
                }
                Ok(other) => last_err = format!("{name} ({addr}): unexpected answer {other:?}"),
                Err(e) => last_err = format!("{name}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(OpenStoreError::Config(format!(
        "cannot join: no member of --initial-cluster answered ({last_err})"
    )))
}

/// Records a joined identity in a fresh data dir, so a restart needs no
/// peer and keeps the id.
pub(crate) fn record_identity(db: &Db, r: &Resolved) -> Result<(), OpenStoreError> {
    if !r.joined {
        return Ok(());
    }
    let mut b = rocksdb::WriteBatch::default();
    b.put_cf(db.cf(CF_META), KEY_MEMBER_ID, r.id.to_be_bytes());
    b.put_cf(
        db.cf(CF_META),
        KEY_CLUSTER,
        format!("{:016x}", r.cluster_id),
    );
    db.write_synced(b)
        .map_err(|e| OpenStoreError::State(std::io::Error::other(e)))
}

// ---- the client side: route to the leader ----

impl Store {
    /// Runs a membership request on the leader (forwarding to it), within
    /// the request timeout. A forward whose outcome is unknown is reported,
    /// not retried.
    pub(crate) async fn member_request(&self, req: MembershipRequest) -> MembershipResult {
        let deadline = Instant::now() + self.config().request_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(if self.current_leader().is_none() {
                    StoreError::NoLeader.into()
                } else {
                    StoreError::Timeout.into()
                });
            }
            match self.leader_member() {
                None => {}
                Some((leader, _)) if leader == self.member_id() => {
                    match self.serve_membership(req.clone()).await {
                        Ok(MembershipReply::NotLeader) => {}
                        r => return r,
                    }
                }
                Some((_, node)) => {
                    match self
                        .forward(&node, ForwardRequest::Membership(req.clone()), left)
                        .await
                    {
                        Ok(ForwardResponse::Membership(Ok(MembershipReply::NotLeader))) => {}
                        Ok(ForwardResponse::NotLeader) => {}
                        Ok(ForwardResponse::Membership(r)) => return r,
                        Ok(_) => {
                            return Err(StoreError::Internal("bad forward answer".into()).into())
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20).min(left)).await;
        }
    }

    pub async fn member_add(&self, peer_addr: &str, learner: bool) -> Result<u64, MemberError> {
        let peer_addr = check_peer_addr(peer_addr)?;
        match self
            .member_request(MembershipRequest::Add { peer_addr, learner })
            .await?
        {
            MembershipReply::Added { id } => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    pub async fn member_promote(&self, id: u64) -> Result<(), MemberError> {
        self.member_request(MembershipRequest::Promote { id })
            .await
            .map(|_| ())
    }

    pub async fn member_remove(&self, id: u64) -> Result<(), MemberError> {
        self.member_request(MembershipRequest::Remove { id })
            .await
            .map(|_| ())
    }

    pub async fn member_update(&self, id: u64, peer_addr: &str) -> Result<(), MemberError> {
        let peer_addr = check_peer_addr(peer_addr)?;
        self.member_request(MembershipRequest::Update { id, peer_addr })
            .await
            .map(|_| ())
    }

    /// etcd's MoveLeader: hands leadership to voter `to` and waits until
    /// it leads.
    pub async fn move_leader(&self, to: u64) -> Result<(), MemberError> {
        self.member_request(MembershipRequest::MoveLeader { to })
            .await
            .map(|_| ())
    }

    /// Whether member `id` is a learner (a voter awaiting its automatic
    /// promotion counts as a voter, as etcd lists it).
    pub fn is_learner(&self, id: u64) -> bool {
        let m = self
            .raft()
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        let voter = m.membership().voter_ids().any(|v| v == id);
        !voter && !self.membership_state().pending().contains(&id)
    }

    /// Resolves when this member learns it was removed from the cluster
    /// (it has then stopped its raft node).
    pub async fn wait_removed(&self) {
        let mut rx = self.membership_state().removed_tx.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// On a clean shutdown: a leader hands leadership to the most
    /// up-to-date voter first, so the cluster has no election gap. Waits at
    /// most one election timeout; returns at once on a follower.
    pub async fn hand_off_leadership(&self) {
        let m = self.raft().metrics().borrow_watched().clone();
        if !m.state.is_leader() {
            return;
        }
        let me = self.member_id();
        let target = m
            .replication
            .as_ref()
            .and_then(|r| {
                m.membership_config
                    .membership()
                    .voter_ids()
                    .filter(|v| *v != me)
                    .max_by_key(|v| r.get(v).cloned().flatten().map(|l| l.index))
            })
            .filter(|_| m.replication.is_some());
        let Some(to) = target else { return };
        tracing::info!(
            to = format!("{to:x}"),
            "handing leadership over before shutdown"
        );
        let wait = Duration::from_millis(self.config().election_timeout_ms.max(200));
        if let Err(e) = self.transfer_and_wait(to, wait).await {
            tracing::warn!("leadership hand-off: {e}");
        }
    }

    async fn transfer_and_wait(&self, to: u64, wait: Duration) -> Result<(), MemberError> {
        self.raft()
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| MemberError::Store(StoreError::Internal(e.to_string())))?;
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.current_leader() == Some(to) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(MemberError::TransferTimeout)
    }
}

fn unexpected(r: MembershipReply) -> MemberError {
    MemberError::Store(StoreError::Internal(format!(
        "unexpected membership answer {r:?}"
    )))
}

/// `http://host:port` or `host:port` → `host:port`.
pub fn check_peer_addr(url: &str) -> Result<String, MemberError> {
    let addr = url
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let ok = match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    };
    if ok {
        Ok(addr.to_string())
    } else {
        Err(MemberError::BadUrls)
    }
}

// ---- the leader side ----

impl Store {
    /// Serves a membership request that reached this replica.
    pub(crate) async fn serve_membership(&self, req: MembershipRequest) -> MembershipResult {
        if req.is_local() {
            return self.serve_local(req).await;
        }
        if !self.raft().is_leader() {
            return Ok(MembershipReply::NotLeader);
        }
        let st = self.membership_state();
        let _one_at_a_time = st.ops.lock().await;
        if !self.raft().is_leader() {
            return Ok(MembershipReply::NotLeader);
        }
        let m = self.raft().metrics().borrow_watched().clone();
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let node = |id: &u64| membership.get_node(id).cloned();
        let pending = st.pending();
        match req {
            MembershipRequest::Add { peer_addr, learner } => {
                if membership.nodes().any(|(_, n)| n.peer_addr == peer_addr) {
                    return Err(MemberError::PeerUrlExists);
                }
                if learner {
                    let learners = membership
                        .learner_ids()
                        .filter(|l| !pending.contains(l))
                        .count();
                    if learners >= MAX_LEARNERS {
                        return Err(MemberError::TooManyLearners);
                    }
                } else {
                    let started = self.started_voters(&voters);
                    if !ready_to_add_voter(started, voters.len() + pending.len()) {
                        return Err(MemberError::NotEnoughStarted);
                    }
                }
                let id = loop {
                    let id: u64 = rand::random();
                    if id != 0 && node(&id).is_none() {
                        break id;
                    }
                };
                let member = Member {
                    name: String::new(),
                    peer_addr,
                };
                self.raft()
                    .add_learner(id, member, false)
                    .await
                    .map_err(write_error)?;
                if !learner {
                    st.pending_voters.lock().expect("poisoned").insert(id);
                }
                Ok(MembershipReply::Added { id })
            }
            MembershipRequest::Promote { id } => {
                if node(&id).is_none() {
                    return Err(MemberError::NotFound);
                }
                if voters.contains(&id) || pending.contains(&id) {
                    return Err(MemberError::NotLearner);
                }
                if !self.learner_in_sync(id) {
                    return Err(MemberError::LearnerNotReady);
                }
                self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                    .await?;
                Ok(MembershipReply::Done)
            }
            MembershipRequest::Remove { id } => {
                if node(&id).is_none() {
                    return Err(MemberError::NotFound);
                }
                st.pending_voters.lock().expect("poisoned").remove(&id);
                if voters.contains(&id) {
                    let rest: BTreeSet<NodeId> =
                        voters.iter().copied().filter(|v| *v != id).collect();
                    if rest.is_empty() {
                        return Err(MemberError::NotEnoughStarted);
                    }
                    let started = self.started_voters(&rest);
                    if started < rest.len() / 2 + 1 {
                        return Err(MemberError::NotEnoughStarted);
                    }
                    self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
                        .await?;
                } else {
                    self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                        .await?;
                }
                Ok(MembershipReply::Done)
            }
            MembershipRequest::Update { id, peer_addr } => {
                let Some(mut n) = node(&id) else {
                    return Err(MemberError::NotFound);
                };
                if membership
                    .nodes()
                    .any(|(other, m)| *other != id && m.peer_addr == peer_addr)
                {
                    return Err(MemberError::PeerUrlExists);
                }
                if n.peer_addr != peer_addr {
                    // openraft does not finish a change of the leader's own
                    // node: hand leadership over, and the request is
                    // retried on the new leader.
                    if let Some(r) = self.step_aside_for(id, &voters).await {
                        return r;
                    }
                    n.peer_addr = peer_addr;
                    self.change(ChangeMembers::SetNodes(BTreeMap::from([(id, n)])))
                        .await?;
                    // openraft keeps replicating to a node at the address
                    // its stream was built with; a new leader builds its
                    // streams from the new membership.
                    let me = self.member_id();
                    if let Some(to) = voters.iter().copied().find(|v| *v != id && *v != me) {
                        let wait = Duration::from_millis(self.config().election_timeout_ms * 2);
                        if let Err(e) = self.transfer_and_wait(to, wait).await {
                            tracing::warn!("leadership hand-off after a peer URL update: {e}");
                        }
                    }
                }
                Ok(MembershipReply::Done)
            }
            MembershipRequest::SetName { id, name } => {
                let Some(mut n) = node(&id) else {
                    return Err(MemberError::NotFound);
                };
                if n.name != name {
                    if let Some(r) = self.step_aside_for(id, &voters).await {
                        return r;
                    }
                    n.name = name;
                    self.change(ChangeMembers::SetNodes(BTreeMap::from([(id, n)])))
                        .await?;
                }
                Ok(MembershipReply::Done)
            }
            MembershipRequest::MoveLeader { to } => {
                if !voters.contains(&to) {
                    return Err(MemberError::BadLeaderTransferee);
                }
                if to != self.member_id() {
                    let wait = self.config().request_timeout;
                    self.transfer_and_wait(to, wait).await?;
                }
                Ok(MembershipReply::Done)
            }
            MembershipRequest::IsMember { id, cluster_id } => {
                if cluster_id != self.cluster_id() {
                    return Err(MemberError::NotFound);
                }
                Ok(MembershipReply::IsMember(node(&id).is_some()))
            }
            MembershipRequest::Lookup { .. } | MembershipRequest::TransferLeader(_) => {
                unreachable!("served by serve_local")
            }
        }
    }

    async fn serve_local(&self, req: MembershipRequest) -> MembershipResult {
        match req {
            MembershipRequest::Lookup { peer_addr } => {
                let m = self
                    .raft()
                    .metrics()
                    .borrow_watched()
                    .membership_config
                    .clone();
                let id = m
                    .membership()
                    .nodes()
                    .find(|(_, n)| n.peer_addr == peer_addr)
                    .map(|(id, _)| *id);
                let published = id.is_some_and(|id| self.is_published_member(id));
                Ok(MembershipReply::Found {
                    cluster_id: self.cluster_id(),
                    id,
                    published,
                })
            }
            MembershipRequest::TransferLeader(t) => self
                .raft()
                .handle_transfer_leader(t)
                .await
                .map(MembershipReply::Transfer)
                .map_err(|e| MemberError::Store(StoreError::Internal(e.to_string()))),
            _ => Ok(MembershipReply::NotLeader),
        }
    }

    /// When `id` is this leader and another voter exists: hands leadership
    /// to it and answers `NotLeader` (the caller retries there).
    async fn step_aside_for(&self, id: u64, voters: &BTreeSet<NodeId>) -> Option<MembershipResult> {
        if id != self.member_id() {
            return None;
        }
        let to = voters.iter().copied().find(|v| *v != id)?;
        let wait = Duration::from_millis(self.config().election_timeout_ms * 2);
        Some(
            self.transfer_and_wait(to, wait)
                .await
                .map(|()| MembershipReply::NotLeader),
        )
    }

    /// One joint-consensus change; removed voters leave the cluster.
    async fn change(&self, change: ChangeMembers<NodeId, Member>) -> Result<(), MemberError> {
        let left = self.config().request_timeout;
        match tokio::time::timeout(left, self.raft().change_membership(change, false)).await {
            Err(_) => Err(StoreError::Timeout.into()),
            Ok(r) => r.map(|_| ()).map_err(write_error),
        }
    }

    /// Voters that answered the leader within an election timeout (the
    /// leader counts itself): etcd counts members that have started; keel
    /// counts the ones that are up now, which also covers etcd's
    /// "unhealthy cluster" check.
    fn started_voters(&self, voters: &BTreeSet<NodeId>) -> usize {
        let m = self.raft().metrics().borrow_watched().clone();
        let fresh = Duration::from_millis(self.config().election_timeout_ms);
        voters
            .iter()
            .filter(|v| {
                **v == self.member_id()
                    || m.heartbeat
                        .as_ref()
                        .and_then(|h| h.get(v).cloned().flatten())
                        .is_some_and(|t| t.elapsed() <= fresh)
            })
            .count()
    }

    /// etcd's readiness: the learner has at least 90% of the leader's
    /// committed log.
    fn learner_in_sync(&self, id: u64) -> bool {
        let m = self.raft().metrics().borrow_watched().clone();
        let committed = m.cluster_committed.map_or(0, |l| l.index);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map(|l| l.index);
        matched.is_some_and(|i| i as f64 >= committed as f64 * 0.9)
    }
}

/// etcd's `IsReadyToAddVotingMember`: after the add, the started voters
/// must still be a quorum; growing a single member to two is allowed.
fn ready_to_add_voter(started: usize, voters: usize) -> bool {
    let members = voters + 1;
    (started == 1 && members == 2) || started > members / 2
}

fn write_error(
    e: openraft::errors::RaftError<TypeConfig, openraft::errors::ClientWriteError<TypeConfig>>,
) -> MemberError {
    use openraft::errors::{ClientWriteError, RaftError};
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            StoreError::LeaderChanged.into()
        }
        other => StoreError::Internal(other.to_string()).into(),
    }
}

// ---- background: promotions, names, removal ----

/// Starts this replica's membership loop.
pub(crate) fn spawn(store: &Store) {
    let s = store.clone();
    tokio::spawn(async move { s.membership_loop().await });
}

impl Store {
    async fn membership_loop(&self) {
        let me = self.member_id();
        let mut seen_self = false;
        let mut last_poll = Instant::now();
        let mut leaderless_since: Option<Instant> = None;
        let election = Duration::from_millis(self.config().election_timeout_ms);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let m = self.raft().metrics().borrow_watched().clone();
            if m.running_state.is_err() {
                return;
            }
            let effective = m.membership_config.membership().get_node(&me).cloned();
            let committed_has_me = m
                .committed_membership_config
                .membership()
                .get_node(&me)
                .is_some();
            if committed_has_me {
                seen_self = true;
            }
            if seen_self && !committed_has_me && m.committed_membership_config.log_id().is_some() {
                return self.stop_removed().await;
            }
            leaderless_since = match m.current_leader {
                Some(_) => None,
                None => leaderless_since.or(Some(Instant::now())),
            };
            let doubtful =
                effective.is_none() || leaderless_since.is_some_and(|t| t.elapsed() > election * 2);
            if doubtful && last_poll.elapsed() > election {
                last_poll = Instant::now();
                if self.poll_removed().await {
                    return self.stop_removed().await;
                }
            }
            if m.state.is_leader() {
                self.promote_caught_up().await;
            }
            if let Some(n) = effective {
                if n.name != self.config().name {
                    let req = MembershipRequest::SetName {
                        id: me,
                        name: self.config().name.clone(),
                    };
                    if let Err(e) = self.member_request(req).await {
                        tracing::debug!("publishing member name: {e}");
                    }
                }
            }
        }
    }

    /// Asks every other replica known here whether this member is still in
    /// the cluster; only the leader answers. True: it was removed.
    async fn poll_removed(&self) -> bool {
        let me = self.member_id();
        let m = self
            .raft()
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        let mut addrs: Vec<String> = m
            .membership()
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(_, n)| n.peer_addr.clone())
            .collect();
        for (name, a) in &self.config().initial_cluster {
            if *name != self.config().name && !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        let req = ForwardRequest::Membership(MembershipRequest::IsMember {
            id: me,
            cluster_id: self.cluster_id(),
        });
        let Ok(data) = encode(&req) else { return false };
        for a in &addrs {
            let r = self
                .peer_client()
                .call(a, PeerMethod::Forward, data.clone(), Duration::from_secs(1))
                .await;
            if let Ok(Ok(ForwardResponse::Membership(Ok(MembershipReply::IsMember(is))))) =
                r.map(|b| decode::<ForwardResponse>(&b))
            {
                return !is;
            }
        }
        false
    }

    async fn stop_removed(&self) {
        let me = self.member_id();
        tracing::error!(
            member_id = format!("{me:x}"),
            "this member was removed from the cluster; stopping"
        );
        // A removed leader first lets openraft hand leadership over.
        let deadline = Instant::now() + Duration::from_millis(self.config().election_timeout_ms);
        while self.raft().is_leader() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let st = self.membership_state();
        let mut b = rocksdb::WriteBatch::default();
        b.put_cf(st.db.cf(CF_META), KEY_MEMBER_ID, me.to_be_bytes());
        b.put_cf(st.db.cf(CF_META), KEY_REMOVED, b"1");
        if let Err(e) = st.db.write_synced(b) {
            tracing::error!("recording the removal in the data dir: {e}");
        }
        let _ = self.raft().shutdown().await;
        st.removed_tx.send_replace(true);
    }

    /// Promotes the voters `MemberAdd` added once they have caught up.
    async fn promote_caught_up(&self) {
        let st = self.membership_state();
        for id in st.pending() {
            let m = self
                .raft()
                .metrics()
                .borrow_watched()
                .membership_config
                .clone();
            if m.membership().get_node(&id).is_none() || m.membership().voter_ids().any(|v| v == id)
            {
                st.pending_voters.lock().expect("poisoned").remove(&id);
                continue;
            }
            if !self.learner_in_sync(id) {
                continue;
            }
            let _one_at_a_time = st.ops.lock().await;
            match self
                .change(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                .await
            {
                Ok(()) => {
                    tracing::info!(member_id = format!("{id:x}"), "promoted the added voter");
                    st.pending_voters.lock().expect("poisoned").remove(&id);
                }
                Err(e) => tracing::debug!("promoting {id:x}: {e}"),
            }
        }
    }
}

/// Sends openraft's transfer-leader message to `addr` (the network's
/// `transfer_leader`).
pub(crate) async fn send_transfer_leader(
    client: &PeerClient,
    addr: &str,
    req: TransferLeaderRequest<TypeConfig>,
    timeout: Duration,
) -> Result<TransferLeaderResponse<TypeConfig>, openraft::errors::RPCError<TypeConfig>> {
    use openraft::errors::{NetworkError, RPCError, Unreachable};
    let data = encode(&ForwardRequest::Membership(
        MembershipRequest::TransferLeader(req),
    ))
    .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    let out = client
        .call(addr, PeerMethod::Forward, data, timeout)
        .await
        .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
    match decode::<ForwardResponse>(&out) {
        Ok(ForwardResponse::Membership(Ok(MembershipReply::Transfer(r)))) => Ok(r),
        other => Err(RPCError::Network(NetworkError::new(
            &std::io::Error::other(format!("unexpected transfer-leader answer {other:?}")),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voter_add_readiness_is_etcds() {
        assert!(ready_to_add_voter(1, 1), "1 -> 2 is allowed");
        assert!(ready_to_add_voter(2, 2), "2 of 3");
        assert!(!ready_to_add_voter(1, 2), "1 of 3 started");
        assert!(ready_to_add_voter(3, 3), "3 of 4");
        assert!(!ready_to_add_voter(2, 3), "2 of 4 is no quorum");
    }

    #[test]
    fn peer_urls() {
        assert_eq!(
            check_peer_addr("http://127.0.0.1:2380").unwrap(),
            "127.0.0.1:2380"
        );
        assert_eq!(check_peer_addr("10.0.0.1:7").unwrap(), "10.0.0.1:7");
        for bad in [
            "",
            "http://",
            "127.0.0.1",
            "http://h:0",
            "http://h:x",
            "a/b:1",
        ] {
            assert_eq!(check_peer_addr(bad), Err(MemberError::BadUrls), "{bad}");
        }
    }

    #[test]
    fn codes_are_etcds() {
        assert_eq!(
            MemberError::NotFound.to_status().code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            MemberError::LearnerNotReady.to_status().message(),
            "etcdserver: can only promote a learner member which is in sync with leader"
        );
        assert_eq!(
            MemberError::NotEnoughStarted.to_status().code(),
            tonic::Code::FailedPrecondition
        );
    }
}
