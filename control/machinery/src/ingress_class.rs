//! Which Ingresses keel's router handles. The agents' router (keel-node)
//! and the ingress status controller both decide with these functions, so
//! an Ingress is never routed without a status or given one without a route.

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// The IngressClass keel handles.
pub const CLASS: &str = "keel";
/// The class's `spec.controller`.
pub const CONTROLLER: &str = "keel.dev/ingress";
/// The pre-IngressClass annotation naming an Ingress' class.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The annotation that makes an IngressClass the default one.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Whether keel handles `ing`: its class (`spec.ingressClassName`, else the
/// old annotation) is `keel`, or it has none and `keel` is the default.
pub fn handled(ing: &Ingress, keel_is_default: bool) -> bool {
    let class = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ing.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CLASS_ANNOTATION))
                .map(String::as_str)
        });
    match class {
        Some(c) => c == CLASS,
        None => keel_is_default,
    }
}

/// Whether `class` is keel's and annotated as the default class.
pub fn is_keel_default(class: &IngressClass) -> bool {
    class.metadata.name.as_deref() == Some(CLASS)
        && class
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
            .is_some_and(|v| v == "true")
}
