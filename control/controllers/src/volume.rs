//! Persistent volumes: the PV controller ([`binder`], Kubernetes'
//! `pkg/controller/volume/persistentvolume`, simplified), the local-path
//! provisioner ([`provisioner`], as k3s' local-path-provisioner) and the
//! claim/volume matching both they and the scheduler use ([`matching`]).
//!
//! How a claim of the default class `local-path` (WaitForFirstConsumer)
//! becomes a directory: the scheduler places the first pod using it and
//! annotates the claim `volume.kubernetes.io/selected-node`; the
//! provisioner creates PV `pvc-<claim uid>`, a `hostPath` under the node's
//! published volume root (Node annotation `keel.dev/local-path-root`),
//! pinned to the node and pre-bound to the claim; the binder binds both
//! sides; the node's agent creates the directory when the pod mounts it.
//! Deleting the claim releases the volume: Retain keeps it (Released),
//! Delete deletes the PV and the agent then removes the directory.

pub mod binder;
pub mod matching;
pub mod protection;
pub mod provisioner;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The provisioner of keel's `local-path` StorageClass.
pub const LOCAL_PATH_PROVISIONER: &str = "keel.dev/local-path";
/// Node annotation: the directory under which the node's agent keeps
/// local-path volumes (absolute).
pub const ANN_LOCAL_PATH_ROOT: &str = "keel.dev/local-path-root";
/// Claim annotation: the binding of a claim finished.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Claim or volume annotation: the controller (not a user) bound it.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Claim annotation: the node the scheduler picked for a delayed claim.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Claim annotation: which provisioner is expected to provision it.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The beta name of [`ANN_STORAGE_PROVISIONER`], still set by Kubernetes.
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Volume annotation: the provisioner that created it.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The beta class annotation, which overrides `storageClassName`.
const ANN_BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// A claim's class: the beta annotation, else `spec.storageClassName`
/// ("" = no class).
pub fn claim_class(pvc: &PersistentVolumeClaim) -> &str {
    annotation(&pvc.metadata, ANN_BETA_CLASS).unwrap_or_else(|| {
        let spec = pvc.spec.as_ref();
        spec.and_then(|s| s.storage_class_name.as_deref())
            .unwrap_or_default()
    })
}

/// A volume's class, read as [`claim_class`] reads a claim's.
pub fn volume_class(pv: &PersistentVolume) -> &str {
    annotation(&pv.metadata, ANN_BETA_CLASS).unwrap_or_else(|| {
        let spec = pv.spec.as_ref();
        spec.and_then(|s| s.storage_class_name.as_deref())
            .unwrap_or_default()
    })
}

/// Whether claims of `class` wait for a pod to be scheduled before they
/// are bound or provisioned.
pub fn is_delayed(class: &StorageClass) -> bool {
    class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
}

/// The value of annotation `key`.
pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// `spec.volumeName` of a claim, "" while unbound.
pub fn volume_name(pvc: &PersistentVolumeClaim) -> &str {
    let spec = pvc.spec.as_ref();
    spec.and_then(|s| s.volume_name.as_deref())
        .unwrap_or_default()
}

/// `status.phase` of a volume ("" when unset).
pub fn volume_phase(pv: &PersistentVolume) -> &str {
    let status = pv.status.as_ref();
    status.and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

/// `status.phase` of a claim ("" when unset).
pub fn claim_phase(pvc: &PersistentVolumeClaim) -> &str {
    let status = pvc.status.as_ref();
    status.and_then(|s| s.phase.as_deref()).unwrap_or_default()
}
