//! StorageClasses (storage.k8s.io/v1): a required provisioner, the reclaim
//! policy (default Delete) and binding mode (default Immediate), which like
//! the parameters are fixed once created; the row with `(default)` after
//! the default class's name.

use super::common::decode::decode;
use super::common::defaults::set_default;
use super::common::errs::{required_str, Errs};
use super::common::json::{at, get, text};
use super::common::meta::NameRule;
use super::common::table::{age, text_or, Col, AGE, NAME};
use super::common::update::immutable;
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::{json, Value};

pub static STORAGE_CLASSES: KindOps = KindOps {
    group: "storage.k8s.io",
    resource: "storageclasses",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: false,
        strict: decode::<StorageClass>,
        defaults: Some(defaults),
        validate,
        validate_update: Some(validate_update),
    }),
    columns: COLUMNS,
    cells,
};

/// The annotations that make a class the default one (GA and beta).
pub const DEFAULT_CLASS_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// Whether `sc` carries a default-class annotation set to "true".
pub fn is_default_class(sc: &Value) -> bool {
    let annotations = at(sc, "metadata.annotations");
    DEFAULT_CLASS_ANNOTATIONS
        .iter()
        .any(|k| annotations.and_then(|a| a.get(k)).and_then(Value::as_str) == Some("true"))
}

fn defaults(sc: &mut Value) {
    set_default(sc, "reclaimPolicy", json!("Delete"));
    set_default(sc, "volumeBindingMode", json!("Immediate"));
}

fn validate(e: &mut Errs, sc: &Value) {
    required_str(e, sc, "provisioner", "");
    e.one_of(
        "reclaimPolicy",
        get(sc, "reclaimPolicy"),
        &["Delete", "Retain"],
    );
    let modes = ["Immediate", "WaitForFirstConsumer"];
    e.one_of("volumeBindingMode", get(sc, "volumeBindingMode"), &modes);
}

/// Kubernetes fixes everything but metadata, mount options and expansion.
fn validate_update(e: &mut Errs, new: &Value, old: &Value) {
    for k in [
        "provisioner",
        "parameters",
        "reclaimPolicy",
        "volumeBindingMode",
    ] {
        immutable(e, new, old, k, k);
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Provisioner",
        "string",
        false,
        "Volume plugin that provisions volumes.",
    ),
    Col(
        "ReclaimPolicy",
        "string",
        false,
        "Reclaim policy of provisioned volumes.",
    ),
    Col(
        "VolumeBindingMode",
        "string",
        false,
        "When volumes are bound.",
    ),
    Col(
        "AllowVolumeExpansion",
        "string",
        false,
        "Whether volumes may grow.",
    ),
    AGE,
];

fn cells(sc: &Value, now: Timestamp) -> Vec<Value> {
    let is_default = is_default_class(sc);
    let mut n = text(sc, "metadata.name").to_string();
    if is_default {
        n.push_str(" (default)");
    }
    let expand = at(sc, "allowVolumeExpansion").and_then(Value::as_bool) == Some(true);
    vec![
        json!(n),
        json!(text(sc, "provisioner")),
        json!(text_or(sc, "reclaimPolicy", "Delete")),
        json!(text_or(sc, "volumeBindingMode", "Immediate")),
        json!(expand),
        age(sc, now),
    ]
}

#[cfg(test)]
mod admission_tests {
    use crate::admission::validate_update;
    use crate::kinds::common::testing::{bad, defaulted, fields, ok};
    use serde_json::json;

    const G: &str = "storage.k8s.io";
    const R: &str = "storageclasses";

    #[test]
    fn storage_classes() {
        let sc = json!({"metadata": {"name": "fast"}, "provisioner": "keel.dev/local-path"});
        ok(G, R, &sc);
        let d = defaulted(G, R, sc.clone());
        assert_eq!(d["reclaimPolicy"], "Delete");
        assert_eq!(d["volumeBindingMode"], "Immediate");
        bad(
            G,
            R,
            &json!({"metadata": {"name": "x"}}),
            "provisioner",
            "FieldValueRequired",
        );
        let wrong =
            json!({"metadata": {"name": "x"}, "provisioner": "p", "reclaimPolicy": "Recycle"});
        bad(G, R, &wrong, "reclaimPolicy", "FieldValueNotSupported");
        let mut changed = d.clone();
        changed["reclaimPolicy"] = json!("Retain");
        changed["metadata"]["labels"] = json!({"a": "b"});
        assert_eq!(
            fields(&validate_update(G, R, &changed, &d)),
            vec!["reclaimPolicy FieldValueInvalid"]
        );
    }
}
