//! Roles and ClusterRoles (rbac.authorization.k8s.io/v1): served, with
//! Kubernetes' rule validation (every rule has verbs; a resource rule has
//! API groups and resources; a non-resource rule only URLs, and only in a
//! ClusterRole), and the creation time as the generic table prints it.
//! Escalation prevention is admission's ([`crate::auth::escalation`]).

use super::common::decode::decode;
use super::common::errs::{index, Errs};
use super::common::json::list;
use super::common::meta::NameRule;
use super::common::table::{created_at_cells, CREATED_AT_COLS};
use super::{Admission, KindOps};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use serde_json::Value;

pub static ROLES: KindOps = KindOps {
    group: "rbac.authorization.k8s.io",
    resource: "roles",
    admission: Some(Admission {
        name_rule: NameRule::PathSegment,
        namespaced: true,
        strict: decode::<Role>,
        defaults: None,
        validate: |e, obj| rules(e, obj, true),
        validate_update: None,
    }),
    columns: CREATED_AT_COLS,
    cells: created_at_cells,
};

pub static CLUSTER_ROLES: KindOps = KindOps {
    group: "rbac.authorization.k8s.io",
    resource: "clusterroles",
    admission: Some(Admission {
        name_rule: NameRule::PathSegment,
        namespaced: false,
        strict: decode::<ClusterRole>,
        defaults: None,
        validate: |e, obj| {
            rules(e, obj, false);
            aggregation(e, obj);
        },
        validate_update: None,
    }),
    columns: CREATED_AT_COLS,
    cells: created_at_cells,
};

/// Kubernetes' ValidatePolicyRule for each of `obj.rules`.
fn rules(e: &mut Errs, obj: &Value, namespaced: bool) {
    for (i, r) in list(obj, "rules").iter().enumerate() {
        let path = index("rules", i);
        if list(r, "verbs").is_empty() {
            e.required(
                &format!("{path}.verbs"),
                "verbs must contain at least one value",
            );
        }
        let urls = list(r, "nonResourceURLs");
        if !urls.is_empty() {
            let field = format!("{path}.nonResourceURLs");
            if namespaced {
                e.invalid(
                    &field,
                    &Value::Array(urls.to_vec()),
                    "namespaced rules cannot apply to non-resource URLs",
                );
            }
            if !list(r, "apiGroups").is_empty() || !list(r, "resources").is_empty() {
                e.invalid(
                    &field,
                    &Value::Array(urls.to_vec()),
                    "rules cannot apply to both regular resources and non-resource URLs",
                );
            }
            continue;
        }
        if list(r, "apiGroups").is_empty() {
            e.required(
                &format!("{path}.apiGroups"),
                "resource rules must supply at least one api group",
            );
        }
        if list(r, "resources").is_empty() {
            e.required(
                &format!("{path}.resources"),
                "resource rules must supply at least one resource",
            );
        }
    }
}

/// Every aggregation selector must be a valid label selector.
fn aggregation(e: &mut Errs, obj: &Value) {
    for (i, s) in list(obj, "aggregationRule.clusterRoleSelectors")
        .iter()
        .enumerate()
    {
        let path = index("aggregationRule.clusterRoleSelectors", i);
        super::common::label_selector::label_selector(e, s, &path);
    }
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, meta, ok};
    use serde_json::json;

    const G: &str = "rbac.authorization.k8s.io";

    #[test]
    fn rules_need_verbs_groups_and_resources() {
        let role = |rules: serde_json::Value| json!({"metadata": meta("r"), "rules": rules});
        ok(
            G,
            "roles",
            &role(json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}])),
        );
        bad(
            G,
            "roles",
            &role(json!([{"verbs": [], "apiGroups": [""], "resources": ["pods"]}])),
            "rules[0].verbs",
            "FieldValueRequired",
        );
        bad(
            G,
            "roles",
            &role(json!([{"verbs": ["get"], "resources": ["pods"]}])),
            "rules[0].apiGroups",
            "FieldValueRequired",
        );
        bad(
            G,
            "roles",
            &role(json!([{"verbs": ["get"], "nonResourceURLs": ["/x"]}])),
            "rules[0].nonResourceURLs",
            "FieldValueInvalid",
        );
        let cluster = json!({"metadata": {"name": "c"}, "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]});
        ok(G, "clusterroles", &cluster);
    }
}
