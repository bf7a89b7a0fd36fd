//! `metrics.k8s.io/v1beta1`, served by the API server itself (where
//! Kubernetes aggregates metrics-server): NodeMetrics and PodMetrics, read
//! live from the agents ([`agents`]), for `kubectl top` and the HPA.
//!
//! Shapes follow metrics-server: CPU in nanocores (`"123456n"`), memory
//! in KiB (`"2048Ki"`), `timestamp` of the agent's last sample and
//! `window` between the two samples the CPU rate comes from. Only get and
//! list (with label and field selectors) exist; the group is read-only and
//! not watchable, so other verbs are 405. A node or pod without usage yet
//! (agent down, container sampled once) is absent from lists and 404 on
//! get, as with metrics-server.

pub mod agents;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::http::Method;
use keel_proto::keelnode::{StatsResponse, Usage};
use serde_json::{json, Value};

use crate::api::output::Selectors;
use crate::api::{Api, Query, Reply, Route};
use crate::resources::{self, ResourceInfo};
use crate::status::{ApiError, ApiResult};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

fn group_version() -> String {
    format!("{GROUP}/{VERSION}")
}

/// Which metrics a URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nodes,
    Pods,
}

/// A parsed `/apis/metrics.k8s.io/...` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsRoute {
    /// `/apis/metrics.k8s.io`
    Group,
    /// `/apis/metrics.k8s.io/v1beta1`
    GroupVersion,
    Read {
        kind: Kind,
        /// `None` = all namespaces (pods) or cluster scope (nodes).
        namespace: Option<String>,
        name: Option<String>,
    },
}

/// Parses the segments after `apis/metrics.k8s.io`.
pub fn parse(rest: &[&str]) -> Result<Route, ApiError> {
    let read = |kind, ns: Option<&str>, name: Option<&str>| {
        for s in ns.iter().chain(name.iter()) {
            if s.is_empty() || *s == "." || *s == ".." {
                return Err(ApiError::bad_request(format!("invalid path segment {s:?}")));
            }
        }
        Ok(Route::ResourceMetrics(MetricsRoute::Read {
            kind,
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
        }))
    };
    match rest {
        [] => Ok(Route::ResourceMetrics(MetricsRoute::Group)),
        [VERSION] => Ok(Route::ResourceMetrics(MetricsRoute::GroupVersion)),
        [VERSION, "nodes"] => read(Kind::Nodes, None, None),
        [VERSION, "nodes", name] => read(Kind::Nodes, None, Some(name)),
        [VERSION, "pods"] => read(Kind::Pods, None, None),
        [VERSION, "namespaces", ns, "pods"] => read(Kind::Pods, Some(ns), None),
        [VERSION, "namespaces", ns, "pods", name] => read(Kind::Pods, Some(ns), Some(name)),
        _ => Err(ApiError::no_route()),
    }
}

/// The legacy `APIGroup` entry (also `/apis/metrics.k8s.io`).
pub fn legacy_group() -> Value {
    let v = json!({"groupVersion": group_version(), "version": VERSION});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [v], "preferredVersion": v})
}

/// The aggregated-discovery `APIGroupDiscovery` entry.
pub fn aggregated_group() -> Value {
    let res = |resource: &str, singular: &str, kind: &str, scope: &str| {
        json!({
            "resource": resource, "singularResource": singular, "scope": scope,
            "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
            "verbs": ["get", "list"],
        })
    };
    json!({
        "metadata": {"name": GROUP, "creationTimestamp": null},
        "versions": [{
            "version": VERSION,
            "freshness": "Current",
            "resources": [
                res("nodes", "nodemetrics", "NodeMetrics", "Cluster"),
                res("pods", "podmetrics", "PodMetrics", "Namespaced"),
            ],
        }],
    })
}

/// `/apis/metrics.k8s.io/v1beta1` as an `APIResourceList`.
pub fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version(),
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
        ],
    })
}

