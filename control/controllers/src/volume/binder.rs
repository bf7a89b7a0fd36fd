//! The PersistentVolume controller (Kubernetes'
//! `pkg/controller/volume/persistentvolume`, simplified): binds claims to
//! volumes, keeps both phases true, and reclaims volumes whose claim is
//! gone.
//!
//! Claims (`claim:<ns>/<name>` keys):
//! - unbound: the best matching volume ([`matching::find`]) is bound to
//!   it: the volume's `claimRef` first, then the claim's `volumeName`, so
//!   a crash in between leaves a volume pre-bound to the claim, which the
//!   next pass completes. A delayed (WaitForFirstConsumer) claim is matched
//!   only once the scheduler set `volume.kubernetes.io/selected-node`, and
//!   then only with volumes that node can use. No match: the claim waits
//!   (Pending) for its class's provisioner, annotated
//!   `volume.kubernetes.io/storage-provisioner`;
//! - `volumeName` set by a user (pre-binding): bound to that volume if it
//!   is free and satisfies the claim (capacity, class, volume mode);
//! - bound: kept Bound, or Lost once its volume is gone or taken.
//!
//! Volumes (`volume:<name>` keys): Available without a claim; Bound while
//! their claim exists; when it is gone (confirmed with a read, never from
//! a lagging cache alone) Released, then reclaimed: Retain keeps the
//! volume and its data; Delete deletes volumes the local-path provisioner
//! made (the node's agent then removes the directory) and marks others
//! Failed (keel has no deleter for them).
//!
//! Every write is pinned to the resourceVersion the decision was made on,
//! so a stale cache costs a 409 and a retry, never a double binding; one
//! worker binds at a time.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::Resource;
use serde_json::json;

use super::matching;
use super::{
    annotation, claim_class, claim_phase, is_delayed, volume_name, volume_phase,
    ANN_BETA_STORAGE_PROVISIONER, ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_PROVISIONED_BY,
    ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, LOCAL_PATH_PROVISIONER,
};
use crate::cache::{key_of, next_change, Caches, Change, Informer};
use crate::client::is_status;
use crate::events;
use crate::reconcile::{run_workers, Reconciled, WorkQueue, RESYNC};
use crate::scheduler::NodeInfo;

const COMPONENT: &str = "persistentvolume-controller";
const CLAIM: &str = "claim:";
const VOLUME: &str = "volume:";
/// A volume whose claim the cache lacks but the API still has: look again.
const CACHE_LAG_RETRY: Duration = Duration::from_millis(200);

struct Binder {
    client: kube::Client,
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    nodes: Informer<Node>,
}

/// Runs the binder until the future is dropped, reading through the
/// shared `caches` and writing through `client`.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Binder {
        client,
        claims: caches.get::<PersistentVolumeClaim>(),
        volumes: caches.get::<PersistentVolume>(),
        classes: caches.get::<StorageClass>(),
        nodes: caches.get::<Node>(),
    });
    let queue = WorkQueue::new();
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.claims.wait_synced().await;
    ctl.volumes.wait_synced().await;
    ctl.classes.wait_synced().await;
    ctl.nodes.wait_synced().await;
    let workers = run_workers(queue, 1, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

/// Maps claim, volume and class changes to the keys to reconcile.
async fn watch_changes(ctl: Arc<Binder>, queue: WorkQueue) {
    let mut claim_rx = ctl.claims.subscribe();
    let mut volume_rx = ctl.volumes.subscribe();
    let mut class_rx = ctl.classes.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut claim_rx) => match c {
                Some(Change::Applied(pvc) | Change::Deleted(pvc)) => ctl.claim_changed(&queue, &pvc),
                Some(Change::Resync) => ctl.enqueue_all(&queue),
                None => return,
            },
            c = next_change(&mut volume_rx) => match c {
                Some(Change::Applied(pv) | Change::Deleted(pv)) => ctl.volume_changed(&queue, &pv),
                Some(Change::Resync) => ctl.enqueue_all(&queue),
                None => return,
            },
            c = next_change(&mut class_rx) => match c {
                Some(_) => ctl.enqueue_claims(&queue),
                None => return,
            },
            _ = resync.tick() => ctl.enqueue_all(&queue),
        }
    }
}

