//! PodDisruptionBudgets (policy/v1): either a floor (minAvailable) or a
//! ceiling (maxUnavailable), a selector and an eviction policy; the budget
//! row.

use super::common::decode::decode;
use super::common::errs::Errs;
use super::common::json::{at, get, int, spec};
use super::common::label_selector::label_selector;
use super::common::meta::NameRule;
use super::common::quantities::{at_most_100_percent, int_or_percent};
use super::common::table::{age, name, scalar, Col, AGE, NAME};
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::{json, Value};

pub static POD_DISRUPTION_BUDGETS: KindOps = KindOps {
    group: "policy",
    resource: "poddisruptionbudgets",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<PodDisruptionBudget>,
        defaults: None,
        validate: |e, obj| pdb(e, spec(obj)),
        validate_update: None,
    }),
    columns: COLUMNS,
    cells,
};

/// A budget is either a floor (minAvailable) or a ceiling (maxUnavailable).
fn pdb(e: &mut Errs, spec: &Value) {
    let min = get(spec, "minAvailable");
    let max = get(spec, "maxUnavailable");
    if min.is_some() && max.is_some() {
        e.invalid(
            "spec",
            &Value::from("object"),
            "minAvailable and maxUnavailable cannot be both set",
        );
    }
    int_or_percent(e, min, "spec.minAvailable");
    at_most_100_percent(e, min, "spec.minAvailable");
    int_or_percent(e, max, "spec.maxUnavailable");
    at_most_100_percent(e, max, "spec.maxUnavailable");
    if let Some(sel) = get(spec, "selector") {
        label_selector(e, sel, "spec.selector");
    }
    let policies = ["IfHealthyBudget", "AlwaysAllow"];
    e.one_of(
        "spec.unhealthyPodEvictionPolicy",
        get(spec, "unhealthyPodEvictionPolicy"),
        &policies,
    );
}

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Min Available",
        "string",
        false,
        "The minimum number of pods that must be available.",
    ),
    Col(
        "Max Unavailable",
        "string",
        false,
        "The maximum number of pods that may be unavailable.",
    ),
    Col(
        "Allowed Disruptions",
        "integer",
        false,
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];

fn cells(pdb: &Value, now: Timestamp) -> Vec<Value> {
    let field = |p: &str| scalar(at(pdb, p)).unwrap_or_else(|| "N/A".into());
    vec![
        name(pdb),
        json!(field("spec.minAvailable")),
        json!(field("spec.maxUnavailable")),
        json!(int(pdb, "status.disruptionsAllowed")),
        age(pdb, now),
    ]
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, meta, ok};
    use serde_json::{json, Value};

    #[test]
    fn pod_disruption_budgets() {
        let pdb = |spec: Value| json!({"metadata": meta("p"), "spec": spec});
        ok(
            "policy",
            "poddisruptionbudgets",
            &pdb(json!({"minAvailable": "50%"})),
        );
        bad(
            "policy",
            "poddisruptionbudgets",
            &pdb(json!({"minAvailable": 1, "maxUnavailable": 1})),
            "spec",
            "FieldValueInvalid",
        );
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn pdb_row() {
        let pdb = json!({"metadata": meta("p"), "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            row_cells("poddisruptionbudgets", &pdb, now()),
            vec![
                json!("p"),
                json!("50%"),
                json!("N/A"),
                json!(1),
                json!("6s")
            ]
        );
    }
}
