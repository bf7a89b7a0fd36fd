//! ControllerRevision history shared by the StatefulSet and DaemonSet
//! controllers (Kubernetes' `pkg/controller/history`).
//!
//! A revision snapshots an owner's pod template as the strategic merge
//! patch `{"spec":{"template":{...,"$patch":"replace"}}}`: that is what
//! `kubectl rollout history --revision=N` applies to show a template and
//! what `kubectl rollout undo` sends back to the owner as a
//! `strategic-merge-patch`, so the data must have exactly this shape.
//!
//! Guarantees:
//! - a revision is named `<owner>-<hash>` and labelled
//!   `controller-revision-hash: <hash>`, the hash covering the data (and
//!   the owner's collision count), so equal templates map to one name and
//!   a second create of the same revision is a harmless AlreadyExists;
//! - a revision carries the owner's template labels (kubectl finds the
//!   history by the owner's selector) and a controller ownerRef to the
//!   owner (kubectl and [`owned`] keep only revisions the owner controls);
//! - [`create_or_reuse`] never makes two revisions with equal data: an
//!   older equal one is renumbered to the next revision (a rollback keeps
//!   its revision object and moves it to the top of the history);
//! - [`truncate`] never deletes a revision named in `live` (the owner's
//!   current and update revisions and those its pods run).
//!
//! Generic over the owner: callers pass its metadata, an ownerRef to it
//! (`reconcile::owner_ref`) and its pod template as JSON.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{json, Value};

use crate::cache::Informer;
use crate::client::is_status;
use crate::reconcile::{controller_ref, created_s, name, namespace, uid};

/// The label naming a revision's hash, on revisions and on the pods made
/// from them (a StatefulSet's pods hold the revision *name* there, a
/// DaemonSet's the hash, as in Kubernetes).
pub const HASH_LABEL: &str = "controller-revision-hash";

/// Kubernetes' safe alphabet for generated names (no vowels, no look-alikes).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Longest owner-name prefix of a revision name (Kubernetes': 253 minus
/// room for the hash).
const MAX_PREFIX: usize = 223;

/// The data of a revision of an owner with pod template `template` (its
/// `spec.template` as JSON): a strategic merge patch that replaces the
/// owner's template with this one.
pub fn template_patch(template: &Value) -> Value {
    let mut t = match template {
        Value::Object(_) => template.clone(),
        _ => json!({}),
    };
    t["$patch"] = json!("replace");
    json!({"spec": {"template": t}})
}

/// The pod template inside revision data from [`template_patch`] (without
/// the `$patch` directive), if the data has that shape.
pub fn template_of(data: &Value) -> Option<Value> {
    let mut t = data.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    Some(t)
}

/// The hash of revision data with `collision_count` (FNV-1 32 over the
/// canonical JSON, then the count in decimal, as Kubernetes'
/// `HashControllerRevision`), spelled in the safe alphabet.
pub fn hash(data: &Value, collision_count: i32) -> String {
    // serde_json's maps are sorted, so this text is canonical.
    let canonical = data.to_string();
    let mut h: u32 = 0x811c_9dc5;
    let bytes = canonical
        .bytes()
        .chain(collision_count.to_string().into_bytes());
    for b in bytes {
        h = h.wrapping_mul(0x0100_0193);
        h ^= u32::from(b);
    }
    h.to_string()
        .bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect()
}

/// `<owner>-<hash>`, the owner's name cut to keep it a valid name.
pub fn revision_name(owner_name: &str, hash: &str) -> String {
    let prefix: String = owner_name.chars().take(MAX_PREFIX).collect();
    format!("{prefix}-{hash}")
}

