//! HorizontalPodAutoscalers (autoscaling/v2): a scale target, replica
//! bounds and metric types; the defaults (one replica, CPU at 80%, the
//! documented scaling behaviour); the REFERENCE and TARGETS row.

use super::common::decode::decode;
use super::common::defaults::{existing, object_at, set_default};
use super::common::errs::{at_least, child, index, required_str, syntax, Errs};
use super::common::json::{at, get, int, int_of, list, spec, text};
use super::common::meta::NameRule;
use super::common::names::path_segment;
use super::common::table::{age, name, scalar, Col, AGE, NAME};
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::{json, Value};

pub static HORIZONTAL_POD_AUTOSCALERS: KindOps = KindOps {
    group: "autoscaling",
    resource: "horizontalpodautoscalers",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<HorizontalPodAutoscaler>,
        defaults: Some(defaults),
        validate: |e, obj| hpa(e, spec(obj)),
        validate_update: None,
    }),
    columns: COLUMNS,
    cells,
};

fn hpa(e: &mut Errs, spec: &Value) {
    let target = spec.get("scaleTargetRef").unwrap_or(&Value::Null);
    required_str(e, target, "kind", "spec.scaleTargetRef");
    if let Some(name) = required_str(e, target, "name", "spec.scaleTargetRef") {
        syntax(e, "spec.scaleTargetRef.name", name, path_segment(name));
    }
    at_least(e, spec, "minReplicas", "spec", 1);
    let max = int_of(spec, "maxReplicas");
    match max {
        None => e.required("spec.maxReplicas", ""),
        Some(m) if m < 1 => e.invalid(
            "spec.maxReplicas",
            &Value::from(m),
            "must be greater than 0",
        ),
        Some(m) => {
            if int_of(spec, "minReplicas").is_some_and(|min| min > m) {
                e.invalid(
                    "spec.maxReplicas",
                    &Value::from(m),
                    "must be greater than or equal to `minReplicas`",
                );
            }
        }
    }
    let types = [
        "Object",
        "Pods",
        "Resource",
        "ContainerResource",
        "External",
    ];
    for (i, m) in list(spec, "metrics").iter().enumerate() {
        let p = index("spec.metrics", i);
        match get(m, "type") {
            None => e.required(&child(&p, "type"), ""),
            ty => e.one_of(&child(&p, "type"), ty, &types),
        }
    }
}

/// HPA v2: one replica minimum, CPU at 80% when no metric is given, and the
/// documented scale-up/scale-down behaviour when `behavior` is present.
fn defaults(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    set_default(spec, "minReplicas", json!(1));
    let no_metrics = spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_metrics {
        spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    }
    if let Some(behavior) = existing(spec, "behavior") {
        hpa_rules(
            behavior,
            "scaleUp",
            0,
            json!([
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15}
            ]),
        );
        hpa_rules(
            behavior,
            "scaleDown",
            300,
            json!([
                {"type": "Percent", "value": 100, "periodSeconds": 15}
            ]),
        );
    }
}

fn hpa_rules(behavior: &mut Value, key: &str, window: i32, policies: Value) {
    if let Some(rules) = object_at(behavior, key) {
        set_default(rules, "stabilizationWindowSeconds", json!(window));
        set_default(rules, "selectPolicy", json!("Max"));
        set_default(rules, "policies", policies);
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col("Reference", "string", false, "The scaled object."),
    Col(
        "Targets",
        "string",
        false,
        "Current and target metric values.",
    ),
    Col("MinPods", "string", false, "Lower replica limit."),
    Col("MaxPods", "string", false, "Upper replica limit."),
    Col("Replicas", "string", false, "Current replicas."),
    AGE,
];

fn cells(hpa: &Value, now: Timestamp) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        text(hpa, "spec.scaleTargetRef.kind"),
        text(hpa, "spec.scaleTargetRef.name")
    );
    let min = at(hpa, "spec.minReplicas")
        .and_then(Value::as_i64)
        .map_or_else(|| "<unset>".into(), |n| n.to_string());
    vec![
        name(hpa),
        json!(reference),
        json!(hpa_targets(hpa)),
        json!(min),
        json!(int(hpa, "spec.maxReplicas")),
        json!(int(hpa, "status.currentReplicas")),
        age(hpa, now),
    ]
}

