//! The DaemonSet controller (Kubernetes' `pkg/controller/daemon`): one pod
//! per eligible node. A node is eligible when it matches the template's
//! nodeSelector and required node affinity and its NoSchedule/NoExecute
//! taints are tolerated (the template's tolerations plus the daemon
//! defaults, see [`placement`]). Each pod is pinned to its node by a
//! required `matchFields metadata.name` affinity and bound by the
//! scheduler, as in Kubernetes.
//!
//! Each reconcile reads the DaemonSet, its pods, the nodes and its
//! ControllerRevisions from the shared caches and, when no create or
//! delete of an earlier pass is still unobserved ([`Expectations`]):
//! creates the missing pods, deletes pods on nodes that are gone or no
//! longer eligible and failed pods (with a per-node back-off), then takes
//! one step of the update strategy (RollingUpdate with maxUnavailable or
//! maxSurge; OnDelete leaves old pods alone), prunes old revisions and
//! writes `status`. Node changes requeue every DaemonSet, so nodes joining,
//! leaving or being relabelled or tainted are followed.

mod backoff;
mod manage;
mod placement;
mod pods;
mod revision;
mod rolling;
mod status;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::cache::{key_of, next_change, Caches, Change, Informer};
use crate::events;
use crate::reconcile::{
    claim, controller_key, controller_ref, enqueue_all, is_deleting, namespace, run_workers,
    selector_of, Expectations, Reconciled, WorkQueue, RESYNC,
};
use backoff::FailedPodBackoff;

const COMPONENT: &str = "daemonset-controller";
const WORKERS: usize = 2;
/// Kubernetes' `BurstReplicas` for DaemonSets: creates or deletes per sync.
const BURST: usize = 250;
/// The label that ties a daemon pod and a ControllerRevision to a template.
pub use crate::history::HASH_LABEL;

struct Controller {
    client: kube::Client,
    daemonsets: Informer<DaemonSet>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    revisions: Informer<ControllerRevision>,
    expectations: Expectations,
    failed: FailedPodBackoff,
}

/// Runs the DaemonSet controller until the future is dropped, reading
/// through the shared `caches` and writing through `client`.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Controller {
        daemonsets: caches.get::<DaemonSet>(),
        pods: caches.get::<Pod>(),
        nodes: caches.get::<Node>(),
        revisions: caches.get::<ControllerRevision>(),
        client,
        expectations: Expectations::default(),
        failed: FailedPodBackoff::default(),
    });
    let queue = WorkQueue::new();
    // Subscribes when first polled, after the sync; the resync tick that
    // fires at once then queues everything the initial list brought.
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.daemonsets.wait_synced().await;
    ctl.pods.wait_synced().await;
    ctl.nodes.wait_synced().await;
    ctl.revisions.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

/// Maps DaemonSet, pod, node and revision changes to DaemonSets to reconcile.
async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut ds_rx = ctl.daemonsets.subscribe();
    let mut pod_rx = ctl.pods.subscribe();
    let mut node_rx = ctl.nodes.subscribe();
    let mut rev_rx = ctl.revisions.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut ds_rx) => match c {
                Some(Change::Applied(ds) | Change::Deleted(ds)) => queue.add(&key_of(ds.as_ref())),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.daemonsets),
                None => return,
            },
            c = next_change(&mut pod_rx) => match c {
                Some(Change::Applied(p)) => ctl.pod_changed(&queue, &p, false),
                Some(Change::Deleted(p)) => ctl.pod_changed(&queue, &p, true),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.daemonsets),
                None => return,
            },
            // Any node change may change which nodes are eligible.
            c = next_change(&mut node_rx) => match c {
                Some(_) => enqueue_all(&queue, &ctl.daemonsets),
                None => return,
            },
            c = next_change(&mut rev_rx) => match c {
                Some(Change::Applied(r) | Change::Deleted(r)) => {
                    if let Some(key) = controller_key(&r.metadata, "DaemonSet") {
                        queue.add(&key);
                    }
                }
                Some(Change::Resync) => enqueue_all(&queue, &ctl.daemonsets),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.daemonsets),
        }
    }
}

/// The selector of a DaemonSet that may control pods (see [`selector_of`]).
fn ds_selector(ds: &DaemonSet) -> Option<crate::selector::LabelSelector> {
    ds.spec.as_ref().and_then(|s| selector_of(&s.selector))
}

/// `spec.minReadySeconds` (0 when absent).
fn min_ready_s(ds: &DaemonSet) -> i64 {
    let s = ds.spec.as_ref().and_then(|s| s.min_ready_seconds);
    i64::from(s.unwrap_or(0).max(0))
}

/// Not OnDelete (RollingUpdate is the default strategy).
fn is_rolling(ds: &DaemonSet) -> bool {
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    strategy.and_then(|s| s.type_.as_deref()) != Some("OnDelete")
}

/// The earlier of two optional delays.
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Controller {
    /// A pod changed: its DaemonSet must look, or, for an orphan, every
    /// DaemonSet that could adopt it.
    fn pod_changed(&self, queue: &WorkQueue, pod: &Pod, deleted: bool) {
        let m = &pod.metadata;
        let gone = deleted || is_deleting(m);
        if let Some(key) = controller_key(m, "DaemonSet") {
            self.expectations
                .observe(&key, m.name.as_deref().unwrap_or_default(), gone);
            queue.add(&key);
            return;
        }
        if gone || controller_ref(m).is_some() {
            return;
        }
        let adopters = self.daemonsets.filter_in(namespace(m), |ds| {
            ds_selector(ds).is_some_and(|s| s.matches_labels(m.labels.as_ref()))
        });
        for ds in adopters {
            queue.add(&key_of(ds.as_ref()));
        }
    }

    async fn reconcile(&self, key: &str) -> Reconciled<kube::Error> {
        let Some(ds) = self.daemonsets.get_key(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        // Deleting: the garbage collector removes pods and revisions, and
        // the status of a half-deleted set means nothing.
        if is_deleting(&ds.metadata) {
            return Ok(None);
        }
        let Some(selector) = ds_selector(&ds) else {
            return Ok(None);
        };
        let candidates = self.pods.filter_in(namespace(&ds.metadata), |_| true);
        let owned = claim(&self.client, ds.as_ref(), &selector, candidates).await?;
        let history = self.sync_revisions(&ds, &selector).await?;
        let nodes = self.nodes.list();
        let hash = history.hash.as_str();
        if !self.expectations.satisfied(key) {
            let recheck = self.write_status(&ds, &nodes, &owned, hash, false).await?;
            return Ok(recheck);
        }
        let step = self.manage(key, &ds, &nodes, &owned, hash).await?;
        let mut after = step.after;
        // A step that created or deleted pods waits for the cache to show
        // them before the update strategy judges availability.
        if !step.wrote && is_rolling(&ds) {
            let rolled = self.rolling_update(key, &ds, &nodes, &owned, hash).await?;
            after = sooner(after, rolled);
        }
        self.cleanup_history(&ds, &owned, &history).await?;
        let status_recheck = self.write_status(&ds, &nodes, &owned, hash, true).await?;
        Ok(sooner(after, status_recheck))
    }

    /// Records an Event about `ds` in the background (best effort).
    fn event(&self, ds: &DaemonSet, kind: &'static str, reason: &'static str, message: String) {
        let (client, involved) = (self.client.clone(), events::object_ref(ds));
        tokio::spawn(async move {
            events::record(&client, &involved, kind, reason, &message, COMPONENT).await;
        });
    }
}
