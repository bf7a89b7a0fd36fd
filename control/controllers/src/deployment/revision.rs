//! The new ReplicaSet of a Deployment: named and labelled by a hash of the
//! pod template (so each template has exactly one ReplicaSet and a second
//! create of it is a harmless AlreadyExists), and numbered by revision so
//! `kubectl rollout history/undo` can list and return to old templates.

use serde_json::{json, Value};

use super::{
    annotation, deployment_path, rolling, set_annotation, Controller, State, DESIRED_REPLICAS,
    HASH_LABEL, MAX_REPLICAS, REVISION, REVISION_HISTORY,
};
use crate::client::{path, ClientResult};
use crate::meta;
use crate::reconcile::{int_at, namespace, owner_ref, typed};

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
pub(super) fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    // serde_json maps are sorted, so this text is canonical.
    feed(without_hash(template).to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect()
}

fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    t
}

/// Equal pod templates, ignoring the pod-template-hash label.
pub(super) fn same_template(a: &Value, b: &Value) -> bool {
    without_hash(a) == without_hash(b)
}

/// The revision annotation of `rs` (0 when absent or not a number).
pub(super) fn revision_of(rs: &Value) -> i64 {
    annotation(rs, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

impl Controller {
    /// Brings the new ReplicaSet's revision and copied annotations up to
    /// date, creating it first when `create` (Kubernetes'
    /// `getAllReplicaSetsAndSyncRevision`), then records the revision on
    /// the Deployment.
    pub(super) async fn sync_revision(&self, st: &mut State, create: bool) -> ClientResult<()> {
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
        if annotation(&st.d, REVISION) != Some(rev.as_str()) {
            let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
            let d = self
                .client
                .merge_patch(&deployment_path(&st.d), &patch)
                .await?;
            st.d = typed(d, "apps/v1", "Deployment");
        }
        Ok(())
    }

    /// Sets the revision (when an old template comes back it gets the next
    /// number, the previous one going to revision-history) and copies the
    /// Deployment's annotations and minReadySeconds.
    async fn update_new_rs(&self, d: &Value, rs: Value, next: i64) -> ClientResult<Value> {
        let mut updated = rs.clone();
        let current = revision_of(&rs);
        if current < next {
            if current > 0 {
                let history = match annotation(&rs, REVISION_HISTORY) {
                    Some(h) if !h.is_empty() => format!("{h},{current}"),
                    _ => current.to_string(),
                };
                set_annotation(&mut updated, REVISION_HISTORY, &history);
            }
            set_annotation(&mut updated, REVISION, &next.to_string());
        }
        copy_annotations(d, &mut updated);
        let min_ready = int_at(d, "/spec/minReadySeconds");
        if int_at(&rs, "/spec/minReadySeconds") != min_ready {
            updated["spec"]["minReadySeconds"] = json!(min_ready);
        }
        if updated == rs {
            return Ok(rs);
        }
        let uri = super::rs_path(&rs);
        Ok(typed(
            self.client.update(&uri, &updated).await?,
            "apps/v1",
            "ReplicaSet",
        ))
    }

    /// Creates the ReplicaSet of the current template, already sized for
    /// the first rollout step. `None` after a hash collision (retried with
    /// a bumped `status.collisionCount`).
    async fn create_new_rs(&self, st: &State, revision: i64) -> ClientResult<Option<Value>> {
        let d = &st.d;
        let collisions = d["status"]["collisionCount"].as_i64();
        let hash = template_hash(&d["spec"]["template"], collisions);
        let old_total: i64 = st.old.iter().map(|rs| int_at(rs, "/spec/replicas")).sum();
        let replicas = rolling::new_rs_replicas(d, old_total, 0);
        let rs = new_rs_object(d, &hash, revision, replicas);
        let coll = path("apps/v1", "replicasets", Some(namespace(d)), None);
        match self.client.create(&coll, &rs).await {
            Ok(created) => {
                if replicas > 0 {
                    let msg = format!(
                        "Scaled up replica set {} from 0 to {replicas}",
                        meta::name(&created)
                    );
                    self.event(d, "ScalingReplicaSet", msg);
                }
                Ok(Some(typed(created, "apps/v1", "ReplicaSet")))
            }
            Err(e) if e.reason == "AlreadyExists" => self.existing_or_collision(d, &rs).await,
            Err(e) => Err(e),
        }
    }

    /// The ReplicaSet named like ours exists: ours if it is controlled by
    /// the Deployment with the same template (our cache lagged), otherwise
    /// a hash collision, resolved by bumping `status.collisionCount`.
    async fn existing_or_collision(&self, d: &Value, rs: &Value) -> ClientResult<Option<Value>> {
        let uri = super::rs_path(rs);
        if let Some(existing) = self.client.get(&uri).await? {
            let ours = crate::reconcile::controller_ref(&existing)
                .is_some_and(|r| r["uid"].as_str() == Some(meta::uid(d)));
            if ours && same_template(&existing["spec"]["template"], &d["spec"]["template"]) {
                return Ok(Some(typed(existing, "apps/v1", "ReplicaSet")));
            }
        }
        let mut bumped = d.clone();
        let count = d["status"]["collisionCount"].as_i64().unwrap_or(0) + 1;
        bumped["status"]["collisionCount"] = json!(count);
        self.client
            .update(&(deployment_path(d) + "/status"), &bumped)
            .await?;
        Ok(None)
    }
}

/// Copies the Deployment's annotations (kubernetes.io/change-cause, ...)
/// onto its new ReplicaSet, as `kubectl rollout history` shows them.
fn copy_annotations(d: &Value, rs: &mut Value) {
    let Some(from) = d["metadata"]["annotations"].as_object() else {
        return;
    };
    for (k, v) in from {
        if NOT_COPIED.contains(&k.as_str()) {
            continue;
        }
        if let Some(v) = v.as_str() {
            set_annotation(rs, k, v);
        }
    }
}

/// The new ReplicaSet for the Deployment's template with `hash`.
fn new_rs_object(d: &Value, hash: &str, revision: i64, replicas: i64) -> Value {
    let mut template = d["spec"]["template"].clone();
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d["spec"]["selector"].clone();
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let desired = int_at(d, "/spec/replicas").max(0);
    let mut rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", meta::name(d)),
            "namespace": namespace(d),
            "labels": template["metadata"]["labels"],
            "annotations": {
                REVISION: revision.to_string(),
                DESIRED_REPLICAS: desired.to_string(),
                MAX_REPLICAS: (desired + rolling::max_surge(d)).to_string(),
            },
            "ownerReferences": [owner_ref(d)],
        },
        "spec": {"replicas": replicas, "selector": selector, "template": template},
    });
    copy_annotations(d, &mut rs);
    if let Some(m) = d["spec"]["minReadySeconds"].as_i64() {
        rs["spec"]["minReadySeconds"] = json!(m);
    }
    rs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "d", "uid": "u",
                         "annotations": {"kubernetes.io/change-cause": "v2",
                                         REVISION: "4"}},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        })
    }

    #[test]
    fn hash_is_stable_short_and_ignores_its_own_label() {
        let t = deployment()["spec"]["template"].clone();
        let h = template_hash(&t, None);
        assert!(!h.is_empty() && h.len() <= 10, "{h}");
        assert!(h.bytes().all(|b| SAFE.contains(&b)), "{h}");
        let mut labelled = t.clone();
        labelled["metadata"]["labels"][HASH_LABEL] = json!(h);
        assert_eq!(template_hash(&labelled, None), h);
        assert!(same_template(&labelled, &t));
        assert_ne!(template_hash(&t, Some(1)), h);
        let mut other = t.clone();
        other["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert_ne!(template_hash(&other, None), h);
        assert!(!same_template(&other, &t));
    }

    #[test]
    fn new_replica_set_is_labelled_annotated_and_owned() {
        let rs = new_rs_object(&deployment(), "abc", 5, 1);
        assert_eq!(rs["metadata"]["name"], "web-abc");
        assert_eq!(rs["spec"]["selector"]["matchLabels"][HASH_LABEL], "abc");
        assert_eq!(
            rs["spec"]["template"]["metadata"]["labels"][HASH_LABEL],
            "abc"
        );
        let a = &rs["metadata"]["annotations"];
        assert_eq!(a[REVISION], "5");
        assert_eq!(a[DESIRED_REPLICAS], "4");
        assert_eq!(a[MAX_REPLICAS], "5");
        assert_eq!(a["kubernetes.io/change-cause"], "v2");
        assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    }
}
