//! Scale (autoscaling/v1), the body of every `/scale` subresource: only
//! the replica count is checked. Never stored, so never printed as itself.

use super::common::decode::decode;
use super::common::errs::at_least;
use super::common::json::spec;
use super::common::meta::NameRule;
use super::common::table::{default_cells, DEFAULT_COLS};
use super::{Admission, KindOps};
use k8s_openapi::api::autoscaling::v1::Scale;

pub static SCALE: KindOps = KindOps {
    group: "autoscaling",
    resource: "scale",
    admission: Some(Admission {
        name_rule: NameRule::PathSegment,
        namespaced: true,
        strict: decode::<Scale>,
        defaults: None,
        validate: |e, obj| at_least(e, spec(obj), "replicas", "spec", 0),
        validate_update: None,
    }),
    columns: DEFAULT_COLS,
    cells: default_cells,
};

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, meta, ok};
    use serde_json::json;

    #[test]
    fn scale_replicas() {
        ok(
            "autoscaling",
            "scale",
            &json!({"metadata": meta("web"), "spec": {"replicas": 2}}),
        );
        bad(
            "autoscaling",
            "scale",
            &json!({"metadata": meta("web"), "spec": {"replicas": -2}}),
            "spec.replicas",
            "FieldValueInvalid",
        );
    }
}
