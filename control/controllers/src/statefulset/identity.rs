//! A StatefulSet pod's stable identity: its name `<set>-<ordinal>`, its
//! hostname and subdomain (the headless Service's DNS name), the labels
//! naming it and its revision, and its volumes pointing at its own
//! PersistentVolumeClaims, `<template>-<set>-<ordinal>`. A pod deleted
//! and recreated gets all of these back unchanged.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::spec;
use crate::history::HASH_LABEL;
use crate::reconcile::{name, namespace, owner_ref};

/// The label holding a pod's own name (a Service can select one pod).
pub(crate) const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding a pod's ordinal.
pub(crate) const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// `<set>-<ordinal>`.
pub(super) fn pod_name(set_name: &str, ordinal: i32) -> String {
    format!("{set_name}-{ordinal}")
}

/// The (parent, ordinal) a pod name encodes (`<parent>-<digits>`), if any.
pub(super) fn parent_and_ordinal(pod_name: &str) -> Option<(&str, i32)> {
    let (parent, digits) = pod_name.rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, digits.parse().ok()?))
}

/// The ordinal of `pod` if its name makes it a member of `set`.
pub(super) fn ordinal_in(set: &StatefulSet, pod: &Pod) -> Option<i32> {
    let (parent, ordinal) = parent_and_ordinal(name(&pod.metadata))?;
    (parent == name(&set.metadata)).then_some(ordinal)
}

/// The revision a pod was made from (its `controller-revision-hash`, which
/// for a StatefulSet holds the revision's name).
pub(super) fn pod_revision(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .map_or("", String::as_str)
}

/// `<template>-<set>-<ordinal>`: the claim a pod's volume `template` uses.
pub(super) fn claim_name(template: &str, set_name: &str, ordinal: i32) -> String {
    format!("{template}-{set_name}-{ordinal}")
}

/// The identity labels `pod` should carry and does not (empty when its
/// identity matches; Kubernetes' `identityMatches`).
pub(super) fn missing_identity_labels(pod: &Pod, ordinal: i32) -> BTreeMap<String, String> {
    let labels = pod.metadata.labels.as_ref();
    let want = [
        (POD_NAME_LABEL, name(&pod.metadata).to_string()),
        (POD_INDEX_LABEL, ordinal.to_string()),
    ];
    want.into_iter()
        .filter(|(k, v)| labels.and_then(|l| l.get(*k)) != Some(v))
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The pod of `set` at `ordinal`, made from `template` (the pod template
/// of revision `revision`): controlled by the set, named and labelled by
/// its identity, with hostname and subdomain set and one volume per claim
/// template (replacing a template volume of the same name).
pub(super) fn new_pod(
    set: &StatefulSet,
    template: &PodTemplateSpec,
    revision: &str,
    ordinal: i32,
) -> Pod {
    let set_name = name(&set.metadata);
    let pod_name = pod_name(set_name, ordinal);
    let tm = template.metadata.as_ref();
    let mut labels = tm.and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(HASH_LABEL.into(), revision.to_string());
    let mut pod_spec = template.spec.clone().unwrap_or_default();
    pod_spec.hostname = Some(pod_name.clone());
    let service = spec::service_name(set);
    pod_spec.subdomain = (!service.is_empty()).then(|| service.to_string());
    set_claim_volumes(set, &mut pod_spec, ordinal);
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            generate_name: Some(format!("{set_name}-")),
            namespace: Some(namespace(&set.metadata).to_string()),
            labels: Some(labels),
            annotations: tm.and_then(|m| m.annotations.clone()),
            finalizers: tm.and_then(|m| m.finalizers.clone()),
            owner_references: Some(vec![owner_ref(set)]),
            ..ObjectMeta::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// Puts a volume per claim template first, each naming the pod's claim,
/// then the template's other volumes (Kubernetes' `updateStorage`).
fn set_claim_volumes(set: &StatefulSet, pod_spec: &mut PodSpec, ordinal: i32) {
    let templates = spec::claim_templates(set);
    if templates.is_empty() {
        return;
    }
    let set_name = name(&set.metadata);
    let mut volumes: Vec<Volume> = templates
        .iter()
        .map(|t| {
            let volume = name(&t.metadata).to_string();
            Volume {
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&volume, set_name, ordinal),
                    read_only: None,
                }),
                name: volume,
                ..Volume::default()
            }
        })
        .collect();
    let own = pod_spec.volumes.take().unwrap_or_default();
    volumes.extend(
        own.into_iter()
            .filter(|v| templates.iter().all(|t| name(&t.metadata) != v.name)),
    );
    pod_spec.volumes = Some(volumes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statefulset::fixtures::set_with_claims;

    #[test]
    fn names_parse_back_to_parent_and_ordinal() {
        assert_eq!(parent_and_ordinal("web-0"), Some(("web", 0)));
        assert_eq!(parent_and_ordinal("my-web-12"), Some(("my-web", 12)));
        assert_eq!(parent_and_ordinal("web-x1"), None);
        assert_eq!(parent_and_ordinal("web-"), None);
        assert_eq!(parent_and_ordinal("web"), None);
        assert_eq!(parent_and_ordinal("web--1"), Some(("web-", 1)));
    }

    #[test]
    fn a_pod_carries_its_identity_revision_and_claims() {
        let set = set_with_claims();
        let pod = new_pod(&set, &spec::template(&set), "web-abc", 2);
        assert_eq!(name(&pod.metadata), "web-2");
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[HASH_LABEL], "web-abc");
        assert_eq!(labels["app"], "web");
        assert_eq!(pod_revision(&pod), "web-abc");
        assert!(missing_identity_labels(&pod, 2).is_empty());
        assert_eq!(missing_identity_labels(&pod, 3).len(), 1);
        let ps = pod.spec.clone().unwrap_or_default();
        assert_eq!(ps.hostname.as_deref(), Some("web-2"));
        assert_eq!(ps.subdomain.as_deref(), Some("nginx"));
        let volumes = ps.volumes.unwrap_or_default();
        let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["www", "tmp"]);
        let claim = volumes[0].persistent_volume_claim.as_ref();
        assert_eq!(claim.map(|c| c.claim_name.as_str()), Some("www-web-2"));
        let owner = &pod.metadata.owner_references.unwrap_or_default()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("StatefulSet", "u")
        );
        assert_eq!(
            ordinal_in(&set, &new_pod(&set, &spec::template(&set), "r", 7)),
            Some(7)
        );
    }
}
