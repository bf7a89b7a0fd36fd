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
//! node is removed with grace 0 (Kubernetes' pod GC does the same). Both
//! deletes are pinned to the pod's uid, so a pod recreated under the same
//! name is never hit.
//!
//! Nodes, pods and leases are read from the manager's shared caches; the
//! taint writes are pinned to the node's resourceVersion, so a node the
//! agent just updated is judged again on the next pass instead of being
//! overwritten.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions};

use crate::cache::{Caches, Informer};
use crate::events;

pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Where node agents keep their heartbeat Leases (named after the node).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
const NO_EXECUTE: &str = "NoExecute";
const NO_SCHEDULE: &str = "NoSchedule";
const UNKNOWN: &str = "Unknown";

#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// Lease silence after which a node is unreachable (Kubernetes: 40 s).
    pub grace: Duration,
    /// Toleration of pods that declare none (Kubernetes: 300 s).
    pub default_eviction_s: u64,
}

/// When this controller last saw each node's lease change.
#[derive(Default)]
struct Heartbeats {
    seen: HashMap<String, Seen>,
}

struct Seen {
    renew_time: Option<Timestamp>,
    at: Instant,
}

impl Heartbeats {
    /// Records the node's lease renewTime as of `now`; true when it has
    /// not changed for longer than `grace`. A node seen for the first time
    /// gets a full grace period.
    fn stale(
        &mut self,
        node: &str,
        renew_time: Option<Timestamp>,
        now: Instant,
        grace: Duration,
    ) -> bool {
        let s = self.seen.entry(node.to_string()).or_insert(Seen {
            renew_time,
            at: now,
        });
        if s.renew_time != renew_time {
            s.renew_time = renew_time;
            s.at = now;
        }
        now.saturating_duration_since(s.at) > grace
    }

    /// Forgets the nodes for which `exists` is false.
    fn retain(&mut self, exists: impl Fn(&str) -> bool) {
        self.seen.retain(|n, _| exists(n));
    }
}

/// Runs until aborted (leadership lost).
pub async fn run(client: kube::Client, caches: Caches, cfg: NodeLifecycleConfig) {
    let nodes = caches.get::<Node>();
    let leases = caches.get::<Lease>();
    let pods = caches.get::<Pod>();
    nodes.wait_synced().await;
    leases.wait_synced().await;
    pods.wait_synced().await;
    let mut heartbeats = Heartbeats::default();
    let period = (cfg.grace / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        for node in nodes.list() {
            let Some(name) = node.metadata.name.as_deref() else {
                continue;
            };
            let renew_time = leases
                .get(Some(NODE_LEASE_NAMESPACE), name)
                .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
            let stale = heartbeats.stale(name, renew_time, Instant::now(), cfg.grace);
            reconcile_node(&client, &node, stale).await;
            if stale {
                evict(&client, &node, &pods, cfg.default_eviction_s).await;
            }
        }
        heartbeats.retain(|n| nodes.get(None, n).is_some());
        tokio::time::sleep(period).await;
    }
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

fn has_unreachable_taint(node: &Node) -> bool {
    taints(node).iter().any(|t| t.key == TAINT_UNREACHABLE)
}

fn unreachable_taint(effect: &str, now: &Time) -> Taint {
    Taint {
        key: TAINT_UNREACHABLE.to_string(),
        effect: effect.to_string(),
        time_added: Some(now.clone()),
        value: None,
    }
}

/// Marks a stale node unreachable, or clears the mark once its lease moves.
async fn reconcile_node(client: &kube::Client, node: &Node, stale: bool) {
    let (Some(name), Some(_)) = (
        node.metadata.name.as_deref(),
        node.metadata.resource_version.as_deref(),
    ) else {
        return; // the API sets both; an unpinned taint write could lose the agent's
    };
    let nodes: Api<Node> = Api::all(client.clone());
    if stale && !has_unreachable_taint(node) {
        let now = Time(Timestamp::now());
        let mut t = taints(node).to_vec();
        t.push(unreachable_taint(NO_EXECUTE, &now));
        t.push(unreachable_taint(NO_SCHEDULE, &now));
        if let Err(e) = patch_taints(&nodes, node, name, t).await {
            tracing::debug!(node = %name, error = %e, "tainting an unreachable node failed");
            return;
        }
        mark_unknown(&nodes, node, name).await;
        let msg = format!("Node {name} status is now: NodeNotReady");
        let involved = events::object_ref(node);
        events::record(
            client,
            &involved,
            events::NORMAL,
            "NodeNotReady",
            &msg,
            "node-controller",
        )
        .await;
    } else if !stale && has_unreachable_taint(node) {
        let t: Vec<Taint> = taints(node)
            .iter()
            .filter(|t| t.key != TAINT_UNREACHABLE)
            .cloned()
            .collect();
        if let Err(e) = patch_taints(&nodes, node, name, t).await {
            tracing::debug!(node = %name, error = %e, "clearing the unreachable taint failed");
        }
    }
}

/// Replaces the node's taints, pinned to the resourceVersion judged.
async fn patch_taints(
    nodes: &Api<Node>,
    node: &Node,
    name: &str,
    taints: Vec<Taint>,
) -> Result<Node, kube::Error> {
    let patch = Node {
        metadata: ObjectMeta {
            resource_version: node.metadata.resource_version.clone(),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: Some(taints),
            ..NodeSpec::default()
        }),
        status: None,
    };
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// A condition nobody vouches for any more.
fn unknown(mut c: NodeCondition, now: &Time) -> NodeCondition {
    if c.status != UNKNOWN {
        c.last_transition_time = Some(now.clone());
    }
    c.status = UNKNOWN.to_string();
    c.reason = Some("NodeStatusUnknown".to_string());
    c.message = Some("Kubelet stopped posting node status.".to_string());
    c
}

/// Every condition the agent posted becomes Unknown.
async fn mark_unknown(nodes: &Api<Node>, node: &Node, name: &str) {
    let now = Time(Timestamp::now());
    let conditions: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| unknown(c, &now))
        .collect();
    let patch = Node {
        status: Some(NodeStatus {
            conditions: Some(conditions),
            ..NodeStatus::default()
        }),
        ..Node::default()
    };
    let params = PatchParams::default();
    if let Err(e) = nodes
        .patch_status(name, &params, &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(node = %name, error = %e, "marking the node Unknown failed");
    }
}

