//! VolumeBinding (Kubernetes' `volumebinding` plugin, simplified): where a
//! pod's PersistentVolumeClaims let it run, and the claims to hand the
//! chosen node to.
//!
//! Before filtering ([`VolumeCaches::for_pod`], the plugin's PreFilter),
//! a pod is unschedulable on every node when a claim is missing
//! (`persistentvolumeclaim "x" not found`), being deleted, bound to a
//! volume that does not exist, or unbound in a class that binds
//! immediately (`pod has unbound immediate PersistentVolumeClaims`: the PV
//! controller binds those without the scheduler). Per node
//! ([`VolumeConstraints::check`], the Filter): a bound volume's required
//! node affinity must match; an unbound WaitForFirstConsumer claim that
//! already has a selected node pins the pod there; one without goes
//! anywhere its class's provisioner can provision (local-path: every
//! node), or, without a provisioner, where an available volume matching it
//! can be used.
//!
//! After the pod is placed, each unbound delayed claim without a node is
//! annotated `volume.kubernetes.io/selected-node=<node>` before the pod is
//! bound ([`select_node`]); the provisioner and the PV controller take it
//! from there (Kubernetes' scheduler binds static volumes itself; here
//! the PV controller does, for the node given).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::filter::{RequiredAffinity, Unfit};
use super::NodeInfo;
use crate::cache::{Caches, Informer};
use crate::volume::{
    annotation, claim_class, is_delayed, matching, volume_name, ANN_SELECTED_NODE,
};

/// The provisioner name that means "volumes are made by hand".
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// Where a pod's volumes let it run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VolumeConstraints {
    /// The required node affinity of each bound volume.
    pub bound: Vec<RequiredAffinity>,
    /// Nodes already selected for unbound delayed claims.
    pub selected_nodes: Vec<String>,
    /// Per unbound delayed claim without a provisioner: the node
    /// affinities of the volumes it could bind (None: any node).
    pub static_candidates: Vec<Vec<Option<RequiredAffinity>>>,
}

impl VolumeConstraints {
    /// Whether the pod's volumes can be used on `node`.
    pub fn check(&self, node: &NodeInfo) -> Result<(), Unfit> {
        let affinity_ok = self.bound.iter().all(|a| a.matches(node))
            && self.selected_nodes.iter().all(|n| *n == node.name);
        if !affinity_ok {
            return Err(Unfit::VolumeNodeAffinity);
        }
        let bindable = self.static_candidates.iter().all(|volumes| {
            volumes
                .iter()
                .any(|a| a.as_ref().is_none_or(|a| a.matches(node)))
        });
        if !bindable {
            return Err(Unfit::VolumeBind);
        }
        Ok(())
    }
}

/// What the scheduler needs to know about one pod's claims.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodVolumes {
    pub constraints: VolumeConstraints,
    /// Unbound delayed claims to annotate with the chosen node.
    pub to_select: Vec<String>,
}

/// The claim, volume and class caches the scheduler reads.
#[derive(Clone)]
pub struct VolumeCaches {
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
}

impl VolumeCaches {
    pub fn new(caches: &Caches) -> VolumeCaches {
        VolumeCaches {
            claims: caches.get::<PersistentVolumeClaim>(),
            volumes: caches.get::<PersistentVolume>(),
            classes: caches.get::<StorageClass>(),
        }
    }

    pub async fn wait_synced(&self) {
        self.claims.wait_synced().await;
        self.volumes.wait_synced().await;
        self.classes.wait_synced().await;
    }

    pub fn claims(&self) -> &Informer<PersistentVolumeClaim> {
        &self.claims
    }

    pub fn volumes(&self) -> &Informer<PersistentVolume> {
        &self.volumes
    }

