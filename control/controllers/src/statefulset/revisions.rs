//! A StatefulSet's revisions (Kubernetes' `getStatefulSetRevisions`): the
//! update revision holds the set's pod template now (created, reused, or
//! an older one renumbered by a rollback); the current revision is the
//! one `status.currentRevision` names, or the update revision for a new
//! set. Pods are made from the template a revision holds.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};

use super::identity::pod_revision;
use super::{spec, Controller};
use crate::history;
use crate::reconcile::{name, owner_ref};

/// The revisions one sync works with.
pub(super) struct Revisions {
    /// The set's revisions as the cache had them, oldest first.
    pub all: Vec<Arc<ControllerRevision>>,
    pub current: ControllerRevision,
    pub update: ControllerRevision,
    pub collision_count: i32,
}

impl Revisions {
    /// The pod template of the current revision, falling back to the
    /// update one if the current revision's data is not a template patch.
    pub fn current_template(&self, set: &StatefulSet) -> PodTemplateSpec {
        template_of(&self.current).unwrap_or_else(|| self.update_template(set))
    }

    /// The pod template of the update revision (the set's own).
    pub fn update_template(&self, set: &StatefulSet) -> PodTemplateSpec {
        template_of(&self.update).unwrap_or_else(|| spec::template(set))
    }

    /// Revisions that must survive truncation: current, update and every
    /// pod's.
    pub fn live(&self, pods: &[Arc<Pod>]) -> HashSet<String> {
        let mut live: HashSet<String> = pods.iter().map(|p| pod_revision(p).to_string()).collect();
        live.insert(name(&self.current.metadata).to_string());
        live.insert(name(&self.update.metadata).to_string());
        live
    }
}

/// The pod template a revision holds, if its data is a template patch.
fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let t = history::template_of(history::data_of(rev))?;
    serde_json::from_value(t).ok()
}

/// The revision data of `set`'s pod template.
pub(super) fn data_of(set: &StatefulSet) -> kube::Result<serde_json::Value> {
    let template = serde_json::to_value(spec::template(set)).map_err(kube::Error::SerdeError)?;
    Ok(history::template_patch(&template))
}

impl Controller {
    /// Finds or makes the update revision and finds the current one.
    pub(super) async fn revisions(&self, set: &StatefulSet) -> kube::Result<Revisions> {
        let all = history::owned(&self.revisions, &set.metadata);
        let mut collision_count = set
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let template = spec::template(set);
        let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
        let candidate = history::new_revision(
            &set.metadata,
            owner_ref(set),
            labels,
            data_of(set)?,
            history::next_revision(&all),
            collision_count,
        );
        let update = history::create_or_reuse(
            &self.client,
            &all,
            name(&set.metadata),
            candidate,
            &mut collision_count,
        )
        .await?;
        let current_name = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.as_deref())
            .unwrap_or_default();
        let current = all
            .iter()
            .find(|r| name(&r.metadata) == current_name)
            .map_or_else(|| update.clone(), |r| r.as_ref().clone());
        Ok(Revisions {
            all,
            current,
            update,
            collision_count,
        })
    }
}
