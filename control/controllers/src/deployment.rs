//! The Deployment controller (Kubernetes' `pkg/controller/deployment`): a
//! Deployment owns one ReplicaSet per pod template it has had; the one
//! whose template is the current one is "new", the rest are "old". A
//! rollout scales the new one up and the old ones down within the
//! strategy's limits, and the Deployment's status reports progress for
//! `kubectl rollout status`.
//!
//! Each reconcile reads the Deployment and its ReplicaSets from the caches
//! and takes one step: a scaling event, a paused sync, or one rollout step
//! (Recreate or RollingUpdate). Every ReplicaSet write is a PUT of the
//! cached object, so a step computed from a stale cache fails with 409 and
//! is recomputed instead of acting twice.

mod recreate;
mod revision;
mod rolling;
mod scaling;
mod status;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::client::{path, Client, ClientResult};
use crate::events;
use crate::informer::{key_of, next_change, Change, Informer};
use crate::meta;
use crate::reconcile::{
    claim, controller_key, enqueue_all_json, int_at, namespace, run_workers, spec_selector, typed,
    Reconciled, WorkQueue, RESYNC,
};

const COMPONENT: &str = "deployment-controller";
const WORKERS: usize = 4;

pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
pub(crate) const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub(crate) const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub(crate) const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub(crate) const HASH_LABEL: &str = "pod-template-hash";

struct Controller {
    client: Client,
    deployments: Informer,
    replicasets: Informer,
    pods: Informer,
}

/// One reconcile's view: the Deployment and the ReplicaSets it controls.
struct State {
    d: Value,
    /// The ReplicaSet running the current template, if it exists yet.
    new_rs: Option<Value>,
    /// The others, oldest first.
    old: Vec<Value>,
    /// Set when this step created the new ReplicaSet (a status condition).
    created_new: bool,
}

impl State {
    fn all(&self) -> impl Iterator<Item = &Value> {
        self.old.iter().chain(self.new_rs.iter())
    }

    fn replicas(&self) -> i64 {
        int_at(&self.d, "/spec/replicas").max(0)
    }
}

/// Runs the Deployment controller until the future is dropped.
pub async fn run(client: Client) {
    let ctl = Arc::new(Controller {
        deployments: Informer::spawn(client.clone(), "/apis/apps/v1/deployments", ""),
        replicasets: Informer::spawn(client.clone(), "/apis/apps/v1/replicasets", ""),
        pods: Informer::spawn(client.clone(), "/api/v1/pods", ""),
        client,
    });
    let queue = WorkQueue::new();
    // Subscribes when first polled, after the sync; the resync tick that
    // fires at once then queues everything the initial list brought.
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.deployments.wait_synced().await;
    ctl.replicasets.wait_synced().await;
    ctl.pods.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

/// Maps Deployment, ReplicaSet and pod changes to Deployments to reconcile.
async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut d_rx = ctl.deployments.subscribe();
    let mut rs_rx = ctl.replicasets.subscribe();
    let mut pod_rx = ctl.pods.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut d_rx) => match c {
                Some(Change::Applied(d) | Change::Deleted(d)) => queue.add(&key_of(&d)),
                Some(Change::Resync) => enqueue_all_json(&queue, &ctl.deployments),
                None => return,
            },
            c = next_change(&mut rs_rx) => match c {
                Some(Change::Applied(rs) | Change::Deleted(rs)) => ctl.rs_changed(&queue, &rs),
                Some(Change::Resync) => enqueue_all_json(&queue, &ctl.deployments),
                None => return,
            },
            c = next_change(&mut pod_rx) => match c {
                // Only a pod going away matters: Recreate waits for it.
                Some(Change::Deleted(p)) => ctl.pod_deleted(&queue, &p),
                Some(Change::Applied(_)) => {}
                Some(Change::Resync) => enqueue_all_json(&queue, &ctl.deployments),
                None => return,
            },
            _ = resync.tick() => enqueue_all_json(&queue, &ctl.deployments),
        }
    }
}

impl Controller {
    /// A ReplicaSet changed: its Deployment, or any that could adopt it.
    fn rs_changed(&self, queue: &WorkQueue, rs: &Value) {
        if let Some(key) = controller_key(rs, "Deployment") {
            queue.add(&key);
            return;
        }
        if crate::reconcile::controller_ref(rs).is_some() {
            return;
        }
        let ns = namespace(rs);
        for d in self.deployments.filter(|d| namespace(d) == ns) {
            if spec_selector(&d).is_some_and(|s| s.matches(meta::labels(rs))) {
                queue.add(&key_of(&d));
            }
        }
    }

