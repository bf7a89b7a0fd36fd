//! PersistentVolumes (core/v1): access modes, capacity, reclaim policy and
//! exactly one volume source; the defaults (Retain, Filesystem, Pending);
//! the volume row.

use super::common::decode::decode;
use super::common::defaults::{existing, object_at, set_default};
use super::common::errs::Errs;
use super::common::json::{at, get, list, map, spec, text};
use super::common::meta::NameRule;
use super::common::quantities::resource_list;
use super::common::table::{age, deleting, name, scalar, text_or, Col, AGE, NAME};
use super::persistent_volume_claim::{access_modes, format_access_modes, storage_class};
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::PersistentVolume;
use serde_json::{json, Value};

pub static PERSISTENT_VOLUMES: KindOps = KindOps {
    group: "",
    resource: "persistentvolumes",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: false,
        strict: decode::<PersistentVolume>,
        defaults: Some(defaults),
        validate: |e, obj| persistent_volume(e, spec(obj)),
        validate_update: None,
    }),
    columns: COLUMNS,
    cells,
};

/// Everything in a PV spec that is not one of these is its volume source.
const PV_NON_SOURCE: &[&str] = &[
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeMode",
    "volumeAttributesClassName",
];

fn persistent_volume(e: &mut Errs, spec: &Value) {
    access_modes(e, spec, "spec");
    let capacity = map(spec, "capacity");
    if !capacity.is_some_and(|c| c.contains_key("storage")) {
        e.required("spec.capacity[storage]", "");
    }
    resource_list(e, capacity, "spec.capacity");
    let policy = get(spec, "persistentVolumeReclaimPolicy");
    let policies = ["Retain", "Recycle", "Delete"];
    e.one_of("spec.persistentVolumeReclaimPolicy", policy, &policies);
    e.one_of(
        "spec.volumeMode",
        get(spec, "volumeMode"),
        &["Block", "Filesystem"],
    );
    let sources = spec.as_object().map_or(0, |m| {
        m.iter()
            .filter(|(k, v)| !PV_NON_SOURCE.contains(&k.as_str()) && !v.is_null())
            .count()
    });
    match sources {
        0 => e.required("spec", "must specify a volume type"),
        1 => {}
        _ => e.forbidden("spec", "may not specify more than 1 volume type"),
    }
}

fn defaults(obj: &mut Value) {
    if let Some(spec) = existing(obj, "spec") {
        set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = object_at(obj, "status") {
        set_default(status, "phase", json!("Pending"));
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Capacity",
        "string",
        false,
        "Storage capacity of the volume.",
    ),
    Col(
        "Access Modes",
        "string",
        false,
        "How the volume can be mounted.",
    ),
    Col(
        "Reclaim Policy",
        "string",
        false,
        "What happens to the volume when released.",
    ),
    Col("Status", "string", false, "Phase of the volume."),
    Col("Claim", "string", false, "The claim bound to the volume."),
    Col("StorageClass", "string", false, "StorageClass of the pv"),
    Col(
        "VolumeAttributesClass",
        "string",
        false,
        "VolumeAttributesClass of the pv",
    ),
    Col("Reason", "string", false, "Reason for the current phase."),
    AGE,
    Col("VolumeMode", "string", true, "Filesystem or Block."),
];

fn cells(pv: &Value, now: Timestamp) -> Vec<Value> {
    let claim = match at(pv, "spec.claimRef") {
        Some(c) if c.is_object() => format!("{}/{}", text(c, "namespace"), text(c, "name")),
        _ => String::new(),
    };
    let phase = if deleting(pv) {
        "Terminating"
    } else {
        text(pv, "status.phase")
    };
    vec![
        name(pv),
        json!(scalar(at(pv, "spec.capacity.storage")).unwrap_or_else(|| "0".into())),
        json!(format_access_modes(list(pv, "spec.accessModes"))),
        json!(text(pv, "spec.persistentVolumeReclaimPolicy")),
        json!(phase),
        json!(claim),
        json!(storage_class(pv)),
        json!(text_or(pv, "spec.volumeAttributesClassName", "<unset>")),
        json!(text(pv, "status.reason")),
        age(pv, now),
        json!(text_or(pv, "spec.volumeMode", "<unset>")),
    ]
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::defaulted;
    use serde_json::json;

    #[test]
    fn pv_defaults() {
        let pv = defaulted("", "persistentvolumes", json!({"spec": {}}));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn pv_row() {
        let pv = json!({"metadata": meta("pv1"),
                        "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "fast",
                                 "claimRef": {"namespace": "default", "name": "data"}},
                        "status": {"phase": "Bound"}});
        assert_eq!(
            row_cells("persistentvolumes", &pv, now()),
            vec![
                json!("pv1"),
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("fast"),
                json!("<unset>"),
                json!(""),
                json!("6s"),
                json!("<unset>")
            ]
        );
    }
}
