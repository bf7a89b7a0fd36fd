//! StatefulSets (apps/v1): the replicated-workload rules plus pod
//! management, update strategy, claim retention and claim templates; the
//! defaults; which fields an update may change; the READY row.

use super::common::decode::decode;
use super::common::defaults::{existing, items, object_at, set_default};
use super::common::errs::{at_least, child, index, syntax, Errs};
use super::common::json::{at, get, int, list, spec, str_of};
use super::common::meta::NameRule;
use super::common::names::{dns1123_label, dns1123_subdomain};
use super::common::quantities::{at_most_100_percent, int_or_percent};
use super::common::table::{
    age, container_cells, desired_replicas, name, Col, AGE, CONTAINERS, IMAGES, NAME,
};
use super::common::update::{diff_keys, without};
use super::common::workload::replicated;
use super::persistent_volume_claim::{self, pvc_spec};
use super::pod::defaults::template;
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::{json, Value};

pub static STATEFUL_SETS: KindOps = KindOps {
    group: "apps",
    resource: "statefulsets",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<StatefulSet>,
        defaults: Some(defaults),
        validate: |e, obj| stateful_set(e, spec(obj)),
        validate_update: Some(|e, new, old| stateful_set_update(e, spec(new), spec(old))),
    }),
    columns: COLUMNS,
    cells,
};

fn stateful_set(e: &mut Errs, spec: &Value) {
    replicated(e, &with_claim_volumes(spec), "statefulset");
    let pmp = get(spec, "podManagementPolicy");
    e.one_of(
        "spec.podManagementPolicy",
        pmp,
        &["OrderedReady", "Parallel"],
    );
    if let Some(us) = get(spec, "updateStrategy") {
        let ty = get(us, "type");
        e.one_of(
            "spec.updateStrategy.type",
            ty,
            &["RollingUpdate", "OnDelete"],
        );
        if let Some(ru) = get(us, "rollingUpdate") {
            rolling_update(e, ru, ty);
        }
    }
    if let Some(ordinals) = get(spec, "ordinals") {
        at_least(e, ordinals, "start", "spec.ordinals", 0);
        // Every ordinal `start .. start+replicas` must be an int32.
        let start = int(ordinals, "start");
        let last = start.saturating_add(int(spec, "replicas"));
        if start > 0 && last > i64::from(i32::MAX) {
            e.invalid(
                "spec.ordinals.start",
                &Value::from(start),
                "start + replicas must not exceed 2147483647",
            );
        }
    }
    if let Some(policy) = get(spec, "persistentVolumeClaimRetentionPolicy") {
        let p = "spec.persistentVolumeClaimRetentionPolicy";
        for k in ["whenDeleted", "whenScaled"] {
            e.one_of(&child(p, k), get(policy, k), &["Retain", "Delete"]);
        }
    }
    if let Some(name) = str_of(spec, "serviceName").filter(|s| !s.is_empty()) {
        syntax(e, "spec.serviceName", name, dns1123_label(name));
    }
    for (i, claim) in list(spec, "volumeClaimTemplates").iter().enumerate() {
        let p = index("spec.volumeClaimTemplates", i);
        let name = claim.pointer("/metadata/name").and_then(Value::as_str);
        match name.filter(|n| !n.is_empty()) {
            Some(n) => syntax(e, &child(&p, "metadata.name"), n, dns1123_subdomain(n)),
            None => e.required(&child(&p, "metadata.name"), ""),
        }
        pvc_spec(
            e,
            claim.get("spec").unwrap_or(&Value::Null),
            &child(&p, "spec"),
        );
    }
}

/// The spec as its pods will have it: each volume claim template is a
/// volume of that name (the controller adds it), so containers may mount
/// it. Kubernetes checks mounts against this union too.
fn with_claim_volumes(spec: &Value) -> Value {
    let mut spec = spec.clone();
    let claims: Vec<Value> = list(&spec, "volumeClaimTemplates")
        .iter()
        .filter_map(|c| at(c, "metadata.name").and_then(Value::as_str))
        .map(|n| json!({"name": n, "persistentVolumeClaim": {"claimName": n}}))
        .collect();
    let volumes = spec
        .pointer_mut("/template/spec")
        .and_then(Value::as_object_mut)
        .map(|ps| ps.entry("volumes").or_insert_with(|| json!([])));
    if let Some(Value::Array(volumes)) = volumes {
        for claim in claims {
            if !volumes.iter().any(|v| v.get("name") == claim.get("name")) {
                volumes.push(claim);
            }
        }
    }
    spec
}

/// `spec.updateStrategy.rollingUpdate` (of strategy type `ty`): only for
/// RollingUpdate, a partition >= 0, a maxUnavailable > 0 and <= 100%.
fn rolling_update(e: &mut Errs, ru: &Value, ty: Option<&Value>) {
    let p = "spec.updateStrategy.rollingUpdate";
    if ty.and_then(Value::as_str) != Some("RollingUpdate") {
        e.forbidden(p, "only allowed for updateStrategy 'RollingUpdate'");
    }
    at_least(e, ru, "partition", p, 0);
    let max_path = child(p, "maxUnavailable");
    let max = get(ru, "maxUnavailable");
    if int_or_percent(e, max, &max_path) {
        let v = max.cloned().unwrap_or(Value::Null);
        e.invalid(&max_path, &v, "must be greater than 0");
    }
    at_most_100_percent(e, max, &max_path);
}

