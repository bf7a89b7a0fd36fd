//! PersistentVolumeClaims (core/v1): access modes, a storage request, volume
//! mode and selector (the claim spec StatefulSets template too); a bound
//! claim's spec is fixed but for growing storage; the printer's access-mode
//! shorthand and storage class, shared with PersistentVolumes.

use super::common::decode::decode;
use super::common::defaults::{existing, object_at, set_default};
use super::common::errs::{child, key, Errs};
use super::common::json::{at, get, list, spec, str_of, text};
use super::common::label_selector::label_selector;
use super::common::meta::NameRule;
use super::common::quantities::resource_list;
use super::common::table::{age, deleting, name, scalar, text_or, Col, AGE, NAME};
use super::common::update::{diff_keys, immutable_msg, without};
use super::{Admission, KindOps};
use crate::quantity::quantity_nanos;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::{json, Value};

pub static PERSISTENT_VOLUME_CLAIMS: KindOps = KindOps {
    group: "",
    resource: "persistentvolumeclaims",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<PersistentVolumeClaim>,
        defaults: Some(defaults),
        validate: |e, obj| pvc_spec(e, spec(obj), "spec"),
        validate_update: Some(|e, new, old| pvc_update(e, spec(new), spec(old))),
    }),
    columns: COLUMNS,
    cells,
};

// ---- validation -------------------------------------------------------------

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

pub fn access_modes(e: &mut Errs, spec: &Value, path: &str) {
    let modes = list(spec, "accessModes");
    let p = child(path, "accessModes");
    if modes.is_empty() {
        e.required(&p, "at least 1 access mode is required");
    }
    for m in modes {
        e.one_of(&p, Some(m), ACCESS_MODES);
    }
}

pub fn pvc_spec(e: &mut Errs, spec: &Value, path: &str) {
    access_modes(e, spec, path);
    let requests = spec
        .pointer("/resources/requests")
        .and_then(Value::as_object);
    let rp = child(path, "resources.requests");
    if !requests.is_some_and(|r| r.contains_key("storage")) {
        e.required(&key(&child(path, "resources"), "storage"), "");
    }
    resource_list(e, requests, &rp);
    e.one_of(
        &child(path, "volumeMode"),
        get(spec, "volumeMode"),
        &["Block", "Filesystem"],
    );
    if let Some(sel) = get(spec, "selector") {
        label_selector(e, sel, &child(path, "selector"));
    }
}

/// PVC specs are fixed except storage requests, which may only grow; the
/// volume name may be set once, by binding.
fn pvc_update(e: &mut Errs, new: &Value, old: &Value) {
    let mut mutable = vec!["resources", "volumeAttributesClassName"];
    if str_of(old, "volumeName").is_none_or(str::is_empty) {
        mutable.push("volumeName");
    }
    diff_keys(e, &without(new, &mutable), &without(old, &mutable), "spec");
    let limits = |v: &Value| v.pointer("/resources/limits").cloned();
    if limits(new) != limits(old) {
        immutable_msg(e, "spec.resources.limits", new.pointer("/resources/limits"));
    }
    let storage = |v: &Value| {
        v.pointer("/resources/requests/storage")
            .and_then(Value::as_str)
            .and_then(quantity_nanos)
    };
    if let (Some(n), Some(o)) = (storage(new), storage(old)) {
        if n < o {
            e.forbidden(
                "spec.resources.requests.storage",
                "field can not be less than previous value",
            );
        }
    }
}

// ---- defaults ----------------------------------------------------------------

