//! Table helpers: the column type, the columns many kinds share, and
//! formatting over the stored JSON (ages, `<none>`, labels and selectors,
//! container lists) exactly as Kubernetes' printers
//! (`pkg/printers/internalversion`) format them.

use super::duration::human_secs;
use super::json::{at, list, text};
use crate::selector::LabelSelector;
use jiff::Timestamp;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// One column: name, JSON-schema type, wide-only, description.
pub struct Col(
    pub &'static str,
    pub &'static str,
    pub bool,
    pub &'static str,
);

/// Cells of one row, in column order.
pub type CellFn = fn(&Value, Timestamp) -> Vec<Value>;

pub const NAME: Col = Col(
    "Name",
    "string",
    false,
    "Name must be unique within a namespace.",
);
pub const AGE: Col = Col("Age", "string", false, "Time since the object was created.");
pub const CONTAINERS: Col = Col(
    "Containers",
    "string",
    true,
    "Names of each container in the template.",
);
pub const IMAGES: Col = Col(
    "Images",
    "string",
    true,
    "Images referenced by each container in the template.",
);
pub const SELECTOR: Col = Col(
    "Selector",
    "string",
    true,
    "Label selector of the pods this object manages.",
);

/// Kubernetes' generic table, for resources it has no printer for.
pub const DEFAULT_COLS: &[Col] = &[NAME, AGE];
/// Kubernetes has no printer for these kinds either, but its generic table
/// shows the creation time itself rather than an age.
pub const CREATED_AT_COLS: &[Col] = &[
    NAME,
    Col("Created At", "date", false, "Time the object was created."),
];

pub fn default_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(obj), age(obj, now)]
}

/// RFC 3339 creation time in UTC, as Kubernetes' generic table prints it
/// (Go's zero time when unset).
pub fn created_at_cells(obj: &Value, _now: Timestamp) -> Vec<Value> {
    let created = ts(obj, "metadata.creationTimestamp").map_or_else(
        || "0001-01-01T00:00:00Z".to_string(),
        |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    vec![name(obj), json!(created)]
}

/// `s`, or "<none>" when empty.
pub fn or_none(s: &str) -> String {
    if s.is_empty() { "<none>" } else { s }.to_string()
}

/// A quantity or int-or-string as Kubernetes prints it (JSON strings as-is,
/// numbers in decimal).
pub fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn ts(v: &Value, path: &str) -> Option<Timestamp> {
    text(v, path).parse().ok()
}

/// Whole seconds from `t` to `now`, truncated toward zero as Go does.
pub fn secs_between(t: Timestamp, now: Timestamp) -> i64 {
    let nanos = now.as_nanosecond() - t.as_nanosecond();
    i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX)
}

/// Age of a timestamp, "<unknown>" when absent, like translateTimestampSince.
pub fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map_or_else(|| "<unknown>".into(), |t| human_secs(secs_between(t, now)))
}

pub fn name(obj: &Value) -> Value {
    json!(text(obj, "metadata.name"))
}

pub fn age(obj: &Value, now: Timestamp) -> Value {
    json!(since(ts(obj, "metadata.creationTimestamp"), now))
}

pub fn deleting(obj: &Value) -> bool {
    at(obj, "metadata.deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// `k=v,k2=v2` sorted by key, "<none>" when empty (labels.FormatLabels).
pub fn format_labels(map: Option<&Value>) -> String {
    let Some(map) = map.and_then(Value::as_object) else {
        return "<none>".into();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    or_none(&pairs.join(","))
}

/// A metav1.LabelSelector as metav1.FormatLabelSelector prints it.
pub fn format_selector(sel: Option<&Value>) -> String {
    match LabelSelector::from_json(sel.unwrap_or(&Value::Null)) {
        Ok(s) => or_none(&s.to_string()),
        Err(_) => "<error>".into(),
    }
}

/// Container names and images of a pod spec, each comma-joined.
pub fn container_cells(spec: Option<&Value>) -> [Value; 2] {
    let containers = spec.map_or(&[][..], |s| list(s, "containers"));
    let pick = |field: &str| -> Value {
        let items: Vec<&str> = containers.iter().map(|c| text(c, field)).collect();
        json!(items.join(","))
    };
    [pick("name"), pick("image")]
}

/// Desired replicas; the API server defaults an omitted `spec.replicas` to 1.
pub fn desired_replicas(obj: &Value) -> i64 {
    at(obj, "spec.replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// `a,b,c + N more...` for lists Kubernetes truncates to `max` items.
pub fn truncated(items: &[String], max: usize, empty: &str) -> String {
    if items.is_empty() {
        return empty.to_string();
    }
    let shown = items[..items.len().min(max)].join(",");
    if items.len() > max {
        format!("{shown} + {} more...", items.len() - max)
    } else {
        shown
    }
}

pub fn text_or(obj: &Value, path: &str, default: &str) -> String {
    match text(obj, path) {
        "" => default.to_string(),
        v => v.to_string(),
    }
}

/// Whether the first condition of type `ty` is True (how Kubernetes reads
/// pod, job and readiness-gate conditions).
pub fn has_condition(obj: &Value, ty: &str) -> bool {
    list(obj, "status.conditions")
        .iter()
        .find(|c| text(c, "type") == ty)
        .is_some_and(|c| text(c, "status") == "True")
}

/// Load-balancer ingress IPs (else hostnames), sorted and de-duplicated.
pub fn lb_ingress(ingress: &[Value]) -> Vec<String> {
    let set: BTreeSet<&str> = ingress
        .iter()
        .map(|i| match text(i, "ip") {
            "" => text(i, "hostname"),
            ip => ip,
        })
        .filter(|s| !s.is_empty())
        .collect();
    set.into_iter().map(str::to_string).collect()
}
