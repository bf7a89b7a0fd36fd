//! The StatefulSet controller (Kubernetes' `pkg/controller/statefulset`):
//! pods with stable identities `<set>-<ordinal>`, each with its own
//! PersistentVolumeClaims, created in order and removed in reverse order
//! (OrderedReady) or all at once (Parallel), updated by revision
//! (RollingUpdate with partition and maxUnavailable, or OnDelete), with a
//! ControllerRevision history `kubectl rollout history/undo` works on.
//!
//! Each reconcile reads the set, its pods, revisions and claims from the
//! shared caches, decides one sync ([`plan`]) and carries it out. No
//! expectations are needed: pod and claim names are fixed, so a create
//! on a stale cache is a harmless AlreadyExists, and every delete is
//! pinned to the uid judged, so it cannot hit a pod recreated since.

mod claims;
#[cfg(test)]
mod fixtures;
mod identity;
mod plan;
mod revisions;
mod spec;
mod status;

use std::sync::Arc;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{json, Value};

use crate::cache::{key_of, next_change, Caches, Change, Informer};
use crate::client::is_status;
use crate::events;
use crate::history;
use crate::reconcile::{
    claim, controller_key, controller_ref, enqueue_all, is_deleting, name, namespace, run_workers,
    selector_of, uid, Reconciled, WorkQueue, RESYNC,
};
use claims::Claims;
use plan::{Input, Step};
use revisions::Revisions;

const COMPONENT: &str = "statefulset-controller";
const WORKERS: usize = 4;
/// Kubernetes' `MaxBatchSize`: the most concurrent writes of one phase.
const MAX_BATCH: usize = 500;

struct Controller {
    client: kube::Client,
    sets: Informer<StatefulSet>,
    pods: Informer<Pod>,
    revisions: Informer<ControllerRevision>,
    claims: Informer<PersistentVolumeClaim>,
}

/// Runs the StatefulSet controller until the future is dropped, reading
/// through the shared `caches` and writing through `client`.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Controller {
        sets: caches.get::<StatefulSet>(),
        pods: caches.get::<Pod>(),
        revisions: caches.get::<ControllerRevision>(),
        claims: caches.get::<PersistentVolumeClaim>(),
        client,
    });
    let queue = WorkQueue::new();
    // Subscribes when first polled, after the sync; the resync tick that
    // fires at once then queues everything the initial list brought.
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.sets.wait_synced().await;
    ctl.pods.wait_synced().await;
    ctl.revisions.wait_synced().await;
    ctl.claims.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

/// Maps set, pod, revision and claim changes to the sets to reconcile.
async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut set_rx = ctl.sets.subscribe();
    let mut pod_rx = ctl.pods.subscribe();
    let mut rev_rx = ctl.revisions.subscribe();
    let mut claim_rx = ctl.claims.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut set_rx) => match c {
                Some(Change::Applied(s) | Change::Deleted(s)) => queue.add(&key_of(s.as_ref())),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.sets),
                None => return,
            },
            c = next_change(&mut pod_rx) => match c {
                Some(Change::Applied(p) | Change::Deleted(p)) => ctl.pod_changed(&queue, &p),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.sets),
                None => return,
            },
            c = next_change(&mut rev_rx) => match c {
                Some(Change::Applied(r) | Change::Deleted(r)) => {
                    if let Some(key) = controller_key(&r.metadata, "StatefulSet") {
                        queue.add(&key);
                    }
                }
                Some(Change::Resync) => enqueue_all(&queue, &ctl.sets),
                None => return,
            },
            c = next_change(&mut claim_rx) => match c {
                Some(Change::Applied(pvc) | Change::Deleted(pvc)) => ctl.claim_changed(&queue, &pvc),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.sets),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.sets),
        }
    }
}

/// The selector of a set that may control pods (see [`selector_of`]).
fn set_selector(set: &StatefulSet) -> Option<crate::selector::LabelSelector> {
    set.spec.as_ref().and_then(|s| selector_of(&s.selector))
}

impl Controller {
    /// A pod changed: its controller must look, or, for an orphan, the
    /// set its name and labels make it a member of.
    fn pod_changed(&self, queue: &WorkQueue, pod: &Pod) {
        let m = &pod.metadata;
        if let Some(key) = controller_key(m, "StatefulSet") {
            queue.add(&key);
            return;
        }
        if controller_ref(m).is_some() || is_deleting(m) {
            return;
        }
        let adopters = self.sets.filter_in(namespace(m), |s| {
            identity::ordinal_in(s, pod).is_some()
                && set_selector(s).is_some_and(|sel| sel.matches_labels(m.labels.as_ref()))
        });
        for s in adopters {
            queue.add(&key_of(s.as_ref()));
        }
    }

