//! Namespaces (core/v1): finalizer syntax; the defaults (the
//! `kubernetes.io/metadata.name` label, the `kubernetes` finalizer, phase
//! Active); and the STATUS column.

use super::common::decode::decode;
use super::common::defaults::{object_at, set_default};
use super::common::errs::{index, syntax, Errs};
use super::common::json::{list, text};
use super::common::meta::NameRule;
use super::common::names::qualified_name;
use super::common::table::{age, name, Col, AGE, NAME};
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use serde_json::{json, Value};

pub static NAMESPACES: KindOps = KindOps {
    group: "",
    resource: "namespaces",
    admission: Some(Admission {
        name_rule: NameRule::Label,
        namespaced: false,
        strict: decode::<Namespace>,
        defaults: Some(defaults),
        validate: namespace,
        validate_update: None,
    }),
    columns: COLUMNS,
    cells,
};

fn namespace(e: &mut Errs, obj: &Value) {
    for (i, f) in list(obj.get("spec").unwrap_or(&Value::Null), "finalizers")
        .iter()
        .enumerate()
    {
        let name = f.as_str().unwrap_or_default();
        syntax(e, &index("spec.finalizers", i), name, qualified_name(name));
    }
}

/// Namespaces carry their own name as a label (so selectors can pick them),
/// start Active, and get the `kubernetes` finalizer on creation.
///
/// Kubernetes adds that finalizer in PrepareForCreate rather than in defaults
/// because it may later be removed (namespace finalization). So it is only
/// added when `status.phase` is still unset, i.e. on an object that has not
/// been through defaulting yet; a stored or finalizing namespace keeps its list.
fn defaults(obj: &mut Value) {
    if let Some(name) = obj.pointer("/metadata/name").cloned() {
        if let Some(labels) = object_at(obj, "metadata").and_then(|m| object_at(m, "labels")) {
            labels["kubernetes.io/metadata.name"] = name;
        }
    }
    let fresh = obj.pointer("/status/phase").is_none_or(Value::is_null);
    if fresh {
        if let Some(spec) = object_at(obj, "spec") {
            set_default(spec, "finalizers", json!(["kubernetes"]));
        }
    }
    if let Some(status) = object_at(obj, "status") {
        set_default(status, "phase", json!("Active"));
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col("Status", "string", false, "The status of the namespace"),
    AGE,
];

fn cells(ns: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(ns), json!(text(ns, "status.phase")), age(ns, now)]
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::defaulted;
    use serde_json::json;

    #[test]
    fn namespace_defaults() {
        let ns = defaulted("", "namespaces", json!({"metadata": {"name": "team"}}));
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team"
        );
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        let finalizing = defaulted(
            "",
            "namespaces",
            json!({"metadata": {"name": "team"},
            "spec": {}, "status": {"phase": "Terminating"}}),
        );
        assert!(finalizing["spec"].get("finalizers").is_none());
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn namespace_row() {
        let ns = json!({"metadata": meta("kube-system"), "status": {"phase": "Active"}});
        assert_eq!(
            row_cells("namespaces", &ns, now()),
            vec![json!("kube-system"), json!("Active"), json!("6s")]
        );
    }
}
