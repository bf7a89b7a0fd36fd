//! StorageClasses (storage.k8s.io/v1), printed only: the provisioner,
//! policies, and `(default)` after the default class's name.

use super::common::json::{at, text};
use super::common::table::{age, text_or, Col, AGE, NAME};
use super::KindOps;
use jiff::Timestamp;
use serde_json::{json, Value};

pub static STORAGE_CLASSES: KindOps =
    KindOps::printed_only("storage.k8s.io", "storageclasses", COLUMNS, cells);

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Provisioner",
        "string",
        false,
        "Volume plugin that provisions volumes.",
    ),
    Col(
        "ReclaimPolicy",
        "string",
        false,
        "Reclaim policy of provisioned volumes.",
    ),
    Col(
        "VolumeBindingMode",
        "string",
        false,
        "When volumes are bound.",
    ),
    Col(
        "AllowVolumeExpansion",
        "string",
        false,
        "Whether volumes may grow.",
    ),
    AGE,
];

fn cells(sc: &Value, now: Timestamp) -> Vec<Value> {
    let annotations = at(sc, "metadata.annotations");
    let is_default = [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|k| annotations.and_then(|a| a.get(k)).and_then(Value::as_str) == Some("true"));
    let mut n = text(sc, "metadata.name").to_string();
    if is_default {
        n.push_str(" (default)");
    }
    let expand = at(sc, "allowVolumeExpansion").and_then(Value::as_bool) == Some(true);
    vec![
        json!(n),
        json!(text(sc, "provisioner")),
        json!(text_or(sc, "reclaimPolicy", "Delete")),
        json!(text_or(sc, "volumeBindingMode", "Immediate")),
        json!(expand),
        age(sc, now),
    ]
}
