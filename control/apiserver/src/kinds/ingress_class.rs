//! IngressClasses (networking.k8s.io/v1), printed only: the controller and
//! the parameters reference.

use super::common::json::{at, text};
use super::common::table::{age, name, Col, AGE, NAME};
use super::KindOps;
use jiff::Timestamp;
use serde_json::{json, Value};

pub static INGRESS_CLASSES: KindOps =
    KindOps::printed_only("networking.k8s.io", "ingressclasses", COLUMNS, cells);

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Controller",
        "string",
        false,
        "Controller that handles this class.",
    ),
    Col(
        "Parameters",
        "string",
        false,
        "Reference to class parameters.",
    ),
    AGE,
];

fn cells(ic: &Value, now: Timestamp) -> Vec<Value> {
    let params = match at(ic, "spec.parameters") {
        Some(p) if p.is_object() => {
            let group = match text(p, "apiGroup") {
                "" => String::new(),
                g => format!(".{g}"),
            };
            format!("{}{group}/{}", text(p, "kind"), text(p, "name"))
        }
        _ => "<none>".into(),
    };
    vec![
        name(ic),
        json!(text(ic, "spec.controller")),
        json!(params),
        age(ic, now),
    ]
}
