//! Helpers for the kinds' unit tests: they validate, default and print
//! through the same entry points the API server calls.

use crate::admission::{apply_defaults, validate, Cause};
use jiff::Timestamp;
use serde_json::{json, Value};

/// `field reason` of each cause, for comparing whole lists.
pub fn fields(causes: &[Cause]) -> Vec<String> {
    causes
        .iter()
        .map(|c| format!("{} {}", c.field, c.reason))
        .collect()
}

/// Asserts `obj` is valid.
pub fn ok(group: &str, resource: &str, obj: &Value) {
    let causes = validate(group, resource, obj);
    assert!(causes.is_empty(), "{group}/{resource}: {causes:?}");
}

/// Asserts validation reports exactly one cause at `field` with `reason`.
pub fn bad(group: &str, resource: &str, obj: &Value, field: &str, reason: &str) -> Cause {
    let causes = validate(group, resource, obj);
    let hits: Vec<&Cause> = causes
        .iter()
        .filter(|c| c.field == field && c.reason == reason)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "want {field} {reason}, got {:?}",
        fields(&causes)
    );
    hits[0].clone()
}

/// Metadata for validation: a name in the default namespace.
pub fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default"})
}

/// A pod in the default namespace with this spec.
pub fn pod(spec: Value) -> Value {
    json!({"metadata": meta("p"), "spec": spec})
}

/// A container named `name` running nginx.
pub fn c(name: &str) -> Value {
    json!({"name": name, "image": "nginx"})
}

/// A valid one-replica deployment with this selector and template labels.
pub fn deployment(selector: Value, labels: Value) -> Value {
    json!({"metadata": meta("d"), "spec": {"replicas": 1, "selector": selector,
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [c("a")]}}}})
}

/// `obj` after defaults, asserting that a second pass changes nothing.
pub fn defaulted(group: &str, resource: &str, mut obj: Value) -> Value {
    apply_defaults(group, resource, &mut obj);
    let once = obj.clone();
    apply_defaults(group, resource, &mut obj);
    assert_eq!(
        obj, once,
        "defaults are not idempotent for {group}/{resource}"
    );
    obj
}

/// A pod template labelled `app: a` with these containers.
pub fn pod_template(containers: Value) -> Value {
    json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": containers}})
}

/// The fixed "now" the printing tests measure ages against.
pub fn now() -> Timestamp {
    "2026-11-22T12:00:00Z"
        .parse()
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// An ISO timestamp `secs` before `now()`.
pub fn ago(secs: i64) -> String {
    let t = Timestamp::from_second(now().as_second() - secs).unwrap_or(Timestamp::UNIX_EPOCH);
    t.to_string()
}

/// Metadata for printing: a name created six seconds before `now()`.
pub fn dated_meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default", "creationTimestamp": ago(6)})
}

/// The cell of column `col` in the row of `obj`; null when there is none.
pub fn cell(resource: &str, obj: &Value, col: &str) -> Value {
    let cols = column_definitions(resource);
    let i = cols
        .iter()
        .position(|c| c["name"] == col)
        .unwrap_or(usize::MAX);
    row_cells(resource, obj, now())
        .get(i)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The table cells of `obj`, by resource name alone: every resource the
/// printing tests name belongs to one group (both event APIs print alike).
pub fn row_cells(resource: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    crate::table::row_cells(group_of(resource), resource, obj, now)
}

/// The table columns of a resource, by resource name alone.
pub fn column_definitions(resource: &str) -> Vec<Value> {
    crate::table::column_definitions(group_of(resource), resource)
}

fn group_of(resource: &str) -> &'static str {
    crate::kinds::KINDS
        .iter()
        .find(|k| k.resource == resource)
        .map_or("", |k| k.group)
}
