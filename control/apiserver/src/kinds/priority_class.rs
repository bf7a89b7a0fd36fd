//! PriorityClasses (scheduling.k8s.io/v1), printed only: value, global
//! default and preemption policy.

use super::common::json::{at, int, text};
use super::common::table::{age, name, Col, AGE, NAME};
use super::KindOps;
use jiff::Timestamp;
use serde_json::{json, Value};

pub static PRIORITY_CLASSES: KindOps =
    KindOps::printed_only("scheduling.k8s.io", "priorityclasses", COLUMNS, cells);

const COLUMNS: &[Col] = &[
    NAME,
    Col("Value", "integer", false, "Priority value."),
    Col(
        "Global-Default",
        "boolean",
        false,
        "Whether this is the default class.",
    ),
    AGE,
    Col(
        "PreemptionPolicy",
        "string",
        true,
        "Whether pods of this class preempt others.",
    ),
];

fn cells(pc: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(pc),
        json!(int(pc, "value")),
        json!(at(pc, "globalDefault")
            .and_then(Value::as_bool)
            .unwrap_or(false)),
        age(pc, now),
        json!(text(pc, "preemptionPolicy")),
    ]
}
