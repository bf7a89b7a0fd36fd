//! Pods (core/v1). The pod spec is what every workload's template shares, so
//! its validation ([`validate`]) and defaults ([`defaults`]) are public to
//! the workload kinds; the printer ([`table`]) carries kubectl's STATUS,
//! READY and RESTARTS logic. An existing pod is immutable but for container
//! images, deadlines and added tolerations.

pub mod defaults;
mod table;
pub mod validate;

use super::common::decode::decode;
use super::common::errs::Errs;
use super::common::json::{list, spec};
use super::common::meta::NameRule;
use super::common::update::{diff_keys, without};
use super::{Admission, KindOps};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

pub static PODS: KindOps = KindOps {
    group: "",
    resource: "pods",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<Pod>,
        defaults: Some(defaults::defaults),
        validate: |e, obj| validate::pod_spec(e, spec(obj), "spec"),
        validate_update: Some(|e, new, old| pod_update(e, spec(new), spec(old))),
    }),
    columns: table::COLUMNS,
    cells: table::cells,
};

/// Pods are immutable except container images, activeDeadlineSeconds,
/// terminationGracePeriodSeconds, and added tolerations.
fn pod_update(e: &mut Errs, new: &Value, old: &Value) {
    let mutable = [
        "activeDeadlineSeconds",
        "terminationGracePeriodSeconds",
        "tolerations",
    ];
    let strip = |spec: &Value| {
        let mut s = without(spec, &mutable);
        for key in ["containers", "initContainers"] {
            let items = s.get_mut(key).and_then(Value::as_array_mut);
            for c in items.into_iter().flatten() {
                if let Some(m) = c.as_object_mut() {
                    m.remove("image");
                }
            }
        }
        s
    };
    diff_keys(e, &strip(new), &strip(old), "spec");
    let kept = list(new, "tolerations");
    if !list(old, "tolerations").iter().all(|t| kept.contains(t)) {
        e.forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::admission::validate_update;
    use crate::kinds::common::testing::{c, fields, pod};
    use serde_json::json;

    #[test]
    fn pod_update_rules() {
        let old = pod(
            json!({"containers": [c("a")], "tolerations": [{"key": "k", "operator": "Exists"}]}),
        );
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        new["spec"]["tolerations"] =
            json!([{"key": "k", "operator": "Exists"}, {"key": "j", "operator": "Exists"}]);
        new["spec"]["activeDeadlineSeconds"] = json!(10);
        assert!(validate_update("", "pods", &new, &old).is_empty());
        new["spec"]["restartPolicy"] = json!("Never");
        let causes = validate_update("", "pods", &new, &old);
        assert_eq!(
            fields(&causes),
            vec!["spec.restartPolicy FieldValueInvalid"]
        );
        assert!(causes[0].message.ends_with("field is immutable"));
        let mut removed = old.clone();
        removed["spec"]["tolerations"] = json!([]);
        assert_eq!(
            fields(&validate_update("", "pods", &removed, &old)),
            vec!["spec.tolerations FieldValueForbidden"]
        );
    }
}
