//! Update rules: the fields Kubernetes will not let change once set.
//! Immutable-field causes are FieldValueInvalid with a message ending in
//! "field is immutable"; a ConfigMap or Secret marked immutable reports
//! FieldValueForbidden.

use super::errs::{child, Errs};
use super::json::{get, str_of};
use serde_json::{Map, Value};

pub fn immutable_msg(e: &mut Errs, path: &str, value: Option<&Value>) {
    e.invalid(path, value.unwrap_or(&Value::Null), "field is immutable");
}

/// `new[k]` must equal `old[k]`.
pub fn immutable(e: &mut Errs, new: &Value, old: &Value, k: &str, path: &str) {
    if get(new, k) != get(old, k) {
        immutable_msg(e, path, get(new, k));
    }
}

/// Once `old[k]` is set it may not change; unset-to-set is allowed.
pub fn set_once(e: &mut Errs, new: &Value, old: &Value, k: &str, path: &str) {
    let was = str_of(old, k).filter(|s| !s.is_empty());
    if was.is_some() && str_of(new, k) != was {
        immutable_msg(e, path, get(new, k));
    }
}

/// Reports every top-level key of two spec objects that differs, after the
/// caller has removed the fields it allows to change.
pub fn diff_keys(e: &mut Errs, new: &Value, old: &Value, path: &str) {
    let empty = Map::new();
    let (n, o) = (
        new.as_object().unwrap_or(&empty),
        old.as_object().unwrap_or(&empty),
    );
    let keys: std::collections::BTreeSet<&String> = n.keys().chain(o.keys()).collect();
    for k in keys {
        let (nv, ov) = (
            n.get(k).filter(|v| !v.is_null()),
            o.get(k).filter(|v| !v.is_null()),
        );
        if nv != ov {
            immutable_msg(e, &child(path, k), nv);
        }
    }
}

pub fn without(v: &Value, keys: &[&str]) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        for k in keys {
            m.remove(*k);
        }
    }
    v
}

/// ConfigMaps and Secrets marked immutable keep their data and the mark.
pub fn immutable_data(e: &mut Errs, new: &Value, old: &Value, sections: &[&str]) {
    if get(old, "immutable") != Some(&Value::Bool(true)) {
        return;
    }
    if get(new, "immutable") != Some(&Value::Bool(true)) {
        e.forbidden("immutable", "field is immutable when `immutable` is set");
    }
    for k in sections {
        if get(new, k) != get(old, k) {
            e.forbidden(k, "field is immutable when `immutable` is set");
        }
    }
}
