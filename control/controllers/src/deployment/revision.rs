//! The new ReplicaSet of a Deployment: named and labelled by a hash of the
//! pod template (so each template has exactly one ReplicaSet and a second
//! create of it is a harmless AlreadyExists), and numbered by revision so
//! `kubectl rollout history/undo` can list and return to old templates.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::{
    annotation, d_min_ready_s, d_replicas, d_template, rolling, rs_replicas, rs_template,
    set_annotation, to_i32, Controller, State, DESIRED_REPLICAS, HASH_LABEL, MAX_REPLICAS,
    REVISION, REVISION_HISTORY,
};
use crate::reconcile::{controller_ref, name, namespace, owner_ref, uid};

/// Deployment annotations that are not copied to its ReplicaSets.
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Kubernetes' safe alphabet for generated names (no vowels, no look-alikes).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template-hash of `template` (FNV-1a 32 over its canonical JSON,
/// plus the collision count), spelled like Kubernetes' (`SafeEncodeString`
/// of the decimal value, up to 10 characters).
pub(super) fn template_hash(
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> serde_json::Result<String> {
    // Through a Value: its maps are sorted, so this text is canonical.
    let canonical = serde_json::to_value(without_hash(template))?.to_string();
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(canonical.as_bytes());
    if let Some(c) = collision_count {
        feed(&i64::from(c).to_le_bytes());
    }
    Ok(h.to_string()
        .bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect())
}

fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    t
}

