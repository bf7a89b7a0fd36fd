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

mod background;
mod client;
mod identity;
mod leader;

pub(crate) use background::{send_transfer_leader, spawn};
pub use client::check_peer_addr;
pub(crate) use identity::{record_identity, resolve_identity};

use openraft::raft::{TransferLeaderRequest, TransferLeaderResponse};
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::types::{NodeId, TypeConfig};
use crate::StoreError;

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
