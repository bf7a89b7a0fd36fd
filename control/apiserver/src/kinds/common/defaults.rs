//! Defaulting helpers, for the kinds' defaults after Kubernetes'
//! `SetDefaults_*` functions (`pkg/apis/*/v1/defaults.go`).
//!
//! Defaults are applied on the JSON itself rather than on a typed round trip,
//! so that fields keel does not model survive untouched. Every rule only fills
//! a field that is missing (or null), which is what makes the whole pass
//! idempotent. Values the server allocates (clusterIP, ipFamilies, nodePorts,
//! pod priority) are deliberately not invented by any kind; the one
//! exception is a Job's generated selector, which `kinds/job.rs` derives
//! from the uid the server stamps before defaulting.

use serde_json::{json, Map, Value};

/// Sets `obj[key] = value` when the field is missing or null.
pub fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        let slot = map.entry(key).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// The object at `obj[key]`, created empty when missing or null; `None` when
/// the field holds something other than an object (validation reports that).
pub fn object_at<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    set_default(obj, key, json!({}));
    obj.get_mut(key).filter(|v| v.is_object())
}

/// The existing object at `obj[key]`, without creating it.
pub fn existing<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    obj.get_mut(key).filter(|v| v.is_object())
}

/// The elements of the array at `obj[key]` (none when it is not an array).
pub fn items<'a>(obj: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    obj.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter(|v| v.is_object())
}

pub fn is_empty_map(v: Option<&Value>) -> bool {
    v.and_then(Value::as_object).is_none_or(Map::is_empty)
}
