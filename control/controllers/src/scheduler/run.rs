//! The scheduler loop: watch pods and nodes, decide with the pure core
//! ([`super::schedule`]), bind through `pods/binding`.
//!
//! Pods and nodes are read from the controller manager's shared caches
//! ([`Caches`]): the pod cache is the one the ReplicaSet, Deployment and
//! node-lifecycle controllers read too.
//!
//! Decisions are sequential, against a cache that already counts every pod
//! this loop placed but the informer has not shown bound yet (Kubernetes'
//! "assume"), so two decisions never both take the last room on a node.
//! Bindings are then written concurrently; a failed binding is "forgotten"
//! (its room given back) and the pod retried. A pod that fits nowhere
//! stays Pending with PodScheduled=False and a FailedScheduling event, and
//! is retried when nodes or pods change, or after a back-off.
//!
//! Node changes are applied to the cache one at a time (a heartbeat or a
//! new node costs one node's view, not all of them).
//!
//! Pods with PersistentVolumeClaims are placed as [`super::volumes`]
//! says: where their volumes are, and for a claim waiting for its first
//! consumer, the claim is given the chosen node before the pod is bound.
//! A change of any claim or volume gives unschedulable pods another try.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Status, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use super::volumes::{self, VolumeCaches};
use super::{schedule, terminated, NodeInfo, PodRequest};
use crate::cache::{self, key_of, Caches, Change, Informer};
use crate::events;

/// The name pods ask for in `spec.schedulerName` (or leave empty).
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Bindings written at once.
const BINDS_IN_FLIGHT: usize = 64;
/// First wait before an unschedulable pod is tried again (doubled per try).
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait before an unschedulable pod is tried again.
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How often waiting pods whose back-off ran out are queued again.
const RETRY_TICK: Duration = Duration::from_millis(500);

/// Runs until aborted, or until the caches are gone. Writes (bindings,
/// status, events) go through `client`; reads come from `caches`.
pub async fn run(client: kube::Client, caches: Caches) {
    let nodes = caches.get::<Node>();
    let pods = caches.get::<Pod>();
    let volume_caches = VolumeCaches::new(&caches);
    // Subscribe before reading the lists, so no change falls in between.
    let mut node_rx = nodes.subscribe();
    let mut pod_rx = pods.subscribe();
    let mut claim_rx = volume_caches.claims().subscribe();
    let mut volume_rx = volume_caches.volumes().subscribe();
    nodes.wait_synced().await;
    pods.wait_synced().await;
    volume_caches.wait_synced().await;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut s = Scheduler::new(client, nodes, pods.clone(), volume_caches, done_tx);
    s.cache.rebuild(s.nodes.list());
    for p in pods.list() {
        s.pod_applied(&p);
    }
    let mut tick = tokio::time::interval(RETRY_TICK);
    loop {
        s.schedule_pending().await;
        tokio::select! {
            c = cache::next_change(&mut pod_rx) => match c {
                Some(c) => s.on_pod(c),
                None => return,
            },
            c = cache::next_change(&mut node_rx) => match c {
                Some(c) => s.on_node(c),
                None => return,
            },
            c = cache::next_change(&mut claim_rx) => match c {
                Some(_) => s.wake_waiting(),
                None => return,
            },
            c = cache::next_change(&mut volume_rx) => match c {
                Some(_) => s.wake_waiting(),
                None => return,
            },
            Some(done) = done_rx.recv() => s.on_bound(done),
            _ = tick.tick() => s.retry_due(),
        }
    }
}

/// The outcome of one binding write.
struct Bound {
    key: String,
    ok: bool,
}

struct Scheduler {
    client: kube::Client,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    /// Claims, volumes and storage classes.
    volumes: VolumeCaches,
    cache: NodeCache,
    /// Bindings written but not yet seen by the informer.
    assumed: HashSet<String>,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    /// Unschedulable pods: when to try again and the current back-off.
    waiting: HashMap<String, (Instant, Duration)>,
    /// The PodScheduled=False message last written per pod.
    reported: HashMap<String, String>,
    /// Breaks ties between equally good nodes.
    rng: StdRng,
    /// Where the next search over the nodes starts (see [`schedule`]).
    next_start: usize,
    binds: Arc<Semaphore>,
    done: mpsc::UnboundedSender<Bound>,
}

