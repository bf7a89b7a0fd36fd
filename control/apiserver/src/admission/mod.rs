//! Admission for keel-control: strict decoding, defaulting and validation of
//! Kubernetes objects kept as JSON.
//!
//! The API server runs these in Kubernetes' order: decode strictly (reject or
//! warn about unknown fields), apply defaults, then validate (create) or
//! validate against the stored object (update). What each kind decodes
//! into, defaults and checks lives in its module under `crate::kinds`;
//! these entry points find it through `kinds::of` and run what every kind
//! shares, the metadata rules.
//!
//! Validation, after Kubernetes' `pkg/apis/*/validation`, covers the
//! essentials that clients rely on being rejected, each reported at the
//! field path Kubernetes would use. Fields that `apply_defaults` always
//! fills (restartPolicy, protocol, ...) are checked when present, so objects
//! can be validated before or after defaulting. Namespaced objects must carry
//! `metadata.namespace`: the server fills it from the URL before validating,
//! as Kubernetes does.

use crate::kinds::{self, common::errs::Errs, common::meta, Admission};
use serde_json::Value;

/// Causes are part of the `Status` vocabulary; admission produces them.
pub use crate::status::Cause;

/// How `(group, resource)` is admitted; None when keel admits no such kind.
fn admission(group: &str, resource: &str) -> Option<&'static Admission> {
    kinds::of(group, resource)?.admission.as_ref()
}

/// Decodes `obj` into the k8s-openapi type for `(group, resource)`.
///
/// Ok holds the paths of the fields the type does not know, formatted like
/// Kubernetes (`spec.template.spec.containers[0].imagez`). Err holds a message
/// naming the field whose JSON does not fit the type, e.g.
/// `spec.replicas: invalid type: string "x", expected i32`, or says that the
/// resource is unknown.
pub fn unknown_fields(group: &str, resource: &str, obj: &Value) -> Result<Vec<String>, String> {
    match admission(group, resource) {
        Some(admission) => (admission.strict)(obj),
        None => Err(unknown_resource(group, resource)),
    }
}

fn unknown_resource(group: &str, resource: &str) -> String {
    format!("no decoder for resource {resource:?} in group {group:?}")
}

/// Applies Kubernetes' defaults for `(group, resource)` to `obj` in place.
/// Unknown resources and non-object input are left alone.
pub fn apply_defaults(group: &str, resource: &str, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    if let Some(defaults) = admission(group, resource).and_then(|a| a.defaults) {
        defaults(obj);
    }
}

/// Fills the fields Kubernetes always emits for `(group, resource)` (Go's
/// non-omitempty zero values, see [`kinds::common::zero`]) that `obj`
/// lacks. The API server runs it after the defaults on every write, status
/// writes included, so stored objects decode with strict typed clients.
pub fn fill_zero_values(group: &str, resource: &str, obj: &mut Value) {
    kinds::common::zero::fill(group, resource, obj);
}

/// Create-time validation of `obj` as a `(group, resource)`; empty = valid.
pub fn validate(group: &str, resource: &str, obj: &Value) -> Vec<Cause> {
    let mut e = Errs::default();
    validate_into(&mut e, group, resource, obj);
    e.0
}

/// Update-time validation: `validate(new)` plus the fields Kubernetes will
/// not let change once set. Immutable-field causes are FieldValueInvalid with
/// a message ending in "field is immutable".
pub fn validate_update(group: &str, resource: &str, new: &Value, old: &Value) -> Vec<Cause> {
    let mut e = Errs::default();
    validate_into(&mut e, group, resource, new);
    meta::meta_update(&mut e, new, old);
    if let Some(update) = admission(group, resource).and_then(|a| a.validate_update) {
        update(&mut e, new, old);
    }
    e.0
}

/// The metadata rules every kind shares, then the kind's own.
fn validate_into(e: &mut Errs, group: &str, resource: &str, obj: &Value) {
    let Some(admission) = admission(group, resource) else {
        e.invalid(
            "",
            &Value::from(format!("{group}/{resource}")),
            "no validation for this resource",
        );
        return;
    };
    if !obj.is_object() {
        e.invalid("", obj, "must be an object");
        return;
    }
    meta::object_meta(e, obj, admission.name_rule, admission.namespaced);
    (admission.validate)(e, obj);
}

pub mod limit_range;
pub mod node_restriction;
pub mod quota;
pub mod reads;

#[cfg(test)]
mod tests;
