//! LimitRanges (core/v1): item types, quantities and min <= max; container
//! defaults fill from max and min (SetDefaults_LimitRangeItem); printed with
//! the creation time, as Kubernetes' generic table does.

use super::common::decode::decode;
use super::common::defaults::{existing, items, object_at};
use super::common::errs::{child, index, key, Errs};
use super::common::json::{get, list, map, spec};
use super::common::meta::NameRule;
use super::common::quantities::resource_list;
use super::common::table::{created_at_cells, CREATED_AT_COLS};
use super::{Admission, KindOps};
use crate::quantity::quantity_nanos;
use k8s_openapi::api::core::v1::LimitRange;
use serde_json::{json, Value};

pub static LIMIT_RANGES: KindOps = KindOps {
    group: "",
    resource: "limitranges",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<LimitRange>,
        defaults: Some(defaults),
        validate: |e, obj| limit_range(e, spec(obj)),
        validate_update: None,
    }),
    columns: CREATED_AT_COLS,
    cells: created_at_cells,
};

fn limit_range(e: &mut Errs, spec: &Value) {
    for (i, item) in list(spec, "limits").iter().enumerate() {
        let p = index("spec.limits", i);
        let ty = get(item, "type");
        match ty {
            None => e.required(&child(&p, "type"), ""),
            Some(_) => e.one_of(
                &child(&p, "type"),
                ty,
                &["Pod", "Container", "PersistentVolumeClaim"],
            ),
        }
        for k in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            resource_list(e, map(item, k), &child(&p, k));
        }
        min_below_max(e, item, &p);
    }
}

/// A limit range whose min exceeds its max admits nothing.
fn min_below_max(e: &mut Errs, item: &Value, path: &str) {
    let max = map(item, "max");
    for (name, min) in map(item, "min").into_iter().flatten() {
        let max_q = max.and_then(|m| m.get(name)).and_then(Value::as_str);
        let (Some(lo), Some(hi)) = (
            min.as_str().and_then(quantity_nanos),
            max_q.and_then(quantity_nanos),
        ) else {
            continue;
        };
        if lo > hi {
            let detail = format!(
                "min value {} is greater than max value {}",
                min.as_str().unwrap_or_default(),
                max_q.unwrap_or_default()
            );
            e.invalid(&key(&child(path, "min"), name), min, &detail);
        }
    }
}

/// Container limit ranges: a missing default limit is the max, a missing
/// default request is the default limit, then the min (SetDefaults_LimitRangeItem).
fn defaults(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    for item in items(spec, "limits") {
        if item.get("type") != Some(&json!("Container")) {
            continue;
        }
        fill_missing(item, "default", "max");
        fill_missing(item, "defaultRequest", "default");
        fill_missing(item, "defaultRequest", "min");
    }
}

/// Copies each resource of `item[from]` into `item[to]` unless already there.
fn fill_missing(item: &mut Value, to: &str, from: &str) {
    let Some(source) = item.get(from).and_then(Value::as_object).cloned() else {
        return;
    };
    if let Some(target) = object_at(item, to).and_then(Value::as_object_mut) {
        for (name, qty) in source {
            target.entry(name).or_insert(qty);
        }
    }
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::defaulted;
    use serde_json::json;

    #[test]
    fn limit_range_defaults() {
        let lr = defaulted(
            "",
            "limitranges",
            json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}}]}}),
        );
        assert_eq!(lr["spec"]["limits"][0]["default"], json!({"cpu": "2"}));
        assert_eq!(
            lr["spec"]["limits"][0]["defaultRequest"],
            json!({"cpu": "2", "memory": "1Mi"})
        );
    }
}
