//! A DaemonSet's ControllerRevisions (Kubernetes' `constructHistory` and
//! `cleanupHistory`), on the shared [`crate::history`]: one revision per
//! template the set has had, the current one created or renumbered to the
//! top (a `kubectl rollout undo` moves an old revision up), its hash the
//! `controller-revision-hash` label new pods get, and old revisions beyond
//! `revisionHistoryLimit` pruned unless a pod still runs them.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::pods::pod_hash;
use super::Controller;
use crate::history;
use crate::reconcile::{claim, name, namespace, owner_ref};
use crate::selector::LabelSelector;

/// Kubernetes' default `revisionHistoryLimit` (the API server sets it).
const DEFAULT_HISTORY_LIMIT: i32 = 10;

/// The revisions of one DaemonSet as a reconcile found them.
pub(super) struct History {
    /// The current revision's hash (the pods' `controller-revision-hash`).
    pub hash: String,
    /// The current revision's name.
    current: String,
    /// Every revision the set controls, oldest first (before this
    /// reconcile created or renumbered the current one).
    revisions: Vec<Arc<ControllerRevision>>,
}

impl Controller {
    /// Adopts matching orphan revisions, releases owned ones that stopped
    /// matching, and makes sure a revision of the current template exists
    /// and is the newest.
    pub(super) async fn sync_revisions(
        &self,
        ds: &DaemonSet,
        selector: &LabelSelector,
    ) -> kube::Result<History> {
        let candidates = self.revisions.filter_in(namespace(&ds.metadata), |_| true);
        let mut revisions = claim(&self.client, ds, selector, candidates).await?;
        revisions.sort_by(|a, b| history::compare(a, b));
        let spec = ds.spec.as_ref();
        let template = spec.map(|s| &s.template);
        let data = history::template_patch(&serde_json::to_value(template).unwrap_or_default());
        let labels = template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref());
        let counted = ds.status.as_ref().and_then(|s| s.collision_count);
        let mut collisions = counted.unwrap_or(0);
        let candidate = history::new_revision(
            &ds.metadata,
            owner_ref(ds),
            labels,
            data,
            history::next_revision(&revisions),
            collisions,
        );
        let cur = history::create_or_reuse(
            &self.client,
            &revisions,
            name(&ds.metadata),
            candidate,
            &mut collisions,
        )
        .await?;
        if collisions != counted.unwrap_or(0) {
            self.store_collision_count(ds, collisions).await?;
        }
        Ok(History {
            hash: history::hash_of(&cur).unwrap_or_default().to_string(),
            current: name(&cur.metadata).to_string(),
            revisions,
        })
    }

    /// Records a hash collision, so the next hash differs.
    async fn store_collision_count(&self, ds: &DaemonSet, count: i32) -> kube::Result<()> {
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), namespace(&ds.metadata));
        let patch = json!({"status": {"collisionCount": count}});
        api.patch_status(
            name(&ds.metadata),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    /// Deletes the oldest revisions beyond `revisionHistoryLimit`, keeping
    /// the current one and any a pod still runs.
    pub(super) async fn cleanup_history(
        &self,
        ds: &DaemonSet,
        owned: &[Arc<Pod>],
        h: &History,
    ) -> kube::Result<()> {
        let limit = ds
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(DEFAULT_HISTORY_LIMIT);
        let pod_hashes: HashSet<&str> = owned.iter().map(|p| pod_hash(p)).collect();
        let mut live: HashSet<String> = h
            .revisions
            .iter()
            .filter(|r| history::hash_of(r).is_some_and(|x| pod_hashes.contains(x)))
            .map(|r| name(&r.metadata).to_string())
            .collect();
        live.insert(h.current.clone());
        history::truncate(&self.client, &h.revisions, &live, limit).await
    }
}
