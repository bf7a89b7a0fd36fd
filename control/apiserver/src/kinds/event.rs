//! Events, both APIs: core/v1 events only need to point at something in
//! their namespace; events.k8s.io/v1 events must say who reported what, and
//! when. Both print alike, reading either API's field names.

use super::common::decode::decode;
use super::common::errs::{required_str, syntax, Errs};
use super::common::json::{at, get, int, str_of, text};
use super::common::meta::NameRule;
use super::common::names::qualified_name;
use super::common::table::{name, since, ts, Col};
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::{core::v1 as core, events::v1 as events};
use serde_json::{json, Value};

/// core/v1 Events.
pub static CORE_EVENTS: KindOps = KindOps {
    group: "",
    resource: "events",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<core::Event>,
        defaults: None,
        validate: core_event,
        validate_update: None,
    }),
    columns: COLUMNS,
    cells,
};

/// events.k8s.io/v1 Events.
pub static EVENTS: KindOps = KindOps {
    group: "events.k8s.io",
    resource: "events",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<events::Event>,
        defaults: None,
        validate: events_event,
        validate_update: None,
    }),
    columns: COLUMNS,
    cells,
};

/// Legacy core events only need to point at something in their namespace.
fn core_event(e: &mut Errs, obj: &Value) {
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
    let involved = obj
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str);
    if let (Some(ns), Some(inv)) = (ns, involved.filter(|s| !s.is_empty())) {
        if ns != inv {
            e.invalid(
                "involvedObject.namespace",
                &Value::from(inv),
                "does not match event.namespace",
            );
        }
    }
    e.one_of(
        "type",
        get(obj, "type").filter(|t| t.as_str() != Some("")),
        &["Normal", "Warning"],
    );
}

/// events.k8s.io events must say who reported what, and when.
fn events_event(e: &mut Errs, obj: &Value) {
    if get(obj, "eventTime").is_none() {
        e.required("eventTime", "");
    }
    if let Some(c) = required_str(e, obj, "reportingController", "") {
        syntax(e, "reportingController", c, qualified_name(c));
    }
    required_str(e, obj, "reportingInstance", "");
    for k in ["action", "reason"] {
        if let Some(s) = required_str(e, obj, k, "") {
            if s.len() > 128 {
                e.too_long(k, 128);
            }
        }
    }
    match get(obj, "type") {
        None => e.required("type", ""),
        ty => e.one_of("type", ty, &["Normal", "Warning"]),
    }
    if str_of(obj, "note").is_some_and(|n| n.len() > 1024) {
        e.too_long("note", 1024);
    }
}

const COLUMNS: &[Col] = &[
    Col(
        "Last Seen",
        "string",
        false,
        "Time since the event was last seen.",
    ),
    Col("Type", "string", false, "Event type (Normal, Warning)."),
    Col("Reason", "string", false, "Short machine-readable reason."),
    Col("Object", "string", false, "The object the event is about."),
    Col("Subobject", "string", true, "Field path within the object."),
    Col(
        "Source",
        "string",
        true,
        "Component that reported the event.",
    ),
    Col("Message", "string", false, "Human-readable description."),
    Col(
        "First Seen",
        "string",
        true,
        "Time since the event was first seen.",
    ),
    Col("Count", "string", true, "Times the event occurred."),
    Col("Name", "string", true, "Name of the event object."),
];

/// LAST SEEN TYPE REASON OBJECT [SUBOBJECT SOURCE] MESSAGE [FIRST SEEN COUNT
/// NAME], from core/v1 fields with the fallbacks Kubernetes uses (eventTime,
/// series, reportingController). events.k8s.io/v1 field names (`regarding`,
/// `note`, `deprecated*`) are read too, so either stored shape prints.
fn cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    let first = match ts(ev, "firstTimestamp").or_else(|| ts(ev, "deprecatedFirstTimestamp")) {
        Some(t) => since(Some(t), now),
        None => since(ts(ev, "eventTime"), now),
    };
    let mut last = match ts(ev, "lastTimestamp").or_else(|| ts(ev, "deprecatedLastTimestamp")) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut n = int(ev, "count").max(int(ev, "deprecatedCount"));
    if at(ev, "series").is_some_and(Value::is_object) {
        last = since(ts(ev, "series.lastObservedTime"), now);
        n = int(ev, "series.count");
    } else if n == 0 {
        n = 1;
    }
    vec![
        json!(last),
        json!(text(ev, "type")),
        json!(text(ev, "reason")),
        json!(event_object(ev)),
        json!(either(
            ev,
            "involvedObject.fieldPath",
            "regarding.fieldPath"
        )),
        json!(event_source(ev)),
        json!(either(ev, "message", "note").trim()),
        json!(first),
        json!(n),
        name(ev),
    ]
}

