//! metav1.LabelSelector in validation: well-formed keys, values and
//! expressions, and whether a selector picks a given label set (a workload
//! whose selector misses its own template would never see its pods).

use super::errs::{child, index, syntax, Errs};
use super::json::{get, list, map, str_of};
use super::meta::labels;
use super::names::qualified_name;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A metav1.LabelSelector: valid keys/values and well-formed expressions.
pub fn label_selector(e: &mut Errs, sel: &Value, path: &str) {
    labels(e, map(sel, "matchLabels"), &child(path, "matchLabels"));
    for (i, expr) in list(sel, "matchExpressions").iter().enumerate() {
        let p = index(&child(path, "matchExpressions"), i);
        let k = str_of(expr, "key").unwrap_or_default();
        syntax(e, &child(&p, "key"), k, qualified_name(k));
        let op = get(expr, "operator").cloned().unwrap_or(Value::from(""));
        let n_values = list(expr, "values").len();
        match op.as_str().unwrap_or_default() {
            "In" | "NotIn" if n_values == 0 => e.required(
                &child(&p, "values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            ),
            "Exists" | "DoesNotExist" if n_values > 0 => e.forbidden(
                &child(&p, "values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => e.not_supported(
                &child(&p, "operator"),
                &op,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            ),
        }
    }
}

pub fn selector_is_empty(sel: &Value) -> bool {
    map(sel, "matchLabels").is_none_or(Map::is_empty) && list(sel, "matchExpressions").is_empty()
}

/// Does a LabelSelector select an object with these labels?
pub fn selector_matches(sel: &Value, labels: &BTreeMap<&str, &str>) -> bool {
    let by_labels = map(sel, "matchLabels")
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k.as_str()).copied() == v.as_str());
    by_labels
        && list(sel, "matchExpressions")
            .iter()
            .all(|x| expression_matches(x, labels))
}

fn expression_matches(expr: &Value, labels: &BTreeMap<&str, &str>) -> bool {
    let value = labels.get(str_of(expr, "key").unwrap_or_default()).copied();
    let in_values = |v: &str| list(expr, "values").iter().any(|x| x.as_str() == Some(v));
    match str_of(expr, "operator").unwrap_or_default() {
        "In" => value.is_some_and(in_values),
        "NotIn" => !value.is_some_and(in_values),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

pub fn string_map(m: Option<&Map<String, Value>>) -> BTreeMap<&str, &str> {
    m.into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
        .collect()
}
