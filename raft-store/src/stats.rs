//! The replica's raft metrics in Prometheus form, under etcd's metric names
//! where etcd has one, so dashboards and alerts written for etcd work on
//! keel unchanged.
//!
//! Counters (leader changes, failed proposals, heartbeat round trips) are
//! counted where the event happens; gauges and the committed/applied
//! counters are read from raft's metrics when the text is rendered
//! ([`crate::Store::render_metrics`]). Counters count from process start,
//! as etcd's do, except the committed/applied counters, which equal the
//! raft indexes (what etcd's gauges of the same names show).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The round-trip histogram's label: the peer's member id (hex), under
/// etcd's capitalised label name `To` (hence the hand-written encoding).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct PeerLabels {
    to: String,
}

impl EncodeLabelSet for PeerLabels {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("To", self.to.as_str()).encode(encoder.encode_label())
    }
}

type RttFamily = Family<PeerLabels, Histogram, fn() -> Histogram>;

fn rtt_histogram() -> Histogram {
    // etcd's buckets: 0.1 ms .. ~1.6 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// What a replica counts about raft. Shared by the store, its network and
/// whoever renders `/metrics`.
pub struct StoreStats {
    registry: Registry,
    has_leader: Gauge,
    is_leader: Gauge,
    is_learner: Gauge,
    term: Gauge,
    leader_changes: Counter,
    proposals_failed: Counter,
    proposals_committed: Counter,
    proposals_applied: Counter,
    apply_lag: Gauge,
    peer_rtt: RttFamily,
    /// The committed/applied indexes the counters were last brought to.
    committed_seen: AtomicU64,
    applied_seen: AtomicU64,
}

impl Default for StoreStats {
    fn default() -> Self {
        StoreStats::new()
    }
}

impl StoreStats {
    pub fn new() -> StoreStats {
        let mut s = StoreStats {
            registry: Registry::default(),
            has_leader: Gauge::default(),
            is_leader: Gauge::default(),
            is_learner: Gauge::default(),
            term: Gauge::default(),
            leader_changes: Counter::default(),
            proposals_failed: Counter::default(),
            proposals_committed: Counter::default(),
            proposals_applied: Counter::default(),
            apply_lag: Gauge::default(),
            peer_rtt: RttFamily::new_with_constructor(rtt_histogram),
            committed_seen: AtomicU64::new(0),
            applied_seen: AtomicU64::new(0),
        };
        let r = &mut s.registry;
        r.register(
            "etcd_server_has_leader",
            "Whether a leader exists: 1 while this replica knows a leader that a quorum acknowledges, 0 otherwise",
            s.has_leader.clone(),
        );
        r.register(
            "etcd_server_is_leader",
            "1 while this replica is the leader and a quorum acknowledges it",
            s.is_leader.clone(),
        );
        r.register(
            "etcd_server_is_learner",
            "1 while this replica is a learner (non-voting member)",
            s.is_learner.clone(),
        );
        r.register(
            "etcd_server_raft_term",
            "The raft term this replica is in",
            s.term.clone(),
        );
        r.register(
            "etcd_server_leader_changes_seen",
            "Leader changes this replica has seen since it started",
            s.leader_changes.clone(),
        );
        r.register(
            "etcd_server_proposals_failed",
            "Writes that failed for want of a leader or quorum (no leader, timeout, leader changed)",
            s.proposals_failed.clone(),
        );
        r.register(
            "etcd_server_proposals_committed",
            "Raft entries committed since this replica started",
            s.proposals_committed.clone(),
        );
        r.register(
            "etcd_server_proposals_applied",
            "Raft entries applied to the state machine since this replica started",
            s.proposals_applied.clone(),
        );
        r.register(
            "keel_raft_apply_lag_entries",
            "Committed raft entries not yet applied on this replica (committed - applied)",
            s.apply_lag.clone(),
        );
        r.register(
            "etcd_network_peer_round_trip_time_seconds",
            "Round-trip time of raft heartbeats to each peer (label To: member id, hex)",
            s.peer_rtt.clone(),
        );
        s
    }

    pub(crate) fn leader_changed(&self) {
        self.leader_changes.inc();
    }

    pub(crate) fn proposal_failed(&self) {
        self.proposals_failed.inc();
    }

    /// A heartbeat to `to` was answered after `rtt`.
    pub(crate) fn observe_rtt(&self, to: u64, rtt: Duration) {
        self.peer_rtt
            .get_or_create(&PeerLabels {
                to: format!("{to:x}"),
            })
            .observe(rtt.as_secs_f64());
    }

    /// Brings the gauges and index counters to the given raft state.
    pub(crate) fn update(&self, now: &RaftGauges) {
        self.has_leader.set(i64::from(now.has_leader));
        self.is_leader.set(i64::from(now.is_leader));
        self.is_learner.set(i64::from(now.is_learner));
        self.term.set(clamp(now.term));
        advance(
            &self.proposals_committed,
            &self.committed_seen,
            now.committed,
        );
        advance(&self.proposals_applied, &self.applied_seen, now.applied);
        self.apply_lag
            .set(clamp(now.committed.saturating_sub(now.applied)));
    }

    /// Appends the metrics in the text format, without the final `# EOF`
    /// (the caller may append its own registry first).
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)
    }
}

/// Raft state as the gauges show it.
pub(crate) struct RaftGauges {
    pub has_leader: bool,
    pub is_leader: bool,
    pub is_learner: bool,
    pub term: u64,
    pub committed: u64,
    pub applied: u64,
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Raises `counter` by how far `index` moved past the highest value seen,
/// so the counter equals the highest index seen: what etcd's gauges of the
/// same name show. It never goes backwards.
fn advance(counter: &Counter, seen: &AtomicU64, index: u64) {
    let prev = seen.fetch_max(index, Ordering::Relaxed);
    if index > prev {
        counter.inc_by(index - prev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(s: &StoreStats) -> String {
        let mut out = String::new();
        s.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn uses_etcd_names_and_counts_index_progress() {
        let s = StoreStats::new();
        let g = |committed, applied| RaftGauges {
            has_leader: true,
            is_leader: false,
            is_learner: false,
            term: 3,
            committed,
            applied,
        };
        s.update(&g(10, 7));
        s.update(&g(15, 15));
        s.update(&g(12, 12)); // never backwards
        s.leader_changed();
        s.proposal_failed();
        s.observe_rtt(0xab, Duration::from_millis(3));
        let text = render(&s);
        for line in [
            "etcd_server_has_leader 1",
            "etcd_server_is_leader 0",
            "etcd_server_raft_term 3",
            "etcd_server_leader_changes_seen_total 1",
            "etcd_server_proposals_failed_total 1",
            "etcd_server_proposals_committed_total 15",
            "etcd_server_proposals_applied_total 15",
            "keel_raft_apply_lag_entries 0",
            "etcd_network_peer_round_trip_time_seconds_count{To=\"ab\"} 1",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
