//! The scheduler's decision core: given one pending pod and a snapshot of
//! the nodes, pick a node or say why none fits.
//!
//! Pure code (no I/O, no store, no async) so that every rule can be tested
//! on its own and the loop that watches pods and binds them stays thin. The
//! rules follow the Kubernetes default profile:
//!
//! - [`filter`]: NodeUnschedulable, TaintToleration (plus the not-ready
//!   taint implied by a node's Ready condition), NodeAffinity (nodeSelector
//!   and required node affinity), NodeResourcesFit (cpu, memory, pod count).
//! - [`score`]: least-allocated resources, spreading pods of one owner,
//!   avoiding PreferNoSchedule taints; ties are broken at random, so equal
//!   nodes share a burst of pods instead of the first one taking them all.
//!
//! The caller keeps one [`NodeInfo`] per node and, after binding a pod,
//! calls [`NodeInfo::add_pod`] so the next decision sees it (Kubernetes'
//! "assume" step).

pub mod filter;
pub mod resources;
pub mod run;
pub mod score;

use filter::{RequiredAffinity, Taint, Toleration, Unfit};
use rand::Rng;
use resources::Resources;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// A node's Ready condition as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Ready=True.
    Ready,
    /// Ready=False, or no Ready condition yet (a node that has not reported
    /// is not ready, as the kubelet's registration taint says).
    NotReady,
    /// Ready=Unknown: the node stopped renewing its lease.
    Unknown,
}

impl Readiness {
    /// Reads `status.conditions[type=Ready].status`.
    pub fn from_node(node: &Value) -> Readiness {
        let conditions = node.pointer("/status/conditions").and_then(Value::as_array);
        let ready = conditions
            .into_iter()
            .flatten()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"));
        match ready.and_then(|c| c.get("status")).and_then(Value::as_str) {
            Some("True") => Readiness::Ready,
            Some("Unknown") => Readiness::Unknown,
            _ => Readiness::NotReady,
        }
    }

    /// The NoSchedule taint the node lifecycle controller gives a node in
    /// this state, None when Ready.
    pub fn taint_key(self) -> Option<&'static str> {
        match self {
            Readiness::Ready => None,
            Readiness::NotReady => Some(filter::TAINT_NOT_READY),
            Readiness::Unknown => Some(filter::TAINT_UNREACHABLE),
        }
    }
}

/// What the scheduler knows about one node: its capacity and constraints
/// from the Node object, and the sum of what its pods request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// `status.allocatable` cpu and memory (absent or malformed = 0).
    pub allocatable: Resources,
    /// `status.allocatable.pods`.
    pub allowed_pods: i64,
    pub labels: BTreeMap<String, String>,
    /// `spec.taints`, all effects.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    pub ready: Readiness,
    /// Sum of the declared requests of the pods on the node (for fitting).
    pub requested: Resources,
    /// Same with scoring defaults for missing requests (for scoring).
    pub non_zero_requested: Resources,
    pub pod_count: i64,
    /// Pods on the node per controlling owner uid (for spreading).
    pub owner_counts: HashMap<String, u32>,
}

impl NodeInfo {
    /// Builds the view of `node` with `pods_on_node` (pods whose
    /// `spec.nodeName` is this node) accounted. Succeeded and Failed pods
    /// are skipped, as the Kubernetes scheduler's cache never holds them;
    /// pods whose quantities do not parse still count as a pod.
    pub fn from_node(node: &Value, pods_on_node: &[&Value]) -> NodeInfo {
        let allocatable = node.pointer("/status/allocatable");
        let quantity = |k: &str, parse: fn(&str) -> Option<i64>| {
            let q = allocatable.and_then(|a| a.get(k)).and_then(Value::as_str);
            q.and_then(parse).unwrap_or(0)
        };
        let mut info = NodeInfo {
            name: str_at(node, "/metadata/name").into(),
            allocatable: Resources {
                cpu_millis: quantity("cpu", resources::cpu_millis),
                memory: quantity("memory", resources::value),
            },
            allowed_pods: quantity("pods", resources::value),
            labels: string_map(node.pointer("/metadata/labels")),
            taints: list(node, "/spec/taints")
                .iter()
                .map(Taint::from_json)
                .collect(),
            unschedulable: node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)),
            ready: Readiness::from_node(node),
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pod_count: 0,
            owner_counts: HashMap::new(),
        };
        for pod in pods_on_node.iter().filter(|p| !terminated(p)) {
            info.add_pod(&PodRequest::accounted(pod));
        }
        info
    }

    /// Takes in a changed Node object (capacity, labels, taints, cordon,
    /// readiness) and keeps the pods already accounted on it.
    pub fn update_node(&mut self, node: &Value) {
        let fresh = NodeInfo::from_node(node, &[]);
        *self = NodeInfo {
            requested: self.requested,
            non_zero_requested: self.non_zero_requested,
            pod_count: self.pod_count,
            owner_counts: std::mem::take(&mut self.owner_counts),
            ..fresh
        };
    }

    /// Accounts a pod just placed on this node, so the next decision sees
    /// its requests and owner.
    pub fn add_pod(&mut self, pod: &PodRequest) {
        self.requested = self.requested.plus(pod.requests);
        self.non_zero_requested = self.non_zero_requested.plus(pod.non_zero);
        self.pod_count += 1;
        if let Some(owner) = &pod.owner {
            *self.owner_counts.entry(owner.clone()).or_default() += 1;
        }
    }

    /// Undoes [`NodeInfo::add_pod`] (pod deleted, finished, or a binding
    /// that failed).
    pub fn remove_pod(&mut self, pod: &PodRequest) {
        self.requested = self.requested.minus(pod.requests);
        self.non_zero_requested = self.non_zero_requested.minus(pod.non_zero);
        self.pod_count = (self.pod_count - 1).max(0);
        if let Some(owner) = &pod.owner {
            if let Some(n) = self.owner_counts.get_mut(owner) {
                *n -= 1;
                if *n == 0 {
                    self.owner_counts.remove(owner);
                }
            }
        }
    }
}

