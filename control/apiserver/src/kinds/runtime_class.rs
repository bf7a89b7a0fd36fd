//! RuntimeClasses (node.k8s.io/v1), printed only: the CRI handler.

use super::common::json::text;
use super::common::table::{age, name, Col, AGE, NAME};
use super::KindOps;
use jiff::Timestamp;
use serde_json::{json, Value};

pub static RUNTIME_CLASSES: KindOps =
    KindOps::printed_only("node.k8s.io", "runtimeclasses", COLUMNS, cells);

const COLUMNS: &[Col] = &[
    NAME,
    Col("Handler", "string", false, "CRI handler of the class."),
    AGE,
];

fn cells(rc: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(rc), json!(text(rc, "handler")), age(rc, now)]
}
