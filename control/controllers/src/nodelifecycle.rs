//! Node lifecycle: a node whose agent stops renewing its Lease in
//! `kube-node-lease` for longer than the grace period becomes Ready=Unknown
//! and gets the `node.kubernetes.io/unreachable` taints; its pods are then
//! evicted once their toleration of that taint runs out, so their
//! controllers recreate them on other nodes.
//!
//! Staleness is judged by this controller's own clock from when it last saw
//! the lease's renewTime change (client-go's rule), so clock skew between
//! machines does not matter, and a new controller-manager leader gives
//! every node a full grace period before judging it.
//!
//! Eviction: a pod without a toleration for the unreachable NoExecute
//! taint tolerates it for `default_eviction_s` (Kubernetes' admission adds
//! that toleration; keel applies the same default here); a shorter
//! `tolerationSeconds` is honoured. An evicted pod is deleted, and since
//! its agent cannot confirm, a pod already terminating on an unreachable
//! node is removed with grace 0 (Kubernetes' pod GC does the same).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{json, Value};

use crate::client::{path, Client};
use crate::events;
use crate::informer::Informer;
use crate::meta;

pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// Lease silence after which a node is unreachable (Kubernetes: 40 s).
    pub grace: Duration,
    /// Toleration of pods that declare none (Kubernetes: 300 s).
    pub default_eviction_s: u64,
}

/// When this controller last saw each node's lease change.
struct Seen {
    renew_time: String,
    at: Instant,
}

/// Runs until aborted.
pub async fn run(client: Client, cfg: NodeLifecycleConfig) {
    let nodes = Informer::spawn(client.clone(), "/api/v1/nodes", "");
    let leases = Informer::spawn(
        client.clone(),
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        "",
    );
    let pods = Informer::spawn(client.clone(), "/api/v1/pods", "");
    nodes.wait_synced().await;
    leases.wait_synced().await;
    pods.wait_synced().await;
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let period = (cfg.grace / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        for node in nodes.list() {
            let name = meta::name(&node).to_string();
            let renew = leases
                .get(&format!("kube-node-lease/{name}"))
                .and_then(|l| l["spec"]["renewTime"].as_str().map(str::to_string))
                .unwrap_or_default();
            let s = seen.entry(name.clone()).or_insert_with(|| Seen {
                renew_time: renew.clone(),
                at: Instant::now(),
            });
            if s.renew_time != renew {
                s.renew_time = renew;
                s.at = Instant::now();
            }
            let stale = s.at.elapsed() > cfg.grace;
            reconcile_node(&client, &node, stale).await;
            if stale {
                evict(&client, &node, &pods, cfg.default_eviction_s).await;
            }
        }
        seen.retain(|n, _| nodes.get(n).is_some());
        tokio::time::sleep(period).await;
    }
}

fn has_unreachable_taint(node: &Value) -> bool {
    taints(node).iter().any(|t| t["key"] == TAINT_UNREACHABLE)
}

