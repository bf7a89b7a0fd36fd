//! Server-side printing: the `meta.k8s.io/v1` Table columns and cells that
//! human-readable `kubectl get` asks for (`Accept: …;as=Table;…`).
//!
//! kubectl prints whatever the server puts in the cells, so the server has to
//! format them exactly as Kubernetes' own printers do (ages like `3h12m`,
//! `<none>`, pod STATUS reasons, `80:30080/TCP` ports). The real server always
//! renders the wide columns and marks them `priority: 1`; kubectl hides them
//! unless `-o wide`. Each kind's columns and cells mirror Kubernetes 1.33's
//! printers (`pkg/printers/internalversion`) and live in its module under
//! `crate::kinds`; this printer finds them through `kinds::of`. Every
//! read tolerates missing or mistyped fields, because stored objects come
//! from users and controllers of varying care.

use crate::kinds::{
    self,
    common::table::{default_cells, CellFn, Col, DEFAULT_COLS},
};
use jiff::Timestamp;
use serde_json::{json, Value};

pub use crate::kinds::common::duration::human_age;

/// Column definitions (meta.k8s.io/v1 TableColumnDefinition JSON: name, type,
/// format, description, priority) for `(group, resource)` (resource plural
/// lowercase, e.g. "pods", "deployments").
pub fn column_definitions(group: &str, resource: &str) -> Vec<Value> {
    printer(group, resource)
        .0
        .iter()
        .map(|Col(name, ty, wide, desc)| {
            // kubectl's `get all` prefixes `kind/` only on a column whose
            // format is "name".
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format,
                   "description": desc, "priority": i32::from(*wide)})
        })
        .collect()
}

/// The cells of one row for `obj` (a stored object as JSON), in column
/// order, formatted as kubectl shows them (ages like "6s", "5m", "3h12m",
/// "2d"; "<none>"; numbers as JSON numbers where Kubernetes prints an
/// integer).
pub fn row_cells(group: &str, resource: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    (printer(group, resource).1)(obj, now)
}

/// The columns and cell function of a kind; Kubernetes' generic table (name
/// and age) for resources keel knows no kind of.
fn printer(group: &str, resource: &str) -> (&'static [Col], CellFn) {
    match kinds::of(group, resource) {
        Some(kind) => (kind.columns, kind.cells),
        None => (DEFAULT_COLS, default_cells),
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::common::testing::{column_definitions, now, row_cells};
    use crate::kinds::KINDS;
    use serde_json::json;

    #[test]
    fn generic_tables() {
        let obj =
            json!({"metadata": {"name": "thing", "creationTimestamp": "2026-11-22T11:00:00Z"}});
        assert_eq!(
            row_cells("widgets", &obj, now()),
            vec![json!("thing"), json!("60m")]
        );
        let cols = column_definitions("widgets");
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[0]["format"], "name");
        assert_eq!(
            row_cells("limitranges", &obj, now()),
            vec![json!("thing"), json!("2026-11-22T11:00:00Z")]
        );
        assert_eq!(column_definitions("clusterroles")[1]["type"], "date");
    }

    #[test]
    fn every_printer_survives_junk_and_matches_its_columns() {
        let resources = [
            "pods",
            "nodes",
            "namespaces",
            "services",
            "endpoints",
            "endpointslices",
            "configmaps",
            "secrets",
            "serviceaccounts",
            "events",
            "persistentvolumes",
            "persistentvolumeclaims",
            "resourcequotas",
            "limitranges",
            "deployments",
            "replicasets",
            "replicationcontrollers",
            "statefulsets",
            "daemonsets",
            "jobs",
            "cronjobs",
            "horizontalpodautoscalers",
            "leases",
            "ingresses",
            "ingressclasses",
            "networkpolicies",
            "poddisruptionbudgets",
            "podtemplates",
            "storageclasses",
            "priorityclasses",
            "runtimeclasses",
            "controllerrevisions",
            "rolebindings",
            "clusterrolebindings",
            "mutatingwebhookconfigurations",
            "unknown",
        ];
        let junk = [
            json!(null),
            json!({}),
            json!([]),
            json!("x"),
            json!({"metadata": {"name": 5, "creationTimestamp": "garbage", "labels": "no"},
                   "spec": {"containers": "no", "replicas": "3", "selector": {"matchLabels": {"a": 1}},
                            "ports": [{"port": "x"}], "metrics": [{"type": "Pods"}]},
                   "status": {"containerStatuses": [null, {"state": {"terminated": null}}],
                              "conditions": "x", "hard": {"a": null}},
                   "subsets": [{"addresses": [{}], "ports": [{}]}], "series": {}}),
        ];
        for r in resources {
            let n = column_definitions(r).len();
            assert!(
                column_definitions(r)
                    .iter()
                    .any(|c| c["name"] == "Name" && c["format"] == "name"),
                "{r}"
            );
            for j in &junk {
                assert_eq!(row_cells(r, j, now()).len(), n, "{r} {j}");
            }
        }
    }

    #[test]
    fn every_kind_survives_junk_and_matches_its_columns() {
        let junk = [json!(null), json!({}), json!([]), json!("x")];
        for kind in KINDS {
            let n = super::column_definitions(kind.group, kind.resource).len();
            assert_eq!(n, kind.columns.len());
            for j in &junk {
                let cells = super::row_cells(kind.group, kind.resource, j, now());
                assert_eq!(cells.len(), n, "{}/{} {j}", kind.group, kind.resource);
            }
        }
    }
}
