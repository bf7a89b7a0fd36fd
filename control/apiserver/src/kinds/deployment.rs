//! Deployments (apps/v1): the replicated-workload rules plus the progress
//! deadline and the rollout strategy; the defaults (one replica, 25%
//! surge and unavailability, history and deadline); the READY and
//! UP-TO-DATE row.

use super::common::decode::decode;
use super::common::defaults::{existing, object_at, set_default};
use super::common::errs::Errs;
use super::common::json::{at, get, int, int_of, spec};
use super::common::meta::NameRule;
use super::common::table::{
    age, container_cells, desired_replicas, name, Col, AGE, CONTAINERS, IMAGES, NAME, SELECTOR,
};
use super::common::workload::{replicated, rolling_update, selector_is_immutable};
use super::pod::defaults::template;
use super::{Admission, KindOps};
use crate::selector::LabelSelector;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{json, Value};

pub static DEPLOYMENTS: KindOps = KindOps {
    group: "apps",
    resource: "deployments",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<Deployment>,
        defaults: Some(defaults),
        validate: |e, obj| deployment(e, spec(obj)),
        validate_update: Some(selector_is_immutable),
    }),
    columns: COLUMNS,
    cells,
};

fn deployment(e: &mut Errs, spec: &Value) {
    replicated(e, spec, "deployment");
    if let (Some(pd), Some(mr)) = (
        int_of(spec, "progressDeadlineSeconds"),
        int_of(spec, "minReadySeconds"),
    ) {
        if pd <= mr {
            e.invalid(
                "spec.progressDeadlineSeconds",
                &Value::from(pd),
                "must be greater than minReadySeconds",
            );
        }
    }
    let Some(strategy) = get(spec, "strategy") else {
        return;
    };
    let ty = get(strategy, "type");
    e.one_of("spec.strategy.type", ty, &["Recreate", "RollingUpdate"]);
    let ru = get(strategy, "rollingUpdate");
    if ty.and_then(Value::as_str) == Some("Recreate") && ru.is_some() {
        e.forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        );
    }
    if let Some(ru) = ru {
        rolling_update(e, ru, "spec.strategy.rollingUpdate");
    }
}

fn defaults(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    if let Some(strategy) = object_at(spec, "strategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type") == Some(&json!("RollingUpdate")) {
            if let Some(ru) = object_at(strategy, "rollingUpdate") {
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
        }
    }
    template(spec);
}

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Ready",
        "string",
        false,
        "Number of the pod with ready state",
    ),
    Col(
        "Up-to-date",
        "string",
        false,
        "Pods running the latest template.",
    ),
    Col("Available", "string", false, "Pods available to users."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cells(d: &Value, now: Timestamp) -> Vec<Value> {
    let selector = match LabelSelector::from_json(at(d, "spec.selector").unwrap_or(&Value::Null)) {
        Ok(s) => s.to_string(),
        Err(_) => "<invalid>".into(),
    };
    let [names, images] = container_cells(at(d, "spec.template.spec"));
    vec![
        name(d),
        json!(format!(
            "{}/{}",
            int(d, "status.readyReplicas"),
            desired_replicas(d)
        )),
        json!(int(d, "status.updatedReplicas")),
        json!(int(d, "status.availableReplicas")),
        age(d, now),
        names,
        images,
        json!(selector),
    ]
}

#[cfg(test)]
mod admission_tests {
    use crate::admission::validate_update;
    use crate::kinds::common::testing::{bad, defaulted, deployment, fields, ok, pod_template};
    use serde_json::json;

    #[test]
    fn workload_fields() {
        let mut d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        d["spec"]["replicas"] = json!(-1);
        bad(
            "apps",
            "deployments",
            &d,
            "spec.replicas",
            "FieldValueInvalid",
        );
        d["spec"]["replicas"] = json!(1);
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        bad(
            "apps",
            "deployments",
            &d,
            "spec.template.spec.restartPolicy",
            "FieldValueNotSupported",
        );
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        d["spec"]["template"]["spec"]["containers"][0]["name"] = json!("B");
        bad(
            "apps",
            "deployments",
            &d,
            "spec.template.spec.containers[0].name",
            "FieldValueInvalid",
        );
        d["spec"]["template"]["spec"]["containers"][0]["name"] = json!("b");
        d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        bad(
            "apps",
            "deployments",
            &d,
            "spec.strategy.rollingUpdate.maxUnavailable",
            "FieldValueInvalid",
        );
        d["spec"]["strategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "x"}});
        bad(
            "apps",
            "deployments",
            &d,
            "spec.strategy.rollingUpdate.maxSurge",
            "FieldValueInvalid",
        );
        d["spec"]["strategy"] = json!({"type": "Recreate"});
        ok("apps", "deployments", &d);
    }

    #[test]
    fn deployment_update_rules() {
        let old = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        assert!(validate_update("apps", "deployments", &new, &old).is_empty());
        new["spec"]["selector"] = json!({"matchLabels": {"app": "a", "b": "c"}});
        new["spec"]["template"]["metadata"]["labels"]["b"] = json!("c");
        assert_eq!(
            fields(&validate_update("apps", "deployments", &new, &old)),
            vec!["spec.selector FieldValueInvalid"]
        );
    }

    #[test]
    fn deployment_defaults() {
        let d = defaulted(
            "apps",
            "deployments",
            json!({"spec": {"template":
            pod_template(json!([{"name": "c", "image": "x"}]))}}),
        );
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        let d = defaulted(
            "apps",
            "deployments",
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert!(d["spec"]["strategy"].get("rollingUpdate").is_none());
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn deployment_row() {
        let d = json!({
            "metadata": meta("web"),
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "a", "image": "nginx:1"},
                                                          {"name": "b", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            row_cells("deployments", &d, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("6s"),
                json!("a,b"),
                json!("nginx:1,busybox"),
                json!("app=web")
            ]
        );
        let bare = json!({"metadata": {"name": "b"}});
        assert_eq!(
            row_cells("deployments", &bare, now()),
            vec![
                json!("b"),
                json!("0/1"),
                json!(0),
                json!(0),
                json!("<unknown>"),
                json!(""),
                json!(""),
                json!("")
            ]
        );
    }
}
