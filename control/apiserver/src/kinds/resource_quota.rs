//! ResourceQuotas (core/v1): hard limits as quantities and known scopes;
//! the REQUEST and LIMIT columns of used/hard pairs.

use super::common::decode::decode;
use super::common::errs::{index, Errs};
use super::common::json::{at, list, map, spec};
use super::common::meta::NameRule;
use super::common::quantities::resource_list;
use super::common::table::{age, name, scalar, Col, AGE, NAME};
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ResourceQuota;
use serde_json::{json, Value};

pub static RESOURCE_QUOTAS: KindOps = KindOps {
    group: "",
    resource: "resourcequotas",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<ResourceQuota>,
        defaults: None,
        validate: |e, obj| resource_quota(e, spec(obj)),
        validate_update: None,
    }),
    columns: COLUMNS,
    cells,
};

fn resource_quota(e: &mut Errs, spec: &Value) {
    resource_list(e, map(spec, "hard"), "spec.hard");
    let scopes = [
        "Terminating",
        "NotTerminating",
        "BestEffort",
        "NotBestEffort",
        "PriorityClass",
        "CrossNamespacePodAffinity",
        "VolumeAttributesClass",
    ];
    for (i, s) in list(spec, "scopes").iter().enumerate() {
        e.one_of(&index("spec.scopes", i), Some(s), &scopes);
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col("Request", "string", false, "Used and hard request quotas."),
    Col("Limit", "string", false, "Used and hard limit quotas."),
    AGE,
];

fn cells(q: &Value, now: Timestamp) -> Vec<Value> {
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    if let Some(hard) = at(q, "status.hard").and_then(Value::as_object) {
        let mut names: Vec<&String> = hard.keys().collect();
        names.sort();
        for r in names {
            let used =
                scalar(at(q, "status.used").and_then(|u| u.get(r))).unwrap_or_else(|| "0".into());
            let limit = scalar(hard.get(r)).unwrap_or_else(|| "0".into());
            let item = format!("{r}: {used}/{limit}");
            if r.starts_with("limits.") {
                limits.push(item);
            } else {
                requests.push(item);
            }
        }
    }
    vec![
        name(q),
        json!(requests.join(", ")),
        json!(limits.join(", ")),
        age(q, now),
    ]
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{cell, dated_meta as meta};
    use serde_json::json;

    #[test]
    fn quota_columns() {
        let q = json!({"metadata": meta("q"), "status": {
            "hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"},
            "used": {"pods": "3", "requests.cpu": "500m"}}});
        assert_eq!(
            cell("resourcequotas", &q, "Request"),
            "pods: 3/10, requests.cpu: 500m/1"
        );
        assert_eq!(cell("resourcequotas", &q, "Limit"), "limits.cpu: 0/2");
    }
}
