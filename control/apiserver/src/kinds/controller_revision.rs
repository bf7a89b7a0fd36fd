//! ControllerRevisions (apps/v1): the snapshots of pod templates the
//! StatefulSet and DaemonSet controllers keep for `kubectl rollout
//! history/undo`. Data is mandatory and immutable, the revision number
//! non-negative (it may change: a rollback renumbers a revision). The
//! table shows the owning controller and the revision number.

use super::common::decode::decode;
use super::common::errs::{at_least, Errs};
use super::common::json::{at, get, int, list, text};
use super::common::meta::NameRule;
use super::common::table::{age, name, Col, AGE, NAME};
use super::common::update::immutable;
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ControllerRevision;
use serde_json::{json, Value};

pub static CONTROLLER_REVISIONS: KindOps = KindOps {
    group: "apps",
    resource: "controllerrevisions",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<ControllerRevision>,
        defaults: None,
        validate: controller_revision,
        validate_update: Some(|e, new, old| immutable(e, new, old, "data", "data")),
    }),
    columns: COLUMNS,
    cells,
};

fn controller_revision(e: &mut Errs, cr: &Value) {
    if get(cr, "data").is_none_or(Value::is_null) {
        e.required("data", "data is mandatory");
    }
    at_least(e, cr, "revision", "", 0);
}

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
mod admission_tests {
    use crate::admission::validate_update;
    use crate::kinds::common::testing::{bad, fields, meta, ok};
    use serde_json::json;

    #[test]
    fn controller_revisions_need_data_that_never_changes() {
        let cr = json!({"metadata": meta("web-1"), "revision": 1,
                        "data": {"spec": {"template": {"$patch": "replace"}}}});
        ok("apps", "controllerrevisions", &cr);
        let mut no_data = cr.clone();
        no_data.as_object_mut().map(|o| o.remove("data"));
        bad(
            "apps",
            "controllerrevisions",
            &no_data,
            "data",
            "FieldValueRequired",
        );
        let mut negative = cr.clone();
        negative["revision"] = json!(-1);
        bad(
            "apps",
            "controllerrevisions",
            &negative,
            "revision",
            "FieldValueInvalid",
        );
        let mut renumbered = cr.clone();
        renumbered["revision"] = json!(3);
        assert!(fields(&validate_update(
            "apps",
            "controllerrevisions",
            &renumbered,
            &cr
        ))
        .is_empty());
        let mut changed = cr.clone();
        changed["data"] = json!({"spec": {}});
        assert_eq!(
            fields(&validate_update(
                "apps",
                "controllerrevisions",
                &changed,
                &cr
            )),
            ["data FieldValueInvalid"]
        );
    }
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