/// Deletes the node's pods whose toleration of the unreachable taint ran
/// out, and force-removes those already terminating there.
async fn evict(client: &kube::Client, node: &Node, pods: &Informer<Pod>, default_s: u64) {
    let Some(name) = node.metadata.name.as_deref() else {
        return;
    };
    let Some(added) = taint_added(node) else {
        return;
    };
    let on_node =
        pods.filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name));
    for pod in on_node {
        let m = &pod.metadata;
        let (Some(ns), Some(pod_name), Some(uid)) =
            (m.namespace.as_deref(), m.name.as_deref(), m.uid.as_deref())
        else {
            continue; // the API sets all three; an unpinned delete could hit a new pod
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let pinned = Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        });
        if m.deletion_timestamp.is_some() {
            let force = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: pinned,
                ..DeleteParams::default()
            };
            if let Err(e) = api.delete(pod_name, &force).await {
                tracing::debug!(pod = %pod_name, node = %name, error = %e, "force-removing a pod failed");
            }
            continue;
        }
        let Some(tolerated_s) = toleration_s(&pod, default_s) else {
            continue; // tolerates the taint forever
        };
        // Past the end of time it is never due.
        let tolerated =
            jiff::SignedDuration::from_secs(i64::try_from(tolerated_s).unwrap_or(i64::MAX));
        let due = added.checked_add(tolerated).unwrap_or(Timestamp::MAX);
        if Timestamp::now() < due {
            continue;
        }
        tracing::info!(namespace = %ns, pod = %pod_name, node = %name, "evicting a pod from an unreachable node");
        let evict = DeleteParams {
            preconditions: pinned,
            ..DeleteParams::default()
        };
        if let Err(e) = api.delete(pod_name, &evict).await {
            tracing::debug!(pod = %pod_name, node = %name, error = %e, "evicting a pod failed");
        }
    }
}

/// When the unreachable NoExecute taint was put on the node.
fn taint_added(node: &Node) -> Option<Timestamp> {
    taints(node)
        .iter()
        .find(|t| t.key == TAINT_UNREACHABLE && t.effect == NO_EXECUTE)
        .and_then(|t| t.time_added.as_ref())
        .map(|t| t.0)
}