pub fn defaults(obj: &mut Value) {
    if let Some(spec) = existing(obj, "spec") {
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = object_at(obj, "status") {
        set_default(status, "phase", json!("Pending"));
    }
}

// ---- table -------------------------------------------------------------------

const COLUMNS: &[Col] = &[
    NAME,
    Col("Status", "string", false, "Phase of the claim."),
    Col("Volume", "string", false, "The volume bound to the claim."),
    Col("Capacity", "string", false, "Capacity of the bound volume."),
    Col(
        "Access Modes",
        "string",
        false,
        "Access modes of the bound volume.",
    ),
    Col("StorageClass", "string", false, "StorageClass of the pvc"),
    Col(
        "VolumeAttributesClass",
        "string",
        false,
        "VolumeAttributesClass of the pvc",
    ),
    AGE,
    Col("VolumeMode", "string", true, "Filesystem or Block."),
];

fn cells(pvc: &Value, now: Timestamp) -> Vec<Value> {
    let phase = if deleting(pvc) {
        "Terminating"
    } else {
        text(pvc, "status.phase")
    };
    let volume = text(pvc, "spec.volumeName");
    // Capacity and modes are only meaningful once bound.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            scalar(at(pvc, "status.capacity.storage")).unwrap_or_else(|| "0".into()),
            format_access_modes(list(pvc, "status.accessModes")),
        )
    };
    vec![
        name(pvc),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class(pvc)),
        json!(text_or(pvc, "spec.volumeAttributesClassName", "<unset>")),
        age(pvc, now),
        json!(text_or(pvc, "spec.volumeMode", "<unset>")),
    ]
}

/// `RWO,ROX,RWX,RWOP` in that fixed order.
pub fn format_access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| has(m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The beta annotation still overrides `spec.storageClassName`.
pub fn storage_class(obj: &Value) -> String {
    let annotation = at(obj, "metadata.annotations")
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
        .and_then(Value::as_str);
    annotation
        .unwrap_or_else(|| text(obj, "spec.storageClassName"))
        .to_string()
}

#[cfg(test)]
mod admission_tests {
    use crate::admission::validate_update;
    use crate::kinds::common::testing::{bad, defaulted, fields, meta, ok};
    use serde_json::{json, Value};

    #[test]
    fn persistent_volume_claims() {
        let pvc = |spec: Value| json!({"metadata": meta("c"), "spec": spec});
        ok(
            "",
            "persistentvolumeclaims",
            &pvc(json!({"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}})),
        );
        bad(
            "",
            "persistentvolumeclaims",
            &pvc(json!({"accessModes": ["ReadWriteOnce"]})),
            "spec.resources[storage]",
            "FieldValueRequired",
        );
    }

    #[test]
    fn pvc_update_rules() {
        let pvc = |size: &str, class: &str| {
            json!({"metadata": meta("c"), "spec": {"accessModes": ["ReadWriteOnce"],
            "storageClassName": class, "resources": {"requests": {"storage": size}}}})
        };
        assert!(validate_update(
            "",
            "persistentvolumeclaims",
            &pvc("2Gi", "a"),
            &pvc("1Gi", "a")
        )
        .is_empty());
        assert_eq!(
            fields(&validate_update(
                "",
                "persistentvolumeclaims",
                &pvc("1Gi", "a"),
                &pvc("2Gi", "a")
            )),
            vec!["spec.resources.requests.storage FieldValueForbidden"]
        );
        assert_eq!(
            fields(&validate_update(
                "",
                "persistentvolumeclaims",
                &pvc("1Gi", "b"),
                &pvc("1Gi", "a")
            )),
            vec!["spec.storageClassName FieldValueInvalid"]
        );
    }

    #[test]
    fn pvc_defaults() {
        let pvc = defaulted("", "persistentvolumeclaims", json!({"spec": {}}));
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn pvc_row() {
        let pvc = json!({"metadata": meta("data"), "spec": {"volumeName": "pv1", "storageClassName": "fast"},
                         "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]}});
        assert_eq!(
            &row_cells("persistentvolumeclaims", &pvc, now())[..6],
            &[
                json!("data"),
                json!("Bound"),
                json!("pv1"),
                json!("10Gi"),
                json!("RWO"),
                json!("fast")
            ]
        );
    }
}