    /// A claim changed (say, a stale one is gone): the sets whose claim
    /// templates name it look again.
    fn claim_changed(&self, queue: &WorkQueue, pvc: &PersistentVolumeClaim) {
        let claim = name(&pvc.metadata);
        let owners = self.sets.filter_in(namespace(&pvc.metadata), |s| {
            let prefix =
                |t: &PersistentVolumeClaim| format!("{}-{}-", name(&t.metadata), name(&s.metadata));
            spec::claim_templates(s)
                .iter()
                .any(|t| claim.starts_with(&prefix(t)))
        });
        for s in owners {
            queue.add(&key_of(s.as_ref()));
        }
    }

    async fn reconcile(&self, key: &str) -> Reconciled<kube::Error> {
        let Some(set) = self.sets.get_key(key) else {
            return Ok(None);
        };
        // Deleting: the garbage collector removes pods and revisions.
        if is_deleting(&set.metadata) || uid(&set.metadata).is_empty() {
            return Ok(None);
        }
        let Some(selector) = set_selector(&set) else {
            return Ok(None);
        };
        let set_uid = uid(&set.metadata);
        let candidates = self.pods.filter_in(namespace(&set.metadata), |p| {
            match controller_ref(&p.metadata) {
                Some(r) => r.uid == set_uid,
                None => identity::ordinal_in(&set, p).is_some(),
            }
        });
        let pods = claim(&self.client, set.as_ref(), &selector, candidates).await?;
        let revs = self.revisions(&set).await?;
        let claims = self.claims_of(&set);
        let plan = plan::plan(&Input {
            set: &set,
            pods: &pods,
            current: name(&revs.current.metadata),
            update: name(&revs.update.metadata),
            claims: &claims,
            now: Timestamp::now(),
        });
        let done = self.carry_out(&set, &revs, &claims, &plan).await;
        let new_status = status::new_status(
            &set,
            plan.counts,
            name(&revs.current.metadata),
            name(&revs.update.metadata),
            revs.collision_count,
        );
        self.write_status(&set, &new_status).await?;
        done?;
        let live = revs.live(&pods);
        history::truncate(&self.client, &revs.all, &live, spec::history_limit(&set)).await?;
        Ok(plan.recheck)
    }

    /// The claims in the set's namespace, by name.
    fn claims_of(&self, set: &StatefulSet) -> Claims {
        self.claims
            .filter_in(namespace(&set.metadata), |_| true)
            .into_iter()
            .map(|c| (name(&c.metadata).to_string(), c))
            .collect()
    }

    /// Runs the plan's phases in order, a burst phase's steps in batches
    /// of 1, 2, 4, ... (Kubernetes' slow start), stopping at a failure.
    async fn carry_out(
        &self,
        set: &StatefulSet,
        revs: &Revisions,
        claims: &Claims,
        plan: &plan::Plan,
    ) -> kube::Result<()> {
        for phase in &plan.phases {
            if !plan.burst {
                for step in phase {
                    self.step(set, revs, claims, step).await?;
                }
                continue;
            }
            let mut rest = phase.as_slice();
            let mut batch = 1;
            while !rest.is_empty() {
                let (now, later) = rest.split_at(batch.min(rest.len()));
                let results = join_all(now.iter().map(|s| self.step(set, revs, claims, s))).await;
                results.into_iter().collect::<kube::Result<Vec<()>>>()?;
                rest = later;
                batch = (batch * 2).min(MAX_BATCH);
            }
        }
        Ok(())
    }

    async fn step(
        &self,
        set: &StatefulSet,
        revs: &Revisions,
        claims: &Claims,
        step: &Step,
    ) -> kube::Result<()> {
        match step {
            Step::Create { ordinal, at_update } => {
                self.create_pod(set, revs, claims, *ordinal, *at_update)
                    .await
            }
            Step::Delete(pod) => self.delete_pod(set, pod).await,
            Step::CreateClaims(pod, ordinal) => self
                .create_claims(set, claims, name(&pod.metadata), *ordinal)
                .await
                .map(|_| ()),
            Step::Label(pod, labels) => {
                let patch = json!({"metadata": {"labels": labels}});
                self.patch_pod(pod, &patch).await
            }
            Step::ClaimOwners {
                pod,
                ordinal,
                scaled_down,
            } => {
                let pod = scaled_down.then_some(pod.as_ref());
                self.fix_claim_owners(set, claims, pod, *ordinal).await
            }
        }
    }

