//! ReplicationControllers (core/v1): a plain label-map selector that must
//! match the template; selector and labels default to the template's
//! labels; printed like ReplicaSets but with the label-map selector.

use super::common::decode::decode;
use super::common::defaults::{existing, is_empty_map, object_at, set_default};
use super::common::errs::{at_least, Errs};
use super::common::json::{at, get, map, spec};
use super::common::label_selector::string_map;
use super::common::meta::{labels, NameRule};
use super::common::table::format_labels;
use super::common::workload::{template_labels_match, ALWAYS};
use super::pod::defaults::template;
use super::pod::validate::pod_template;
use super::{replica_set, Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ReplicationController;
use serde_json::{json, Value};

pub static REPLICATION_CONTROLLERS: KindOps = KindOps {
    group: "",
    resource: "replicationcontrollers",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<ReplicationController>,
        defaults: Some(defaults),
        validate: |e, obj| replication_controller(e, spec(obj)),
        validate_update: None,
    }),
    columns: replica_set::COLUMNS,
    cells,
};

/// ReplicationControllers select by a plain label map.
fn replication_controller(e: &mut Errs, spec: &Value) {
    at_least(e, spec, "replicas", "spec", 0);
    at_least(e, spec, "minReadySeconds", "spec", 0);
    let selector = map(spec, "selector").filter(|m| !m.is_empty());
    let Some(selector) = selector else {
        e.required("spec.selector", "");
        pod_template(e, get(spec, "template"), "spec.template", ALWAYS);
        return;
    };
    labels(e, Some(selector), "spec.selector");
    let wanted = string_map(Some(selector));
    template_labels_match(e, spec, "spec", |l| {
        wanted.iter().all(|(k, v)| l.get(k) == Some(v))
    });
    if get(spec, "template").is_none() {
        e.required("spec.template", "");
        return;
    }
    pod_template(e, get(spec, "template"), "spec.template", ALWAYS);
}

/// RCs predate required selectors: selector and labels default to the
/// template's labels.
fn defaults(obj: &mut Value) {
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let Some(labels) = template_labels.filter(|l| !is_empty_map(Some(l))) {
        if let Some(spec) = existing(obj, "spec") {
            if is_empty_map(spec.get("selector")) {
                spec["selector"] = labels.clone();
            }
        }
        if let Some(meta) = object_at(obj, "metadata") {
            if is_empty_map(meta.get("labels")) {
                meta["labels"] = labels;
            }
        }
    }
    if let Some(spec) = existing(obj, "spec") {
        set_default(spec, "replicas", json!(1));
        template(spec);
    }
}

/// ReplicationControllers select with a plain label map.
fn cells(rc: &Value, now: Timestamp) -> Vec<Value> {
    let mut cells = replica_set::cells(rc, now);
    if let Some(last) = cells.last_mut() {
        *last = json!(format_labels(at(rc, "spec.selector")));
    }
    cells
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, c, defaulted, meta, ok, pod_template};
    use serde_json::json;

    #[test]
    fn replication_controllers() {
        let rc = json!({"metadata": meta("r"), "spec": {"selector": {"app": "a"},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [c("a")]}}}});
        ok("", "replicationcontrollers", &rc);
        let mut rc2 = rc.clone();
        rc2["spec"]["selector"] = json!({"app": "z"});
        bad(
            "",
            "replicationcontrollers",
            &rc2,
            "spec.template.metadata.labels",
            "FieldValueInvalid",
        );
    }

    #[test]
    fn replication_controller_defaults() {
        let rc = defaulted(
            "",
            "replicationcontrollers",
            json!({"spec": {"template":
            pod_template(json!([{"name": "c", "image": "x"}]))}}),
        );
        assert_eq!(rc["spec"]["selector"], json!({"app": "a"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "a"}));
        assert_eq!(rc["spec"]["replicas"], 1);
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{cell, dated_meta as meta};
    use serde_json::json;

    #[test]
    fn replication_controller_selector() {
        let rc = json!({"metadata": meta("rc"), "spec": {"replicas": 1, "selector": {"b": "2", "a": "1"}}});
        assert_eq!(cell("replicationcontrollers", &rc, "Selector"), "a=1,b=2");
    }
}
