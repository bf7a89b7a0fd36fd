//! DaemonSets (apps/v1): the replicated-workload rules plus the update
//! strategy; the defaults (one unavailable node at a time, history); a fixed
//! selector; the per-node counts row.

use super::common::decode::decode;
use super::common::defaults::{existing, object_at, set_default};
use super::common::errs::Errs;
use super::common::json::{at, get, int, spec};
use super::common::meta::NameRule;
use super::common::table::{
    age, container_cells, format_labels, format_selector, name, Col, AGE, CONTAINERS, IMAGES, NAME,
    SELECTOR,
};
use super::common::workload::{replicated, rolling_update, selector_is_immutable};
use super::pod::defaults::template;
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::{json, Value};

pub static DAEMON_SETS: KindOps = KindOps {
    group: "apps",
    resource: "daemonsets",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<DaemonSet>,
        defaults: Some(defaults),
        validate: |e, obj| daemon_set(e, spec(obj)),
        validate_update: Some(selector_is_immutable),
    }),
    columns: COLUMNS,
    cells,
};

fn daemon_set(e: &mut Errs, spec: &Value) {
    replicated(e, spec, "daemonset");
    let Some(us) = get(spec, "updateStrategy") else {
        return;
    };
    let ty = get(us, "type");
    e.one_of(
        "spec.updateStrategy.type",
        ty,
        &["RollingUpdate", "OnDelete"],
    );
    if let Some(ru) = get(us, "rollingUpdate") {
        rolling_update(e, ru, "spec.updateStrategy.rollingUpdate");
    }
}

fn defaults(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(strategy) = object_at(spec, "updateStrategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type") == Some(&json!("RollingUpdate")) {
            if let Some(ru) = object_at(strategy, "rollingUpdate") {
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
        }
    }
    template(spec);
}

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Desired",
        "integer",
        false,
        "Nodes that should run the daemon pod.",
    ),
    Col(
        "Current",
        "integer",
        false,
        "Nodes running at least one daemon pod.",
    ),
    Col(
        "Ready",
        "integer",
        false,
        "Nodes whose daemon pod is ready.",
    ),
    Col(
        "Up-to-date",
        "integer",
        false,
        "Nodes running the latest template.",
    ),
    Col(
        "Available",
        "integer",
        false,
        "Nodes whose daemon pod is available.",
    ),
    Col(
        "Node Selector",
        "string",
        false,
        "Node selector of the pod template.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cells(ds: &Value, now: Timestamp) -> Vec<Value> {
    let [names, images] = container_cells(at(ds, "spec.template.spec"));
    vec![
        name(ds),
        json!(int(ds, "status.desiredNumberScheduled")),
        json!(int(ds, "status.currentNumberScheduled")),
        json!(int(ds, "status.numberReady")),
        json!(int(ds, "status.updatedNumberScheduled")),
        json!(int(ds, "status.numberAvailable")),
        json!(format_labels(at(ds, "spec.template.spec.nodeSelector"))),
        age(ds, now),
        names,
        images,
        json!(format_selector(at(ds, "spec.selector"))),
    ]
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{defaulted, deployment, ok};
    use serde_json::json;

    #[test]
    fn daemon_sets() {
        let rs = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        ok("apps", "daemonsets", &rs);
    }

    #[test]
    fn daemon_set_defaults() {
        let d = defaulted("apps", "daemonsets", json!({"spec": {}}));
        assert_eq!(
            d["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{cell, dated_meta as meta};
    use serde_json::json;

    #[test]
    fn daemon_set_counts() {
        let ds = json!({"metadata": meta("ds"),
                        "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
                        "status": {"desiredNumberScheduled": 2, "numberReady": 1}});
        assert_eq!(cell("daemonsets", &ds, "Desired"), 2);
        assert_eq!(cell("daemonsets", &ds, "Ready"), 1);
        assert_eq!(
            cell("daemonsets", &ds, "Node Selector"),
            "kubernetes.io/os=linux"
        );
    }
}