impl Scheduler {
    fn new(
        client: kube::Client,
        nodes: Informer<Node>,
        pods: Informer<Pod>,
        volumes: VolumeCaches,
        done: mpsc::UnboundedSender<Bound>,
    ) -> Scheduler {
        Scheduler {
            client,
            nodes,
            pods,
            volumes,
            cache: NodeCache::default(),
            assumed: HashSet::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            waiting: HashMap::new(),
            reported: HashMap::new(),
            rng: StdRng::from_entropy(),
            next_start: 0,
            binds: Arc::new(Semaphore::new(BINDS_IN_FLIGHT)),
            done,
        }
    }

    fn on_node(&mut self, c: Change<Node>) {
        let name = match c {
            Change::Applied(node) | Change::Deleted(node) => key_of(node.as_ref()),
            Change::Resync => {
                self.cache.rebuild(self.nodes.list());
                self.wake_waiting();
                return;
            }
        };
        // Level-triggered per node: take it as the informer holds it now,
        // since a queued change can be older than the list the cache was
        // built from.
        match self.nodes.get_key(&name) {
            Some(node) => self.cache.node_applied(&node),
            None => self.cache.node_deleted(&name),
        }
        self.wake_waiting();
    }

    fn on_pod(&mut self, c: Change<Pod>) {
        match c {
            Change::Applied(pod) => self.pod_applied(&pod),
            Change::Deleted(pod) => {
                self.pod_gone(&key_of(pod.as_ref()));
                self.wake_waiting();
            }
            Change::Resync => self.resync_pods(),
        }
    }

    /// Forgets a deleted pod: its room, back-off and last report.
    fn pod_gone(&mut self, key: &str) {
        self.unaccount(key);
        self.waiting.remove(key);
        self.reported.remove(key);
    }

    /// After lagging behind the pod cache: pods that vanished meanwhile
    /// give their room back, every other pod is looked at again.
    fn resync_pods(&mut self) {
        let gone: Vec<String> = self
            .cache
            .accounted_keys()
            .chain(self.waiting.keys())
            .chain(self.reported.keys())
            .filter(|k| self.pods.get_key(k).is_none())
            .cloned()
            .collect();
        for key in &gone {
            self.pod_gone(key);
        }
        for p in self.pods.list() {
            self.pod_applied(&p);
        }
        self.wake_waiting();
    }

    fn pod_applied(&mut self, pod: &Pod) {
        let key = key_of(pod);
        if terminated(pod) {
            if self.unaccount(&key) {
                self.wake_waiting();
            }
            return;
        }
        let node = node_name(pod);
        if !node.is_empty() {
            self.assumed.remove(&key);
            self.waiting.remove(&key);
            if !self.cache.accounts(&key) {
                let req = PodRequest::from_pod(pod).unwrap_or_default();
                self.cache.account(&key, node, req);
            }
            return;
        }
        if self.assumed.contains(&key) || !wants_us(pod) || self.waiting.contains_key(&key) {
            return;
        }
        self.enqueue(key);
    }

    fn enqueue(&mut self, key: String) {
        if self.queued.insert(key.clone()) {
            self.queue.push_back(key);
        }
        debug_assert_eq!(self.queue.len(), self.queued.len());
    }

    /// Gives a pod's room back; true if it was counted.
    fn unaccount(&mut self, key: &str) -> bool {
        self.assumed.remove(key);
        self.cache.unaccount(key)
    }

    /// Room changed: unschedulable pods get another try now.
    fn wake_waiting(&mut self) {
        let now = Instant::now();
        for (at, _) in self.waiting.values_mut() {
            *at = now;
        }
    }

    fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.enqueue(k);
        }
    }

    fn on_bound(&mut self, b: Bound) {
        if b.ok {
            return;
        }
        // The binding failed (pod gone, already bound, no quorum): give
        // the room back and let the pod's next change or a retry decide.
        self.unaccount(&b.key);
        self.waiting
            .insert(b.key, (Instant::now() + RETRY_MIN, RETRY_MIN));
    }

    async fn schedule_pending(&mut self) {
        while let Some(key) = self.queue.pop_front() {
            self.queued.remove(&key);
            self.schedule_one(&key).await;
        }
        debug_assert!(self.queued.is_empty());
    }

    async fn schedule_one(&mut self, key: &str) {
        let Some(pod) = self.pods.get_key(key) else {
            return;
        };
        let unbound = node_name(&pod).is_empty();
        if !unbound || !wants_us(&pod) || self.cache.accounts(key) {
            return;
        }
        let mut req = match PodRequest::from_pod(&pod) {
            Ok(r) => r,
            Err(e) => return self.unschedulable(key, pod, format!("invalid pod: {e}")),
        };
        let pod_volumes = match self.volumes.for_pod(&pod) {
            Ok(v) => v,
            Err(why) => {
                let n = self.cache.infos.len();
                let msg = format!("0/{n} nodes are available: {why}.");
                return self.unschedulable(key, pod, msg);
            }
        };
        req.volumes = pod_volumes.constraints;
        match schedule(&req, &self.cache.infos, &mut self.next_start, &mut self.rng) {
            Ok(i) => {
                let node = self.cache.infos[i].name.clone();
                self.cache.account(key, &node, req);
                self.assumed.insert(key.to_string());
                self.waiting.remove(key);
                self.bind(pod, node, pod_volumes.to_select).await;
            }
            Err(fit) => self.unschedulable(key, pod, fit.message()),
        }
    }

    /// Gives `claims` the node, then writes the binding, in the background
    /// once one of the [`BINDS_IN_FLIGHT`] slots is free; the outcome comes
    /// back as a [`Bound`].
    async fn bind(&self, pod: Arc<Pod>, node: String, claims: Vec<String>) {
        let Ok(permit) = self.binds.clone().acquire_owned().await else {
            return;
        };
        let client = self.client.clone();
        let done = self.done.clone();
        tokio::spawn(async move {
            let key = key_of(pod.as_ref());
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let ok = volumes::select_node(&client, ns, &claims, &node).await
                && write_binding(&client, &pod, &node).await;
            drop(permit);
            let _ = done.send(Bound { key, ok });
        });
    }

    /// Records why the pod fits nowhere (condition and event only when the
    /// reason changed) and backs off.
    fn unschedulable(&mut self, key: &str, pod: Arc<Pod>, message: String) {
        let backoff = match self.waiting.get(key) {
            Some((_, d)) => (*d * 2).min(RETRY_MAX),
            None => RETRY_MIN,
        };
        self.waiting
            .insert(key.to_string(), (Instant::now() + backoff, backoff));
        if self.reported.get(key) == Some(&message) {
            return;
        }
        self.reported.insert(key.to_string(), message.clone());
        let client = self.client.clone();
        tokio::spawn(async move { report_unschedulable(&client, &pod, &message).await });
    }
}

/// The node views decisions are made against, with every accounted pod
/// (bound, or assumed: binding sent) counted on its node. Updated change
/// by change; a pod on a node the cache does not know (yet, or any more)
/// stays accounted and counts as soon as the node appears.
#[derive(Default)]
struct NodeCache {
    /// In no particular order.
    infos: Vec<NodeInfo>,
    /// Node name → position in `infos`.
    index: HashMap<String, usize>,
    /// Pod key → (node name, what it requests).
    accounted: HashMap<String, (String, PodRequest)>,
}

impl NodeCache {
    /// Rebuilds every view from `nodes` plus the accounted pods (start,
    /// and when the node informer reports a resync).
    fn rebuild(&mut self, mut nodes: Vec<Arc<Node>>) {
        nodes.sort_by_key(|n| key_of(n.as_ref()));
        self.infos = nodes.iter().map(|n| NodeInfo::from_node(n, &[])).collect();
        self.index = self
            .infos
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        for (node, req) in self.accounted.values() {
            if let Some(&i) = self.index.get(node) {
                self.infos[i].add_pod(req);
            }
        }
    }

