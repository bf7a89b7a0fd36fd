//! The HPA's inputs: PodMetrics from `metrics.k8s.io/v1beta1` (through the
//! same `kube::Client` as everything else) joined with the pods from the
//! cache, into the calculator's [`PodSample`]s.
//!
//! Readiness follows Kubernetes for CPU: within
//! `cpu_initialization_period` of its start a pod's sample counts only if
//! the pod is ready and the sample was taken a full window after it
//! became ready; later, only a pod that has never been ready since its
//! initial readiness delay is set aside. Pending pods are always unready.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

use super::replicas::PodSample;
use crate::quantity::quantity_nanos;

/// One pod's metrics as the metrics API answers them.
#[derive(Debug, Clone, Deserialize)]
pub struct PodMetrics {
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub window: Option<String>,
    #[serde(default)]
    pub containers: Vec<ContainerMetrics>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContainerMetrics {
    pub name: String,
    #[serde(default)]
    pub usage: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
struct PodMetricsList {
    #[serde(default)]
    items: Vec<PodMetrics>,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The PodMetrics of the pods in `namespace` matching `selector`, by pod name.
pub async fn pod_metrics(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
) -> kube::Result<BTreeMap<String, PodMetrics>> {
    let url = format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods?labelSelector={}",
        encode(namespace),
        encode(selector)
    );
    let req = http::Request::get(url)
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    let list: PodMetricsList = client.request(req).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|m| Some((m.metadata.name.clone()?, m)))
        .collect())
}

/// A quantity in milli-units; `None` when malformed.
pub fn milli(q: &str) -> Option<i64> {
    i64::try_from(quantity_nanos(q)? / 1_000_000).ok()
}

/// A Go duration as metrics-server writes a window (`30s`, `5.004s`, `1m0s`, `500ms`).
fn parse_window(s: &str) -> Option<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms
            .parse::<f64>()
            .ok()
            .map(|v| Duration::from_secs_f64(v / 1000.0));
    }
    let s = s.strip_suffix('s')?;
    let (min, sec) = match s.split_once('m') {
        Some((m, rest)) => (m.parse::<f64>().ok()?, rest),
        None => (0.0, s),
    };
    let sec = if sec.is_empty() {
        0.0
    } else {
        sec.parse::<f64>().ok()?
    };
    let total = min * 60.0 + sec;
    (total >= 0.0).then(|| Duration::from_secs_f64(total))
}

/// Readiness timings of the HPA (Kubernetes' defaults: 5 min, 30 s).
#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    pub cpu_initialization_period: Duration,
    pub initial_readiness_delay: Duration,
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or_default())
        .unwrap_or(t)
}

/// Is this CPU sample of `pod` to be set aside (Kubernetes' `groupPods`)?
fn cpu_unready(pod: &Pod, m: &PodMetrics, now: Timestamp, r: Readiness) -> bool {
    let status = pod.status.as_ref();
    let cond = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let start = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
    let (Some(cond), Some(start)) = (cond, start) else {
        return true;
    };
    let transition = cond.last_transition_time.as_ref().map_or(start, |t| t.0);
    if plus(start, r.cpu_initialization_period) > now {
        let sampled = m
            .timestamp
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok());
        let window = m
            .window
            .as_deref()
            .and_then(parse_window)
            .unwrap_or_default();
        cond.status == "False" || sampled.is_none_or(|t| t < plus(transition, window))
    } else {
        cond.status == "False" && plus(start, r.initial_readiness_delay) > transition
    }
}

/// The calculator's view of `pods` for `resource`.
pub fn samples(
    pods: &[std::sync::Arc<Pod>],
    metrics: &BTreeMap<String, PodMetrics>,
    resource: &str,
    now: Timestamp,
    readiness: Readiness,
) -> Vec<PodSample> {
    pods.iter()
        .map(|pod| {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let ignored = pod.metadata.deletion_timestamp.is_some() || phase == Some("Failed");
            let m = metrics.get(&name);
            let usage_milli = m.and_then(|m| {
                m.containers
                    .iter()
                    .map(|c| c.usage.get(resource).and_then(|q| milli(q)))
                    .sum::<Option<i64>>()
            });
            let unready = phase == Some("Pending")
                || (resource == "cpu"
                    && usage_milli.is_some()
                    && m.is_some_and(|m| cpu_unready(pod, m, now, readiness)));
            let request_milli = pod.spec.as_ref().and_then(|s| {
                s.containers
                    .iter()
                    .map(|c| {
                        c.resources
                            .as_ref()
                            .and_then(|r| r.requests.as_ref())
                            .and_then(|r| r.get(resource))
                            .and_then(|q| milli(&q.0))
                    })
                    .sum::<Option<i64>>()
            });
            PodSample {
                name,
                ignored,
                unready,
                usage_milli,
                request_milli,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn windows_and_quantities() {
        assert_eq!(parse_window("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_window("5.5s"), Some(Duration::from_millis(5500)));
        assert_eq!(parse_window("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_window("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_window("x"), None);
        assert_eq!(milli("250000000n"), Some(250));
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("2Ki"), Some(2048 * 1000));
        assert_eq!(
            encode("app=web,x in (a b)"),
            "app%3Dweb%2Cx%20in%20%28a%20b%29"
        );
    }

    #[test]
    fn samples_join_pods_and_metrics() {
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let pod = |name: &str, phase: &str, ready: &str| -> std::sync::Arc<Pod> {
            std::sync::Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {"containers": [
                        {"name": "a", "resources": {"requests": {"cpu": "200m"}}},
                        {"name": "b", "resources": {"requests": {"cpu": "300m"}}}
                    ]},
                    "status": {"phase": phase, "startTime": "2026-01-01T00:00:00Z",
                        "conditions": [{"type": "Ready", "status": ready,
                            "lastTransitionTime": "2026-01-01T00:00:05Z"}]}
                }))
                .unwrap(),
            )
        };
        let pods = vec![
            pod("up", "Running", "True"),
            pod("pending", "Pending", "False"),
            pod("nometrics", "Running", "True"),
        ];
        let m = |name: &str| PodMetrics {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            timestamp: Some("2026-01-01T00:09:55Z".into()),
            window: Some("5s".into()),
            containers: vec![
                ContainerMetrics {
                    name: "a".into(),
                    usage: BTreeMap::from([("cpu".into(), "100m".into())]),
                },
                ContainerMetrics {
                    name: "b".into(),
                    usage: BTreeMap::from([("cpu".into(), "50000000n".into())]),
                },
            ],
        };
        let metrics = BTreeMap::from([("up".into(), m("up")), ("pending".into(), m("pending"))]);
        let r = Readiness {
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
        };
        let s = samples(&pods, &metrics, "cpu", now, r);
        assert_eq!(s[0].usage_milli, Some(150));
        assert_eq!(s[0].request_milli, Some(500));
        assert!(!s[0].unready && !s[0].ignored);
        assert!(s[1].unready, "pending");
        assert_eq!(s[2].usage_milli, None);
        // Memory has no requests here: utilization would be undefined.
        let s = samples(&pods, &metrics, "memory", now, r);
        assert_eq!(s[0].request_milli, None);
    }
}
