//! The scheduler loop: watch pods and nodes, decide with the pure core
//! ([`super::schedule`]), bind through `pods/binding`.
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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use super::{schedule, NodeInfo, PodRequest};
use crate::client::{path, Client};
use crate::events;
use crate::informer::{self, key_of, Change, Informer};

/// The name pods ask for in `spec.schedulerName` (or leave empty).
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Bindings written at once.
const BINDS_IN_FLIGHT: usize = 64;
/// Longest wait before an unschedulable pod is tried again.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Runs until aborted.
pub async fn run(client: Client) {
    let nodes = Informer::spawn(client.clone(), "/api/v1/nodes", "");
    let pods = Informer::spawn(client.clone(), "/api/v1/pods", "");
    let mut node_rx = nodes.subscribe();
    let mut pod_rx = pods.subscribe();
    nodes.wait_synced().await;
    pods.wait_synced().await;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut s = Scheduler::new(client, nodes, pods.clone(), done_tx);
    s.cache.rebuild(s.nodes.list());
    for p in pods.list() {
        s.on_pod(Change::Applied(p));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        s.schedule_pending().await;
        tokio::select! {
            c = informer::next_change(&mut pod_rx) => match c {
                Some(c) => s.on_pod(c),
                None => return,
            },
            c = informer::next_change(&mut node_rx) => match c {
                Some(c) => s.on_node(c),
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
    client: Client,
    nodes: Informer,
    pods: Informer,
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
    binds: Arc<Semaphore>,
    done: mpsc::UnboundedSender<Bound>,
}

impl Scheduler {
    fn new(
        client: Client,
        nodes: Informer,
        pods: Informer,
        done: mpsc::UnboundedSender<Bound>,
    ) -> Scheduler {
        Scheduler {
            client,
            nodes,
            pods,
            cache: NodeCache::default(),
            assumed: HashSet::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            waiting: HashMap::new(),
            reported: HashMap::new(),
            rng: StdRng::from_entropy(),
            binds: Arc::new(Semaphore::new(BINDS_IN_FLIGHT)),
            done,
        }
    }

    fn on_node(&mut self, c: Change) {
        let name = match c {
            Change::Applied(node) | Change::Deleted(node) => key_of(&node),
            Change::Resync => {
                self.cache.rebuild(self.nodes.list());
                self.wake_waiting();
                return;
            }
        };
        // Level-triggered per node: take it as the informer holds it now,
        // since a queued change can be older than the list the cache was
        // built from.
        match self.nodes.get(&name) {
            Some(node) => self.cache.node_applied(&node),
            None => self.cache.node_deleted(&name),
        }
        self.wake_waiting();
    }

    fn on_pod(&mut self, c: Change) {
        match c {
            Change::Applied(pod) => self.pod_applied(&pod),
            Change::Deleted(pod) => {
                let key = key_of(&pod);
                self.unaccount(&key);
                self.waiting.remove(&key);
                self.reported.remove(&key);
                self.wake_waiting();
            }
            Change::Resync => {
                for p in self.pods.list() {
                    self.pod_applied(&p);
                }
            }
        }
    }

    fn pod_applied(&mut self, pod: &Value) {
        let key = key_of(pod);
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        let finished = matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        if finished {
            if self.unaccount(&key) {
                self.wake_waiting();
            }
            return;
        }
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
    }

    /// Gives a pod's room back; true if it was counted.
    fn unaccount(&mut self, key: &str) -> bool {
        self.assumed.remove(key);
        self.cache.unaccount(key)
    }

    /// Room changed: unschedulable pods get another try now.
    fn wake_waiting(&mut self) {
        let keys: Vec<String> = self.waiting.keys().cloned().collect();
        for k in keys {
            if let Some(w) = self.waiting.get_mut(&k) {
                w.0 = Instant::now();
            }
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
        self.waiting.insert(
            b.key,
            (
                Instant::now() + Duration::from_secs(1),
                Duration::from_secs(1),
            ),
        );
    }

    async fn schedule_pending(&mut self) {
        while let Some(key) = self.queue.pop_front() {
            self.queued.remove(&key);
            self.schedule_one(&key).await;
        }
    }

    async fn schedule_one(&mut self, key: &str) {
        let Some(pod) = self.pods.get(key) else {
            return;
        };
        let unbound = pod["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .is_empty();
        if !unbound || !wants_us(&pod) || self.cache.accounts(key) {
            return;
        }
        let req = match PodRequest::from_pod(&pod) {
            Ok(r) => r,
            Err(e) => return self.unschedulable(key, &pod, format!("invalid pod: {e}")),
        };
        match schedule(&req, &self.cache.infos, &mut self.rng) {
            Ok(i) => {
                let node = self.cache.infos[i].name.clone();
                self.cache.account(key, &node, req);
                self.assumed.insert(key.to_string());
                self.waiting.remove(key);
                self.bind(pod, node).await;
            }
            Err(fit) => self.unschedulable(key, &pod, fit.message()),
        }
    }

    async fn bind(&self, pod: Value, node: String) {
        let Ok(permit) = self.binds.clone().acquire_owned().await else {
            return;
        };
        let client = self.client.clone();
        let done = self.done.clone();
        tokio::spawn(async move {
            let key = key_of(&pod);
            let ok = write_binding(&client, &pod, &node).await;
            drop(permit);
            let _ = done.send(Bound { key, ok });
        });
    }

    /// Records why the pod fits nowhere (condition and event only when the
    /// reason changed) and backs off.
    fn unschedulable(&mut self, key: &str, pod: &Value, message: String) {
        let backoff = match self.waiting.get(key) {
            Some((_, d)) => (*d * 2).min(RETRY_MAX),
            None => Duration::from_secs(1),
        };
        self.waiting
            .insert(key.to_string(), (Instant::now() + backoff, backoff));
        if self.reported.get(key) == Some(&message) {
            return;
        }
        self.reported.insert(key.to_string(), message.clone());
        let client = self.client.clone();
        let pod = pod.clone();
        tokio::spawn(async move { report_unschedulable(&client, pod, &message).await });
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
    fn rebuild(&mut self, mut nodes: Vec<Value>) {
        nodes.sort_by_key(key_of);
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
    fn node_applied(&mut self, node: &Value) {
        let name = node["metadata"]["name"].as_str().unwrap_or_default();
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
    }

    fn accounts(&self, key: &str) -> bool {
        self.accounted.contains_key(key)
    }

    fn account(&mut self, key: &str, node: &str, req: PodRequest) {
        if let Some(&i) = self.index.get(node) {
            self.infos[i].add_pod(&req);
        }
        self.accounted
            .insert(key.to_string(), (node.to_string(), req));
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

/// Pods this scheduler handles: unbound, not being deleted, asking for
/// the default scheduler.
fn wants_us(pod: &Value) -> bool {
    let name = pod["spec"]["schedulerName"].as_str().unwrap_or_default();
    let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
    (name.is_empty() || name == SCHEDULER_NAME) && !deleting
}

fn pod_uri(pod: &Value) -> String {
    let m = &pod["metadata"];
    path("v1", "pods", m["namespace"].as_str(), m["name"].as_str())
}

async fn write_binding(client: &Client, pod: &Value, node: &str) -> bool {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "uid": pod["metadata"]["uid"]},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let uri = format!("{}/binding", pod_uri(pod));
    match client.create(&uri, &binding).await {
        Ok(_) => {
            let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
            let msg = format!("Successfully assigned {ns}/{name} to {node}");
            let involved = events::object_ref_value(&with_kind(pod));
            events::record(
                client.kube(),
                &involved,
                events::NORMAL,
                "Scheduled",
                &msg,
                SCHEDULER_NAME,
            )
            .await;
            true
        }
        Err(e) => {
            tracing::debug!(pod = %name, %node, error = %e, "binding failed");
            false
        }
    }
}

async fn report_unschedulable(client: &Client, pod: Value, message: &str) {
    let uri = format!("{}/status", pod_uri(&pod));
    let cond = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastProbeTime": null,
        "lastTransitionTime": crate::meta::now_rfc3339()});
    let mut status = pod["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    let mut conds: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    conds.retain(|c| c["type"] != "PodScheduled");
    conds.push(cond);
    status["conditions"] = Value::Array(conds);
    if status["phase"].is_null() {
        status["phase"] = json!("Pending");
    }
    let patch = json!({ "status": status });
    if let Err(e) = client.merge_patch(&uri, &patch).await {
        tracing::debug!(error = %e, "writing PodScheduled=False failed");
    }
    let involved = events::object_ref_value(&with_kind(&pod));
    events::record(
        client.kube(),
        &involved,
        events::WARNING,
        "FailedScheduling",
        message,
        SCHEDULER_NAME,
    )
    .await;
}

fn with_kind(pod: &Value) -> Value {
    let mut p = pod.clone();
    p["kind"] = json!("Pod");
    p["apiVersion"] = json!("v1");
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::tests::{node_json, pod_json};
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
        let mut nodes: HashMap<String, Value> = HashMap::new();
        for step in 0..3000 {
            let name = format!("n{}", rng.gen_range(0..20));
            match rng.gen_range(0..5) {
                0 | 1 => {
                    // Added, or changed: other capacity, maybe cordoned.
                    let cpu = rng.gen_range(1..8).to_string();
                    let mut n = node_json(&name, &cpu, "8Gi");
                    n["spec"] = json!({"unschedulable": rng.gen_bool(0.3)});
                    cache.node_applied(&n);
                    nodes.insert(name, n);
                }
                2 => {
                    cache.node_deleted(&name);
                    nodes.remove(&name);
                }
                3 => {
                    let key = format!("default/p{}", rng.gen_range(0..60));
                    if !cache.accounts(&key) {
                        let p = pod_json(&key, "100m", "64Mi");
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
}