/// Equal pod templates, ignoring the pod-template-hash label.
pub(super) fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// The revision annotation of `rs` (0 when absent or not a number).
pub(super) fn revision_of(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The API answered with this Status reason (e.g. `AlreadyExists`).
fn is_reason(e: &kube::Error, reason: &str) -> bool {
    matches!(e, kube::Error::Api(s) if s.reason == reason)
}

impl Controller {
    /// Brings the new ReplicaSet's revision and copied annotations up to
    /// date, creating it first when `create` (Kubernetes'
    /// `getAllReplicaSetsAndSyncRevision`), then records the revision on
    /// the Deployment.
    pub(super) async fn sync_revision(&self, st: &mut State, create: bool) -> kube::Result<()> {
        let next = st.old.iter().map(revision_of).max().unwrap_or(0) + 1;
        match st.new_rs.take() {
            Some(rs) => st.new_rs = Some(self.update_new_rs(&st.d, rs, next).await?),
            None if create => {
                st.new_rs = self.create_new_rs(st, next).await?;
                st.created_new = st.new_rs.is_some();
            }
            None => {}
        }
        let Some(rev) = st.new_rs.as_ref().map(|rs| revision_of(rs).to_string()) else {
            return Ok(());
        };
        if annotation(&st.d.metadata, REVISION) != Some(rev.as_str()) {
            let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
            st.d = self
                .deployment_api(&st.d)
                .patch(
                    name(&st.d.metadata),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        Ok(())
    }

    /// Sets the revision (when an old template comes back it gets the next
    /// number, the previous one going to revision-history) and copies the
    /// Deployment's annotations and minReadySeconds.
    async fn update_new_rs(
        &self,
        d: &Deployment,
        rs: ReplicaSet,
        next: i64,
    ) -> kube::Result<ReplicaSet> {
        let mut updated = rs.clone();
        let current = revision_of(&rs);
        if current < next {
            if current > 0 {
                let history = match annotation(&rs.metadata, REVISION_HISTORY) {
                    Some(h) if !h.is_empty() => format!("{h},{current}"),
                    _ => current.to_string(),
                };
                set_annotation(&mut updated.metadata, REVISION_HISTORY, &history);
            }
            set_annotation(&mut updated.metadata, REVISION, &next.to_string());
        }
        copy_annotations(d, &mut updated.metadata);
        let min_ready_s = d_min_ready_s(d);
        let spec = updated.spec.get_or_insert_with(ReplicaSetSpec::default);
        if i64::from(spec.min_ready_seconds.unwrap_or(0)) != min_ready_s {
            spec.min_ready_seconds = Some(to_i32(min_ready_s));
        }
        if updated == rs {
            return Ok(rs);
        }
        self.rs_api(&rs)
            .replace(name(&rs.metadata), &PostParams::default(), &updated)
            .await
    }

    /// Creates the ReplicaSet of the current template, already sized for
    /// the first rollout step. `None` after a hash collision (retried with
    /// a bumped `status.collisionCount`).
    async fn create_new_rs(&self, st: &State, revision: i64) -> kube::Result<Option<ReplicaSet>> {
        let d = &st.d;
        let Some(template) = d_template(d) else {
            return Ok(None);
        };
        let collisions = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(template, collisions).map_err(kube::Error::SerdeError)?;
        let old_total: i64 = st.old.iter().map(rs_replicas).sum();
        let replicas = rolling::new_rs_replicas(d, old_total, 0);
        let rs = new_rs_object(d, template, &hash, revision, replicas);
        match self.rs_api(&rs).create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if replicas > 0 {
                    let msg = format!(
                        "Scaled up replica set {} from 0 to {replicas}",
                        name(&created.metadata)
                    );
                    self.event(d, "ScalingReplicaSet", msg);
                }
                Ok(Some(created))
            }
            Err(e) if is_reason(&e, "AlreadyExists") => self.existing_or_collision(d, &rs).await,
            Err(e) => Err(e),
        }
    }

    /// The ReplicaSet named like ours exists: ours if it is controlled by
    /// the Deployment with the same template (our cache lagged), otherwise
    /// a hash collision, resolved by bumping `status.collisionCount`.
    async fn existing_or_collision(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
    ) -> kube::Result<Option<ReplicaSet>> {
        if let Some(existing) = self.rs_api(rs).get_opt(name(&rs.metadata)).await? {
            let ours =
                controller_ref(&existing.metadata).is_some_and(|r| r.uid == uid(&d.metadata));
            let same = match (rs_template(&existing), d_template(d)) {
                (Some(a), Some(b)) => same_template(a, b),
                _ => false,
            };
            if ours && same {
                return Ok(Some(existing));
            }
        }
        let mut bumped = d.clone();
        let status = bumped.status.get_or_insert_with(Default::default);
        status.collision_count = Some(status.collision_count.unwrap_or(0).saturating_add(1));
        self.deployment_api(d)
            .replace_status(name(&d.metadata), &PostParams::default(), &bumped)
            .await?;
        Ok(None)
    }
}

/// Copies the Deployment's annotations (kubernetes.io/change-cause, ...)
/// onto its new ReplicaSet, as `kubectl rollout history` shows them.
fn copy_annotations(d: &Deployment, rs: &mut ObjectMeta) {
    let Some(from) = d.metadata.annotations.as_ref() else {
        return;
    };
    for (k, v) in from {
        if !NOT_COPIED.contains(&k.as_str()) {
            set_annotation(rs, k, v);
        }
    }
}

/// The new ReplicaSet for the Deployment's `template` with `hash`.
fn new_rs_object(
    d: &Deployment,
    template: &PodTemplateSpec,
    hash: &str,
    revision: i64,
    replicas: i64,
) -> ReplicaSet {
    let mut template = template.clone();
    let labels = template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .labels
        .get_or_insert_with(BTreeMap::new);
    labels.insert(HASH_LABEL.to_string(), hash.to_string());
    let labels = labels.clone();
    let mut selector = d
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.to_string(), hash.to_string());
    let desired = d_replicas(d);
    let annotations = BTreeMap::from([
        (REVISION.to_string(), revision.to_string()),
        (DESIRED_REPLICAS.to_string(), desired.to_string()),
        (
            MAX_REPLICAS.to_string(),
            (desired + rolling::max_surge(d)).to_string(),
        ),
    ]);
    let mut rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", name(&d.metadata))),
            namespace: Some(namespace(&d.metadata).to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_ref(d)]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(to_i32(replicas)),
            selector,
            template: Some(template),
            min_ready_seconds: d.spec.as_ref().and_then(|s| s.min_ready_seconds),
        }),
        status: None,
    };
    copy_annotations(d, &mut rs.metadata);
    rs
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn app_web() -> BTreeMap<String, String> {
        BTreeMap::from([("app".to_string(), "web".to_string())])
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(app_web()),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    fn deployment() -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("d".into()),
                uid: Some("u".into()),
                annotations: Some(BTreeMap::from([
                    ("kubernetes.io/change-cause".to_string(), "v2".to_string()),
                    (REVISION.to_string(), "4".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(4),
                selector: LabelSelector {
                    match_labels: Some(app_web()),
                    match_expressions: None,
                },
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::String("25%".into())),
                        max_unavailable: Some(IntOrString::Int(1)),
                    }),
                }),
                template: template("nginx"),
                ..DeploymentSpec::default()
            }),
            status: None,
        }
    }

    fn hash(t: &PodTemplateSpec, collisions: Option<i32>) -> String {
        template_hash(t, collisions).expect("a template serializes")
    }

    #[test]
    fn hash_is_stable_short_and_ignores_its_own_label() {
        let t = template("nginx");
        let h = hash(&t, None);
        assert!(!h.is_empty() && h.len() <= 10, "{h}");
        assert!(h.bytes().all(|b| SAFE.contains(&b)), "{h}");
        let mut labelled = t.clone();
        if let Some(l) = labelled.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert(HASH_LABEL.to_string(), h.clone());
        }
        assert_eq!(hash(&labelled, None), h);
        assert!(same_template(&labelled, &t));
        assert_ne!(hash(&t, Some(1)), h);
        let other = template("nginx:2");
        assert_ne!(hash(&other, None), h);
        assert!(!same_template(&other, &t));
    }

    #[test]
    fn hash_is_the_one_of_the_canonical_json() {
        // The same text the JSON controller hashed, so existing ReplicaSet
        // names keep matching their templates.
        let t = template("nginx");
        let text = serde_json::to_value(&t)
            .map(|v| v.to_string())
            .unwrap_or_default();
        assert_eq!(
            text,
            r#"{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"image":"nginx","name":"c"}]}}"#
        );
    }

    #[test]
    fn new_replica_set_is_labelled_annotated_and_owned() {
        let d = deployment();
        let rs = new_rs_object(&d, &template("nginx"), "abc", 5, 1);
        assert_eq!(rs.metadata.name.as_deref(), Some("web-abc"));
        let spec = rs.spec.clone().unwrap_or_default();
        let hash_of =
            |l: Option<&BTreeMap<String, String>>| l.and_then(|l| l.get(HASH_LABEL)).cloned();
        assert_eq!(
            hash_of(spec.selector.match_labels.as_ref()).as_deref(),
            Some("abc")
        );
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref());
        assert_eq!(hash_of(template_labels).as_deref(), Some("abc"));
        let a = |k: &str| annotation(&rs.metadata, k).map(str::to_string);
        assert_eq!(a(REVISION).as_deref(), Some("5"));
        assert_eq!(a(DESIRED_REPLICAS).as_deref(), Some("4"));
        assert_eq!(a(MAX_REPLICAS).as_deref(), Some("5"));
        assert_eq!(a("kubernetes.io/change-cause").as_deref(), Some("v2"));
        let owner = rs.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owner[0].kind, "Deployment");
    }
}
