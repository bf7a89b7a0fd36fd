//! PodTemplates (core/v1), printed only: containers, images and pod labels.

use super::common::json::at;
use super::common::table::{container_cells, format_labels, name, Col, NAME};
use super::KindOps;
use jiff::Timestamp;
use serde_json::{json, Value};

pub static POD_TEMPLATES: KindOps = KindOps::printed_only("", "podtemplates", COLUMNS, cells);

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Containers",
        "string",
        false,
        "Names of each container in the template.",
    ),
    Col(
        "Images",
        "string",
        false,
        "Images referenced by each container in the template.",
    ),
    Col(
        "Pod Labels",
        "string",
        false,
        "The labels for the pod template.",
    ),
];

fn cells(pt: &Value, _now: Timestamp) -> Vec<Value> {
    let [names, images] = container_cells(at(pt, "template.spec"));
    vec![
        name(pt),
        names,
        images,
        json!(format_labels(at(pt, "template.metadata.labels"))),
    ]
}