/// The spec fields an update may change; any other change is refused as
/// a whole, with Kubernetes' message.
const MUTABLE: [&str; 7] = [
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// StatefulSets may only change the [`MUTABLE`] spec fields.
fn stateful_set_update(e: &mut Errs, new: &Value, old: &Value) {
    let mut changed = Errs::default();
    diff_keys(
        &mut changed,
        &without(new, &MUTABLE),
        &without(old, &MUTABLE),
        "spec",
    );
    if !changed.0.is_empty() {
        e.forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', \
             'template', 'updateStrategy', 'revisionHistoryLimit', \
             'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        );
    }
}

fn defaults(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(strategy) = object_at(spec, "updateStrategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type") == Some(&json!("RollingUpdate")) {
            if let Some(ru) = object_at(strategy, "rollingUpdate") {
                set_default(ru, "partition", json!(0));
            }
        }
    }
    if let Some(policy) = object_at(spec, "persistentVolumeClaimRetentionPolicy") {
        set_default(policy, "whenDeleted", json!("Retain"));
        set_default(policy, "whenScaled", json!("Retain"));
    }
    for claim in items(spec, "volumeClaimTemplates") {
        persistent_volume_claim::defaults(claim);
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
    AGE,
    CONTAINERS,
    IMAGES,
];

fn cells(ss: &Value, now: Timestamp) -> Vec<Value> {
    let [names, images] = container_cells(at(ss, "spec.template.spec"));
    vec![
        name(ss),
        json!(format!(
            "{}/{}",
            int(ss, "status.readyReplicas"),
            desired_replicas(ss)
        )),
        age(ss, now),
        names,
        images,
    ]
}

#[cfg(test)]
mod admission_tests {
    use crate::admission::validate_update;
    use crate::kinds::common::testing::{bad, defaulted, deployment, fields, ok};
    use serde_json::json;

    #[test]
    fn stateful_sets() {
        let rs = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        let mut ss = rs.clone();
        ss["spec"]["podManagementPolicy"] = json!("Parallel");
        ok("apps", "statefulsets", &ss);
        ss["spec"]["podManagementPolicy"] = json!("Random");
        bad(
            "apps",
            "statefulsets",
            &ss,
            "spec.podManagementPolicy",
            "FieldValueNotSupported",
        );
    }

    #[test]
    fn containers_may_mount_a_volume_claim_template() {
        let mut ss = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        ss["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
        bad(
            "apps",
            "statefulsets",
            &ss,
            "spec.template.spec.containers[0].volumeMounts[0].name",
            "FieldValueNotFound",
        );
        ss["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
        ok("apps", "statefulsets", &ss);
    }

    #[test]
    fn the_last_ordinal_must_be_an_int32() {
        let mut ss = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        ss["spec"]["replicas"] = json!(2);
        ss["spec"]["ordinals"] = json!({"start": 2147483647});
        bad(
            "apps",
            "statefulsets",
            &ss,
            "spec.ordinals.start",
            "FieldValueInvalid",
        );
        ss["spec"]["ordinals"] = json!({"start": 2147483645});
        ok("apps", "statefulsets", &ss);
    }

    #[test]
    fn stateful_set_update_strategy_and_ordinals() {
        let base = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        let mut ss = base.clone();
        ss["spec"]["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}});
        bad(
            "apps",
            "statefulsets",
            &ss,
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            "FieldValueInvalid",
        );
        ss["spec"]["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "150%"}});
        bad(
            "apps",
            "statefulsets",
            &ss,
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            "FieldValueInvalid",
        );
        ss["spec"]["updateStrategy"] =
            json!({"type": "OnDelete", "rollingUpdate": {"partition": 1}});
        bad(
            "apps",
            "statefulsets",
            &ss,
            "spec.updateStrategy.rollingUpdate",
            "FieldValueForbidden",
        );
        ss["spec"]["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%", "partition": 1}});
        ok("apps", "statefulsets", &ss);
        ss["spec"]["ordinals"] = json!({"start": -1});
        bad(
            "apps",
            "statefulsets",
            &ss,
            "spec.ordinals.start",
            "FieldValueInvalid",
        );
    }

    #[test]
    fn stateful_set_update_rules() {
        let old = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        let mut ss = old.clone();
        ss["spec"]["serviceName"] = json!("x");
        assert_eq!(
            fields(&validate_update("apps", "statefulsets", &ss, &old)),
            vec!["spec FieldValueForbidden"]
        );
        let mut ok_update = old.clone();
        ok_update["spec"]["replicas"] = json!(5);
        ok_update["spec"]["minReadySeconds"] = json!(3);
        ok_update["spec"]["ordinals"] = json!({"start": 1});
        ok_update["spec"]["persistentVolumeClaimRetentionPolicy"] =
            json!({"whenDeleted": "Delete", "whenScaled": "Retain"});
        assert!(fields(&validate_update("apps", "statefulsets", &ok_update, &old)).is_empty());
    }

    #[test]
    fn stateful_set_defaults() {
        let s = defaulted(
            "apps",
            "statefulsets",
            json!({"spec": {
            "volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}]}}),
        );
        let spec = &s["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(
            spec["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{cell, dated_meta as meta};
    use serde_json::json;

    #[test]
    fn stateful_set_ready() {
        let ss = json!({"metadata": meta("db"), "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
        assert_eq!(cell("statefulsets", &ss, "Ready"), "3/3");
    }
}