/// The core/v1 field, else its events.k8s.io/v1 counterpart.
fn either<'a>(ev: &'a Value, core: &str, new: &str) -> &'a str {
    match text(ev, core) {
        "" => text(ev, new),
        v => v,
    }
}

/// `kind/name` in lower-case kind, or just the kind.
fn event_object(ev: &Value) -> String {
    let kind = either(ev, "involvedObject.kind", "regarding.kind").to_lowercase();
    match either(ev, "involvedObject.name", "regarding.name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    }
}

/// `component, host`, with the reporting controller/instance as fallbacks.
fn event_source(ev: &Value) -> String {
    let first_of = |paths: [&str; 3]| {
        paths
            .iter()
            .map(|p| text(ev, p))
            .find(|v| !v.is_empty())
            .unwrap_or("")
    };
    let component = first_of([
        "source.component",
        "deprecatedSource.component",
        "reportingController",
    ]);
    match first_of(["source.host", "deprecatedSource.host", "reportingInstance"]) {
        "" => component.to_string(),
        host => format!("{component}, {host}"),
    }
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, meta, ok};
    use serde_json::json;

    #[test]
    fn events_k8s_io_events() {
        let ev = json!({"metadata": meta("e"), "eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "k8s.io/x",
            "reportingInstance": "i", "action": "A", "reason": "R", "type": "Normal"});
        ok("events.k8s.io", "events", &ev);
        let mut ev2 = ev.clone();
        ev2["type"] = json!("Bad");
        bad(
            "events.k8s.io",
            "events",
            &ev2,
            "type",
            "FieldValueNotSupported",
        );
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{
        ago, column_definitions, dated_meta as meta, now, row_cells,
    };
    use serde_json::json;

    #[test]
    fn event_rows() {
        let ev = json!({
            "metadata": meta("x.123"), "type": "Normal", "reason": "Scheduled",
            "message": "Successfully assigned default/x to n1 ", "count": 0,
            "involvedObject": {"kind": "Pod", "name": "x", "fieldPath": "spec.containers{c}"},
            "source": {"component": "default-scheduler"},
            "firstTimestamp": ago(300), "lastTimestamp": ago(60)
        });
        assert_eq!(
            row_cells("events", &ev, now()),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Scheduled"),
                json!("pod/x"),
                json!("spec.containers{c}"),
                json!("default-scheduler"),
                json!("Successfully assigned default/x to n1"),
                json!("5m"),
                json!(1),
                json!("x.123")
            ]
        );
        let cols = column_definitions("events");
        assert_eq!(cols[0]["name"], "Last Seen");
        assert_eq!(
            cols[9],
            json!({"name": "Name", "type": "string", "format": "name",
                                   "description": "Name of the event object.", "priority": 1})
        );
        let series = json!({"eventTime": ago(120), "series": {"count": 4, "lastObservedTime": ago(10)},
                            "reportingController": "kubelet", "reportingInstance": "n1"});
        let row = row_cells("events", &series, now());
        assert_eq!(row[0], "10s");
        assert_eq!(row[5], "kubelet, n1");
        assert_eq!(row[7], "2m");
        assert_eq!(row[8], 4);
        let v1 = json!({"regarding": {"kind": "Deployment", "name": "web"}, "note": "Scaled up",
                        "deprecatedCount": 3, "deprecatedFirstTimestamp": ago(600),
                        "deprecatedLastTimestamp": ago(30), "deprecatedSource": {"component": "dc"}});
        let row = row_cells("events", &v1, now());
        assert_eq!(row[0], "30s");
        assert_eq!(row[3], "deployment/web");
        assert_eq!(row[5], "dc");
        assert_eq!(row[6], "Scaled up");
        assert_eq!(row[7], "10m");
        assert_eq!(row[8], 3);
    }
}