/// autoscaling/v2 metrics as `cpu: 40%/80%`, `1k/2k (avg)`, at most two.
fn hpa_targets(hpa: &Value) -> String {
    let specs = list(hpa, "spec.metrics");
    if specs.is_empty() {
        return hpa_v1_target(hpa);
    }
    let statuses = list(hpa, "status.currentMetrics");
    let items: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| hpa_metric(spec, statuses.get(i)))
        .collect();
    let shown = items[..items.len().min(2)].join(", ");
    if items.len() > 2 {
        format!("{shown} + {} more...", items.len() - 2)
    } else {
        shown
    }
}

/// autoscaling/v1 objects carry only a CPU utilization target.
fn hpa_v1_target(hpa: &Value) -> String {
    match at(hpa, "spec.targetCPUUtilizationPercentage").and_then(Value::as_i64) {
        None => "<none>".into(),
        Some(t) => {
            let cur = at(hpa, "status.currentCPUUtilizationPercentage")
                .and_then(Value::as_i64)
                .map_or_else(|| "<unknown>".into(), |c| format!("{c}%"));
            format!("cpu: {cur}/{t}%")
        }
    }
}

fn hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let source = |ty: &str| -> &str {
        match ty {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            _ => "external",
        }
    };
    let ty = text(spec, "type");
    if !matches!(
        ty,
        "Resource" | "ContainerResource" | "Pods" | "Object" | "External"
    ) {
        return "<unknown type>".into();
    }
    let key = source(ty);
    let target = at(spec, &format!("{key}.target")).unwrap_or(&Value::Null);
    let current = status.and_then(|s| at(s, &format!("{key}.current")));
    let cur = |field: &str| {
        scalar(current.and_then(|c| c.get(field))).unwrap_or_else(|| "<unknown>".into())
    };
    let avg = scalar(target.get("averageValue"));
    match (ty, avg) {
        ("Resource" | "ContainerResource", Some(avg)) => {
            format!(
                "{}: {}/{avg}",
                text(spec, &format!("{key}.name")),
                cur("averageValue")
            )
        }
        ("Resource" | "ContainerResource", None) => {
            let pct =
                |v: Option<String>, d: &str| v.map_or_else(|| d.to_string(), |v| format!("{v}%"));
            let c = pct(
                scalar(current.and_then(|c| c.get("averageUtilization"))),
                "<unknown>",
            );
            let t = pct(scalar(target.get("averageUtilization")), "<auto>");
            format!("{}: {c}/{t}", text(spec, &format!("{key}.name")))
        }
        ("Pods", avg) => format!("{}/{}", cur("averageValue"), avg.unwrap_or_default()),
        (_, Some(avg)) => format!("{}/{avg} (avg)", cur("averageValue")),
        (_, None) => {
            let value = scalar(target.get("value")).unwrap_or_default();
            format!("{}/{value}", cur("value"))
        }
    }
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, defaulted, meta, ok};
    use serde_json::json;

    #[test]
    fn horizontal_pod_autoscalers() {
        let hpa = |min: i64, max: i64| {
            json!({"metadata": meta("h"), "spec": {"minReplicas": min, "maxReplicas": max,
            "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}}})
        };
        ok("autoscaling", "horizontalpodautoscalers", &hpa(1, 3));
        bad(
            "autoscaling",
            "horizontalpodautoscalers",
            &hpa(4, 3),
            "spec.maxReplicas",
            "FieldValueInvalid",
        );
        bad(
            "autoscaling",
            "horizontalpodautoscalers",
            &hpa(0, 3),
            "spec.minReplicas",
            "FieldValueInvalid",
        );
    }

    #[test]
    fn hpa_defaults() {
        let hpa = defaulted(
            "autoscaling",
            "horizontalpodautoscalers",
            json!({"spec": {"maxReplicas": 3, "behavior": {}}}),
        );
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert_eq!(
            hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            300
        );
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn hpa_row() {
        let hpa = json!({"metadata": meta("h"),
                         "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                                  "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                               "target": {"type": "Utilization", "averageUtilization": 80}}}]},
                         "status": {"currentReplicas": 2,
                                    "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                        "current": {"averageUtilization": 40}}}]}});
        assert_eq!(
            row_cells("horizontalpodautoscalers", &hpa, now()),
            vec![
                json!("h"),
                json!("Deployment/web"),
                json!("cpu: 40%/80%"),
                json!("1"),
                json!(5),
                json!(2),
                json!("6s")
            ]
        );
    }
}
