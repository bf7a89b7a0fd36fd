//! The cause collector every validation rule reports into, worded like
//! Kubernetes' field errors (`Required value`, `Invalid value: ...`), and the
//! field paths those causes name (`spec.containers[0].name`,
//! `metadata.labels[app]`).

use super::json::{int_of, str_of};
use crate::admission::Cause;
use serde_json::Value;

/// Collects causes, with constructors worded like Kubernetes' field errors.
#[derive(Default)]
pub struct Errs(pub Vec<Cause>);

impl Errs {
    pub fn push(&mut self, field: &str, reason: &str, message: String) {
        self.0.push(Cause {
            field: field.to_string(),
            reason: reason.to_string(),
            message,
        });
    }

    pub fn required(&mut self, field: &str, detail: &str) {
        let message = with_detail("Required value".to_string(), detail);
        self.push(field, "FieldValueRequired", message);
    }

    pub fn invalid(&mut self, field: &str, value: &Value, detail: &str) {
        let message = with_detail(format!("Invalid value: {}", show(value)), detail);
        self.push(field, "FieldValueInvalid", message);
    }

    pub fn duplicate(&mut self, field: &str, value: &Value) {
        let message = format!("Duplicate value: {}", show(value));
        self.push(field, "FieldValueDuplicate", message);
    }

    pub fn not_found(&mut self, field: &str, value: &Value) {
        let message = format!("Not found: {}", show(value));
        self.push(field, "FieldValueNotFound", message);
    }

    pub fn not_supported(&mut self, field: &str, value: &Value, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let message = format!(
            "Unsupported value: {}: supported values: {}",
            show(value),
            list.join(", ")
        );
        self.push(field, "FieldValueNotSupported", message);
    }

    pub fn forbidden(&mut self, field: &str, detail: &str) {
        self.push(field, "FieldValueForbidden", format!("Forbidden: {detail}"));
    }

    pub fn too_long(&mut self, field: &str, max: usize) {
        let message = format!("Too long: may not be more than {max} bytes");
        self.push(field, "FieldValueTooLong", message);
    }

    /// Checks that a present string is one of `allowed`.
    pub fn one_of(&mut self, field: &str, value: Option<&Value>, allowed: &[&str]) {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
                self.not_supported(field, v, allowed);
            }
        }
    }
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

/// Renders a value the way Kubernetes quotes it in messages: strings quoted,
/// numbers bare, anything else as compact JSON.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// `parent.key`, or just `key` at the root.
pub fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]` for list elements.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// `parent[key]` for map entries, as Kubernetes prints them.
pub fn key(parent: &str, key: &str) -> String {
    format!("{parent}[{key}]")
}

/// A non-empty string field, or a Required cause.
pub fn required_str<'a>(e: &mut Errs, v: &'a Value, k: &str, path: &str) -> Option<&'a str> {
    match str_of(v, k).filter(|s| !s.is_empty()) {
        Some(s) => Some(s),
        None => {
            e.required(&child(path, k), "");
            None
        }
    }
}

/// Reports an integer field below `min` (when present).
pub fn at_least(e: &mut Errs, v: &Value, k: &str, path: &str, min: i64) {
    if let Some(n) = int_of(v, k) {
        if n < min {
            let detail = if min == 0 {
                "must be greater than or equal to 0".to_string()
            } else if min == 1 {
                "must be greater than 0".to_string()
            } else {
                format!("must be greater than or equal to {min}")
            };
            e.invalid(&child(path, k), &Value::from(n), &detail);
        }
    }
}

/// Reports every message of a syntax check against one field.
pub fn syntax(e: &mut Errs, field: &str, value: &str, msgs: Vec<String>) {
    for m in msgs {
        e.invalid(field, &Value::from(value), &m);
    }
}
