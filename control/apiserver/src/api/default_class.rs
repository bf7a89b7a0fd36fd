//! Kubernetes' DefaultStorageClass admission: a PersistentVolumeClaim
//! created without a class (no `spec.storageClassName`, not even `""`, and
//! no beta class annotation) gets the default StorageClass, so claims
//! written for any cluster land on keel's `local-path` volumes.
//!
//! The default is the class annotated
//! `storageclass.kubernetes.io/is-default-class: "true"` (or the beta
//! annotation); with several, the newest, then the first by name, as
//! Kubernetes picks since 1.26. No default class: the claim is left alone.

use serde_json::{json, Value};

use crate::kinds::storage_class::is_default_class;
use crate::meta;
use crate::status::ApiResult;
use crate::storage::Objects;

/// The annotation that, when present, names a claim's class instead of
/// `spec.storageClassName`.
const BETA_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// Sets `spec.storageClassName` of a new claim to the default class when
/// it asks for none. Reads the classes from the store.
pub async fn assign(objects: &Objects, pvc: &mut Value) -> ApiResult<()> {
    if !wants_default(pvc) {
        return Ok(());
    }
    let info = crate::resources::find("storage.k8s.io", "v1", "storageclasses")
        .expect("storage classes are served");
    let page = objects.list(&info.prefix(None), None, 0, 0).await?;
    let classes: Vec<Value> = page.items.into_iter().map(|s| s.obj).collect();
    if let Some(name) = default_class(&classes) {
        if let Some(spec) = pvc.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("storageClassName".into(), json!(name));
        }
    }
    Ok(())
}

/// A claim whose class is unset (absent or null) and not given by the
/// beta annotation; `""` explicitly asks for no class.
fn wants_default(pvc: &Value) -> bool {
    let class_set = pvc
        .pointer("/spec/storageClassName")
        .is_some_and(|v| !v.is_null());
    let annotated = pvc
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(BETA_CLASS_ANNOTATION))
        .is_some();
    pvc.get("spec").is_some_and(Value::is_object) && !class_set && !annotated
}

/// The name of the default class among `classes`: the newest
/// (creationTimestamp), ties broken by name.
fn default_class(classes: &[Value]) -> Option<&str> {
    classes
        .iter()
        .filter(|c| is_default_class(c) && !meta::name(c).is_empty())
        .max_by(|a, b| {
            let created = |c: &Value| meta::str_field(c, "creationTimestamp").map(str::to_string);
            created(a)
                .cmp(&created(b))
                .then_with(|| meta::name(b).cmp(meta::name(a)))
        })
        .map(meta::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, default: bool, created: &str) -> Value {
        let annotations = match default {
            true => json!({"storageclass.kubernetes.io/is-default-class": "true"}),
            false => json!({}),
        };
        json!({"metadata": {"name": name, "annotations": annotations,
            "creationTimestamp": created}, "provisioner": "p"})
    }

    #[test]
    fn the_newest_default_class_wins() {
        let classes = [
            class("a", true, "2024-01-01T00:00:00Z"),
            class("b", true, "2024-02-01T00:00:00Z"),
            class("c", false, "2024-03-01T00:00:00Z"),
            class("d", true, "2024-02-01T00:00:00Z"),
        ];
        assert_eq!(default_class(&classes), Some("b"));
        assert_eq!(default_class(&classes[2..3]), None);
    }

    #[test]
    fn only_claims_without_a_class_get_the_default() {
        assert!(wants_default(&json!({"spec": {}})));
        assert!(wants_default(&json!({"spec": {"storageClassName": null}})));
        assert!(!wants_default(&json!({"spec": {"storageClassName": ""}})));
        assert!(!wants_default(&json!({"spec": {"storageClassName": "x"}})));
        let beta = json!({"metadata": {"annotations": {BETA_CLASS_ANNOTATION: "x"}}, "spec": {}});
        assert!(!wants_default(&beta));
    }
}