    /// A node was added or changed.
    fn node_applied(&mut self, node: &Node) {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if let Some(&i) = self.index.get(name) {
            self.infos[i].update_node(node);
            return;
        }
        let mut info = NodeInfo::from_node(node, &[]);
        for (on, req) in self.accounted.values() {
            if *on == info.name {
                info.add_pod(req);
            }
        }
        self.index.insert(info.name.clone(), self.infos.len());
        self.infos.push(info);
    }

    fn node_deleted(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        self.infos.swap_remove(i);
        if let Some(moved) = self.infos.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
        debug_assert_eq!(self.index.len(), self.infos.len());
    }

    fn accounts(&self, key: &str) -> bool {
        self.accounted.contains_key(key)
    }

    fn accounted_keys(&self) -> impl Iterator<Item = &String> {
        self.accounted.keys()
    }

    fn account(&mut self, key: &str, node: &str, req: PodRequest) {
        if let Some(&i) = self.index.get(node) {
            self.infos[i].add_pod(&req);
        }
        let before = self
            .accounted
            .insert(key.to_string(), (node.to_string(), req));
        assert!(before.is_none(), "pod {key} accounted twice");
    }

    /// Gives a pod's room back; true if it was counted.
    fn unaccount(&mut self, key: &str) -> bool {
        let Some((node, req)) = self.accounted.remove(key) else {
            return false;
        };
        if let Some(&i) = self.index.get(&node) {
            self.infos[i].remove_pod(&req);
        }
        true
    }
}

/// `spec.nodeName`, empty while unbound.
fn node_name(pod: &Pod) -> &str {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

/// Pods this scheduler handles: not being deleted, asking for the default
/// scheduler.
fn wants_us(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let name = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or_default();
    let deleting = pod.metadata.deletion_timestamp.is_some();
    (name.is_empty() || name == SCHEDULER_NAME) && !deleting
}

/// POSTs `pods/{name}/binding` for the pod instance the decision was made
/// for (its uid: a pod recreated under the same name is not bound), and
/// records the Scheduled event. True when the pod is now bound.
async fn write_binding(client: &kube::Client, pod: &Pod, node: &str) -> bool {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            uid: pod.metadata.uid.clone(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..ObjectReference::default()
        },
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let created = pods
        .create_subresource::<_, Status>("binding", name, &PostParams::default(), &binding)
        .await;
    if let Err(e) = created {
        tracing::debug!(pod = %name, %node, error = %e, "binding failed");
        return false;
    }
    let msg = format!("Successfully assigned {ns}/{name} to {node}");
    let involved = events::object_ref(pod);
    events::record(
        client,
        &involved,
        events::NORMAL,
        "Scheduled",
        &msg,
        SCHEDULER_NAME,
    )
    .await;
    true
}

/// The body of the PodScheduled=False status patch.
#[derive(Debug, Serialize)]
struct StatusPatch<'a> {
    status: &'a PodStatus,
}

/// The pod's status with PodScheduled=False (reason Unschedulable,
/// `message`) replacing any earlier PodScheduled condition, and phase
/// Pending unless it has one.
fn unschedulable_status(pod: &Pod, message: &str, now: Timestamp) -> PodStatus {
    let mut status = pod.status.clone().unwrap_or_default();
    let mut conditions = status.conditions.take().unwrap_or_default();
    conditions.retain(|c| c.type_ != "PodScheduled");
    conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.to_string()),
        last_transition_time: Some(Time(now)),
        ..PodCondition::default()
    });
    status.conditions = Some(conditions);
    status.phase.get_or_insert_with(|| "Pending".into());
    status
}