/// What the scheduler needs from a pod, parsed once per decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodRequest {
    /// Effective declared request (see [`resources::pod_requests`]).
    pub requests: Resources,
    /// Same with scoring defaults for containers that request nothing.
    pub non_zero: Resources,
    /// `spec.nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// `spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub affinity: Option<RequiredAffinity>,
    pub tolerations: Vec<Toleration>,
    /// uid of the ownerReference with `controller: true`.
    pub owner: Option<String>,
}

impl PodRequest {
    /// Parses a Pod. Err only when a resource quantity is malformed (the
    /// API server rejects those, so this means a corrupt object); a
    /// malformed affinity term just matches no node, as in Kubernetes.
    pub fn from_pod(pod: &Value) -> Result<PodRequest, String> {
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let r = resources::pod_requests(spec)?;
        let affinity = spec
            .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution")
            .filter(|v| !v.is_null())
            .map(RequiredAffinity::from_json);
        Ok(PodRequest {
            requests: r.requests,
            non_zero: r.non_zero,
            node_selector: string_map(spec.get("nodeSelector")),
            affinity,
            tolerations: list(spec, "/tolerations")
                .iter()
                .map(Toleration::from_json)
                .collect(),
            owner: controller_uid(pod),
        })
    }

    /// For accounting a pod already on a node: never fails, a pod with bad
    /// quantities counts with no requests.
    fn accounted(pod: &Value) -> PodRequest {
        PodRequest::from_pod(pod).unwrap_or_else(|_| PodRequest {
            owner: controller_uid(pod),
            ..PodRequest::default()
        })
    }
}

fn controller_uid(pod: &Value) -> Option<String> {
    list(pod, "/metadata/ownerReferences")
        .iter()
        .find(|r| r.get("controller") == Some(&Value::Bool(true)))
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// No node fits: per-node reasons, and the message Kubernetes puts in the
/// PodScheduled=False condition and the FailedScheduling event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub num_nodes: usize,
    /// (node name, why it was rejected), in `nodes` order.
    pub unfit: Vec<(String, Unfit)>,
}

impl FitError {
    /// `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match
    /// Pod's node affinity/selector.` — each reason counted over nodes, the
    /// "count reason" strings sorted as Go's sort.Strings sorts them.
    pub fn message(&self) -> String {
        if self.num_nodes == 0 {
            return "no nodes available to schedule pods".into();
        }
        let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
        for (_, unfit) in &self.unfit {
            for reason in unfit.reasons() {
                *histogram.entry(reason).or_default() += 1;
            }
        }
        let mut parts: Vec<String> = histogram.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.sort();
        let n = self.num_nodes;
        format!("0/{n} nodes are available: {}.", parts.join(", "))
    }
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for FitError {}

/// Picks a node for `pod`: Ok(index into `nodes`) of the best node that
/// passes every filter, or the reasons each node was rejected. Every node
/// is considered (Kubernetes samples a percentage of large clusters).
/// Among equally good nodes `rng` picks one uniformly; the result depends
/// only on the inputs and `rng`, so a seeded rng makes it reproducible.
pub fn schedule<R: Rng + ?Sized>(
    pod: &PodRequest,
    nodes: &[NodeInfo],
    rng: &mut R,
) -> Result<usize, FitError> {
    let mut feasible = Vec::with_capacity(nodes.len());
    let mut unfit = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        match filter::check(pod, node) {
            Ok(()) => feasible.push(i),
            Err(why) => unfit.push((node.name.clone(), why)),
        }
    }
    if feasible.is_empty() {
        return Err(FitError {
            num_nodes: nodes.len(),
            unfit,
        });
    }
    Ok(score::best(pod, nodes, &feasible, rng))
}

