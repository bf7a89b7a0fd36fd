//! ReplicaSets (apps/v1): the replicated-workload rules; one replica by
//! default; a fixed selector; the DESIRED, CURRENT and READY row (which
//! ReplicationControllers print too).

use super::common::decode::decode;
use super::common::defaults::{existing, set_default};
use super::common::json::{at, int, spec};
use super::common::meta::NameRule;
use super::common::table::{
    age, container_cells, desired_replicas, format_selector, name, Col, AGE, CONTAINERS, IMAGES,
    NAME, SELECTOR,
};
use super::common::workload::{replicated, selector_is_immutable};
use super::pod::defaults::template;
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::{json, Value};

pub static REPLICA_SETS: KindOps = KindOps {
    group: "apps",
    resource: "replicasets",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<ReplicaSet>,
        defaults: Some(defaults),
        validate: |e, obj| replicated(e, spec(obj), "replicaset"),
        validate_update: Some(selector_is_immutable),
    }),
    columns: COLUMNS,
    cells,
};

fn defaults(obj: &mut Value) {
    if let Some(spec) = existing(obj, "spec") {
        set_default(spec, "replicas", json!(1));
        template(spec);
    }
}

pub const COLUMNS: &[Col] = &[
    NAME,
    Col("Desired", "integer", false, "Desired number of pods."),
    Col("Current", "integer", false, "Pods that exist."),
    Col("Ready", "integer", false, "Pods that are ready."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub fn cells(rs: &Value, now: Timestamp) -> Vec<Value> {
    let [names, images] = container_cells(at(rs, "spec.template.spec"));
    vec![
        name(rs),
        json!(desired_replicas(rs)),
        json!(int(rs, "status.replicas")),
        json!(int(rs, "status.readyReplicas")),
        age(rs, now),
        names,
        images,
        json!(format_selector(at(rs, "spec.selector"))),
    ]
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{defaulted, deployment, ok};
    use serde_json::json;

    #[test]
    fn replica_sets() {
        let rs = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        ok("apps", "replicasets", &rs);
    }

    #[test]
    fn replica_set_defaults() {
        let rs = defaulted("apps", "replicasets", json!({"spec": {}}));
        assert_eq!(rs["spec"]["replicas"], 1);
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{cell, dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn replica_set_row() {
        let rs = json!({"metadata": meta("rs"), "spec": {"replicas": 2, "selector": {}},
                        "status": {"replicas": 2, "readyReplicas": 1}});
        assert_eq!(
            &row_cells("replicasets", &rs, now())[..5],
            &[json!("rs"), json!(2), json!(2), json!(1), json!("6s")]
        );
        assert_eq!(cell("replicasets", &rs, "Selector"), "<none>");
    }
}