/// Writes PodScheduled=False with a merge patch of the pod's whole status
/// (so the condition list is replaced, not appended to) and records the
/// FailedScheduling event. Best effort: failures are logged.
async fn report_unschedulable(client: &kube::Client, pod: &Pod, message: &str) {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let status = unschedulable_status(pod, message, Timestamp::now());
    let patch = Patch::Merge(StatusPatch { status: &status });
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Err(e) = pods
        .patch_status(name, &PatchParams::default(), &patch)
        .await
    {
        tracing::debug!(pod = %name, error = %e, "writing PodScheduled=False failed");
    }
    let involved = events::object_ref(pod);
    let warning = events::WARNING;
    events::record(
        client,
        &involved,
        warning,
        "FailedScheduling",
        message,
        SCHEDULER_NAME,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::tests::{node_obj, pod_obj};
    use k8s_openapi::api::core::v1::NodeSpec;
    use rand::Rng;

    fn sorted(infos: &[NodeInfo]) -> Vec<NodeInfo> {
        let mut v = infos.to_vec();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Any sequence of node and pod changes leaves the cache equal to one
    /// rebuilt from scratch, and the index pointing at the right views.
    #[test]
    fn incremental_node_changes_match_a_rebuild() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut cache = NodeCache::default();
        let mut nodes: HashMap<String, Arc<Node>> = HashMap::new();
        for step in 0..3000 {
            let name = format!("n{}", rng.gen_range(0..20));
            match rng.gen_range(0..5) {
                0 | 1 => {
                    // Added, or changed: other capacity, maybe cordoned.
                    let cpu = rng.gen_range(1..8).to_string();
                    let mut n = node_obj(&name, &cpu, "8Gi");
                    n.spec = Some(NodeSpec {
                        unschedulable: Some(rng.gen_bool(0.3)),
                        ..NodeSpec::default()
                    });
                    cache.node_applied(&n);
                    nodes.insert(name, Arc::new(n));
                }
                2 => {
                    cache.node_deleted(&name);
                    nodes.remove(&name);
                }
                3 => {
                    let key = format!("default/p{}", rng.gen_range(0..60));
                    if !cache.accounts(&key) {
                        let p = pod_obj(&key, "100m", "64Mi");
                        let req = PodRequest::from_pod(&p).unwrap();
                        cache.account(&key, &name, req);
                    }
                }
                _ => {
                    cache.unaccount(&format!("default/p{}", rng.gen_range(0..60)));
                }
            }
            for (name, &i) in &cache.index {
                assert_eq!(&cache.infos[i].name, name, "step {step}");
            }
            assert_eq!(cache.index.len(), cache.infos.len());
            let mut fresh = NodeCache {
                accounted: cache.accounted.clone(),
                ..NodeCache::default()
            };
            fresh.rebuild(nodes.values().cloned().collect());
            assert_eq!(sorted(&cache.infos), fresh.infos, "step {step}");
        }
    }

    /// The status written for an unschedulable pod replaces an earlier
    /// PodScheduled condition, keeps the others, and sets phase Pending
    /// only when the pod has none.
    #[test]
    fn unschedulable_status_replaces_pod_scheduled_only() {
        let condition = |type_: &str, status: &str| PodCondition {
            type_: type_.into(),
            status: status.into(),
            ..PodCondition::default()
        };
        let mut pod = pod_obj("p", "1", "1Mi");
        let now = Timestamp::now();
        let fresh = unschedulable_status(&pod, "0/0", now);
        assert_eq!(fresh.phase.as_deref(), Some("Pending"));
        pod.status = Some(PodStatus {
            phase: Some("Unknown".into()),
            conditions: Some(vec![
                condition("PodScheduled", "False"),
                condition("Custom", "True"),
            ]),
            ..PodStatus::default()
        });
        let status = unschedulable_status(&pod, "no room", now);
        assert_eq!(status.phase.as_deref(), Some("Unknown"));
        let conditions = status.conditions.unwrap_or_default();
        let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Custom", "PodScheduled"]);
        let scheduled = &conditions[1];
        assert_eq!(scheduled.status, "False");
        assert_eq!(scheduled.reason.as_deref(), Some("Unschedulable"));
        assert_eq!(scheduled.message.as_deref(), Some("no room"));
        assert_eq!(scheduled.last_transition_time, Some(Time(now)));
    }
}
