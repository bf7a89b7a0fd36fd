//! What the workload kinds share: a selector that must select the pod
//! template's labels, the replica fields of Deployment, ReplicaSet,
//! StatefulSet and DaemonSet, the selector no update may change, and the
//! rolling-update budgets of Deployments and DaemonSets.

use super::errs::{at_least, child, Errs};
use super::json::{get, spec};
use super::label_selector::{label_selector, selector_is_empty, selector_matches, string_map};
use super::quantities::{at_most_100_percent, int_or_percent};
use super::update::immutable;
use crate::kinds::pod::validate::pod_template;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub const ALWAYS: &[&str] = &["Always"];

/// Selector present, non-empty, well-formed, and selecting the template's
/// labels: otherwise the controller would never see the pods it creates.
pub fn selector_matches_template(e: &mut Errs, spec: &Value, path: &str, kind: &str) {
    let sel_path = child(path, "selector");
    let Some(sel) = get(spec, "selector") else {
        e.required(&sel_path, "");
        return;
    };
    if selector_is_empty(sel) {
        let detail = format!("empty selector is invalid for {kind}");
        e.invalid(&sel_path, &Value::from(""), &detail);
        return;
    }
    label_selector(e, sel, &sel_path);
    template_labels_match(e, spec, path, |l| selector_matches(sel, l));
}

pub fn template_labels_match(
    e: &mut Errs,
    spec: &Value,
    path: &str,
    matches: impl Fn(&BTreeMap<&str, &str>) -> bool,
) {
    let tpl_labels = spec.pointer("/template/metadata/labels");
    let labels = string_map(tpl_labels.and_then(Value::as_object));
    if !matches(&labels) {
        let shown = tpl_labels.cloned().unwrap_or(Value::Object(Map::new()));
        e.invalid(
            &child(path, "template.metadata.labels"),
            &shown,
            "`selector` does not match template `labels`",
        );
    }
}

/// Shared by Deployment, ReplicaSet, StatefulSet and DaemonSet.
pub fn replicated(e: &mut Errs, spec: &Value, kind: &str) {
    at_least(e, spec, "replicas", "spec", 0);
    at_least(e, spec, "minReadySeconds", "spec", 0);
    at_least(e, spec, "revisionHistoryLimit", "spec", 0);
    selector_matches_template(e, spec, "spec", kind);
    pod_template(e, get(spec, "template"), "spec.template", ALWAYS);
}

/// A workload's selector is fixed at creation: changing it would orphan the
/// pods it already owns (Deployments, ReplicaSets, DaemonSets).
pub fn selector_is_immutable(e: &mut Errs, new: &Value, old: &Value) {
    immutable(e, spec(new), spec(old), "selector", "spec.selector");
}

/// maxSurge/maxUnavailable: valid, not both zero (no progress possible).
pub fn rolling_update(e: &mut Errs, ru: &Value, path: &str) {
    let unavailable_path = child(path, "maxUnavailable");
    let unavailable = get(ru, "maxUnavailable");
    let zero_unavailable = int_or_percent(e, unavailable, &unavailable_path);
    at_most_100_percent(e, unavailable, &unavailable_path);
    let zero_surge = int_or_percent(e, get(ru, "maxSurge"), &child(path, "maxSurge"));
    if zero_unavailable && zero_surge {
        let v = unavailable.cloned().unwrap_or(Value::Null);
        e.invalid(&unavailable_path, &v, "may not be 0 when `maxSurge` is 0");
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::common::testing::{bad, deployment, ok};
    use serde_json::json;

    #[test]
    fn workload_selectors() {
        ok(
            "apps",
            "deployments",
            &deployment(
                json!({"matchLabels": {"app": "a"}}),
                json!({"app": "a", "x": "y"}),
            ),
        );
        let d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "b"}));
        let cause = bad(
            "apps",
            "deployments",
            &d,
            "spec.template.metadata.labels",
            "FieldValueInvalid",
        );
        assert!(
            cause.message.contains("does not match template"),
            "{}",
            cause.message
        );
        bad(
            "apps",
            "deployments",
            &deployment(json!({}), json!({"app": "a"})),
            "spec.selector",
            "FieldValueInvalid",
        );
        let mut d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        d["spec"].as_object_mut().unwrap().remove("selector");
        bad(
            "apps",
            "deployments",
            &d,
            "spec.selector",
            "FieldValueRequired",
        );
        let expr = deployment(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}),
            json!({"app": "a"}),
        );
        ok("apps", "deployments", &expr);
        let expr = deployment(
            json!({"matchExpressions": [{"key": "app", "operator": "In"}]}),
            json!({"app": "a"}),
        );
        bad(
            "apps",
            "deployments",
            &expr,
            "spec.selector.matchExpressions[0].values",
            "FieldValueRequired",
        );
    }
}
