//! The Deployment controller (Kubernetes' `pkg/controller/deployment`): a
//! Deployment owns one ReplicaSet per pod template it has had; the one
//! whose template is the current one is "new", the rest are "old". A
//! rollout scales the new one up and the old ones down within the
//! strategy's limits, and the Deployment's status reports progress for
//! `kubectl rollout status`.
//!
//! Each reconcile reads the Deployment and its ReplicaSets from the shared
//! caches and takes one step: a scaling event, a paused sync, or one
//! rollout step (Recreate or RollingUpdate). Every ReplicaSet write is a
//! PUT of the cached object, so a step computed from a stale cache fails
//! with 409 and is recomputed instead of acting twice.

mod recreate;
mod revision;
mod rolling;
mod scaling;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::cache::{key_of, next_change, Caches, Change, Informer};
use crate::events;
use crate::reconcile::{
    claim, controller_key, controller_ref, created_s, enqueue_all, is_deleting, name, namespace,
    run_workers, selector_of, Reconciled, WorkQueue, RESYNC,
};

const COMPONENT: &str = "deployment-controller";
const WORKERS: usize = 4;

pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
pub(crate) const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub(crate) const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub(crate) const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub(crate) const HASH_LABEL: &str = "pod-template-hash";

struct Controller {
    client: kube::Client,
    deployments: Informer<Deployment>,
    replicasets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
}

/// One reconcile's view: the Deployment and the ReplicaSets it controls.
struct State {
    d: Deployment,
    /// The ReplicaSet running the current template, if it exists yet.
    new_rs: Option<ReplicaSet>,
    /// The others, oldest first.
    old: Vec<ReplicaSet>,
    /// Set when this step created the new ReplicaSet (a status condition).
    created_new: bool,
}

impl State {
    fn all(&self) -> impl Iterator<Item = &ReplicaSet> {
        self.old.iter().chain(self.new_rs.iter())
    }

    fn replicas(&self) -> i64 {
        d_replicas(&self.d)
    }
}

/// Runs the Deployment controller until the future is dropped, reading
/// through the shared `caches` and writing through `client`.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Controller {
        deployments: caches.get::<Deployment>(),
        replicasets: caches.get::<ReplicaSet>(),
        pods: caches.get::<Pod>(),
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
                Some(Change::Applied(d) | Change::Deleted(d)) => queue.add(&key_of(d.as_ref())),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.deployments),
                None => return,
            },
            c = next_change(&mut rs_rx) => match c {
                Some(Change::Applied(rs) | Change::Deleted(rs)) => ctl.rs_changed(&queue, &rs),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.deployments),
                None => return,
            },
            c = next_change(&mut pod_rx) => match c {
                // Only a pod going away matters: Recreate waits for it.
                Some(Change::Deleted(p)) => ctl.pod_deleted(&queue, &p),
                Some(Change::Applied(_)) => {}
                Some(Change::Resync) => enqueue_all(&queue, &ctl.deployments),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.deployments),
        }
    }
}

/// The selector of a Deployment that may control ReplicaSets (see [`selector_of`]).
fn d_selector(d: &Deployment) -> Option<crate::selector::LabelSelector> {
    d.spec.as_ref().and_then(|s| selector_of(&s.selector))
}

impl Controller {
    /// A ReplicaSet changed: its Deployment, or any that could adopt it.
    fn rs_changed(&self, queue: &WorkQueue, rs: &ReplicaSet) {
        let m = &rs.metadata;
        if let Some(key) = controller_key(m, "Deployment") {
            queue.add(&key);
            return;
        }
        if controller_ref(m).is_some() {
            return;
        }
        let adopters = self.deployments.filter_in(namespace(m), |d| {
            d_selector(d).is_some_and(|s| s.matches_labels(m.labels.as_ref()))
        });
        for d in adopters {
            queue.add(&key_of(d.as_ref()));
        }
    }

    fn pod_deleted(&self, queue: &WorkQueue, pod: &Pod) {
        let rs =
            controller_key(&pod.metadata, "ReplicaSet").and_then(|k| self.replicasets.get_key(&k));
        if let Some(key) = rs.and_then(|rs| controller_key(&rs.metadata, "Deployment")) {
            queue.add(&key);
        }
    }

    async fn reconcile(&self, key: &str) -> Reconciled<kube::Error> {
        let Some(d) = self.deployments.get_key(key) else {
            return Ok(None);
        };
        // Deleting: the garbage collector removes the ReplicaSets.
        if is_deleting(&d.metadata) {
            return Ok(None);
        }
        let Some(selector) = d_selector(&d) else {
            return Ok(None);
        };
        let candidates = self.replicasets.filter_in(namespace(&d.metadata), |_| true);
        let owned = claim(&self.client, d.as_ref(), &selector, candidates).await?;
        let owned = owned.into_iter().map(Arc::unwrap_or_clone).collect();
        let mut st = State::new(Arc::unwrap_or_clone(d), owned);
        if is_paused(&st.d) || self.is_scaling_event(&st) {
            self.sync_revision(&mut st, false).await?;
            self.scale(&mut st).await?;
            if is_paused(&st.d) {
                self.cleanup(&mut st).await?;
            }
            return self.write_status(&st, false).await;
        }
        if rolling::is_rolling(&st.d) {
            self.rollout_rolling(&mut st).await?;
        } else {
            self.rollout_recreate(&mut st).await?;
        }
        self.write_status(&st, true).await
    }

