//! Kubernetes' DefaultStorageClass and DefaultIngressClass admission:
//! - a PersistentVolumeClaim created without a class (no
//!   `spec.storageClassName`, not even `""`, and no beta class annotation)
//!   gets the default StorageClass, so claims written for any cluster land
//!   on keel's `local-path` volumes;
//! - an Ingress created without a class (no `spec.ingressClassName` and no
//!   `kubernetes.io/ingress.class` annotation) gets the default
//!   IngressClass, so it is routed by keel's built-in router.
//!
//! The default is the class annotated
//! `storageclass.kubernetes.io/is-default-class: "true"` (or the beta
//! annotation) / `ingressclass.kubernetes.io/is-default-class: "true"`;
//! with several, the newest, then the first by name, as Kubernetes picks
//! since 1.26. No default class: the object is left alone.

use serde_json::{json, Value};

use crate::kinds::storage_class::is_default_class;
use crate::meta;
use crate::status::ApiResult;
use crate::storage::Objects;

/// The annotation that, when present, names a claim's class instead of
/// `spec.storageClassName`.
const BETA_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";
/// The pre-IngressClass annotation naming an Ingress' class.
const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The annotation that makes an IngressClass the default one.
const DEFAULT_INGRESS_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Sets `spec.storageClassName` of a new claim to the default class when
/// it asks for none. Reads the classes from the store.
pub async fn assign(objects: &Objects, pvc: &mut Value) -> ApiResult<()> {
    if !wants_default(pvc, "storageClassName", BETA_CLASS_ANNOTATION) {
        return Ok(());
    }
    let info = crate::resources::find("storage.k8s.io", "v1", "storageclasses")
        .expect("storage classes are served");
    let page = objects.list(&info.prefix(None), None, 0, 0).await?;
    let classes: Vec<Value> = page.items.into_iter().map(|s| s.obj).collect();
    if let Some(name) = default_class(&classes, is_default_class) {
        if let Some(spec) = pvc.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("storageClassName".into(), json!(name));
        }
    }
    Ok(())
}

/// Sets `spec.ingressClassName` of a new Ingress to the default
/// IngressClass when it names no class. Reads the classes from the store.
pub async fn assign_ingress(objects: &Objects, ingress: &mut Value) -> ApiResult<()> {
    if !wants_default(ingress, "ingressClassName", INGRESS_CLASS_ANNOTATION) {
        return Ok(());
    }
    let info = crate::resources::find("networking.k8s.io", "v1", "ingressclasses")
        .expect("ingress classes are served");
    let page = objects.list(&info.prefix(None), None, 0, 0).await?;
    let classes: Vec<Value> = page.items.into_iter().map(|s| s.obj).collect();
    if let Some(name) = default_class(&classes, is_default_ingress_class) {
        if let Some(spec) = ingress.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("ingressClassName".into(), json!(name));
        }
    }
    Ok(())
}

/// An object whose `spec.<field>` is unset (absent or null) and whose class
/// is not given by `annotation`; for claims `""` explicitly asks for no
/// class.
fn wants_default(obj: &Value, field: &str, annotation: &str) -> bool {
    let class_set = obj
        .get("spec")
        .and_then(|s| s.get(field))
        .is_some_and(|v| !v.is_null());
    let annotated = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(annotation))
        .is_some();
    obj.get("spec").is_some_and(Value::is_object) && !class_set && !annotated
}

/// Whether an IngressClass carries the default-class annotation "true".
fn is_default_ingress_class(class: &Value) -> bool {
    class
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DEFAULT_INGRESS_CLASS_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true")
}

/// The name of the default class among `classes` (those `is_default`
/// accepts): the newest (creationTimestamp), ties broken by name.
fn default_class(classes: &[Value], is_default: fn(&Value) -> bool) -> Option<&str> {
    classes
        .iter()
        .filter(|c| is_default(c) && !meta::name(c).is_empty())
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
        assert_eq!(default_class(&classes, is_default_class), Some("b"));
        assert_eq!(default_class(&classes[2..3], is_default_class), None);
    }

    #[test]
    fn the_default_ingress_class_is_the_annotated_one() {
        let ic = |name: &str, default: &str| {
            json!({"metadata": {"name": name, "creationTimestamp": "2024-01-01T00:00:00Z",
                "annotations": {DEFAULT_INGRESS_CLASS_ANNOTATION: default}}})
        };
        let classes = [ic("nginx", "false"), ic("keel", "true")];
        assert_eq!(
            default_class(&classes, is_default_ingress_class),
            Some("keel")
        );
        // A StorageClass annotation does not make an IngressClass default.
        let sc = class("x", true, "2025-01-01T00:00:00Z");
        assert_eq!(default_class(&[sc], is_default_ingress_class), None);
    }

    #[test]
    fn only_ingresses_without_a_class_get_the_default() {
        let wants = |i: &Value| wants_default(i, "ingressClassName", INGRESS_CLASS_ANNOTATION);
        assert!(wants(&json!({"spec": {"rules": []}})));
        assert!(!wants(&json!({"spec": {"ingressClassName": "nginx"}})));
        let annotated =
            json!({"metadata": {"annotations": {INGRESS_CLASS_ANNOTATION: "nginx"}}, "spec": {}});
        assert!(!wants(&annotated));
    }

    #[test]
    fn only_claims_without_a_class_get_the_default() {
        let wants = |c: &Value| wants_default(c, "storageClassName", BETA_CLASS_ANNOTATION);
        assert!(wants(&json!({"spec": {}})));
        assert!(wants(&json!({"spec": {"storageClassName": null}})));
        assert!(!wants(&json!({"spec": {"storageClassName": ""}})));
        assert!(!wants(&json!({"spec": {"storageClassName": "x"}})));
        let beta = json!({"metadata": {"annotations": {BETA_CLASS_ANNOTATION: "x"}}, "spec": {}});
        assert!(!wants(&beta));
    }
}