/// Serves one request under `/apis/metrics.k8s.io`.
pub async fn serve(
    api: &Arc<Api>,
    route: MetricsRoute,
    method: &Method,
    q: &Query,
) -> ApiResult<Reply> {
    if method != Method::GET {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{GROUP} is read-only: {method} is not supported"),
        ));
    }
    match route {
        MetricsRoute::Group => Ok(Reply::ok(legacy_group())),
        MetricsRoute::GroupVersion => Ok(Reply::ok(resource_list())),
        MetricsRoute::Read { .. } if crate::api::route::flag(q, "watch") => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{GROUP} cannot be watched"),
        )),
        MetricsRoute::Read {
            kind: Kind::Nodes,
            name,
            ..
        } => nodes(api, name.as_deref(), q).await,
        MetricsRoute::Read {
            kind: Kind::Pods,
            namespace,
            name,
        } => pods(api, namespace.as_deref(), name.as_deref(), q).await,
    }
}

fn core(resource: &str) -> ApiResult<&'static ResourceInfo> {
    resources::find("", "v1", resource)
        .ok_or_else(|| ApiError::internal(format!("{resource} are not a known resource")))
}

/// Objects under `info` (in `namespace`), narrowed by name and selectors.
async fn select(
    api: &Api,
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: Option<&str>,
    q: &Query,
) -> ApiResult<Vec<Value>> {
    let sel = Selectors::from_query(info, q)?;
    if let Some(n) = name {
        let found = api.objects.get(&info.key(namespace, n)).await?;
        return Ok(found
            .map(|s| s.obj)
            .filter(|o| sel.matches(o))
            .into_iter()
            .collect());
    }
    let page = api
        .objects
        .list(&info.prefix(namespace), None, 0, 0)
        .await?;
    Ok(page
        .items
        .into_iter()
        .map(|s| s.obj)
        .filter(|o| sel.matches(o))
        .collect())
}

fn not_found(what: &str, name: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("{what}.{GROUP} \"{name}\" not found"),
    )
}

async fn nodes(api: &Api, name: Option<&str>, q: &Query) -> ApiResult<Reply> {
    let nodes = select(api, core("nodes")?, None, name, q).await?;
    let stats = agents::collect(api.cfg.agent_tls.as_deref(), &nodes).await;
    let by_node: HashMap<&str, &StatsResponse> =
        stats.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let items: Vec<Value> = nodes
        .iter()
        .filter_map(|n| {
            let node_name = n["metadata"]["name"].as_str()?;
            let usage = by_node.get(node_name)?.node.as_ref()?;
            Some(node_metrics(n, usage))
        })
        .collect();
    one_or_list(items, name, "nodemetrics", "NodeMetricsList")
}

async fn pods(
    api: &Api,
    namespace: Option<&str>,
    name: Option<&str>,
    q: &Query,
) -> ApiResult<Reply> {
    let pods = select(api, core("pods")?, namespace, name, q).await?;
    let node_names: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .filter(|n| !n.is_empty())
        .collect();
    let nodes_info = core("nodes")?;
    let mut nodes = Vec::new();
    for n in node_names {
        if let Some(s) = api.objects.get(&nodes_info.key(None, n)).await? {
            nodes.push(s.obj);
        }
    }
    let stats = agents::collect(api.cfg.agent_tls.as_deref(), &nodes).await;
    let by_pod: HashMap<(&str, &str), &keel_proto::keelnode::PodUsage> = stats
        .iter()
        .flat_map(|(_, s)| s.pods.iter())
        .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
        .collect();
    let items: Vec<Value> = pods
        .iter()
        .filter_map(|p| {
            let ns = p["metadata"]["namespace"].as_str()?;
            let n = p["metadata"]["name"].as_str()?;
            Some(pod_metrics(p, by_pod.get(&(ns, n))?))
        })
        .collect();
    one_or_list(items, name, "podmetrics", "PodMetricsList")
}

fn one_or_list(
    items: Vec<Value>,
    name: Option<&str>,
    what: &str,
    list_kind: &str,
) -> ApiResult<Reply> {
    match name {
        Some(n) => items
            .into_iter()
            .next()
            .map(Reply::ok)
            .ok_or_else(|| not_found(what, n)),
        None => Ok(Reply::ok(json!({
            "kind": list_kind,
            "apiVersion": group_version(),
            "metadata": {},
            "items": items,
        }))),
    }
}

