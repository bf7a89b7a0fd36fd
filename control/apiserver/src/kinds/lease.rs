//! Leases (coordination.k8s.io/v1): duration, transitions and the preferred
//! holder's strategy; the HOLDER column.

use super::common::decode::decode;
use super::common::errs::{at_least, Errs};
use super::common::json::{get, spec, text};
use super::common::meta::NameRule;
use super::common::table::{age, name, Col, AGE, NAME};
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{json, Value};

pub static LEASES: KindOps = KindOps {
    group: "coordination.k8s.io",
    resource: "leases",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<Lease>,
        defaults: None,
        validate: |e, obj| lease(e, spec(obj)),
        validate_update: None,
    }),
    columns: COLUMNS,
    cells,
};

fn lease(e: &mut Errs, spec: &Value) {
    at_least(e, spec, "leaseDurationSeconds", "spec", 1);
    at_least(e, spec, "leaseTransitions", "spec", 0);
    if get(spec, "preferredHolder").is_some() && get(spec, "strategy").is_none() {
        e.forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        );
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col("Holder", "string", false, "Identity of the lease holder."),
    AGE,
];

fn cells(l: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(l), json!(text(l, "spec.holderIdentity")), age(l, now)]
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, meta, ok};
    use serde_json::json;

    #[test]
    fn lease_duration() {
        let lease = |d: i64| json!({"metadata": meta("l"), "spec": {"leaseDurationSeconds": d}});
        ok("coordination.k8s.io", "leases", &lease(15));
        bad(
            "coordination.k8s.io",
            "leases",
            &lease(0),
            "spec.leaseDurationSeconds",
            "FieldValueInvalid",
        );
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{cell, dated_meta as meta};
    use serde_json::json;

    #[test]
    fn lease_holder() {
        let lease = json!({"metadata": meta("l"), "spec": {"holderIdentity": "node-1"}});
        assert_eq!(cell("leases", &lease, "Holder"), "node-1");
    }
}