impl Binder {
    /// A volume changed: it, and the claim it names; an unclaimed one may
    /// now suit any waiting claim.
    fn volume_changed(&self, queue: &WorkQueue, pv: &PersistentVolume) {
        queue.add(&format!("{VOLUME}{}", key_of(pv)));
        let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        match claim_ref {
            Some(r) => {
                let (ns, name) = (r.namespace.as_deref(), r.name.as_deref());
                if let (Some(ns), Some(name)) = (ns, name) {
                    queue.add(&format!("{CLAIM}{ns}/{name}"));
                }
            }
            None => {
                for pvc in self.claims.filter(|c| volume_name(c).is_empty()) {
                    queue.add(&format!("{CLAIM}{}", key_of(pvc.as_ref())));
                }
            }
        }
    }

    /// A claim changed: it, the volume it names, and volumes claiming it
    /// (a deleted claim releases them).
    fn claim_changed(&self, queue: &WorkQueue, pvc: &PersistentVolumeClaim) {
        queue.add(&format!("{CLAIM}{}", key_of(pvc)));
        let named = volume_name(pvc);
        if !named.is_empty() {
            queue.add(&format!("{VOLUME}{named}"));
        }
        for pv in self.volumes.filter(|pv| matching::is_prebound_to(pv, pvc)) {
            queue.add(&format!("{VOLUME}{}", key_of(pv.as_ref())));
        }
    }

    fn enqueue_claims(&self, queue: &WorkQueue) {
        for pvc in self.claims.list() {
            queue.add(&format!("{CLAIM}{}", key_of(pvc.as_ref())));
        }
    }

    fn enqueue_all(&self, queue: &WorkQueue) {
        self.enqueue_claims(queue);
        for pv in self.volumes.list() {
            queue.add(&format!("{VOLUME}{}", key_of(pv.as_ref())));
        }
    }

    async fn reconcile(&self, key: &str) -> Reconciled<kube::Error> {
        if let Some(claim) = key.strip_prefix(CLAIM) {
            let Some(pvc) = self.claims.get_key(claim) else {
                return Ok(None);
            };
            return self.sync_claim(&pvc).await;
        }
        if let Some(volume) = key.strip_prefix(VOLUME) {
            let Some(pv) = self.volumes.get(None, volume) else {
                return Ok(None);
            };
            return self.sync_volume(&pv).await;
        }
        Ok(None)
    }

    // ---- claims -----------------------------------------------------------

    async fn sync_claim(&self, pvc: &PersistentVolumeClaim) -> Reconciled<kube::Error> {
        match volume_name(pvc) {
            "" => self.sync_unbound_claim(pvc).await,
            named => self.sync_named_claim(pvc, named).await,
        }
    }

    async fn sync_unbound_claim(&self, pvc: &PersistentVolumeClaim) -> Reconciled<kube::Error> {
        let class = self.classes.get(None, claim_class(pvc));
        let delayed = class.as_deref().is_some_and(is_delayed);
        let selected = annotation(&pvc.metadata, ANN_SELECTED_NODE);
        let node = selected
            .and_then(|n| self.nodes.get(None, n))
            .map(|n| NodeInfo::from_node(&n, &[]));
        let volumes = self.volumes.list();
        let found = matching::find(pvc, volumes.iter().map(Arc::as_ref), node.as_ref(), delayed);
        if let Some(pv) = found {
            return self.bind(pv, pvc).await.map(|_| None);
        }
        self.set_claim_phase(pvc, "Pending").await?;
        if delayed && selected.is_none() {
            let msg = "waiting for first consumer to be created before binding";
            self.event(pvc, events::NORMAL, "WaitForFirstConsumer", msg);
            return Ok(None);
        }
        match class
            .as_deref()
            .and_then(|c| (!c.provisioner.is_empty()).then_some(c))
        {
            Some(c) => self.expect_provisioner(pvc, &c.provisioner).await,
            None => {
                let msg =
                    "no persistent volumes available for this claim and no storage class is set";
                self.event(pvc, events::NORMAL, "FailedBinding", msg);
                Ok(None)
            }
        }
    }

