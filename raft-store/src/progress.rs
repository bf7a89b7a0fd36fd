//! A read-only view of replication progress, for dashboards: who leads,
//! in which term, how far this replica has applied, and (on the leader)
//! how far each member's log matches. Reading it takes no lock beyond
//! the raft metrics' watch channel and never waits for the cluster.

use std::collections::BTreeMap;

use openraft::async_runtime::WatchReceiver;

use crate::store::Store;
use crate::types::NodeId;

/// Replication progress as this replica sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The replica answering.
    pub member_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// The last entry in this replica's log.
    pub last_log_index: u64,
    pub applied_index: u64,
    /// The cluster's commit index; known on the leader only.
    pub committed_index: Option<u64>,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Each member's highest log index matching the leader's (`None` for
    /// a member nothing has been replicated to yet). Only the leader
    /// tracks this; on a follower the map is `None`.
    pub matched: Option<BTreeMap<NodeId, Option<u64>>>,
}

impl Store {
    /// This replica's view of the cluster's replication progress.
    pub fn progress(&self) -> Progress {
        let m = self.raft().metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let matched = m.replication.as_ref().map(|r| {
            r.iter()
                .map(|(id, log)| (*id, log.as_ref().map(|l| l.index)))
                .collect()
        });
        Progress {
            member_id: self.member_id(),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            committed_index: m
                .state
                .is_leader()
                .then(|| m.cluster_committed.map_or(0, |l| l.index)),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            matched,
        }
    }
}