/// Seconds the pod tolerates the unreachable NoExecute taint: its own
/// toleration's `tolerationSeconds`, None for "forever", the default when
/// it has no such toleration.
fn toleration_s(pod: &Pod, default_s: u64) -> Option<u64> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let matching = tolerations.iter().find(|t| {
        let key = t.key.as_deref().unwrap_or_default();
        let key_ok = match t.operator.as_deref() {
            Some("Exists") => key.is_empty() || key == TAINT_UNREACHABLE,
            _ => key == TAINT_UNREACHABLE,
        };
        let effect = t.effect.as_deref().unwrap_or_default();
        key_ok && (effect.is_empty() || effect == NO_EXECUTE)
    });
    match matching {
        None => Some(default_s),
        Some(t) => t.toleration_seconds.map(|s| s.max(0).unsigned_abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, Toleration};

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: Some(tolerations),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn toleration(key: Option<&str>, effect: Option<&str>, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: key.map(str::to_string),
            operator: Some("Exists".to_string()),
            effect: effect.map(str::to_string),
            toleration_seconds: seconds,
            value: None,
        }
    }

    #[test]
    fn tolerations_of_the_unreachable_taint() {
        assert_eq!(toleration_s(&pod(vec![]), 300), Some(300));
        assert_eq!(toleration_s(&Pod::default(), 300), Some(300));
        let short = toleration(Some(TAINT_UNREACHABLE), Some(NO_EXECUTE), Some(5));
        assert_eq!(toleration_s(&pod(vec![short]), 300), Some(5));
        let forever = toleration(None, None, None);
        assert_eq!(toleration_s(&pod(vec![forever]), 300), None);
        let other = toleration(Some("x"), None, Some(1));
        assert_eq!(toleration_s(&pod(vec![other]), 300), Some(300));
        let schedule_only = toleration(Some(TAINT_UNREACHABLE), Some(NO_SCHEDULE), None);
        assert_eq!(toleration_s(&pod(vec![schedule_only]), 300), Some(300));
        let negative = toleration(Some(TAINT_UNREACHABLE), None, Some(-3));
        assert_eq!(toleration_s(&pod(vec![negative]), 300), Some(0));
        let equal = Toleration {
            operator: Some("Equal".to_string()),
            ..toleration(Some(TAINT_UNREACHABLE), None, Some(7))
        };
        assert_eq!(toleration_s(&pod(vec![equal]), 300), Some(7));
    }

    fn node(taints: Vec<Taint>) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..NodeSpec::default()
            }),
            ..Node::default()
        }
    }

    fn at(s: &str) -> Time {
        Time(s.parse().expect("a valid test timestamp"))
    }

    #[test]
    fn taint_time_is_read_from_the_no_execute_taint() {
        let n = node(vec![
            unreachable_taint(NO_SCHEDULE, &at("2020-01-01T00:00:00Z")),
            unreachable_taint(NO_EXECUTE, &at("2021-01-01T00:00:00Z")),
        ]);
        assert_eq!(taint_added(&n).unwrap().to_string(), "2021-01-01T00:00:00Z");
        assert!(has_unreachable_taint(&n));
        assert!(taint_added(&Node::default()).is_none());
        assert!(!has_unreachable_taint(&Node::default()));
    }

    #[test]
    fn conditions_turn_unknown_and_keep_the_transition_time_when_already_unknown() {
        let now = at("2022-01-01T00:00:00Z");
        let ready = NodeCondition {
            type_: "Ready".to_string(),
            status: "True".to_string(),
            last_transition_time: Some(at("2020-01-01T00:00:00Z")),
            ..NodeCondition::default()
        };
        let u = unknown(ready, &now);
        assert_eq!(u.status, UNKNOWN);
        assert_eq!(u.last_transition_time, Some(now.clone()));
        assert_eq!(u.reason.as_deref(), Some("NodeStatusUnknown"));
        let was = at("2021-01-01T00:00:00Z");
        let already = NodeCondition {
            last_transition_time: Some(was.clone()),
            ..u
        };
        assert_eq!(unknown(already, &now).last_transition_time, Some(was));
    }

    #[test]
    fn a_node_is_stale_after_grace_without_a_lease_change() {
        let grace = Duration::from_secs(40);
        let t0 = Instant::now();
        let renewed = Some(Timestamp::UNIX_EPOCH);
        let mut h = Heartbeats::default();
        // First sight: a full grace period, whatever the lease says.
        assert!(!h.stale("n1", renewed, t0, grace));
        assert!(!h.stale("n1", renewed, t0 + grace, grace));
        assert!(h.stale("n1", renewed, t0 + grace + Duration::from_secs(1), grace));
        // The lease moves: fresh again, from then.
        let later = Some(Timestamp::now());
        let t1 = t0 + grace * 2;
        assert!(!h.stale("n1", later, t1, grace));
        assert!(h.stale("n1", later, t1 + grace * 2, grace));
        // A node without any lease goes stale too.
        assert!(!h.stale("n2", None, t0, grace));
        assert!(h.stale("n2", None, t1, grace));
        h.retain(|n| n == "n2");
        assert!(
            !h.stale("n1", later, t1 + grace * 2, grace),
            "forgotten: a new grace period"
        );
    }
}
