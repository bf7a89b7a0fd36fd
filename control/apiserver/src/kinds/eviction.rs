//! Eviction (policy/v1), the body of a pod's `/eviction` subresource: only
//! its metadata is checked. Never stored, so never printed as itself.

use super::common::decode::decode;
use super::common::errs::Errs;
use super::common::meta::NameRule;
use super::common::table::{default_cells, DEFAULT_COLS};
use super::{Admission, KindOps};
use k8s_openapi::api::policy::v1::Eviction;
use serde_json::Value;

pub static EVICTIONS: KindOps = KindOps {
    group: "policy",
    resource: "evictions",
    admission: Some(Admission {
        name_rule: NameRule::PathSegment,
        namespaced: true,
        strict: decode::<Eviction>,
        defaults: None,
        validate: nothing_beyond_metadata,
        validate_update: None,
    }),
    columns: DEFAULT_COLS,
    cells: default_cells,
};

/// An eviction names its pod in metadata; it has no other fields to check.
fn nothing_beyond_metadata(_: &mut Errs, _: &Value) {}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{meta, ok};
    use serde_json::json;

    #[test]
    fn eviction_metadata() {
        ok("policy", "evictions", &json!({"metadata": meta("p")}));
    }
}
