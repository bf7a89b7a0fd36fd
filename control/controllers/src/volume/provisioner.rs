//! The local-path provisioner (as k3s' local-path-provisioner): for a
//! pending claim of a class whose provisioner is [`LOCAL_PATH_PROVISIONER`],
//! once the scheduler has chosen a node (`volume.kubernetes.io/selected-node`),
//! creates PersistentVolume `pvc-<claim uid>`:
//!
//! - `hostPath` `<root>/pvc-<uid>_<namespace>_<name>` (DirectoryOrCreate),
//!   where `<root>` is the node's Node annotation `keel.dev/local-path-root`,
//!   published by its agent, which also creates the directory when a pod
//!   mounts it and removes it once the volume object is gone;
//! - required node affinity `kubernetes.io/hostname In [<node>]`, so every
//!   later consumer is scheduled there;
//! - capacity = the claim's request (not enforced: a directory has no
//!   quota), the claim's access modes, the class's reclaim policy;
//! - `claimRef` pointing at the claim (uid included), so the binder binds
//!   it to this claim only.
//!
//! Idempotent: the volume's name is derived from the claim's uid, so a
//! repeat finds it (cache or 409) instead of creating a second one. A
//! class in Immediate mode has no node to provision on: the claim stays
//! Pending with a ProvisioningFailed event, as with k3s.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use super::{
    annotation, claim_class, is_delayed, volume_name, ANN_LOCAL_PATH_ROOT, ANN_PROVISIONED_BY,
    ANN_SELECTED_NODE, LOCAL_PATH_PROVISIONER,
};
use crate::cache::{key_of, next_change, Caches, Change, Informer};
use crate::client::is_status;
use crate::events;
use crate::reconcile::{enqueue_all, run_workers, Reconciled, WorkQueue, RESYNC};

const COMPONENT: &str = "keel.dev/local-path_local-path-provisioner";
const WORKERS: usize = 2;
/// How soon a claim waiting for its node (unknown, or without a published
/// root) is looked at again.
const NODE_RETRY: Duration = Duration::from_secs(5);

struct Provisioner {
    client: kube::Client,
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    nodes: Informer<Node>,
}

/// Runs the provisioner until the future is dropped.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Provisioner {
        client,
        claims: caches.get::<PersistentVolumeClaim>(),
        volumes: caches.get::<PersistentVolume>(),
        classes: caches.get::<StorageClass>(),
        nodes: caches.get::<Node>(),
    });
    let queue = WorkQueue::new();
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.claims.wait_synced().await;
    ctl.volumes.wait_synced().await;
    ctl.classes.wait_synced().await;
    ctl.nodes.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

/// Claims are the keys; a class change may make any of them ours.
async fn watch_changes(ctl: Arc<Provisioner>, queue: WorkQueue) {
    let mut claim_rx = ctl.claims.subscribe();
    let mut class_rx = ctl.classes.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut claim_rx) => match c {
                Some(Change::Applied(pvc)) => queue.add(&key_of(pvc.as_ref())),
                Some(Change::Deleted(_)) => {}
                Some(Change::Resync) => enqueue_all(&queue, &ctl.claims),
                None => return,
            },
            c = next_change(&mut class_rx) => match c {
                Some(_) => enqueue_all(&queue, &ctl.claims),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.claims),
        }
    }
}