/// The hash label of `rev` (what a DaemonSet's pods carry).
pub fn hash_of(rev: &ControllerRevision) -> Option<&str> {
    rev.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

/// The data of `rev` (`Null` when absent).
pub fn data_of(rev: &ControllerRevision) -> &Value {
    rev.data.as_ref().map_or(&Value::Null, |d| &d.0)
}

/// A revision of `owner` numbered `revision`, not yet created: `data`
/// from [`template_patch`], labelled with the owner's `template_labels`
/// and the hash, annotated like the owner (so `kubernetes.io/change-cause`
/// shows in `kubectl rollout history`), controlled by `owner_ref`.
pub fn new_revision(
    owner: &ObjectMeta,
    owner_ref: OwnerReference,
    template_labels: Option<&BTreeMap<String, String>>,
    data: Value,
    revision: i64,
    collision_count: i32,
) -> ControllerRevision {
    let mut rev = ControllerRevision {
        metadata: ObjectMeta {
            namespace: owner.namespace.clone(),
            labels: Some(template_labels.cloned().unwrap_or_default()),
            annotations: owner.annotations.clone(),
            owner_references: Some(vec![owner_ref]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision,
    };
    rename(&mut rev, name(owner), collision_count);
    rev
}

/// Names and labels `rev` by its hash with `collision_count`.
fn rename(rev: &mut ControllerRevision, owner_name: &str, collision_count: i32) {
    let h = hash(data_of(rev), collision_count);
    rev.metadata.name = Some(revision_name(owner_name, &h));
    rev.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.to_string(), h);
}

/// History order: by revision number, then age, then name (Kubernetes'
/// `SortControllerRevisions`).
pub fn compare(a: &ControllerRevision, b: &ControllerRevision) -> Ordering {
    a.revision
        .cmp(&b.revision)
        .then_with(|| created_s(&a.metadata).cmp(&created_s(&b.metadata)))
        .then_with(|| name(&a.metadata).cmp(name(&b.metadata)))
}

/// The revisions in `revisions` (a shared cache) whose controller is the
/// owner with metadata `owner` (by uid), oldest first.
pub fn owned(
    revisions: &Informer<ControllerRevision>,
    owner: &ObjectMeta,
) -> Vec<Arc<ControllerRevision>> {
    let mut mine = revisions.filter_in(namespace(owner), |r| controlled_by(r, owner));
    mine.sort_by(|a, b| compare(a, b));
    mine
}

/// `rev`'s controller is the owner with metadata `owner` (same uid).
pub fn controlled_by(rev: &ControllerRevision, owner: &ObjectMeta) -> bool {
    let owner_uid = uid(owner);
    !owner_uid.is_empty() && controller_ref(&rev.metadata).is_some_and(|c| c.uid == owner_uid)
}

/// The number the next new revision gets: one past the highest.
pub fn next_revision(revisions: &[Arc<ControllerRevision>]) -> i64 {
    revisions.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// Same data (Kubernetes' `EqualRevision`, compared as JSON values so
/// a re-serialisation by the API server does not matter).
pub fn equal(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    data_of(a) == data_of(b)
}

/// What [`create_or_reuse`] does with a candidate revision.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// The newest revision already has the candidate's data: use it.
    Reuse(Arc<ControllerRevision>),
    /// An older revision has it: give it this (the next) number.
    Renumber(Arc<ControllerRevision>, i64),
    /// None has it: create the candidate.
    Create,
}

/// Decides how `candidate` enters `revisions` (sorted oldest first, as
/// from [`owned`]); a renumbered revision gets `candidate.revision`.
pub fn choose(revisions: &[Arc<ControllerRevision>], candidate: &ControllerRevision) -> Choice {
    let Some(last_equal) = revisions.iter().rev().find(|r| equal(r, candidate)) else {
        return Choice::Create;
    };
    match revisions.last() {
        Some(newest) if Arc::ptr_eq(newest, last_equal) => Choice::Reuse(last_equal.clone()),
        _ => Choice::Renumber(last_equal.clone(), candidate.revision),
    }
}

/// The revision of `owner_name` holding `candidate`'s data (from
/// [`new_revision`], numbered [`next_revision`]): the existing equal one
/// (renumbered to the top when older than the newest) or `candidate`,
/// created. On a name collision with a different revision the collision
/// count goes up and the candidate is renamed; the caller stores the new
/// count in its owner's `status.collisionCount`.
pub async fn create_or_reuse(
    client: &kube::Client,
    revisions: &[Arc<ControllerRevision>],
    owner_name: &str,
    candidate: ControllerRevision,
    collision_count: &mut i32,
) -> kube::Result<ControllerRevision> {
    let api: Api<ControllerRevision> =
        Api::namespaced(client.clone(), namespace(&candidate.metadata));
    match choose(revisions, &candidate) {
        Choice::Reuse(rev) => Ok(rev.as_ref().clone()),
        Choice::Renumber(rev, number) => {
            let patch = json!({"revision": number});
            api.patch(
                name(&rev.metadata),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        }
        Choice::Create => create(&api, owner_name, candidate, collision_count).await,
    }
}

/// Creates `rev`, renaming it on each collision with another owner's or
/// other data's revision (Kubernetes' `CreateControllerRevision`).
async fn create(
    api: &Api<ControllerRevision>,
    owner_name: &str,
    mut rev: ControllerRevision,
    collision_count: &mut i32,
) -> kube::Result<ControllerRevision> {
    let owner_uid = controller_ref(&rev.metadata).map(|r| r.uid.clone());
    loop {
        rename(&mut rev, owner_name, *collision_count);
        let err = match api.create(&PostParams::default(), &rev).await {
            Ok(created) => return Ok(created),
            Err(e) if is_status(&e, 409) => e,
            Err(e) => return Err(e),
        };
        let Some(existing) = api.get_opt(name(&rev.metadata)).await? else {
            // Deleted between the two calls: create again.
            continue;
        };
        let same_owner = controller_ref(&existing.metadata).map(|r| r.uid.clone()) == owner_uid;
        if same_owner && equal(&existing, &rev) {
            return Ok(existing);
        }
        tracing::debug!(name = %name(&rev.metadata), error = %err, "revision name collision");
        *collision_count = collision_count.saturating_add(1);
    }
}

/// The revisions [`truncate`] deletes: the oldest of those not in `live`
/// (revision names) beyond `limit` of them.
pub fn prunable(
    revisions: &[Arc<ControllerRevision>],
    live: &HashSet<String>,
    limit: i32,
) -> Vec<Arc<ControllerRevision>> {
    let mut historic: Vec<&Arc<ControllerRevision>> = revisions
        .iter()
        .filter(|r| !live.contains(name(&r.metadata)))
        .collect();
    historic.sort_by(|a, b| compare(a, b));
    let keep = usize::try_from(limit.max(0)).unwrap_or(0);
    let surplus = historic.len().saturating_sub(keep);
    historic.into_iter().take(surplus).cloned().collect()
}

/// Deletes the revisions from [`prunable`] (`revisionHistoryLimit`
/// enforcement), each pinned to its uid; one already gone is fine.
pub async fn truncate(
    client: &kube::Client,
    revisions: &[Arc<ControllerRevision>],
    live: &HashSet<String>,
    limit: i32,
) -> kube::Result<()> {
    for rev in prunable(revisions, live, limit) {
        let m = &rev.metadata;
        let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace(m));
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: m.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name(m), &params).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> ObjectMeta {
        ObjectMeta {
            name: Some("web".into()),
            namespace: Some("d".into()),
            uid: Some("u1".into()),
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/change-cause".to_string(),
                "set image".to_string(),
            )])),
            ..ObjectMeta::default()
        }
    }

    fn oref() -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "web".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn template(image: &str) -> Value {
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"containers": [{"name": "c", "image": image}]}})
    }

    fn rev(image: &str, number: i64) -> Arc<ControllerRevision> {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let data = template_patch(&template(image));
        Arc::new(new_revision(
            &owner(),
            oref(),
            Some(&labels),
            data,
            number,
            0,
        ))
    }

    #[test]
    fn data_is_a_patch_replacing_the_template() {
        let data = template_patch(&template("a"));
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            data["spec"]["template"]["spec"]["containers"][0]["image"],
            "a"
        );
        assert_eq!(template_of(&data), Some(template("a")));
        assert_eq!(data.as_object().map(|o| o.len()), Some(1));
    }

    #[test]
    fn hashes_are_stable_safe_and_change_with_data_and_collisions() {
        let d = template_patch(&template("a"));
        let h = hash(&d, 0);
        assert_eq!(h, hash(&d.clone(), 0));
        assert_ne!(h, hash(&d, 1));
        assert_ne!(h, hash(&template_patch(&template("b")), 0));
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(h.bytes().all(|b| SAFE.contains(&b)), "{h}");
    }

    #[test]
    fn a_new_revision_is_named_labelled_annotated_and_owned() {
        let r = rev("a", 3);
        let h = hash(data_of(&r), 0);
        assert_eq!(name(&r.metadata), format!("web-{h}"));
        assert_eq!(hash_of(&r), Some(h.as_str()));
        let labels = r.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(r.metadata.namespace.as_deref(), Some("d"));
        assert_eq!(r.metadata.annotations, owner().annotations);
        assert_eq!(
            controller_ref(&r.metadata).map(|c| c.uid.as_str()),
            Some("u1")
        );
        assert_eq!(r.revision, 3);
    }

    #[test]
    fn only_revisions_the_owner_controls_are_its_own() {
        let r = rev("a", 1);
        assert!(controlled_by(&r, &owner()));
        let other = ObjectMeta {
            uid: Some("u2".into()),
            ..owner()
        };
        assert!(!controlled_by(&r, &other));
        let mut not_controller = r.as_ref().clone();
        if let Some(refs) = not_controller.metadata.owner_references.as_mut() {
            refs[0].controller = None;
        }
        assert!(!controlled_by(&not_controller, &owner()));
    }

    #[test]
    fn long_owner_names_are_cut() {
        let long = "x".repeat(300);
        assert_eq!(revision_name(&long, "abc").len(), MAX_PREFIX + 4);
    }

    #[test]
    fn the_newest_equal_revision_is_reused() {
        let history = vec![rev("a", 1), rev("b", 2)];
        let candidate = rev("b", next_revision(&history));
        assert_eq!(candidate.revision, 3);
        assert_eq!(
            choose(&history, &candidate),
            Choice::Reuse(history[1].clone())
        );
    }

    #[test]
    fn an_older_equal_revision_is_renumbered_as_a_rollback() {
        let history = vec![rev("a", 1), rev("b", 2)];
        let candidate = rev("a", next_revision(&history));
        assert_eq!(
            choose(&history, &candidate),
            Choice::Renumber(history[0].clone(), 3)
        );
        assert_eq!(choose(&history, &rev("c", 3)), Choice::Create);
        assert_eq!(choose(&[], &rev("c", 1)), Choice::Create);
    }

    #[test]
    fn truncation_keeps_live_revisions_and_the_newest_history() {
        let history = vec![
            rev("a", 1),
            rev("b", 2),
            rev("c", 3),
            rev("d", 4),
            rev("e", 5),
        ];
        let live: HashSet<String> = [&history[0], &history[4]]
            .iter()
            .map(|r| name(&r.metadata).to_string())
            .collect();
        let names = |v: Vec<Arc<ControllerRevision>>| -> Vec<i64> {
            v.iter().map(|r| r.revision).collect()
        };
        assert_eq!(names(prunable(&history, &live, 1)), [2, 3]);
        assert_eq!(names(prunable(&history, &live, 0)), [2, 3, 4]);
        assert_eq!(names(prunable(&history, &live, 10)), Vec::<i64>::new());
    }

    #[test]
    fn history_is_ordered_by_revision() {
        let mut v = [rev("b", 2), rev("a", 1), rev("c", 3)];
        v.sort_by(|a, b| compare(a, b));
        assert_eq!(v.iter().map(|r| r.revision).collect::<Vec<_>>(), [1, 2, 3]);
    }
}