fn terminated(pod: &Value) -> bool {
    matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed")
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn list<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    let items = v.pointer(pointer).and_then(Value::as_array);
    items.map_or(&[], Vec::as_slice)
}

/// A JSON string map (labels, nodeSelector); non-string values are dropped.
fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    let entries = v.and_then(Value::as_object).into_iter().flatten();
    entries
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::json;
    use std::time::Instant;

    /// A seeded rng, so tie-breaks are the same on every run.
    pub(crate) fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    pub(crate) fn node_json(name: &str, cpu: &str, memory: &str) -> Value {
        json!({
            "metadata": {"name": name},
            "status": {
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        })
    }

    /// A Ready node with no pods.
    pub(crate) fn node(name: &str, cpu: &str, memory: &str) -> NodeInfo {
        NodeInfo::from_node(&node_json(name, cpu, memory), &[])
    }

    pub(crate) fn pod_json(name: &str, cpu: &str, memory: &str) -> Value {
        json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "resources": {
                "requests": {"cpu": cpu, "memory": memory}
            }}]},
        })
    }

    pub(crate) fn pod(name: &str, cpu: &str, memory: &str) -> PodRequest {
        PodRequest::from_pod(&pod_json(name, cpu, memory)).unwrap()
    }

    /// A pod controlled by the owner with uid `owner`.
    pub(crate) fn owned_pod(name: &str, owner: &str, cpu: &str, memory: &str) -> PodRequest {
        let mut p = pod_json(name, cpu, memory);
        p["metadata"]["ownerReferences"] = json!([
            {"kind": "ReplicaSet", "name": "rs", "uid": owner, "controller": true}
        ]);
        PodRequest::from_pod(&p).unwrap()
    }

    pub(crate) fn with_spec(spec: Value) -> PodRequest {
        PodRequest::from_pod(&json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn node_info_from_node_object() {
        let node = json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {
                "unschedulable": true,
                "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}],
            },
            "status": {
                "allocatable": {"cpu": "3500m", "memory": "2Gi", "pods": "10"},
                "conditions": [{"type": "Ready", "status": "False"}],
            },
        });
        let mut finished = pod_json("done", "1", "1Gi");
        finished["status"] = json!({"phase": "Succeeded"});
        let running = pod_json("run", "500m", "1Mi");
        let info = NodeInfo::from_node(&node, &[&running, &finished]);
        assert_eq!(info.name, "n1");
        assert_eq!(info.allocatable.cpu_millis, 3500);
        assert_eq!(info.allocatable.memory, 2 << 30);
        assert_eq!(info.allowed_pods, 10);
        assert_eq!(info.labels["zone"], "a");
        assert_eq!(info.taints.len(), 1);
        assert!(info.unschedulable);
        assert_eq!(info.ready, Readiness::NotReady);
        assert_eq!(info.pod_count, 1, "Succeeded pods do not count");
        assert_eq!(info.requested.cpu_millis, 500);
    }

    #[test]
    fn readiness_from_conditions() {
        let with = |s: &str| json!({"status": {"conditions": [{"type": "Ready", "status": s}]}});
        assert_eq!(Readiness::from_node(&with("True")), Readiness::Ready);
        assert_eq!(Readiness::from_node(&with("False")), Readiness::NotReady);
        assert_eq!(Readiness::from_node(&with("Unknown")), Readiness::Unknown);
        assert_eq!(Readiness::from_node(&json!({})), Readiness::NotReady);
    }

    #[test]
    fn pod_request_from_pod_object() {
        let p = json!({
            "metadata": {"ownerReferences": [
                {"uid": "not-controller"},
                {"uid": "rs-1", "controller": true},
            ]},
            "spec": {
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"operator": "Exists"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions":
                        [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
                "containers": [{"name": "c", "resources": {"requests": {"cpu": "250m"}}}],
            },
        });
        let r = PodRequest::from_pod(&p).unwrap();
        assert_eq!(r.owner.as_deref(), Some("rs-1"));
        assert_eq!(r.node_selector["disk"], "ssd");
        assert_eq!(r.tolerations.len(), 1);
        assert!(r.affinity.is_some());
        assert_eq!(r.requests.cpu_millis, 250);
        assert_eq!(r.non_zero.memory, resources::DEFAULT_MEMORY);
        let bad = pod_json("bad", "x", "1Mi");
        assert!(PodRequest::from_pod(&bad).is_err());
    }

    #[test]
    fn add_and_remove_pod() {
        let mut n = node("n", "2", "2Gi");
        let p = owned_pod("p", "o", "500m", "1Gi");
        n.add_pod(&p);
        assert_eq!(
            (n.pod_count, n.requested.cpu_millis, n.owner_counts["o"]),
            (1, 500, 1)
        );
        n.remove_pod(&p);
        assert_eq!(n, node("n", "2", "2Gi"));
    }

    #[test]
    fn update_node_keeps_the_accounted_pods() {
        let mut n = node("n", "2", "2Gi");
        n.add_pod(&owned_pod("p", "o", "500m", "1Gi"));
        let mut changed = node_json("n", "4", "8Gi");
        changed["spec"] = json!({"unschedulable": true});
        n.update_node(&changed);
        assert_eq!(n.allocatable.cpu_millis, 4000);
        assert!(n.unschedulable);
        assert_eq!(
            (n.pod_count, n.requested.cpu_millis, n.owner_counts["o"]),
            (1, 500, 1)
        );
    }

    #[test]
    fn aggregated_message() {
        let mut labelled = node("a", "4", "8Gi");
        labelled.labels.insert("disk".into(), "ssd".into());
        let nodes = [labelled, node("b", "4", "8Gi"), node("c", "4", "8Gi")];
        let mut p = pod("p", "6", "1Gi");
        p.node_selector.insert("disk".into(), "ssd".into());
        let err = schedule(&p, &nodes, &mut rng()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 Insufficient cpu, \
             2 node(s) didn't match Pod's node affinity/selector."
        );
        assert_eq!(err.unfit.len(), 3);
    }

    #[test]
    fn aggregated_message_counts_every_reason() {
        let mut cordoned = node("a", "1", "1Gi");
        cordoned.unschedulable = true;
        let mut tainted = node("b", "1", "1Gi");
        tainted.taints.push(Taint::from_json(
            &json!({"key": "role", "value": "db", "effect": "NoExecute"}),
        ));
        let mut not_ready = node("c", "1", "1Gi");
        not_ready.ready = Readiness::NotReady;
        let nodes = [
            cordoned,
            tainted,
            not_ready,
            node("d", "1", "1Gi"),
            node("e", "1", "1Gi"),
        ];
        let err = schedule(&pod("p", "2", "2Gi"), &nodes, &mut rng()).unwrap_err();
        assert_eq!(
            err.message(),
            "0/5 nodes are available: 1 node(s) had untolerated taint \
             {node.kubernetes.io/not-ready: }, 1 node(s) had untolerated taint {role: db}, \
             1 node(s) were unschedulable, 2 Insufficient cpu, 2 Insufficient memory."
        );
    }

    #[test]
    fn no_nodes() {
        let err = schedule(&pod("p", "1", "1"), &[], &mut rng()).unwrap_err();
        assert_eq!(err.message(), "no nodes available to schedule pods");
    }

    #[test]
    fn only_the_fitting_node_is_chosen() {
        let mut gpu = node("z-gpu", "1", "1Gi");
        gpu.labels.insert("gpu".into(), "true".into());
        let nodes = [node("a", "8", "8Gi"), gpu];
        let mut p = pod("p", "100m", "1Mi");
        p.node_selector.insert("gpu".into(), "true".into());
        assert_eq!(schedule(&p, &nodes, &mut rng()), Ok(1));
    }

    /// Not a benchmark with assertions on time: prints how long 10,000
    /// decisions over 1,000 nodes take (run with --nocapture to see it).
    #[test]
    fn ten_thousand_pods_over_a_thousand_nodes() {
        let mut nodes: Vec<NodeInfo> = (0..1000)
            .map(|i| node(&format!("node-{i:04}"), "8", "32Gi"))
            .collect();
        let pods: Vec<PodRequest> = (0..10_000)
            .map(|i| {
                owned_pod(
                    &format!("p{i}"),
                    &format!("rs-{}", i % 100),
                    "100m",
                    "128Mi",
                )
            })
            .collect();
        let mut rng = rng();
        let start = Instant::now();
        for p in &pods {
            let i = schedule(p, &nodes, &mut rng).expect("every pod fits");
            nodes[i].add_pod(p);
        }
        let elapsed = start.elapsed();
        eprintln!(
            "scheduled 10000 pods over 1000 nodes in {elapsed:?} ({:.0} pods/s)",
            10_000.0 / elapsed.as_secs_f64()
        );
        assert_eq!(nodes.iter().map(|n| n.pod_count).sum::<i64>(), 10_000);
        let max = nodes.iter().map(|n| n.pod_count).max().unwrap_or(0);
        let min = nodes.iter().map(|n| n.pod_count).min().unwrap_or(0);
        eprintln!("pods per node: min {min}, max {max}");
        assert!(max - min <= 2, "spread evenly: min {min}, max {max}");
    }
}
