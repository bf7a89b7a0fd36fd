//! ControllerRevisions (apps/v1): the StatefulSet and DaemonSet history
//! (`kubectl rollout history/undo` reads them). `revision` is required and
//! not negative; `data` is the snapshot and never changes (Kubernetes'
//! validation); printed with the owning controller and the revision number.

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
        validate_update: Some(data_is_immutable),
    }),
    columns: COLUMNS,
    cells,
};

fn controller_revision(e: &mut Errs, cr: &Value) {
    if get(cr, "revision").is_none() {
        e.required("revision", "");
    }
    at_least(e, cr, "revision", "", 0);
}

fn data_is_immutable(e: &mut Errs, new: &Value, old: &Value) {
    immutable(e, new, old, "data", "data");
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
mod tests {
    use crate::admission::validate_update;
    use crate::kinds::common::testing::{bad, fields, meta, ok};
    use serde_json::{json, Value};

    fn cr(revision: Value, data: Value) -> Value {
        json!({"metadata": meta("web-5d"), "revision": revision, "data": data})
    }

    #[test]
    fn a_revision_needs_a_number_and_keeps_its_data() {
        let good = cr(json!(1), json!({"spec": {"template": {}}}));
        ok("apps", "controllerrevisions", &good);
        bad(
            "apps",
            "controllerrevisions",
            &cr(json!(-1), json!({})),
            "revision",
            "FieldValueInvalid",
        );
        let mut changed = good.clone();
        changed["data"] = json!({"spec": {"template": {"x": 1}}});
        let causes = validate_update("apps", "controllerrevisions", &changed, &good);
        assert_eq!(fields(&causes), ["data FieldValueInvalid"]);
        let mut renumbered = good.clone();
        renumbered["revision"] = json!(4);
        assert!(validate_update("apps", "controllerrevisions", &renumbered, &good).is_empty());
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
