//! Tolerant readers over JSON objects. A missing field, or one of the wrong
//! JSON type, reads as absent (or as Go's zero value), never as a panic:
//! stored objects come from users and controllers of varying care, and
//! strict decoding, not these readers, reports mistyped fields.

use serde_json::{Map, Value};

/// Stands in for a missing field, so rules can read through it.
static NULL: Value = Value::Null;

/// An object's `spec`, or null when it has none.
pub fn spec(obj: &Value) -> &Value {
    obj.get("spec").unwrap_or(&NULL)
}

pub fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|v| !v.is_null())
}

pub fn str_of<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

pub fn int_of(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}

pub fn map<'a>(v: &'a Value, k: &str) -> Option<&'a Map<String, Value>> {
    v.get(k).and_then(Value::as_object)
}

/// Walks a dotted path; any missing step yields None.
pub fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, seg| v.get(seg))
}

/// A string field, "" when missing or not a string.
pub fn text<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

/// An integer field, 0 when missing (Go's zero value).
pub fn int(v: &Value, path: &str) -> i64 {
    at(v, path).and_then(Value::as_i64).unwrap_or(0)
}

/// A list field, empty when missing.
pub fn list<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Number of entries of a map or list field.
pub fn count(v: &Value, path: &str) -> i64 {
    let n = match at(v, path) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    i64::try_from(n).unwrap_or(i64::MAX)
}
