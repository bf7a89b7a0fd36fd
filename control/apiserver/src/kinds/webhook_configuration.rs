//! Mutating and validating webhook configurations
//! (admissionregistration.k8s.io/v1), printed only: the number of webhooks.

use super::common::json::count;
use super::common::table::{age, name, Col, AGE, NAME};
use super::KindOps;
use jiff::Timestamp;
use serde_json::{json, Value};

pub static MUTATING_WEBHOOK_CONFIGURATIONS: KindOps = KindOps::printed_only(
    "admissionregistration.k8s.io",
    "mutatingwebhookconfigurations",
    COLUMNS,
    cells,
);

pub static VALIDATING_WEBHOOK_CONFIGURATIONS: KindOps = KindOps::printed_only(
    "admissionregistration.k8s.io",
    "validatingwebhookconfigurations",
    COLUMNS,
    cells,
);

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Webhooks",
        "integer",
        false,
        "Number of webhooks in this configuration.",
    ),
    AGE,
];

fn cells(w: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(w), json!(count(w, "webhooks")), age(w, now)]
}
