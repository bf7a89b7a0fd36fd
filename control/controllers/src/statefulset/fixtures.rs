//! Objects the StatefulSet controller's unit tests share.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, PersistentVolumeClaim, PodSpec, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

fn app_web() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "web".to_string())])
}

/// `d/web` (uid `u`), 3 replicas of a one-container template, no claims.
pub(crate) fn set() -> StatefulSet {
    StatefulSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("d".into()),
            uid: Some("u".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(3),
            selector: LabelSelector {
                match_labels: Some(app_web()),
                match_expressions: None,
            },
            service_name: Some("nginx".into()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(app_web()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "c".into(),
                        image: Some("a".into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// [`set`] with a claim template `www` and template volumes `www`
/// (replaced by the claim) and `tmp`.
pub(crate) fn set_with_claims() -> StatefulSet {
    let mut s = set();
    if let Some(spec) = s.spec.as_mut() {
        if let Some(ps) = spec.template.spec.as_mut() {
            ps.volumes = Some(
                ["www", "tmp"]
                    .into_iter()
                    .map(|n| Volume {
                        name: n.into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    })
                    .collect(),
            );
        }
        spec.volume_claim_templates = Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("www".into()),
                ..ObjectMeta::default()
            },
            ..PersistentVolumeClaim::default()
        }]);
    }
    s
}

/// Sets the claim retention policy.
pub(crate) fn claim_policy(set: &mut StatefulSet, when_deleted: &str, when_scaled: &str) {
    if let Some(spec) = set.spec.as_mut() {
        spec.persistent_volume_claim_retention_policy =
            Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(when_deleted.into()),
                when_scaled: Some(when_scaled.into()),
            });
    }
}