    fn pod_deleted(&self, queue: &WorkQueue, pod: &Value) {
        let rs = controller_key(pod, "ReplicaSet").and_then(|k| self.replicasets.get(&k));
        if let Some(key) = rs.and_then(|rs| controller_key(&rs, "Deployment")) {
            queue.add(&key);
        }
    }

    async fn reconcile(&self, key: &str) -> Reconciled {
        let Some(d) = self.deployments.get(key) else {
            return Ok(None);
        };
        let d = typed(d, "apps/v1", "Deployment");
        // Deleting: the garbage collector removes the ReplicaSets.
        if meta::is_deleting(&d) {
            return Ok(None);
        }
        let Some(selector) = spec_selector(&d) else {
            return Ok(None);
        };
        let ns = namespace(&d).to_string();
        let candidates = self.replicasets.filter(|rs| namespace(rs) == ns);
        let owned = claim(
            &self.client,
            &d,
            &selector,
            ("apps/v1", "replicasets"),
            candidates,
        )
        .await?;
        let mut st = State::new(d, owned);
        if st.d["spec"]["paused"].as_bool() == Some(true) || self.is_scaling_event(&st) {
            self.sync_revision(&mut st, false).await?;
            self.scale(&mut st).await?;
            if st.d["spec"]["paused"].as_bool() == Some(true) {
                self.cleanup(&mut st).await?;
            }
            return self.write_status(&st, false).await;
        }
        if st.d["spec"]["strategy"]["type"].as_str() == Some("Recreate") {
            self.rollout_recreate(&mut st).await?;
        } else {
            self.rollout_rolling(&mut st).await?;
        }
        self.write_status(&st, true).await
    }

    /// Sets `spec.replicas` (and the deployment's desired/max annotations)
    /// on `rs`; true when the size changed.
    async fn scale_rs(&self, d: &Value, rs: &mut Value, replicas: i64) -> ClientResult<bool> {
        let from = int_at(rs, "/spec/replicas");
        let desired = int_at(d, "/spec/replicas").max(0);
        let annotations = [
            (DESIRED_REPLICAS, desired.to_string()),
            (MAX_REPLICAS, (desired + rolling::max_surge(d)).to_string()),
        ];
        let stale = annotations
            .iter()
            .any(|(k, v)| annotation(rs, k) != Some(v.as_str()));
        if from == replicas && !stale {
            return Ok(false);
        }
        let mut updated = rs.clone();
        updated["spec"]["replicas"] = json!(replicas);
        for (k, v) in annotations {
            set_annotation(&mut updated, k, &v);
        }
        let uri = rs_path(rs);
        *rs = typed(
            self.client.update(&uri, &updated).await?,
            "apps/v1",
            "ReplicaSet",
        );
        if from != replicas {
            let dir = if replicas > from { "up" } else { "down" };
            let msg = format!(
                "Scaled {dir} replica set {} from {from} to {replicas}",
                meta::name(rs)
            );
            self.event(d, "ScalingReplicaSet", msg);
        }
        Ok(from != replicas)
    }

    fn event(&self, d: &Value, reason: &'static str, message: String) {
        let (client, involved) = (self.client.clone(), events::object_ref_value(d));
        tokio::spawn(async move {
            events::record(
                client.kube(),
                &involved,
                events::NORMAL,
                reason,
                &message,
                COMPONENT,
            )
            .await;
        });
    }
}

impl State {
    /// Splits the owned ReplicaSets into new (the oldest whose template is
    /// the Deployment's) and old.
    fn new(d: Value, mut owned: Vec<Value>) -> State {
        owned.sort_by_cached_key(|rs| {
            (
                meta::str_field(rs, "creationTimestamp")
                    .and_then(meta::parse_time)
                    .map(|t| t.as_second()),
                meta::name(rs).to_string(),
            )
        });
        let owned: Vec<Value> = owned
            .into_iter()
            .map(|rs| typed(rs, "apps/v1", "ReplicaSet"))
            .collect();
        let template = &d["spec"]["template"];
        let new_idx = owned
            .iter()
            .position(|rs| revision::same_template(&rs["spec"]["template"], template));
        let mut old = owned;
        let new_rs = new_idx.map(|i| old.remove(i));
        State {
            d,
            new_rs,
            old,
            created_new: false,
        }
    }
}

pub(crate) fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}

pub(crate) fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    let m = meta::meta_mut(obj);
    let a = m.entry("annotations").or_insert_with(|| json!({}));
    if !a.is_object() {
        *a = json!({});
    }
    a[key] = json!(value);
}

fn rs_path(rs: &Value) -> String {
    path(
        "apps/v1",
        "replicasets",
        Some(namespace(rs)),
        Some(meta::name(rs)),
    )
}

fn deployment_path(d: &Value) -> String {
    path(
        "apps/v1",
        "deployments",
        Some(namespace(d)),
        Some(meta::name(d)),
    )
}
