//! The PersistentVolumeClaims of a StatefulSet's pods, one per claim
//! template and ordinal, and their retention policy.
//!
//! Claims outlive their pods: a recreated pod gets the same claims back.
//! `persistentVolumeClaimRetentionPolicy` decides when they go, through
//! ownerReferences the garbage collector acts on (as Kubernetes does):
//! `whenDeleted: Delete` makes the set their controller (deleting the set
//! deletes them), `whenScaled: Delete` makes a scaled-down pod their
//! controller before it is deleted (deleting the pod deletes them).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::identity::claim_name;
use super::spec;
use crate::reconcile::{controller_ref, name, namespace, owner_ref, uid};

/// The namespace's claims by name, as the controller read them.
pub(super) type Claims = HashMap<String, Arc<PersistentVolumeClaim>>;

/// The claims the pod at `ordinal` uses, as they should be created: the
/// templates named `<template>-<set>-<ordinal>`, labelled with the set's
/// selector labels too, controlled as the retention policy says for a
/// pod in range.
pub(super) fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let set_name = name(&set.metadata);
    let selector_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    spec::claim_templates(set)
        .iter()
        .map(|t| {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            let mut claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(name(&t.metadata), set_name, ordinal)),
                    namespace: Some(namespace(&set.metadata).to_string()),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    ..ObjectMeta::default()
                },
                spec: t.spec.clone(),
                status: None,
            };
            claim.metadata.owner_references = wanted_refs(set, None, &claim);
            claim
        })
        .collect()
}

/// The names of the claims of the pod at `ordinal`.
pub(super) fn claim_names(set: &StatefulSet, ordinal: i32) -> Vec<String> {
    let set_name = name(&set.metadata);
    spec::claim_templates(set)
        .iter()
        .map(|t| claim_name(name(&t.metadata), set_name, ordinal))
        .collect()
}

/// A reference from a claim to `pod` (what `reconcile::owner_ref` makes
/// for typed owners; pods come from the cache with their uid).
fn pod_ref(pod: &Pod) -> OwnerReference {
    owner_ref(pod)
}

/// The ownerReferences `claim` should have for the pod `scaled_down`
/// (`Some(pod)` when the pod is out of the set's ordinal range): the
/// claim's other references, plus the set's when `whenDeleted: Delete`
/// applies, plus the pod's when `whenScaled: Delete` applies. A claim
/// controlled by something else only loses our references (Kubernetes'
/// `updateClaimOwnerRefForSetAndPod`). `None` for no references.
pub(super) fn wanted_refs(
    set: &StatefulSet,
    scaled_down: Option<&Pod>,
    claim: &PersistentVolumeClaim,
) -> Option<Vec<OwnerReference>> {
    let set_uid = uid(&set.metadata);
    let ours = |r: &OwnerReference| r.uid == set_uid || r.kind == "Pod";
    let mut refs: Vec<OwnerReference> = claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| !ours(r))
        .cloned()
        .collect();
    let foreign_controller = controller_ref(&claim.metadata).is_some_and(|r| !ours(r));
    if !foreign_controller {
        let (when_deleted, when_scaled) = spec::delete_claims_when(set);
        match scaled_down {
            Some(pod) if when_scaled => refs.push(pod_ref(pod)),
            Some(_) if when_deleted && !when_scaled => refs.push(owner_ref(set)),
            None if when_deleted => refs.push(owner_ref(set)),
            _ => {}
        }
    }
    (!refs.is_empty()).then_some(refs)
}

/// `claim`'s references already match the policy (compared by uid and
/// controller flag, ignoring order).
pub(super) fn refs_match(
    set: &StatefulSet,
    scaled_down: Option<&Pod>,
    claim: &PersistentVolumeClaim,
) -> bool {
    let key = |refs: Option<&Vec<OwnerReference>>| {
        let mut v: Vec<(String, bool)> = refs
            .into_iter()
            .flatten()
            .map(|r| (r.uid.clone(), r.controller == Some(true)))
            .collect();
        v.sort();
        v
    };
    key(wanted_refs(set, scaled_down, claim).as_ref())
        == key(claim.metadata.owner_references.as_ref())
}

/// A claim of the not-yet-created pod at `ordinal` still belongs to an
/// earlier pod of that name that was scaled down (the garbage collector
/// is about to delete it): the pod must wait rather than reuse it
/// (Kubernetes' `PodClaimIsStale`).
pub(super) fn stale_claim(set: &StatefulSet, ordinal: i32, claims: &Claims) -> bool {
    let (_, when_scaled) = spec::delete_claims_when(set);
    when_scaled
        && claim_names(set, ordinal).iter().any(|n| {
            claims.get(n).is_some_and(|c| {
                c.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.kind == "Pod")
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statefulset::fixtures::{claim_policy, set_with_claims};

    fn pod(pod_uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-3".into()),
                namespace: Some("d".into()),
                uid: Some(pod_uid.into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn uids(refs: Option<Vec<OwnerReference>>) -> Vec<String> {
        refs.unwrap_or_default()
            .into_iter()
            .map(|r| r.uid)
            .collect()
    }

    #[test]
    fn claims_are_named_per_ordinal_and_labelled_by_the_selector() {
        let set = set_with_claims();
        let claims = new_claims(&set, 1);
        assert_eq!(claims.len(), 1);
        assert_eq!(name(&claims[0].metadata), "www-web-1");
        let labels = claims[0].metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(claims[0].metadata.owner_references, None);
        assert_eq!(claim_names(&set, 4), ["www-web-4"]);
    }

    #[test]
    fn retention_policy_decides_the_owners() {
        let mut set = set_with_claims();
        let claim = new_claims(&set, 3).remove(0);
        let p = pod("p");
        // Retain/Retain: nobody owns the claim.
        assert!(uids(wanted_refs(&set, Some(&p), &claim)).is_empty());
        claim_policy(&mut set, "Delete", "Retain");
        assert_eq!(uids(wanted_refs(&set, None, &claim)), ["u"]);
        assert_eq!(uids(wanted_refs(&set, Some(&p), &claim)), ["u"]);
        claim_policy(&mut set, "Retain", "Delete");
        assert!(uids(wanted_refs(&set, None, &claim)).is_empty());
        assert_eq!(uids(wanted_refs(&set, Some(&p), &claim)), ["p"]);
        claim_policy(&mut set, "Delete", "Delete");
        assert_eq!(uids(wanted_refs(&set, None, &claim)), ["u"]);
        assert_eq!(uids(wanted_refs(&set, Some(&p), &claim)), ["p"]);
        let created = new_claims(&set, 3).remove(0);
        assert!(refs_match(&set, None, &created));
        assert!(!refs_match(&set, Some(&p), &created));
    }

    #[test]
    fn a_claim_left_by_a_scaled_down_pod_is_stale() {
        let mut set = set_with_claims();
        claim_policy(&mut set, "Retain", "Delete");
        let mut claim = new_claims(&set, 3).remove(0);
        claim.metadata.owner_references = wanted_refs(&set, Some(&pod("p")), &claim);
        let claims: Claims = [("www-web-3".to_string(), Arc::new(claim))].into();
        assert!(stale_claim(&set, 3, &claims));
        assert!(!stale_claim(&set, 2, &claims));
        claim_policy(&mut set, "Retain", "Retain");
        assert!(!stale_claim(&set, 3, &claims));
    }
}
