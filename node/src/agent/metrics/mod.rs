//! Resource metrics of the node and its containers: a background sampler
//! that keeps the last two samples of each, so a CPU *rate* (nanocores over
//! the window between them) can be answered at any time, like the kubelet's
//! summary API that metrics-server scrapes.
//!
//! Served two ways: `AgentService.Stats` (the API server's metrics.k8s.io
//! asks it, for `kubectl top` and the HPA) and the kubelet-style
//! Prometheus endpoint `GET /metrics/resource` ([`prom`]) on the same port.
//!
//! Guarantees: a container appears in a snapshot only while it is running
//! (it is forgotten at the first sample that no longer lists it); a rate is
//! given only once two samples of the same container instance exist (a
//! restart is a new instance, so a rate never spans one); a runtime that
//! cannot measure (`Runtime::stats` unsupported) yields node metrics only.

pub mod host;
pub mod prom;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_proto::keelnode::{ContainerUsage, PodUsage, StatsResponse};

use crate::runtime::{ContainerId, ContainerStats, Runtime};

/// Which Kubernetes container a runtime container is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerKey {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// The latest sample, plus the rate since the one before when there is one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub last: ContainerStats,
    /// `(nanocores, window)`, from the previous sample to `last`.
    pub rate: Option<(u64, Duration)>,
}

/// Everything measured at the last sample.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub node: Option<Usage>,
    /// Sorted by key.
    pub containers: Vec<(ContainerKey, Usage)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Series {
    prev: Option<ContainerStats>,
    last: Option<ContainerStats>,
}

impl Series {
    fn push(&mut self, s: ContainerStats) {
        self.prev = self.last.replace(s);
    }

    fn usage(&self) -> Option<Usage> {
        let last = self.last?;
        Some(Usage {
            last,
            rate: self.prev.and_then(|p| rate(&p, &last)),
        })
    }
}

/// CPU nanocores between two cumulative samples; `None` when time did not
/// advance or the counter went backwards (not the same instance).
fn rate(prev: &ContainerStats, last: &ContainerStats) -> Option<(u64, Duration)> {
    let window = last.timestamp.duration_since(prev.timestamp).ok()?;
    let used_ns = last.cpu_usage_ns.checked_sub(prev.cpu_usage_ns)?;
    if window.is_zero() {
        return None;
    }
    let nano_cores = (used_ns as u128 * 1_000_000_000 / window.as_nanos()) as u64;
    Some((nano_cores, window))
}

#[derive(Default)]
struct State {
    node: Series,
    containers: HashMap<ContainerId, (ContainerKey, Series)>,
}

/// Samples the node and every running container of `runtime`.
pub struct Sampler {
    runtime: Arc<dyn Runtime>,
    state: Mutex<State>,
}

impl Sampler {
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        Sampler {
            runtime,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes one sample of everything. Containers that cannot be measured
    /// (exited meanwhile, runtime without stats) are skipped.
    pub async fn sample(&self) {
        let node = host::node_stats();
        let mut fresh = HashMap::new();
        match self.runtime.list().await {
            Ok(list) => {
                for c in list.into_iter().filter(|c| c.state.is_running()) {
                    match self.runtime.stats(&c.id).await {
                        Ok(s) => {
                            let key = ContainerKey {
                                namespace: c.spec.pod_namespace,
                                pod: c.spec.pod_name,
                                container: c.spec.container_name,
                            };
                            fresh.insert(c.id, (key, s));
                        }
                        Err(e) => tracing::trace!(container = %c.id, error = %e, "no stats"),
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "metrics: cannot list containers"),
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = node {
            st.node.push(n);
        }
        st.containers.retain(|id, _| fresh.contains_key(id));
        for (id, (key, s)) in fresh {
            st.containers
                .entry(id)
                .or_insert_with(|| (key, Series::default()))
                .1
                .push(s);
        }
    }

    /// Samples every `interval` until the task is dropped.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        loop {
            self.sample().await;
            tokio::time::sleep(interval).await;
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut containers: Vec<(ContainerKey, Usage)> = st
            .containers
            .values()
            .filter_map(|(k, s)| Some((k.clone(), s.usage()?)))
            .collect();
        containers.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot {
            node: st.node.usage(),
            containers,
        }
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The proto usage, for entries that have a rate.
fn proto_usage(u: &Usage) -> Option<keel_proto::keelnode::Usage> {
    let (nano_cores, window) = u.rate?;
    Some(keel_proto::keelnode::Usage {
        cpu_nano_cores: nano_cores,
        cpu_usage_ns: u.last.cpu_usage_ns,
        memory_working_set_bytes: u.last.memory_working_set_bytes,
        timestamp_ms: unix_ms(u.last.timestamp),
        window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
    })
}

/// The `AgentService.Stats` answer: pods grouped, containers with a rate only.
pub fn to_proto(s: &Snapshot) -> StatsResponse {
    let mut pods: Vec<PodUsage> = Vec::new();
    for (k, u) in &s.containers {
        let Some(usage) = proto_usage(u) else {
            continue;
        };
        let c = ContainerUsage {
            name: k.container.clone(),
            usage: Some(usage),
        };
        match pods.last_mut() {
            Some(p) if p.namespace == k.namespace && p.name == k.pod => p.containers.push(c),
            _ => pods.push(PodUsage {
                namespace: k.namespace.clone(),
                name: k.pod.clone(),
                containers: vec![c],
            }),
        }
    }
    StatsResponse {
        node: s.node.as_ref().and_then(proto_usage),
        pods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(cpu_ns: u64, secs: u64) -> ContainerStats {
        ContainerStats {
            cpu_usage_ns: cpu_ns,
            memory_working_set_bytes: 10,
            timestamp: UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn rate_is_delta_over_window() {
        // Half a core: 1 s of CPU in 2 s.
        assert_eq!(
            rate(&at(0, 10), &at(1_000_000_000, 12)),
            Some((500_000_000, Duration::from_secs(2)))
        );
        assert_eq!(rate(&at(5, 10), &at(4, 12)), None, "counter went back");
        assert_eq!(rate(&at(0, 10), &at(5, 10)), None, "no time passed");
    }

    #[test]
    fn one_sample_has_no_rate_and_is_left_out_of_stats() {
        let mut s = Series::default();
        s.push(at(0, 1));
        assert_eq!(s.usage().unwrap().rate, None);
        let key = ContainerKey {
            namespace: "ns".into(),
            pod: "p".into(),
            container: "c".into(),
        };
        let snap = Snapshot {
            node: s.usage(),
            containers: vec![(key.clone(), s.usage().unwrap())],
        };
        let p = to_proto(&snap);
        assert!(p.node.is_none() && p.pods.is_empty());
        s.push(at(2_000_000_000, 3));
        let snap = Snapshot {
            node: s.usage(),
            containers: vec![(key, s.usage().unwrap())],
        };
        let p = to_proto(&snap);
        assert_eq!(p.node.unwrap().cpu_nano_cores, 1_000_000_000);
        assert_eq!(p.pods.len(), 1);
        assert_eq!(p.pods[0].containers[0].name, "c");
        assert_eq!(p.pods[0].containers[0].usage.unwrap().window_ms, 2000);
    }
}
