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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    for p in pods.list() {
        s.on_pod(Change::Applied(p));
    }
    s.rebuild();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        s.schedule_pending().await;
        tokio::select! {
            c = informer::next_change(&mut pod_rx) => match c {
                Some(c) => s.on_pod(c),
                None => return,
            },
            c = informer::next_change(&mut node_rx) => match c {
                Some(_) => s.nodes_changed(),
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
    infos: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Pods counted on a node: bound ones and assumed ones (binding sent).
    accounted: HashMap<String, (String, PodRequest)>,
    /// Bindings written but not yet seen by the informer.
    assumed: HashSet<String>,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    /// Unschedulable pods: when to try again and the current back-off.
    waiting: HashMap<String, (Instant, Duration)>,
    /// The PodScheduled=False message last written per pod.
    reported: HashMap<String, String>,
    nodes_dirty: bool,
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
            infos: vec![],
            index: HashMap::new(),
            accounted: HashMap::new(),
            assumed: HashSet::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            waiting: HashMap::new(),
            reported: HashMap::new(),
            nodes_dirty: true,
            binds: Arc::new(Semaphore::new(BINDS_IN_FLIGHT)),
            done,
        }
    }

    /// Rebuilds the node views from the node cache plus every accounted pod.
    fn rebuild(&mut self) {
        let mut nodes = self.nodes.list();
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
        self.nodes_dirty = false;
    }

    fn nodes_changed(&mut self) {
        self.nodes_dirty = true;
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
            if !self.accounted.contains_key(&key) {
                let req = PodRequest::from_pod(pod).unwrap_or_default();
                self.account(&key, node, req);
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

    fn account(&mut self, key: &str, node: &str, req: PodRequest) {
        if let Some(&i) = self.index.get(node) {
            self.infos[i].add_pod(&req);
        }
        self.accounted
            .insert(key.to_string(), (node.to_string(), req));
    }

    /// Gives a pod's room back; true if it was counted.
    fn unaccount(&mut self, key: &str) -> bool {
        self.assumed.remove(key);
        let Some((node, req)) = self.accounted.remove(key) else {
            return false;
        };
        if let Some(&i) = self.index.get(&node) {
            self.infos[i].remove_pod(&req);
        }
        true
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
        if self.nodes_dirty {
            self.rebuild();
        }
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
        if !unbound || !wants_us(&pod) || self.accounted.contains_key(key) {
            return;
        }
        let req = match PodRequest::from_pod(&pod) {
            Ok(r) => r,
            Err(e) => return self.unschedulable(key, &pod, format!("invalid pod: {e}")),
        };
        match schedule(&req, &self.infos) {
            Ok(i) => {
                let node = self.infos[i].name.clone();
                self.account(key, &node, req);
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
            let involved = events::object_ref(&with_kind(pod));
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
    let involved = events::object_ref(&with_kind(&pod));
    events::record(
        client,
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