fn taints(node: &Value) -> Vec<Value> {
    node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Marks a stale node unreachable, or clears the mark once its lease moves.
async fn reconcile_node(client: &Client, node: &Value, stale: bool) {
    let name = meta::name(node);
    let uri = path("v1", "nodes", None, Some(name));
    if stale && !has_unreachable_taint(node) {
        let mut t = taints(node);
        let now = meta::now_rfc3339();
        t.push(json!({"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": now}));
        t.push(json!({"key": TAINT_UNREACHABLE, "effect": "NoSchedule", "timeAdded": now}));
        let patch = json!({"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                           "spec": {"taints": t}});
        if client.merge_patch(&uri, &patch).await.is_ok() {
            mark_unknown(client, node).await;
            let msg = format!("Node {name} status is now: NodeNotReady");
            let involved = events::object_ref_value(&json!({
                "kind": "Node", "apiVersion": "v1",
                "metadata": {"name": name, "uid": node["metadata"]["uid"], "namespace": "default"}}));
            events::record(
                client.kube(),
                &involved,
                events::NORMAL,
                "NodeNotReady",
                &msg,
                "node-controller",
            )
            .await;
        }
    } else if !stale && has_unreachable_taint(node) {
        let t: Vec<Value> = taints(node)
            .into_iter()
            .filter(|t| t["key"] != TAINT_UNREACHABLE)
            .collect();
        let patch = json!({"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                           "spec": {"taints": t}});
        if let Err(e) = client.merge_patch(&uri, &patch).await {
            tracing::debug!(node = %name, error = %e, "clearing the unreachable taint failed");
        }
    }
}

/// Every condition the agent posted becomes Unknown: nobody vouches for it.
async fn mark_unknown(client: &Client, node: &Value) {
    let now = meta::now_rfc3339();
    let conds: Vec<Value> = node["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            if c["status"] != "Unknown" {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!("Unknown");
            c["reason"] = json!("NodeStatusUnknown");
            c["message"] = json!("Kubelet stopped posting node status.");
            c
        })
        .collect();
    let uri = format!(
        "{}/status",
        path("v1", "nodes", None, Some(meta::name(node)))
    );
    if let Err(e) = client
        .merge_patch(&uri, &json!({"status": {"conditions": conds}}))
        .await
    {
        tracing::debug!(error = %e, "marking the node Unknown failed");
    }
}

/// Deletes the node's pods whose toleration of the unreachable taint ran
/// out, and force-removes those already terminating there.
async fn evict(client: &Client, node: &Value, pods: &Informer, default_s: u64) {
    let name = meta::name(node);
    let Some(added) = taint_added(node) else {
        return;
    };
    let on_node = pods.filter(|p| p["spec"]["nodeName"] == name);
    for pod in on_node {
        let uri = path(
            "v1",
            "pods",
            pod["metadata"]["namespace"].as_str(),
            pod["metadata"]["name"].as_str(),
        );
        if meta::is_deleting(&pod) {
            let force = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                               "preconditions": {"uid": pod["metadata"]["uid"]}});
            let _ = client.delete(&uri, Some(&force)).await;
            continue;
        }
        let Some(tolerated_s) = toleration_s(&pod, default_s) else {
            continue; // tolerates the taint forever
        };
        let due = added
            .checked_add(jiff::SignedDuration::from_secs(tolerated_s as i64))
            .unwrap_or(added);
        if Timestamp::now() < due {
            continue;
        }
        tracing::info!(pod = %uri, node = %name, "evicting a pod from an unreachable node");
        let opts = json!({"apiVersion": "v1", "kind": "DeleteOptions",
                          "preconditions": {"uid": pod["metadata"]["uid"]}});
        let _ = client.delete(&uri, Some(&opts)).await;
    }
}

fn taint_added(node: &Value) -> Option<Timestamp> {
    taints(node)
        .iter()
        .find(|t| t["key"] == TAINT_UNREACHABLE && t["effect"] == "NoExecute")
        .and_then(|t| t["timeAdded"].as_str())
        .and_then(meta::parse_time)
}

/// Seconds the pod tolerates the unreachable NoExecute taint: its own
/// toleration's `tolerationSeconds`, None for "forever", the default when
/// it has no such toleration.
fn toleration_s(pod: &Value, default_s: u64) -> Option<u64> {
    let tolerations = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let matching = tolerations.iter().find(|t| {
        let key_ok = match t["operator"].as_str() {
            Some("Exists") => t["key"].is_null() || t["key"] == TAINT_UNREACHABLE,
            _ => t["key"] == TAINT_UNREACHABLE,
        };
        let effect_ok = t["effect"].is_null() || t["effect"] == "" || t["effect"] == "NoExecute";
        key_ok && effect_ok
    });
    match matching {
        None => Some(default_s),
        Some(t) => t["tolerationSeconds"].as_i64().map(|s| s.max(0) as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_of_the_unreachable_taint() {
        let pod = |tols: Value| json!({"spec": {"tolerations": tols}});
        assert_eq!(toleration_s(&pod(json!([])), 300), Some(300));
        let short = json!([{"key": TAINT_UNREACHABLE, "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 5}]);
        assert_eq!(toleration_s(&pod(short), 300), Some(5));
        let forever = json!([{"operator": "Exists"}]);
        assert_eq!(toleration_s(&pod(forever), 300), None);
        let other = json!([{"key": "x", "operator": "Exists", "tolerationSeconds": 1}]);
        assert_eq!(toleration_s(&pod(other), 300), Some(300));
        let schedule_only = json!([{"key": TAINT_UNREACHABLE, "operator": "Exists",
                                    "effect": "NoSchedule"}]);
        assert_eq!(toleration_s(&pod(schedule_only), 300), Some(300));
    }

    #[test]
    fn taint_time_is_read_from_the_no_execute_taint() {
        let n = json!({"spec": {"taints": [
            {"key": TAINT_UNREACHABLE, "effect": "NoSchedule", "timeAdded": "2020-01-01T00:00:00Z"},
            {"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": "2021-01-01T00:00:00Z"}]}});
        assert_eq!(taint_added(&n).unwrap().to_string(), "2021-01-01T00:00:00Z");
        assert!(has_unreachable_taint(&n));
        assert!(taint_added(&json!({})).is_none());
    }
}
