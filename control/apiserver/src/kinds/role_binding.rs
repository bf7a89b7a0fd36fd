//! RoleBindings and ClusterRoleBindings (rbac.authorization.k8s.io/v1),
//! printed only: the role, and users, groups and service accounts wide.

use super::common::json::{list, text};
use super::common::table::{age, name, Col, AGE, NAME};
use super::KindOps;
use jiff::Timestamp;
use serde_json::{json, Value};

pub static ROLE_BINDINGS: KindOps =
    KindOps::printed_only("rbac.authorization.k8s.io", "rolebindings", COLUMNS, cells);

pub static CLUSTER_ROLE_BINDINGS: KindOps = KindOps::printed_only(
    "rbac.authorization.k8s.io",
    "clusterrolebindings",
    COLUMNS,
    cells,
);

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