    /// Creates the pod at `ordinal` after its claims; a pod that exists
    /// already (the cache lagged) is left alone.
    async fn create_pod(
        &self,
        set: &StatefulSet,
        revs: &Revisions,
        claims: &Claims,
        ordinal: i32,
        at_update: bool,
    ) -> kube::Result<()> {
        let (template, revision) = match at_update {
            true => (revs.update_template(set), &revs.update),
            false => (revs.current_template(set), &revs.current),
        };
        let pod = identity::new_pod(set, &template, name(&revision.metadata), ordinal);
        let pod_name = name(&pod.metadata).to_string();
        if !self.create_claims(set, claims, &pod_name, ordinal).await? {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace(&set.metadata));
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                let set_name = name(&set.metadata);
                let msg = format!("create Pod {pod_name} in StatefulSet {set_name} successful");
                self.event(set, events::NORMAL, "SuccessfulCreate", msg);
                Ok(())
            }
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => {
                let set_name = name(&set.metadata);
                let msg =
                    format!("create Pod {pod_name} in StatefulSet {set_name} failed error: {e}");
                self.event(set, events::WARNING, "FailedCreate", msg);
                Err(e)
            }
        }
    }

    /// Creates the missing claims of the pod at `ordinal`. False when a
    /// claim is still being deleted: the pod must wait for it to go (its
    /// deletion queues the set again).
    async fn create_claims(
        &self,
        set: &StatefulSet,
        claims: &Claims,
        pod_name: &str,
        ordinal: i32,
    ) -> kube::Result<bool> {
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), namespace(&set.metadata));
        for claim in claims::new_claims(set, ordinal) {
            let claim_name = name(&claim.metadata).to_string();
            match claims.get(&claim_name) {
                Some(c) if is_deleting(&c.metadata) => {
                    tracing::debug!(claim = %claim_name, "waiting for a claim being deleted");
                    return Ok(false);
                }
                Some(_) => continue,
                None => {}
            }
            match api.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    let set_name = name(&set.metadata);
                    let msg = format!(
                        "create Claim {claim_name} Pod {pod_name} in StatefulSet {set_name} success"
                    );
                    self.event(set, events::NORMAL, "SuccessfulCreate", msg);
                }
                Err(e) if is_status(&e, 409) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Sets the ownerReferences of the claims of the pod at `ordinal` as
    /// the retention policy asks (`scaled_down`: that pod, condemned).
    async fn fix_claim_owners(
        &self,
        set: &StatefulSet,
        claims: &Claims,
        scaled_down: Option<&Pod>,
        ordinal: i32,
    ) -> kube::Result<()> {
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), namespace(&set.metadata));
        for claim_name in claims::claim_names(set, ordinal) {
            let Some(c) = claims.get(&claim_name) else {
                continue;
            };
            if claims::refs_match(set, scaled_down, c) {
                continue;
            }
            let refs = claims::wanted_refs(set, scaled_down, c);
            // Pinned to the version judged; `null` removes the field.
            let patch = json!({"metadata": {
                "ownerReferences": refs.map_or(Value::Null, |r| json!(r)),
                "resourceVersion": c.metadata.resource_version,
            }});
            match api
                .patch(&claim_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes `pod`, pinned to its uid (a pod recreated under the name
    /// since is not the one judged); one already gone is fine.
    async fn delete_pod(&self, set: &StatefulSet, pod: &Pod) -> kube::Result<()> {
        let pod_name = name(&pod.metadata);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace(&pod.metadata));
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(pod_name, &params).await {
            Ok(_) => {
                let set_name = name(&set.metadata);
                let msg = format!("delete Pod {pod_name} in StatefulSet {set_name} successful");
                self.event(set, events::NORMAL, "SuccessfulDelete", msg);
                Ok(())
            }
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn patch_pod(&self, pod: &Pod, patch: &Value) -> kube::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace(&pod.metadata));
        match api
            .patch(
                name(&pod.metadata),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes `new` as the set's status when it changed; on a conflict
    /// (stale cache) once more onto the current object.
    async fn write_status(
        &self,
        set: &StatefulSet,
        new: &k8s_openapi::api::apps::v1::StatefulSetStatus,
    ) -> kube::Result<()> {
        if !status::differs(set, new) {
            return Ok(());
        }
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), namespace(&set.metadata));
        let set_name = name(&set.metadata);
        let pp = PostParams::default();
        match api
            .replace_status(set_name, &pp, &status::with_status(set, new))
            .await
        {
            Err(e) if is_status(&e, 409) => {
                let Some(fresh) = api.get_opt(set_name).await? else {
                    return Ok(());
                };
                if fresh.metadata.uid != set.metadata.uid {
                    return Ok(());
                }
                api.replace_status(set_name, &pp, &status::with_status(&fresh, new))
                    .await?;
            }
            other => {
                other?;
            }
        }
        Ok(())
    }

    /// Records an Event about `set` in the background (best effort).
    fn event(&self, set: &StatefulSet, kind: &'static str, reason: &'static str, message: String) {
        let (client, involved) = (self.client.clone(), events::object_ref(set));
        tokio::spawn(async move {
            events::record(&client, &involved, kind, reason, &message, COMPONENT).await;
        });
    }
}
