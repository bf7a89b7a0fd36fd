//! PVC protection (Kubernetes' `pkg/controller/volume/pvcprotection`):
//! every claim carries the finalizer `kubernetes.io/pvc-protection`, and a
//! deleted claim keeps it until no pod uses the claim any more. So
//! `kubectl delete pvc` on a claim a running pod mounts leaves the claim
//! Terminating instead of releasing (and, under Delete, removing) the data
//! under the pod; the claim goes once the pod has.
//!
//! A pod uses a claim while it exists and has not finished (Succeeded or
//! Failed). Before the finalizer is removed the pods are listed from the
//! API, not the cache, so a pod created a moment ago is not missed.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::cache::{key_of, next_change, Caches, Change, Informer};
use crate::reconcile::{enqueue_all, run_workers, Reconciled, WorkQueue, RESYNC};

/// The finalizer that keeps a claim in use from going away.
pub const FINALIZER: &str = "kubernetes.io/pvc-protection";
const WORKERS: usize = 2;

struct Protection {
    client: kube::Client,
    claims: Informer<PersistentVolumeClaim>,
    pods: Informer<Pod>,
}

/// Runs the controller until the future is dropped.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Protection {
        client,
        claims: caches.get::<PersistentVolumeClaim>(),
        pods: caches.get::<Pod>(),
    });
    let queue = WorkQueue::new();
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.claims.wait_synced().await;
    ctl.pods.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

/// Claims change by themselves; a pod that goes or finishes frees its
/// claims.
async fn watch_changes(ctl: Arc<Protection>, queue: WorkQueue) {
    let mut claim_rx = ctl.claims.subscribe();
    let mut pod_rx = ctl.pods.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut claim_rx) => match c {
                Some(Change::Applied(pvc)) => queue.add(&key_of(pvc.as_ref())),
                Some(Change::Deleted(_)) => {}
                Some(Change::Resync) => enqueue_all(&queue, &ctl.claims),
                None => return,
            },
            c = next_change(&mut pod_rx) => match c {
                Some(Change::Applied(pod) | Change::Deleted(pod)) => {
                    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
                    for claim in claims_of(&pod) {
                        queue.add(&format!("{ns}/{claim}"));
                    }
                }
                Some(Change::Resync) => enqueue_all(&queue, &ctl.claims),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.claims),
        }
    }
}

/// The claims a pod's volumes name.
pub fn claims_of(pod: &Pod) -> impl Iterator<Item = &str> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes.filter_map(|v| Some(v.persistent_volume_claim.as_ref()?.claim_name.as_str()))
}

/// Whether `pod` holds claim `name` (in its namespace).
fn uses(pod: &Pod, name: &str) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let finished = matches!(phase, Some("Succeeded" | "Failed"));
    !finished && claims_of(pod).any(|c| c == name)
}

impl Protection {
    async fn reconcile(&self, key: &str) -> Reconciled<kube::Error> {
        let Some(pvc) = self.claims.get_key(key) else {
            return Ok(None);
        };
        let has = finalizers(&pvc).iter().any(|f| f == FINALIZER);
        let deleting = pvc.metadata.deletion_timestamp.is_some();
        match (deleting, has) {
            (false, false) => self.add_finalizer(&pvc).await,
            (true, true) if !self.in_use(&pvc).await? => self.remove_finalizer(&pvc).await,
            _ => Ok(None),
        }
    }

    /// Whether a pod uses the claim: the cache first, then the API.
    async fn in_use(&self, pvc: &PersistentVolumeClaim) -> kube::Result<bool> {
        let ns = pvc.metadata.namespace.as_deref().unwrap_or_default();
        let name = pvc.metadata.name.as_deref().unwrap_or_default();
        if !self.pods.filter_in(ns, |p| uses(p, name)).is_empty() {
            return Ok(true);
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let live = pods.list(&ListParams::default()).await?;
        Ok(live.items.iter().any(|p| uses(p, name)))
    }

    async fn add_finalizer(&self, pvc: &PersistentVolumeClaim) -> Reconciled<kube::Error> {
        let mut list = finalizers(pvc).to_vec();
        list.push(FINALIZER.to_string());
        self.write_finalizers(pvc, list).await
    }

    async fn remove_finalizer(&self, pvc: &PersistentVolumeClaim) -> Reconciled<kube::Error> {
        let list = finalizers(pvc)
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        self.write_finalizers(pvc, list).await
    }

    /// Replaces the finalizer list, pinned to the version decided on.
    async fn write_finalizers(
        &self,
        pvc: &PersistentVolumeClaim,
        list: Vec<String>,
    ) -> Reconciled<kube::Error> {
        let ns = pvc.metadata.namespace.as_deref().unwrap_or_default();
        let name = pvc.metadata.name.as_deref().unwrap_or_default();
        let patch = json!({"metadata": {
            "resourceVersion": pvc.metadata.resource_version,
            "finalizers": list,
        }});
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if crate::client::is_status(&e, 404) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn finalizers(pvc: &PersistentVolumeClaim) -> &[String] {
    pvc.metadata.finalizers.as_deref().unwrap_or_default()
}