/// `"123n"` and `"456Ki"`, as metrics-server writes them.
fn usage_json(u: &Usage) -> Value {
    json!({
        "cpu": format!("{}n", u.cpu_nano_cores),
        "memory": format!("{}Ki", u.memory_working_set_bytes / 1024),
    })
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A Go `metav1.Duration` string: `5s`, `5.004s`.
fn go_duration(ms: i64) -> String {
    match ms % 1000 {
        0 => format!("{}s", ms / 1000),
        frac => format!("{}.{:03}s", ms / 1000, frac),
    }
}

fn metadata(obj: &Value) -> Value {
    let mut md = json!({
        "name": obj["metadata"]["name"],
        "creationTimestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    if let Some(ns) = obj["metadata"].get("namespace") {
        md["namespace"] = ns.clone();
    }
    if let Some(labels) = obj["metadata"].get("labels") {
        md["labels"] = labels.clone();
    }
    md
}

fn node_metrics(node: &Value, u: &Usage) -> Value {
    json!({
        "kind": "NodeMetrics",
        "apiVersion": group_version(),
        "metadata": metadata(node),
        "timestamp": rfc3339(u.timestamp_ms),
        "window": go_duration(u.window_ms),
        "usage": usage_json(u),
    })
}

fn pod_metrics(pod: &Value, p: &keel_proto::keelnode::PodUsage) -> Value {
    let containers: Vec<Value> = p
        .containers
        .iter()
        .filter_map(|c| Some(json!({"name": c.name, "usage": usage_json(c.usage.as_ref()?)})))
        .collect();
    // The pod's timestamp and window: its containers are sampled together.
    let first = p.containers.iter().find_map(|c| c.usage.as_ref());
    json!({
        "kind": "PodMetrics",
        "apiVersion": group_version(),
        "metadata": metadata(pod),
        "timestamp": rfc3339(first.map_or(0, |u| u.timestamp_ms)),
        "window": go_duration(first.map_or(0, |u| u.window_ms)),
        "containers": containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let r = |p: &[&str]| match parse(p) {
            Ok(Route::ResourceMetrics(m)) => Some(m),
            _ => None,
        };
        assert_eq!(r(&[]), Some(MetricsRoute::Group));
        assert_eq!(r(&["v1beta1"]), Some(MetricsRoute::GroupVersion));
        assert_eq!(
            r(&["v1beta1", "namespaces", "ns", "pods", "web"]),
            Some(MetricsRoute::Read {
                kind: Kind::Pods,
                namespace: Some("ns".into()),
                name: Some("web".into())
            })
        );
        assert_eq!(
            r(&["v1beta1", "nodes"]),
            Some(MetricsRoute::Read {
                kind: Kind::Nodes,
                namespace: None,
                name: None
            })
        );
        assert!(r(&["v1", "nodes"]).is_none());
        assert!(r(&["v1beta1", "namespaces", "..", "pods"]).is_none());
    }

    #[test]
    fn quantities_and_times_like_metrics_server() {
        let u = Usage {
            cpu_nano_cores: 250_000_000,
            cpu_usage_ns: 1,
            memory_working_set_bytes: 3 * 1024 * 1024 + 5,
            timestamp_ms: 1_700_000_000_000,
            window_ms: 5_004,
        };
        let node = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        let m = node_metrics(&node, &u);
        assert_eq!(m["usage"]["cpu"], "250000000n");
        assert_eq!(m["usage"]["memory"], "3072Ki");
        assert_eq!(m["window"], "5.004s");
        assert_eq!(m["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(m["metadata"]["labels"]["a"], "b");
        assert_eq!(go_duration(5000), "5s");
    }

    #[test]
    fn discovery_documents() {
        let g = aggregated_group();
        assert_eq!(
            g["versions"][0]["resources"][1]["responseKind"]["kind"],
            "PodMetrics"
        );
        assert_eq!(
            legacy_group()["preferredVersion"]["groupVersion"],
            "metrics.k8s.io/v1beta1"
        );
        assert_eq!(resource_list()["resources"][0]["kind"], "NodeMetrics");
    }
}
