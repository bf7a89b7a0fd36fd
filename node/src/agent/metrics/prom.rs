//! The kubelet-style `GET /metrics/resource` endpoint (OpenMetrics text),
//! with the kubelet's metric names and labels, so Prometheus scrape configs
//! written for the kubelet work unchanged:
//! `node_cpu_usage_seconds_total`, `node_memory_working_set_bytes`,
//! `pod_*` and `container_*` of the same two (labels `namespace`, `pod`,
//! and `container` for containers). Values come from the sampler's latest
//! sample; pod values are the sums over the pod's running containers.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Snapshot;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;
type Seconds = Family<Labels, Counter<f64, AtomicU64>>;
type Bytes = Family<Labels, Gauge<f64, AtomicU64>>;

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Renders one snapshot. A registry is built per scrape: containers come
/// and go, and a stale series must not outlive its container.
pub fn render(s: &Snapshot) -> String {
    let mut reg = Registry::default();
    let node_cpu = Counter::<f64, AtomicU64>::default();
    let node_mem = Gauge::<f64, AtomicU64>::default();
    let pod_cpu = Seconds::default();
    let pod_mem = Bytes::default();
    let ctr_cpu = Seconds::default();
    let ctr_mem = Bytes::default();
    if let Some(n) = &s.node {
        node_cpu.inc_by(seconds(n.last.cpu_usage_ns));
        node_mem.set(n.last.memory_working_set_bytes as f64);
    }
    let mut pods: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    for (k, u) in &s.containers {
        let labels = vec![
            ("container".to_string(), k.container.clone()),
            ("namespace".to_string(), k.namespace.clone()),
            ("pod".to_string(), k.pod.clone()),
        ];
        ctr_cpu
            .get_or_create(&labels)
            .inc_by(seconds(u.last.cpu_usage_ns));
        ctr_mem
            .get_or_create(&labels)
            .set(u.last.memory_working_set_bytes as f64);
        let p = pods.entry((&k.namespace, &k.pod)).or_default();
        p.0 += u.last.cpu_usage_ns;
        p.1 += u.last.memory_working_set_bytes;
    }
    for ((ns, pod), (cpu, mem)) in pods {
        let labels = vec![
            ("namespace".to_string(), ns.to_string()),
            ("pod".to_string(), pod.to_string()),
        ];
        pod_cpu.get_or_create(&labels).inc_by(seconds(cpu));
        pod_mem.get_or_create(&labels).set(mem as f64);
    }
    reg.register(
        "node_cpu_usage_seconds",
        "Cumulative cpu time consumed by the node in core-seconds",
        node_cpu,
    );
    reg.register(
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        node_mem,
    );
    reg.register(
        "pod_cpu_usage_seconds",
        "Cumulative cpu time consumed by the pod in core-seconds",
        pod_cpu,
    );
    reg.register(
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        pod_mem,
    );
    reg.register(
        "container_cpu_usage_seconds",
        "Cumulative cpu time consumed by the container in core-seconds",
        ctr_cpu,
    );
    reg.register(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        ctr_mem,
    );
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &reg) {
        tracing::error!(error = %e, "cannot encode /metrics/resource");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{ContainerKey, Usage};
    use super::*;
    use crate::runtime::ContainerStats;
    use std::time::SystemTime;

    fn usage(cpu_ns: u64, mem: u64) -> Usage {
        Usage {
            last: ContainerStats {
                cpu_usage_ns: cpu_ns,
                memory_working_set_bytes: mem,
                timestamp: SystemTime::now(),
            },
            rate: None,
        }
    }

    #[test]
    fn kubelet_names_labels_and_pod_sums() {
        let key = |c: &str| ContainerKey {
            namespace: "ns".into(),
            pod: "web".into(),
            container: c.into(),
        };
        let snap = Snapshot {
            node: Some(usage(3_000_000_000, 4096)),
            containers: vec![
                (key("a"), usage(1_500_000_000, 100)),
                (key("b"), usage(500_000_000, 28)),
            ],
        };
        let text = render(&snap);
        for want in [
            "node_cpu_usage_seconds_total 3.0",
            "node_memory_working_set_bytes 4096.0",
            r#"container_cpu_usage_seconds_total{container="a",namespace="ns",pod="web"} 1.5"#,
            r#"container_memory_working_set_bytes{container="b",namespace="ns",pod="web"} 28.0"#,
            r#"pod_cpu_usage_seconds_total{namespace="ns",pod="web"} 2.0"#,
            r#"pod_memory_working_set_bytes{namespace="ns",pod="web"} 128.0"#,
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
