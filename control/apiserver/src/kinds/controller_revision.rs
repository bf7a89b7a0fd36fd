//! ControllerRevisions (apps/v1), printed only: the owning controller and
//! the revision number.

use super::common::json::{at, int, list, text};
use super::common::table::{age, name, Col, AGE, NAME};
use super::KindOps;
use jiff::Timestamp;
use serde_json::{json, Value};

pub static CONTROLLER_REVISIONS: KindOps =
    KindOps::printed_only("apps", "controllerrevisions", COLUMNS, cells);

const COLUMNS: &[Col] = &[
    NAME,
    Col("Controller", "string", false, "Controller of the object"),
    Col("Revision", "string", false, "Revision number."),
    AGE,
];

fn cells(cr: &Value, now: Timestamp) -> Vec<Value> {
    let owner = list(cr, "metadata.ownerReferences")
        .iter()
        .find(|o| at(o, "controller").and_then(Value::as_bool) == Some(true));
    let controller = owner.map_or_else(
        || "<none>".to_string(),
        |o| {
            let group = text(o, "apiVersion")
                .rsplit_once('/')
                .map_or("", |(g, _)| g);
            let kind = match group {
                "" => text(o, "kind").to_string(),
                g => format!("{}.{g}", text(o, "kind")),
            };
            format!("{}/{}", kind.to_lowercase(), text(o, "name"))
        },
    );
    vec![
        name(cr),
        json!(controller),
        json!(int(cr, "revision")),
        age(cr, now),
    ]
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{ago, now, row_cells};
    use serde_json::json;

    #[test]
    fn controller_revision_row() {
        let cr = json!({"metadata": {"name": "web-5d", "creationTimestamp": ago(6), "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}, "revision": 2});
        assert_eq!(
            row_cells("controllerrevisions", &cr, now()),
            vec![
                json!("web-5d"),
                json!("statefulset.apps/web"),
                json!(2),
                json!("6s")
            ]
        );
    }
}
