//! Check-quorum: a leader that has not heard from a quorum for a whole
//! leader lease stops acting as the leader, and a follower that has not
//! heard from its leader for as long stops naming it.
//!
//! What openraft (0.10.0-alpha.37) does by itself: a leader keeps a quorum
//! lease, the sending time of the last heartbeat or append a quorum
//! acknowledged, and refuses new proposals once it is older than
//! `election_timeout_max` (its `CheckQuorum`). But it keeps its
//! `ServerState::Leader` until it sees a higher term, which a partitioned
//! leader never does, and there is no API to step it down. Left at that, a
//! partitioned leader would keep reporting itself leader in `Status`,
//! `/readyz` and `/metrics`, and keep revoking expired leases it cannot
//! commit.
//!
//! What keel adds: every leadership decision of the store goes through
//! [`Store::acting_leader`]. The leader counts only while its quorum lease
//! holds (a single voter always holds it); a follower counts its leader only
//! while that leader's appends keep arriving within the same lease. Once the
//! lease runs out the replica reports no leader (etcd: a check-quorum step
//! down), refuses to serve linearizable reads and forwarded requests as
//! leader, and requests wait for a leader within their deadline and then
//! fail with `etcdserver: no leader`, never returning stale data. A later
//! quorum acknowledgement (the partition heals) restores it, or it learns
//! the higher term of the leader the majority elected meanwhile.
//!
//! The returning replica does not disrupt the cluster: PreVote (raft config)
//! keeps a replica that cannot win from raising the term.
//!
//! Guarantee: raft safety does not depend on this (a leader without a
//! quorum cannot commit); it only makes what the replica reports, and the
//! requests it takes, agree with what it can actually do.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use tokio::time::Instant;

use super::Store;
use crate::stats::RaftGauges;
use crate::types::{NodeId, TypeConfig};

type Metrics = openraft::RaftMetrics<TypeConfig>;

/// Whether `m` describes a leader whose quorum lease holds.
pub(crate) fn leads(m: &Metrics, lease: Duration) -> bool {
    if !m.state.is_leader() {
        return false;
    }
    let membership = m.membership_config.membership();
    let mut voters = membership.voter_ids();
    let alone = voters.next() == Some(m.id) && voters.next().is_none();
    alone
        || m.last_quorum_acked
            .as_ref()
            .is_some_and(|acked| acked.elapsed() < lease)
}

/// The leader a replica described by `m` may act on: itself while it
/// [`leads`], another while its appends were heard within `lease`.
pub(crate) fn acting_leader(m: &Metrics, lease: Duration, heard_ago: Duration) -> Option<NodeId> {
    let leader = m.current_leader?;
    if leader == m.id {
        leads(m, lease).then_some(leader)
    } else {
        (heard_ago < lease).then_some(leader)
    }
}

impl Store {
    /// The leader lease: openraft's (`election_timeout_max`, twice the
    /// configured election timeout).
    pub(super) fn lease(&self) -> Duration {
        Duration::from_millis(self.inner.cfg.election_timeout_ms.saturating_mul(2))
    }

    /// The leader this replica acts on and reports (module docs); `None`
    /// while there is none, or none that a quorum is known to follow.
    pub(super) fn acting_leader(&self) -> Option<NodeId> {
        // Borrowed, not cloned: this runs on every request.
        let heard_ago = self.leader_heard_ago();
        let rx = self.inner.raft.metrics();
        let m = rx.borrow_watched();
        acting_leader(&m, self.lease(), heard_ago)
    }

    /// Whether this replica is the leader and a quorum acknowledges it.
    pub fn is_acting_leader(&self) -> bool {
        self.acting_leader() == Some(self.inner.id)
    }

    pub(super) fn leader_heard_ago(&self) -> Duration {
        let at = *self
            .inner
            .leader_heard_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        at.elapsed()
    }

    /// Records that the current leader's append (or snapshot) was accepted.
    pub(super) fn heard_from_leader(&self) {
        *self
            .inner
            .leader_heard_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Whether this replica is in the raft membership at all (false once it
    /// was removed, or before a joining replica is added).
    pub fn is_member(&self) -> bool {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        m.membership_config
            .membership()
            .get_node(&self.inner.id)
            .is_some()
    }

    /// Brings the raft gauges up to date and appends the store's metrics
    /// (see [`crate::stats`]) in Prometheus text format, without `# EOF`.
    pub fn render_metrics(&self, out: &mut String) -> std::fmt::Result {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let acting = acting_leader(&m, self.lease(), self.leader_heard_ago());
        self.inner.stats.update(&RaftGauges {
            has_leader: acting.is_some(),
            is_leader: acting == Some(self.inner.id),
            is_learner: self.is_member() && self.is_learner(self.inner.id),
            term: m.current_term,
            committed: m.local_committed.as_ref().map_or(0, |l| l.index),
            applied: m.last_applied.as_ref().map_or(0, |l| l.index),
        });
        self.inner.stats.encode(out)
    }

    /// Watches the acting leader: counts leader changes for the metrics and
    /// logs when this replica stops or resumes acting as leader.
    pub(super) async fn quorum_watch_loop(&self) {
        let period = Duration::from_millis(self.inner.cfg.heartbeat_ms.max(10));
        let mut last_seen: Option<NodeId> = None;
        let mut leading = false;
        while self.is_running() {
            let m = self.inner.raft.metrics().borrow_watched().clone();
            let acting = acting_leader(&m, self.lease(), self.leader_heard_ago());
            if let Some(l) = acting.filter(|l| Some(*l) != last_seen) {
                self.inner.stats.leader_changed();
                last_seen = Some(l);
            }
            let now_leading = acting == Some(self.inner.id);
            if leading && !now_leading && m.state.is_leader() {
                tracing::warn!(
                    lease_ms = self.lease().as_millis() as u64,
                    "no quorum acknowledged this leader within the lease: stepping down (check-quorum)"
                );
            }
            leading = now_leading;
            tokio::time::sleep(period).await;
        }
    }
}