    /// Marks the claim as waiting for `provisioner` (Kubernetes' annotations).
    async fn expect_provisioner(
        &self,
        pvc: &PersistentVolumeClaim,
        provisioner: &str,
    ) -> Reconciled<kube::Error> {
        if annotation(&pvc.metadata, ANN_STORAGE_PROVISIONER) != Some(provisioner) {
            let patch = json!({"metadata": {
                "resourceVersion": pvc.metadata.resource_version,
                "annotations": {
                    ANN_STORAGE_PROVISIONER: provisioner,
                    ANN_BETA_STORAGE_PROVISIONER: provisioner,
                },
            }});
            self.claims_api(pvc)
                .patch(name_of(pvc), &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
        if provisioner != LOCAL_PATH_PROVISIONER {
            let msg = format!(
                "Waiting for a volume to be created either by the external provisioner '{provisioner}' \
                 or manually by the system administrator. If volume creation is delayed, please \
                 verify that the provisioner is running and correctly registered."
            );
            self.event(pvc, events::NORMAL, "ExternalProvisioning", &msg);
        }
        Ok(None)
    }

    /// A claim naming its volume: bound already, pre-bound by a user, or
    /// lost.
    async fn sync_named_claim(
        &self,
        pvc: &PersistentVolumeClaim,
        named: &str,
    ) -> Reconciled<kube::Error> {
        let completed = annotation(&pvc.metadata, ANN_BIND_COMPLETED).is_some();
        let Some(pv) = self.volumes.get(None, named) else {
            if completed {
                let msg = "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!";
                return self.lose_claim(pvc, msg).await;
            }
            self.set_claim_phase(pvc, "Pending").await?;
            let msg = format!("volume \"{named}\" not found");
            self.event(pvc, events::NORMAL, "FailedBinding", &msg);
            return Ok(None);
        };
        let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        match claim_ref {
            Some(r) if matching::refers_to(r, pvc) => self.bind(&pv, pvc).await.map(|_| None),
            Some(_) if completed => {
                let msg = "Two claims are bound to the same volume, this one is bound incorrectly";
                self.lose_claim(pvc, msg).await
            }
            Some(_) => {
                self.set_claim_phase(pvc, "Pending").await?;
                let msg = format!("volume \"{named}\" already bound to a different claim.");
                self.event(pvc, events::WARNING, "FailedBinding", &msg);
                Ok(None)
            }
            None if completed => self.bind(&pv, pvc).await.map(|_| None),
            None => match matching::satisfies(&pv, pvc) {
                Ok(()) => self.bind(&pv, pvc).await.map(|_| None),
                Err(why) => {
                    self.set_claim_phase(pvc, "Pending").await?;
                    let msg = format!("Cannot bind to requested volume \"{named}\": {why}");
                    self.event(pvc, events::WARNING, "VolumeMismatch", &msg);
                    Ok(None)
                }
            },
        }
    }

    async fn lose_claim(&self, pvc: &PersistentVolumeClaim, msg: &str) -> Reconciled<kube::Error> {
        if claim_phase(pvc) != "Lost" {
            self.set_claim_phase(pvc, "Lost").await?;
            self.event(pvc, events::WARNING, "ClaimLost", msg);
        }
        Ok(None)
    }

    /// Binds `pv` and `pvc` to each other: volume claimRef, volume phase,
    /// claim volumeName and annotations, claim status; each step only when
    /// not done yet.
    async fn bind(&self, pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> kube::Result<()> {
        let pv = self.bind_volume(pv, pvc).await?;
        self.set_volume_phase(&pv, "Bound", None).await?;
        let pvc = self.bind_claim(&pv, pvc).await?;
        self.set_claim_bound(&pv, &pvc).await?;
        let msg = format!(
            "Successfully bound volume {} to claim {}",
            name_of_pv(&pv),
            key_of(&pvc)
        );
        tracing::debug!(%msg);
        Ok(())
    }

    /// Points the volume's claimRef at the claim (with its uid), marking
    /// it bound-by-controller when it was not pre-bound to the claim.
    async fn bind_volume(
        &self,
        pv: &PersistentVolume,
        pvc: &PersistentVolumeClaim,
    ) -> kube::Result<PersistentVolume> {
        let want = claim_ref_of(pvc);
        let current = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        if current.is_some_and(|r| r.uid == want.uid && matching::refers_to(r, pvc)) {
            return Ok(pv.clone());
        }
        let prebound = current.is_some_and(|r| matching::refers_to(r, pvc));
        let mut new = pv.clone();
        new.spec.get_or_insert_with(Default::default).claim_ref = Some(want);
        if !prebound {
            let ann = new
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            ann.insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        api.replace(name_of_pv(pv), &PostParams::default(), &new)
            .await
    }

    /// Sets the claim's volumeName and the bind-completed annotation (and
    /// bound-by-controller when the claim did not name the volume itself).
    async fn bind_claim(
        &self,
        pv: &PersistentVolume,
        pvc: &PersistentVolumeClaim,
    ) -> kube::Result<PersistentVolumeClaim> {
        let pv_name = name_of_pv(pv);
        let named = volume_name(pvc);
        let completed = annotation(&pvc.metadata, ANN_BIND_COMPLETED).is_some();
        if named == pv_name && completed {
            return Ok(pvc.clone());
        }
        let mut new = pvc.clone();
        new.spec.get_or_insert_with(Default::default).volume_name = Some(pv_name.to_string());
        let ann = new
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        ann.insert(ANN_BIND_COMPLETED.into(), "yes".into());
        if named.is_empty() {
            ann.insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        self.claims_api(pvc)
            .replace(name_of(pvc), &PostParams::default(), &new)
            .await
    }

    /// Phase Bound with the volume's capacity and access modes.
    async fn set_claim_bound(
        &self,
        pv: &PersistentVolume,
        pvc: &PersistentVolumeClaim,
    ) -> kube::Result<()> {
        let spec = pv.spec.clone().unwrap_or_default();
        let status = pvc.status.clone().unwrap_or_default();
        let done = status.phase.as_deref() == Some("Bound")
            && status.capacity == spec.capacity
            && status.access_modes == spec.access_modes;
        if done {
            return Ok(());
        }
        let patch = json!({"status": {
            "phase": "Bound",
            "capacity": spec.capacity,
            "accessModes": spec.access_modes,
        }});
        self.claims_api(pvc)
            .patch_status(name_of(pvc), &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    async fn set_claim_phase(&self, pvc: &PersistentVolumeClaim, phase: &str) -> kube::Result<()> {
        if claim_phase(pvc) == phase {
            return Ok(());
        }
        let patch = json!({"status": {"phase": phase}});
        self.claims_api(pvc)
            .patch_status(name_of(pvc), &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    fn claims_api(&self, pvc: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
        let ns = pvc.metadata.namespace.as_deref().unwrap_or("default");
        Api::namespaced(self.client.clone(), ns)
    }

    // ---- volumes ----------------------------------------------------------

    async fn sync_volume(&self, pv: &PersistentVolume) -> Reconciled<kube::Error> {
        let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let Some(r) = claim_ref else {
            self.set_volume_phase(pv, "Available", None).await?;
            return Ok(None);
        };
        let uid = r.uid.as_deref().unwrap_or_default();
        if uid.is_empty() {
            // Pre-bound to a claim by name: the claim's sync binds it.
            self.set_volume_phase(pv, "Available", None).await?;
            return Ok(None);
        }
        let ns = r.namespace.as_deref().unwrap_or_default();
        let name = r.name.as_deref().unwrap_or_default();
        let cached = self.claims.get(Some(ns), name);
        let pvc = match cached.filter(|c| c.metadata.uid.as_deref() == Some(uid)) {
            Some(c) => c,
            None => match self.confirm_claim(ns, name, uid).await? {
                // The API has it, the cache not yet: decide once it does.
                Some(_) => return Ok(Some(CACHE_LAG_RETRY)),
                None => return self.reclaim(pv).await,
            },
        };
        match volume_name(&pvc) {
            n if n == name_of_pv(pv) => {
                self.set_volume_phase(pv, "Bound", None).await?;
                Ok(None)
            }
            // Binding in progress: the claim's sync finishes it.
            "" => Ok(None),
            // The claim is bound to another volume: free this one.
            _ => self.unbind_volume(pv).await.map(|_| None),
        }
    }

    /// The claim as the API holds it now, if it still has uid `uid`.
    async fn confirm_claim(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
    ) -> kube::Result<Option<PersistentVolumeClaim>> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let found = api.get_opt(name).await?;
        Ok(found.filter(|c| c.metadata.uid.as_deref() == Some(uid)))
    }

    /// The claim is gone: Released, then the reclaim policy.
    async fn reclaim(&self, pv: &PersistentVolume) -> Reconciled<kube::Error> {
        if volume_phase(pv) == "Failed" {
            return Ok(None);
        }
        self.set_volume_phase(pv, "Released", None).await?;
        let policy = pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            .unwrap_or("Retain");
        match policy {
            "Delete"
                if annotation(&pv.metadata, ANN_PROVISIONED_BY) == Some(LOCAL_PATH_PROVISIONER) =>
            {
                self.delete_volume(pv).await.map(|_| None)
            }
            "Delete" => {
                let msg = format!(
                    "error getting deleter volume plugin for volume \"{}\": no deletable volume plugin matched",
                    name_of_pv(pv)
                );
                self.fail_volume(pv, "VolumeFailedDelete", &msg).await
            }
            "Recycle" => {
                let msg = "No recycler plugin found for the volume!";
                self.fail_volume(pv, "VolumeFailedRecycle", msg).await
            }
            _ => Ok(None),
        }
    }

    async fn fail_volume(
        &self,
        pv: &PersistentVolume,
        reason: &'static str,
        msg: &str,
    ) -> Reconciled<kube::Error> {
        self.set_volume_phase(pv, "Failed", Some(msg)).await?;
        self.event(pv, events::WARNING, reason, msg);
        Ok(None)
    }

    /// Deletes a provisioned volume, pinned to its uid.
    async fn delete_volume(&self, pv: &PersistentVolume) -> kube::Result<()> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pv.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name_of_pv(pv), &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Frees a volume whose claim went to another volume: a controller's
    /// binding is undone, a user's pre-binding loses only the uid.
    async fn unbind_volume(&self, pv: &PersistentVolume) -> kube::Result<()> {
        let mut new = pv.clone();
        let by_controller = annotation(&pv.metadata, ANN_BOUND_BY_CONTROLLER).is_some();
        let spec = new.spec.get_or_insert_with(Default::default);
        if by_controller {
            spec.claim_ref = None;
            if let Some(a) = new.metadata.annotations.as_mut() {
                a.remove(ANN_BOUND_BY_CONTROLLER);
            }
        } else if let Some(r) = spec.claim_ref.as_mut() {
            r.uid = None;
            r.resource_version = None;
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = api
            .replace(name_of_pv(pv), &PostParams::default(), &new)
            .await?;
        self.set_volume_phase(&pv, "Available", None).await
    }

    async fn set_volume_phase(
        &self,
        pv: &PersistentVolume,
        phase: &str,
        message: Option<&str>,
    ) -> kube::Result<()> {
        let status = pv.status.as_ref();
        let same_message = status.and_then(|s| s.message.as_deref()) == message;
        if volume_phase(pv) == phase && same_message {
            return Ok(());
        }
        let patch = json!({"status": {
            "phase": phase,
            "message": message,
            "lastPhaseTransitionTime": Time(Timestamp::now()),
        }});
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        api.patch_status(
            name_of_pv(pv),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
        Ok(())
    }

    /// Records an Event about `obj` in the background (best effort).
    fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        kind: &'static str,
        reason: &'static str,
        msg: &str,
    ) {
        let (client, involved, msg) = (
            self.client.clone(),
            events::object_ref(obj),
            msg.to_string(),
        );
        tokio::spawn(async move {
            events::record(&client, &involved, kind, reason, &msg, COMPONENT).await;
        });
    }
}

/// The claimRef a volume bound to `pvc` carries.
fn claim_ref_of(pvc: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: pvc.metadata.namespace.clone(),
        name: pvc.metadata.name.clone(),
        uid: pvc.metadata.uid.clone(),
        resource_version: pvc.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

fn name_of(pvc: &PersistentVolumeClaim) -> &str {
    pvc.metadata.name.as_deref().unwrap_or_default()
}

fn name_of_pv(pv: &PersistentVolume) -> &str {
    pv.metadata.name.as_deref().unwrap_or_default()
}
