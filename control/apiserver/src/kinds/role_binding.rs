//! RoleBindings and ClusterRoleBindings (rbac.authorization.k8s.io/v1):
//! served, with Kubernetes' defaults and validation (a roleRef of the
//! right kind and group, which never changes; subjects of a known kind),
//! the role, and users, groups and service accounts wide.

use super::common::decode::decode;
use super::common::errs::{child, index, Errs};
use super::common::json::{at, list, text};
use super::common::meta::NameRule;
use super::common::names::path_segment;
use super::common::table::{age, name, Col, AGE, NAME};
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use serde_json::{json, Value};

const RBAC: &str = "rbac.authorization.k8s.io";

pub static ROLE_BINDINGS: KindOps = KindOps {
    group: RBAC,
    resource: "rolebindings",
    admission: Some(Admission {
        name_rule: NameRule::PathSegment,
        namespaced: true,
        strict: decode::<RoleBinding>,
        defaults: Some(defaults),
        validate: |e, obj| binding(e, obj, true),
        validate_update: Some(role_ref_immutable),
    }),
    columns: COLUMNS,
    cells,
};

pub static CLUSTER_ROLE_BINDINGS: KindOps = KindOps {
    group: RBAC,
    resource: "clusterrolebindings",
    admission: Some(Admission {
        name_rule: NameRule::PathSegment,
        namespaced: false,
        strict: decode::<ClusterRoleBinding>,
        defaults: Some(defaults),
        validate: |e, obj| binding(e, obj, false),
        validate_update: Some(role_ref_immutable),
    }),
    columns: COLUMNS,
    cells,
};

/// Kubernetes' defaults: `roleRef.apiGroup` and a User or Group subject's
/// `apiGroup` are rbac.authorization.k8s.io.
fn defaults(obj: &mut Value) {
    if let Some(r) = obj.get_mut("roleRef").and_then(Value::as_object_mut) {
        if r.get("apiGroup")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            r.insert("apiGroup".into(), json!(RBAC));
        }
    }
    if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects.iter_mut().filter_map(Value::as_object_mut) {
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
            let empty = s
                .get("apiGroup")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty();
            if empty && matches!(kind, "User" | "Group") {
                s.insert("apiGroup".into(), json!(RBAC));
            }
        }
    }
}

/// Kubernetes' ValidateRoleBinding / ValidateClusterRoleBinding.
fn binding(e: &mut Errs, obj: &Value, namespaced: bool) {
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    let api_group = text(obj, "roleRef.apiGroup");
    if api_group != RBAC {
        e.not_supported("roleRef.apiGroup", &json!(api_group), &[RBAC]);
    }
    let kind = text(obj, "roleRef.kind");
    if !kinds.contains(&kind) {
        e.not_supported("roleRef.kind", &json!(kind), kinds);
    }
    match at(obj, "roleRef.name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        None => e.required("roleRef.name", ""),
        Some(n) => {
            for m in path_segment(n) {
                e.invalid("roleRef.name", &json!(n), &m);
            }
        }
    }
    for (i, s) in list(obj, "subjects").iter().enumerate() {
        subject(e, s, &index("subjects", i), namespaced);
    }
}

fn subject(e: &mut Errs, s: &Value, path: &str, namespaced: bool) {
    let name = text(s, "name");
    if name.is_empty() {
        e.required(&child(path, "name"), "");
    }
    let group = text(s, "apiGroup");
    match text(s, "kind") {
        "ServiceAccount" => {
            if !group.is_empty() {
                e.not_supported(&child(path, "apiGroup"), &json!(group), &[""]);
            }
            if !namespaced && text(s, "namespace").is_empty() {
                e.required(&child(path, "namespace"), "");
            }
        }
        "User" | "Group" => {
            if group != RBAC {
                e.not_supported(&child(path, "apiGroup"), &json!(group), &[RBAC]);
            }
        }
        other => e.not_supported(
            &child(path, "kind"),
            &json!(other),
            &["ServiceAccount", "User", "Group"],
        ),
    }
}

/// The role a binding grants never changes: delete and recreate instead.
fn role_ref_immutable(e: &mut Errs, new: &Value, old: &Value) {
    if new.get("roleRef") != old.get("roleRef") {
        e.invalid(
            "roleRef",
            new.get("roleRef").unwrap_or(&Value::Null),
            "cannot change roleRef",
        );
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col("Role", "string", false, "The role granted."),
    AGE,
    Col("Users", "string", true, "Users in the binding"),
    Col("Groups", "string", true, "Groups in the binding"),
    Col(
        "ServiceAccounts",
        "string",
        true,
        "ServiceAccounts in the binding",
    ),
];

/// ROLE as `Kind/name`; wide columns list users, groups and
/// `namespace/name` service accounts.
fn cells(b: &Value, now: Timestamp) -> Vec<Value> {
    let subjects = list(b, "subjects");
    let of_kind = |kind: &str| -> Value {
        let names: Vec<String> = subjects
            .iter()
            .filter(|s| text(s, "kind") == kind)
            .map(|s| match kind {
                "ServiceAccount" => format!("{}/{}", text(s, "namespace"), text(s, "name")),
                _ => text(s, "name").to_string(),
            })
            .collect();
        json!(names.join(", "))
    };
    vec![
        name(b),
        json!(format!(
            "{}/{}",
            text(b, "roleRef.kind"),
            text(b, "roleRef.name")
        )),
        age(b, now),
        of_kind("User"),
        of_kind("Group"),
        of_kind("ServiceAccount"),
    ]
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn role_binding_row() {
        let rb = json!({"metadata": meta("rb"), "roleRef": {"kind": "ClusterRole", "name": "view"},
                        "subjects": [{"kind": "User", "name": "alice"},
                                     {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]});
        assert_eq!(
            row_cells("rolebindings", &rb, now()),
            vec![
                json!("rb"),
                json!("ClusterRole/view"),
                json!("6s"),
                json!("alice"),
                json!(""),
                json!("ns/sa")
            ]
        );
    }
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, meta, ok};
    use serde_json::json;

    const G: &str = "rbac.authorization.k8s.io";

    #[test]
    fn bindings_are_validated() {
        let rb = |role_ref: serde_json::Value, subjects: serde_json::Value| json!({"metadata": meta("rb"), "roleRef": role_ref, "subjects": subjects});
        let view = json!({"apiGroup": G, "kind": "ClusterRole", "name": "view"});
        ok(
            G,
            "rolebindings",
            &rb(
                view.clone(),
                json!([{"kind": "User", "name": "alice", "apiGroup": G}]),
            ),
        );
        bad(
            G,
            "rolebindings",
            &rb(
                json!({"apiGroup": G, "kind": "Pod", "name": "x"}),
                json!([]),
            ),
            "roleRef.kind",
            "FieldValueNotSupported",
        );
        bad(
            G,
            "rolebindings",
            &rb(view.clone(), json!([{"kind": "Robot", "name": "r"}])),
            "subjects[0].kind",
            "FieldValueNotSupported",
        );
        let crb = json!({"metadata": {"name": "c"}, "roleRef": view, "subjects": [{"kind": "ServiceAccount", "name": "sa"}]});
        bad(
            G,
            "clusterrolebindings",
            &crb,
            "subjects[0].namespace",
            "FieldValueRequired",
        );
    }
}
