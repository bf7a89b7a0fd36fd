//! `/metrics` in Prometheus text format: API requests by verb, resource
//! and code with latency histograms, store write latency, raft state and
//! watch counts, and the store's raft metrics under etcd's names
//! (`etcd_server_has_leader`, `etcd_server_leader_changes_seen_total`,
//! proposals, peer round trips: see `keel_store::stats`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use keel_store::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    resource: String,
}

type HistogramFamily = Family<LatencyLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The metrics of one API server replica.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    store_write: Histogram,
    watches: Gauge,
    open_watches: AtomicI64,
    raft_term: Gauge,
    raft_leader: Gauge,
    raft_is_leader: Gauge,
    raft_index: Gauge,
    raft_applied: Gauge,
    store_revision: Gauge,
    store_watchers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            latency: HistogramFamily::new_with_constructor(latency_histogram),
            store_write: latency_histogram(),
            watches: Gauge::default(),
            open_watches: AtomicI64::new(0),
            raft_term: Gauge::default(),
            raft_leader: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_index: Gauge::default(),
            raft_applied: Gauge::default(),
            store_revision: Gauge::default(),
            store_watchers: Gauge::default(),
        };
        m.register();
        m
    }

    fn register(&self) {
        let mut r = self.registry.lock().expect("metrics registry lock");
        r.register(
            "apiserver_request",
            "API requests by verb, resource and HTTP code",
            self.requests.clone(),
        );
        r.register(
            "apiserver_request_duration_seconds",
            "API request latency by verb and resource",
            self.latency.clone(),
        );
        r.register(
            "keel_store_write_duration_seconds",
            "Latency of raft-replicated writes made by the API",
            self.store_write.clone(),
        );
        r.register(
            "apiserver_longrunning_watches",
            "Open Kubernetes watch streams on this replica",
            self.watches.clone(),
        );
        r.register(
            "keel_raft_term",
            "Current raft term",
            self.raft_term.clone(),
        );
        r.register(
            "keel_raft_leader_id",
            "Member id of the raft leader this replica knows (0: none)",
            self.raft_leader.clone(),
        );
        r.register(
            "keel_raft_is_leader",
            "1 when this replica is the raft leader",
            self.raft_is_leader.clone(),
        );
        r.register(
            "keel_raft_last_log_index",
            "Last raft log index on this replica",
            self.raft_index.clone(),
        );
        r.register(
            "keel_raft_applied_index",
            "Raft index applied to the state machine",
            self.raft_applied.clone(),
        );
        r.register(
            "keel_store_revision",
            "Current store revision",
            self.store_revision.clone(),
        );
        r.register(
            "keel_store_watchers",
            "Store watchers (etcd and Kubernetes) on this replica",
            self.store_watchers.clone(),
        );
    }

    pub fn observe_request(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.to_string(),
                resource: resource.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                verb: verb.to_string(),
                resource: resource.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn observe_store_write(&self, took: Duration) {
        self.store_write.observe(took.as_secs_f64());
    }

    pub fn watch_started(&self) {
        let n = self.open_watches.fetch_add(1, Ordering::SeqCst) + 1;
        self.watches.set(n);
    }

    pub fn watch_ended(&self) {
        let n = self.open_watches.fetch_sub(1, Ordering::SeqCst) - 1;
        assert!(n >= 0, "more watches ended than started");
        self.watches.set(n);
    }

    pub fn open_watches(&self) -> i64 {
        self.open_watches.load(Ordering::SeqCst)
    }

    /// The text exposition, with raft gauges read now.
    pub fn render(&self, store: &Store) -> String {
        let s = store.status();
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.raft_term.set(clamp(s.raft_term));
        self.raft_leader.set(clamp(s.leader));
        self.raft_is_leader
            .set(i64::from(s.leader != 0 && s.leader == store.member_id()));
        self.raft_index.set(clamp(s.raft_index));
        self.raft_applied.set(clamp(s.raft_applied_index));
        self.store_revision.set(s.revision);
        self.store_watchers.set(store.watcher_count() as i64);
        // One exposition: the API server's registry, then the store's raft
        // metrics (etcd's names, see keel_store::stats), then one `# EOF`.
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let r = self.registry.lock().expect("metrics registry lock");
        let encoded = encode_registry(&mut out, &r)
            .and_then(|()| store.render_metrics(&mut out))
            .and_then(|()| encode_eof(&mut out));
        if encoded.is_err() {
            out.push_str("# encoding failed\n");
        }
        out
    }
}