    /// The pod's volume constraints, or why it fits no node at all.
    pub fn for_pod(&self, pod: &Pod) -> Result<PodVolumes, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let names: BTreeSet<&str> = crate::volume::protection::claims_of(pod).collect();
        let mut out = PodVolumes::default();
        let mut immediate_unbound = false;
        for name in names {
            let Some(pvc) = self.claims.get(Some(ns), name) else {
                return Err(format!("persistentvolumeclaim \"{name}\" not found"));
            };
            if pvc.metadata.deletion_timestamp.is_some() {
                return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
            }
            match volume_name(&pvc) {
                "" => immediate_unbound |= !self.unbound(&pvc, name, &mut out),
                pv_name => {
                    let Some(pv) = self.volumes.get(None, pv_name) else {
                        return Err(format!("persistentvolume \"{pv_name}\" not found"));
                    };
                    out.constraints.bound.extend(matching::node_affinity(&pv));
                }
            }
        }
        if immediate_unbound {
            return Err("pod has unbound immediate PersistentVolumeClaims".into());
        }
        Ok(out)
    }

    /// Records an unbound claim's constraints; false when its class binds
    /// immediately (the PV controller's job, not ours).
    fn unbound(&self, pvc: &PersistentVolumeClaim, name: &str, out: &mut PodVolumes) -> bool {
        let class = self.classes.get(None, claim_class(pvc));
        let Some(class) = class.filter(|c| is_delayed(c)) else {
            return false;
        };
        if let Some(node) = annotation(&pvc.metadata, ANN_SELECTED_NODE) {
            out.constraints.selected_nodes.push(node.to_string());
            return true;
        }
        out.to_select.push(name.to_string());
        if class.provisioner.is_empty() || class.provisioner == NO_PROVISIONER {
            let candidates = self
                .volumes
                .filter(|pv| matching::find(pvc, std::iter::once(pv), None, false).is_some())
                .iter()
                .map(|pv| matching::node_affinity(pv))
                .collect();
            out.constraints.static_candidates.push(candidates);
        }
        true
    }
}

/// Annotates each of `claims` (in `ns`) with the node chosen for their
/// pod. False when a write failed: the pod is then not bound.
pub async fn select_node(client: &kube::Client, ns: &str, claims: &[String], node: &str) -> bool {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    for name in claims {
        let patch = json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
        let result = api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await;
        if let Err(e) = result {
            tracing::debug!(claim = %name, %node, error = %e, "selecting the claim's node failed");
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::tests::{from_json, node_obj};
    use k8s_openapi::api::core::v1::NodeSelector;

    fn node(name: &str, zone: &str) -> NodeInfo {
        let mut n = node_obj(name, "1", "1Gi");
        n.metadata.labels = Some([("zone".to_string(), zone.to_string())].into());
        NodeInfo::from_node(&n, &[])
    }

    fn zone(z: &str) -> RequiredAffinity {
        let sel: NodeSelector = from_json(serde_json::json!({"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": [z]}]}]}));
        RequiredAffinity::from_selector(&sel)
    }

    #[test]
    fn volumes_pin_pods_to_nodes() {
        let (a, b) = (node("a", "z1"), node("b", "z2"));
        let none = VolumeConstraints::default();
        assert!(none.check(&a).is_ok());
        let bound = VolumeConstraints {
            bound: vec![zone("z1")],
            ..VolumeConstraints::default()
        };
        assert!(bound.check(&a).is_ok());
        assert_eq!(bound.check(&b), Err(Unfit::VolumeNodeAffinity));
        let selected = VolumeConstraints {
            selected_nodes: vec!["b".into()],
            ..VolumeConstraints::default()
        };
        assert_eq!(selected.check(&a), Err(Unfit::VolumeNodeAffinity));
        assert!(selected.check(&b).is_ok());
        let static_only = VolumeConstraints {
            static_candidates: vec![vec![Some(zone("z2"))]],
            ..VolumeConstraints::default()
        };
        assert_eq!(static_only.check(&a), Err(Unfit::VolumeBind));
        assert!(static_only.check(&b).is_ok());
        let anywhere = VolumeConstraints {
            static_candidates: vec![vec![Some(zone("z2")), None]],
            ..VolumeConstraints::default()
        };
        assert!(anywhere.check(&a).is_ok());
    }
}
