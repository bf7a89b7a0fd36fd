//! The leader side: each change checked against etcd's rules and run
//! through openraft, one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, Instant as _};

use super::*;
use crate::types::{Member, NodeId, TypeConfig};
use crate::{Store, StoreError};

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
    pub(super) async fn change(
        &self,
        change: ChangeMembers<NodeId, Member>,
    ) -> Result<(), MemberError> {
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
    pub(super) fn learner_in_sync(&self, id: u64) -> bool {
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
pub(super) fn ready_to_add_voter(started: usize, voters: usize) -> bool {
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