impl Provisioner {
    async fn reconcile(&self, key: &str) -> Reconciled<kube::Error> {
        let Some(pvc) = self.claims.get_key(key) else {
            return Ok(None);
        };
        let waiting = pvc.metadata.deletion_timestamp.is_none() && volume_name(&pvc).is_empty();
        let Some(class) = self.classes.get(None, claim_class(&pvc)) else {
            return Ok(None);
        };
        if !waiting || class.provisioner != LOCAL_PATH_PROVISIONER {
            return Ok(None);
        }
        let pv_name = format!("pvc-{}", pvc.metadata.uid.as_deref().unwrap_or_default());
        if self.volumes.get(None, &pv_name).is_some() {
            return Ok(None);
        }
        let Some(node) = annotation(&pvc.metadata, ANN_SELECTED_NODE) else {
            if !is_delayed(&class) {
                let msg = "configuration error, no node was specified: the local-path provisioner \
                           needs volumeBindingMode WaitForFirstConsumer";
                self.event(&pvc, events::WARNING, "ProvisioningFailed", msg);
            }
            return Ok(None);
        };
        let root = match self.node_root(node) {
            Ok(root) => root,
            Err(msg) => {
                self.event(&pvc, events::WARNING, "ProvisioningFailed", &msg);
                return Ok(Some(NODE_RETRY));
            }
        };
        let pv = match volume_for(&pvc, &class, &pv_name, node, &root) {
            Ok(pv) => pv,
            Err(msg) => {
                self.event(&pvc, events::WARNING, "ProvisioningFailed", &msg);
                return Ok(None);
            }
        };
        let msg = format!("External provisioner is provisioning volume for claim \"{key}\"");
        self.event(&pvc, events::NORMAL, "Provisioning", &msg);
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &pv).await {
            Ok(_) => {
                let msg = format!("Successfully provisioned volume {pv_name}");
                self.event(&pvc, events::NORMAL, "ProvisioningSucceeded", &msg);
                Ok(None)
            }
            Err(e) if is_status(&e, 409) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The volume root node `node` publishes.
    fn node_root(&self, node: &str) -> Result<String, String> {
        let Some(n) = self.nodes.get(None, node) else {
            return Err(format!("node \"{node}\" not found"));
        };
        match annotation(&n.metadata, ANN_LOCAL_PATH_ROOT).filter(|r| !r.is_empty()) {
            Some(root) => Ok(root.to_string()),
            None => Err(format!(
                "node \"{node}\" has no {ANN_LOCAL_PATH_ROOT} annotation (its agent publishes it at registration)"
            )),
        }
    }

    /// Records an Event about the claim in the background (best effort).
    fn event(
        &self,
        pvc: &PersistentVolumeClaim,
        kind: &'static str,
        reason: &'static str,
        msg: &str,
    ) {
        let (client, involved, msg) = (
            self.client.clone(),
            events::object_ref(pvc),
            msg.to_string(),
        );
        tokio::spawn(async move {
            events::record(&client, &involved, kind, reason, &msg, COMPONENT).await;
        });
    }
}

/// The PersistentVolume provisioned for `pvc` on `node` under `root`; Err
/// when the claim asks for what a directory cannot be.
fn volume_for(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    pv_name: &str,
    node: &str,
    root: &str,
) -> Result<PersistentVolume, String> {
    let spec = pvc.spec.clone().unwrap_or_default();
    if spec.volume_mode.as_deref() == Some("Block") {
        return Err("the local-path provisioner only makes Filesystem volumes".into());
    }
    if spec.selector.is_some() {
        return Err("claim Selector is not supported".into());
    }
    let storage = spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|mut r| r.remove("storage"))
        .ok_or("the claim requests no storage")?;
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let path = format!("{}/{pv_name}_{ns}_{name}", root.trim_end_matches('/'));
    let policy = class
        .reclaim_policy
        .clone()
        .unwrap_or_else(|| "Delete".into());
    Ok(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name.to_string()),
            annotations: Some(
                [(
                    ANN_PROVISIONED_BY.to_string(),
                    LOCAL_PATH_PROVISIONER.to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes,
            capacity: Some([("storage".to_string(), storage)].into()),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(ns),
                name: Some(name),
                uid: pvc.metadata.uid.clone(),
                resource_version: pvc.metadata.resource_version.clone(),
                ..ObjectReference::default()
            }),
            host_path: Some(HostPathVolumeSource {
                path,
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: Some(policy),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: Some("Filesystem".into()),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::tests::from_json;
    use serde_json::json;

    #[test]
    fn a_provisioned_volume_is_pinned_to_its_node_and_claim() {
        let pvc: PersistentVolumeClaim = from_json(json!({
            "metadata": {"name": "data", "namespace": "web", "uid": "u-1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                     "resources": {"requests": {"storage": "1Gi"}}},
        }));
        let class: StorageClass = from_json(json!({
            "metadata": {"name": "local-path"}, "provisioner": LOCAL_PATH_PROVISIONER,
            "reclaimPolicy": "Retain",
        }));
        let pv = volume_for(&pvc, &class, "pvc-u-1", "n2", "/var/keel/storage/").unwrap();
        let v = serde_json::to_value(&pv).unwrap();
        assert_eq!(
            v["spec"]["hostPath"]["path"],
            "/var/keel/storage/pvc-u-1_web_data"
        );
        assert_eq!(v["spec"]["capacity"]["storage"], "1Gi");
        assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(v["spec"]["claimRef"]["uid"], "u-1");
        let term = &v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0];
        assert_eq!(term["matchExpressions"][0]["values"], json!(["n2"]));
        let mut block = pvc.clone();
        block.spec.as_mut().unwrap().volume_mode = Some("Block".into());
        assert!(volume_for(&block, &class, "pvc-u-1", "n2", "/r").is_err());
    }
}
