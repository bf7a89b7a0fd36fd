//! The scheduler's decision core: given one pending pod and a snapshot of
//! the nodes, pick a node or say why none fits.
//!
//! Pure code (no I/O, no store, no async) so that every rule can be tested
//! on its own and the loop that watches pods and binds them stays thin. The
//! rules follow the Kubernetes default profile:
//!
//! - [`filter`]: NodeUnschedulable, TaintToleration (plus the not-ready
//!   taint implied by a node's Ready condition), NodeAffinity (nodeSelector
//!   and required node affinity), NodeResourcesFit (cpu, memory, pod count),
//!   VolumeBinding ([`volumes`]: PersistentVolume node affinity).
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
pub mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use filter::{RequiredAffinity, Unfit};
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use rand::Rng;
use resources::Resources;

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
    pub fn from_node(node: &Node) -> Readiness {
        let status = node.status.as_ref();
        let conditions = status.and_then(|s| s.conditions.as_deref());
        let ready = conditions
            .unwrap_or_default()
            .iter()
            .find(|c| c.type_ == "Ready");
        match ready.map(|c| c.status.as_str()) {
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
#[derive(Debug, Clone, PartialEq)]
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
    pub fn from_node(node: &Node, pods_on_node: &[&Pod]) -> NodeInfo {
        let spec = node.spec.as_ref();
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let quantity = |k: &str, parse: fn(&str) -> Option<i64>| {
            let q = allocatable.and_then(|a| a.get(k));
            q.and_then(|q| parse(&q.0)).unwrap_or(0)
        };
        let mut info = NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            allocatable: Resources {
                cpu_millis: quantity("cpu", resources::cpu_millis),
                memory: quantity("memory", resources::value),
            },
            allowed_pods: quantity("pods", resources::value),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable) == Some(true),
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
    pub fn update_node(&mut self, node: &Node) {
        let fresh = NodeInfo::from_node(node, &[]);
        assert_eq!(
            fresh.name, self.name,
            "a node view is updated by its own node"
        );
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
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// Where the pod's PersistentVolumeClaims let it run; filled by the
    /// scheduling loop from its claim and volume caches.
    pub volumes: volumes::VolumeConstraints,
}

impl PodRequest {
    /// Parses a Pod. Err only when a resource quantity is malformed (the
    /// API server rejects those, so this means a corrupt object); a
    /// malformed affinity term just matches no node, as in Kubernetes. A
    /// pod without a spec requests nothing.
    pub fn from_pod(pod: &Pod) -> Result<PodRequest, String> {
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(PodRequest {
                owner: controller_uid(pod),
                ..PodRequest::default()
            });
        };
        let r = resources::pod_requests(spec)?;
        let affinity = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(RequiredAffinity::from_selector);
        Ok(PodRequest {
            requests: r.requests,
            non_zero: r.non_zero,
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            affinity,
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            owner: controller_uid(pod),
            volumes: volumes::VolumeConstraints::default(),
        })
    }

    /// For accounting a pod already on a node: never fails, a pod with bad
    /// quantities counts with no requests.
    fn accounted(pod: &Pod) -> PodRequest {
        PodRequest::from_pod(pod).unwrap_or_else(|_| PodRequest {
            owner: controller_uid(pod),
            ..PodRequest::default()
        })
    }
}

/// The uid of the pod's ownerReference with `controller: true`.
fn controller_uid(pod: &Pod) -> Option<String> {
    let refs = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let controller = refs.iter().find(|r| r.controller == Some(true))?;
    Some(controller.uid.clone())
}

/// No node fits: per-node reasons, and the message Kubernetes puts in the
/// PodScheduled=False condition and the FailedScheduling event.
#[derive(Debug, Clone, PartialEq)]
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

/// Fewest feasible nodes a search looks for before it stops (Kubernetes'
/// minFeasibleNodesToFind).
const MIN_FEASIBLE_NODES: usize = 100;
/// Smallest share of a large cluster a search looks for, in percent
/// (Kubernetes' minFeasibleNodesPercentageToFind).
const MIN_FEASIBLE_PERCENT: usize = 5;

/// How many feasible nodes a search looks for among `total`: all of a
/// cluster under 100 nodes, else Kubernetes' adaptive
/// percentageOfNodesToScore, 50% less 1% per 125 nodes, at least 5% and
/// at least 100 nodes (500 of 5,000). Scoring a sample is what keeps the
/// cost per pod flat as clusters grow; the rotating start
/// ([`schedule`]'s `next_start`) makes every node part of some sample.
pub fn feasible_nodes_to_find(total: usize) -> usize {
    if total < MIN_FEASIBLE_NODES {
        return total;
    }
    let percent = 50usize
        .saturating_sub(total / 125)
        .max(MIN_FEASIBLE_PERCENT);
    (total * percent / 100).max(MIN_FEASIBLE_NODES)
}

/// Picks a node for `pod`: Ok(index into `nodes`) of the best node that
/// passes every filter, or the reasons each node was rejected.
///
/// As kube-scheduler does, the filters run over the nodes in order from
/// `*next_start` (wrapping around) and stop once
/// [`feasible_nodes_to_find`] nodes pass; only those are scored, and
/// `*next_start` moves past the nodes examined, so the next pod's search
/// starts where this one stopped. A pod that fits nowhere has examined
/// every node. Among equally good nodes `rng` picks one uniformly; the
/// result depends only on the inputs, `next_start` and `rng`, so a seeded
/// rng makes it reproducible.
pub fn schedule<R: Rng + ?Sized>(
    pod: &PodRequest,
    nodes: &[NodeInfo],
    next_start: &mut usize,
    rng: &mut R,
) -> Result<usize, FitError> {
    let total = nodes.len();
    let want = feasible_nodes_to_find(total);
    let start = if total == 0 { 0 } else { *next_start % total };
    let mut feasible = Vec::with_capacity(want);
    let mut unfit = Vec::new();
    let mut examined = 0;
    for offset in 0..total {
        if feasible.len() >= want {
            break;
        }
        let i = (start + offset) % total;
        examined += 1;
        match filter::check(pod, &nodes[i]) {
            Ok(()) => feasible.push(i),
            Err(why) => unfit.push((nodes[i].name.clone(), why)),
        }
    }
    if total > 0 {
        *next_start = (start + examined) % total;
    }
    if feasible.is_empty() {
        return Err(FitError {
            num_nodes: total,
            unfit,
        });
    }
    Ok(score::best(pod, nodes, &feasible, rng))
}

/// Succeeded or Failed: the pod's containers are gone and hold no room.
pub fn terminated(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::scheduler::resources::tests::quantities;
    use k8s_openapi::api::core::v1::{
        Container, NodeCondition, NodeSpec, NodeStatus, PodSpec, PodStatus, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::{json, Value};
    use std::time::Instant;

    /// A seeded rng, so tie-breaks are the same on every run.
    pub(crate) fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    /// A typed object from its JSON form, for fixtures with deep nesting.
    pub(crate) fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("a valid fixture")
    }

    /// A Ready node with room for 110 pods.
    pub(crate) fn node_obj(name: &str, cpu: &str, memory: &str) -> Node {
        let allocatable = quantities(&[("cpu", cpu), ("memory", memory), ("pods", "110")]);
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                allocatable: Some(allocatable),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    /// A Ready node with no pods.
    pub(crate) fn node(name: &str, cpu: &str, memory: &str) -> NodeInfo {
        NodeInfo::from_node(&node_obj(name, cpu, memory), &[])
    }

    /// A pod of one container requesting `cpu` and `memory`.
    pub(crate) fn pod_obj(name: &str, cpu: &str, memory: &str) -> Pod {
        let container = Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(quantities(&[("cpu", cpu), ("memory", memory)])),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![container],
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    pub(crate) fn pod(name: &str, cpu: &str, memory: &str) -> PodRequest {
        PodRequest::from_pod(&pod_obj(name, cpu, memory)).unwrap()
    }

    /// A pod controlled by the owner with uid `owner`.
    pub(crate) fn owned_pod(name: &str, owner: &str, cpu: &str, memory: &str) -> PodRequest {
        let mut p = pod_obj(name, cpu, memory);
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "rs".into(),
            uid: owner.into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        PodRequest::from_pod(&p).unwrap()
    }

    /// A pod with `spec` given in its JSON form.
    pub(crate) fn with_spec(spec: Value) -> PodRequest {
        let p = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                ..ObjectMeta::default()
            },
            spec: Some(from_json(spec)),
            ..Pod::default()
        };
        PodRequest::from_pod(&p).unwrap()
    }

    #[test]
    fn node_info_from_node_object() {
        let node: Node = from_json(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {
                "unschedulable": true,
                "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}],
            },
            "status": {
                "allocatable": {"cpu": "3500m", "memory": "2Gi", "pods": "10"},
                "conditions": [{"type": "Ready", "status": "False"}],
            },
        }));
        let mut finished = pod_obj("done", "1", "1Gi");
        finished.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            ..PodStatus::default()
        });
        let running = pod_obj("run", "500m", "1Mi");
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
        let with = |s: &str| -> Node {
            from_json(json!({"status": {"conditions": [{"type": "Ready", "status": s}]}}))
        };
        assert_eq!(Readiness::from_node(&with("True")), Readiness::Ready);
        assert_eq!(Readiness::from_node(&with("False")), Readiness::NotReady);
        assert_eq!(Readiness::from_node(&with("Unknown")), Readiness::Unknown);
        assert_eq!(Readiness::from_node(&Node::default()), Readiness::NotReady);
    }

    #[test]
    fn pod_request_from_pod_object() {
        let p: Pod = from_json(json!({
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
        }));
        let r = PodRequest::from_pod(&p).unwrap();
        assert_eq!(r.owner.as_deref(), Some("rs-1"));
        assert_eq!(r.node_selector["disk"], "ssd");
        assert_eq!(r.tolerations.len(), 1);
        assert!(r.affinity.is_some());
        assert_eq!(r.requests.cpu_millis, 250);
        assert_eq!(r.non_zero.memory, resources::DEFAULT_MEMORY);
        let bad = pod_obj("bad", "x", "1Mi");
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
        let mut changed = node_obj("n", "4", "8Gi");
        changed.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..NodeSpec::default()
        });
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
        let err = schedule(&p, &nodes, &mut 0, &mut rng()).unwrap_err();
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
        tainted
            .taints
            .push(filter::tests::taint("role", "db", "NoExecute"));
        let mut not_ready = node("c", "1", "1Gi");
        not_ready.ready = Readiness::NotReady;
        let nodes = [
            cordoned,
            tainted,
            not_ready,
            node("d", "1", "1Gi"),
            node("e", "1", "1Gi"),
        ];
        let err = schedule(&pod("p", "2", "2Gi"), &nodes, &mut 0, &mut rng()).unwrap_err();
        assert_eq!(
            err.message(),
            "0/5 nodes are available: 1 node(s) had untolerated taint \
             {node.kubernetes.io/not-ready: }, 1 node(s) had untolerated taint {role: db}, \
             1 node(s) were unschedulable, 2 Insufficient cpu, 2 Insufficient memory."
        );
    }

    #[test]
    fn no_nodes() {
        let err = schedule(&pod("p", "1", "1"), &[], &mut 0, &mut rng()).unwrap_err();
        assert_eq!(err.message(), "no nodes available to schedule pods");
    }

    #[test]
    fn only_the_fitting_node_is_chosen() {
        let mut gpu = node("z-gpu", "1", "1Gi");
        gpu.labels.insert("gpu".into(), "true".into());
        let nodes = [node("a", "8", "8Gi"), gpu];
        let mut p = pod("p", "100m", "1Mi");
        p.node_selector.insert("gpu".into(), "true".into());
        assert_eq!(schedule(&p, &nodes, &mut 0, &mut rng()), Ok(1));
    }

    /// Not a benchmark with assertions on time: prints how long 10,000
    /// decisions over 1,000 nodes take (run with --nocapture to see it).
    #[test]
    fn large_clusters_score_a_rotating_sample() {
        assert_eq!(feasible_nodes_to_find(50), 50);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(100_000), 5000);
        let nodes: Vec<NodeInfo> = (0..1000)
            .map(|i| node(&format!("n{i:04}"), "8", "32Gi"))
            .collect();
        let p = pod("p", "100m", "128Mi");
        let mut next_start = 0;
        let i = schedule(&p, &nodes, &mut next_start, &mut rng()).unwrap();
        assert!(i < 420, "{i}");
        assert_eq!(next_start, 420);
        let i = schedule(&p, &nodes, &mut next_start, &mut rng()).unwrap();
        assert!((420..840).contains(&i), "{i}");
        assert_eq!(next_start, 840);
        // The search wraps around the end.
        let i = schedule(&p, &nodes, &mut next_start, &mut rng()).unwrap();
        assert!(!(260..840).contains(&i), "{i}");
        assert_eq!(next_start, 260);
    }

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
        let mut next_start = 0;
        let start = Instant::now();
        for p in &pods {
            let i = schedule(p, &nodes, &mut next_start, &mut rng).expect("every pod fits");
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