    /// Sets `spec.replicas` (and the deployment's desired/max annotations)
    /// on `rs`; true when the size changed.
    async fn scale_rs(
        &self,
        d: &Deployment,
        rs: &mut ReplicaSet,
        replicas: i64,
    ) -> kube::Result<bool> {
        assert!(
            replicas >= 0,
            "scaling {} to {replicas}",
            name(&rs.metadata)
        );
        let from = rs_replicas(rs);
        let desired = d_replicas(d);
        let annotations = [
            (DESIRED_REPLICAS, desired.to_string()),
            (MAX_REPLICAS, (desired + rolling::max_surge(d)).to_string()),
        ];
        let stale = annotations
            .iter()
            .any(|(k, v)| annotation(&rs.metadata, k) != Some(v.as_str()));
        if from == replicas && !stale {
            return Ok(false);
        }
        let mut updated = rs.clone();
        updated.spec.get_or_insert_with(Default::default).replicas = Some(to_i32(replicas));
        for (k, v) in annotations {
            set_annotation(&mut updated.metadata, k, &v);
        }
        let replaced = self
            .rs_api(rs)
            .replace(name(&rs.metadata), &PostParams::default(), &updated)
            .await?;
        *rs = replaced;
        if from != replicas {
            let dir = if replicas > from { "up" } else { "down" };
            let msg = format!(
                "Scaled {dir} replica set {} from {from} to {replicas}",
                name(&rs.metadata)
            );
            self.event(d, "ScalingReplicaSet", msg);
        }
        Ok(from != replicas)
    }

    fn rs_api(&self, rs: &ReplicaSet) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), namespace(&rs.metadata))
    }

    fn deployment_api(&self, d: &Deployment) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), namespace(&d.metadata))
    }

    /// Records an Event about `d` in the background (best effort).
    fn event(&self, d: &Deployment, reason: &'static str, message: String) {
        let (client, involved) = (self.client.clone(), events::object_ref(d));
        tokio::spawn(async move {
            events::record(
                &client,
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
    fn new(d: Deployment, mut owned: Vec<ReplicaSet>) -> State {
        owned.sort_by_cached_key(|rs| (created_s(&rs.metadata), name(&rs.metadata).to_string()));
        let new_idx = d_template(&d).and_then(|template| {
            owned.iter().position(|rs| {
                rs_template(rs).is_some_and(|t| revision::same_template(t, template))
            })
        });
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

// ---- typed accessors: absent fields read as the API's defaults of 0 ------

/// The Deployment's `spec.replicas` (never negative).
pub(crate) fn d_replicas(d: &Deployment) -> i64 {
    let r = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    i64::from(r.max(0))
}

pub(crate) fn d_template(d: &Deployment) -> Option<&PodTemplateSpec> {
    d.spec.as_ref().map(|s| &s.template)
}

pub(crate) fn d_min_ready_s(d: &Deployment) -> i64 {
    i64::from(
        d.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0),
    )
}

fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused) == Some(true)
}

/// A ReplicaSet's `spec.replicas`.
pub(crate) fn rs_replicas(rs: &ReplicaSet) -> i64 {
    i64::from(rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
}

pub(crate) fn rs_template(rs: &ReplicaSet) -> Option<&PodTemplateSpec> {
    rs.spec.as_ref().and_then(|s| s.template.as_ref())
}

/// A ReplicaSet's `status.replicas`.
pub(crate) fn rs_status_replicas(rs: &ReplicaSet) -> i64 {
    rs.status.as_ref().map_or(0, |s| i64::from(s.replicas))
}

/// A ReplicaSet's `status.availableReplicas`.
pub(crate) fn rs_available_replicas(rs: &ReplicaSet) -> i64 {
    i64::from(
        rs.status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0),
    )
}

/// A ReplicaSet's `status.readyReplicas`.
pub(crate) fn rs_ready_replicas(rs: &ReplicaSet) -> i64 {
    i64::from(
        rs.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
    )
}

/// A replica count as the API's int32, saturating.
pub(crate) fn to_i32(n: i64) -> i32 {
    i32::try_from(n.max(0)).unwrap_or(i32::MAX)
}

pub(crate) fn annotation<'a>(m: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    m.annotations.as_ref()?.get(key).map(String::as_str)
}

pub(crate) fn set_annotation(m: &mut ObjectMeta, key: &str, value: &str) {
    m.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_string(), value.to_string());
}
