//! The node → pod → object relationships the Node authorizer decides on,
//! as Kubernetes' node authorization graph records them: a pod bound to a
//! node (`spec.nodeName`) makes the node related to the Secrets,
//! ConfigMaps, PersistentVolumeClaims and ServiceAccount the pod names,
//! and a claim makes it related to the PersistentVolume bound to it.
//!
//! Reads are of this replica's applied state ([`Objects::list_local`],
//! like RBAC's): one range read of a namespace's pods per decision, no
//! round trip to the leader, so the graph may lag a write made through
//! another replica by a moment (as kube-apiserver's informer-fed graph
//! does).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::status::ApiResult;
use crate::storage::Objects;

/// What one pod references, by name (all in the pod's namespace).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refs {
    pub secrets: BTreeSet<String>,
    pub config_maps: BTreeSet<String>,
    pub claims: BTreeSet<String>,
    pub service_account: String,
}

fn names<'a>(v: &'a Value, list: &str) -> impl Iterator<Item = &'a Value> + 'a {
    v[list].as_array().into_iter().flatten()
}

fn add(set: &mut BTreeSet<String>, v: &Value) {
    if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
        set.insert(s.to_string());
    }
}

/// Everything `pod` references: volumes (secret, configMap, projected,
/// persistentVolumeClaim, generic ephemeral, CSI/flex secret refs),
/// container env and envFrom of every container kind, image pull
/// secrets and the service account (`default` when unset).
pub fn references(pod: &Value) -> Refs {
    let spec = &pod["spec"];
    let mut r = Refs {
        service_account: spec["serviceAccountName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string(),
        ..Default::default()
    };
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    for s in names(spec, "imagePullSecrets") {
        add(&mut r.secrets, &s["name"]);
    }
    for v in names(spec, "volumes") {
        add(&mut r.secrets, &v["secret"]["secretName"]);
        add(&mut r.config_maps, &v["configMap"]["name"]);
        add(&mut r.claims, &v["persistentVolumeClaim"]["claimName"]);
        for src in names(&v["projected"], "sources") {
            add(&mut r.secrets, &src["secret"]["name"]);
            add(&mut r.config_maps, &src["configMap"]["name"]);
        }
        for driver in ["csi", "flexVolume", "cephfs", "rbd", "iscsi", "azureFile"] {
            add(&mut r.secrets, &v[driver]["nodePublishSecretRef"]["name"]);
            add(&mut r.secrets, &v[driver]["secretRef"]["name"]);
        }
        add(&mut r.secrets, &v["azureFile"]["secretName"]);
        // A generic ephemeral volume's claim is `<pod>-<volume>`.
        if v["ephemeral"].is_object() {
            if let Some(vol) = v["name"].as_str() {
                r.claims.insert(format!("{pod_name}-{vol}"));
            }
        }
    }
    for kind in ["initContainers", "containers", "ephemeralContainers"] {
        for c in names(spec, kind) {
            for e in names(c, "env") {
                add(&mut r.secrets, &e["valueFrom"]["secretKeyRef"]["name"]);
                add(
                    &mut r.config_maps,
                    &e["valueFrom"]["configMapKeyRef"]["name"],
                );
            }
            for e in names(c, "envFrom") {
                add(&mut r.secrets, &e["secretRef"]["name"]);
                add(&mut r.config_maps, &e["configMapRef"]["name"]);
            }
        }
    }
    r
}

/// The node a pod is bound to ("" when unscheduled).
pub fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or("")
}

/// The store's graph reads.
pub struct Graph<'a> {
    pub objects: &'a Objects,
}

impl Graph<'_> {
    /// The pods of `namespace` bound to `node`.
    pub async fn pods_on(&self, node: &str, namespace: &str) -> ApiResult<Vec<Value>> {
        let prefix = format!("/registry/pods/{namespace}/");
        let mut pods = self.objects.list_local(&prefix).await?;
        pods.retain(|p| node_of(p) == node);
        Ok(pods)
    }

    /// Whether pod `namespace/name` is bound to `node`; None when there
    /// is no such pod (the request then answers 404, which tells the node
    /// only that a pod it reported on is gone).
    pub async fn pod_bound(
        &self,
        node: &str,
        namespace: &str,
        name: &str,
    ) -> ApiResult<Option<bool>> {
        let key = format!("/registry/pods/{namespace}/{name}");
        Ok(self
            .objects
            .get_local(&key)
            .await?
            .map(|s| node_of(&s.obj) == node))
    }

    /// Whether a pod on `node` in `namespace` references the object
    /// `resource/name` (secrets, configmaps, persistentvolumeclaims,
    /// serviceaccounts).
    pub async fn referenced(
        &self,
        node: &str,
        namespace: &str,
        resource: &str,
        name: &str,
    ) -> ApiResult<bool> {
        let pods = self.pods_on(node, namespace).await?;
        Ok(pods.iter().any(|p| {
            let r = references(p);
            match resource {
                "secrets" => r.secrets.contains(name),
                "configmaps" => r.config_maps.contains(name),
                "persistentvolumeclaims" => r.claims.contains(name),
                "serviceaccounts" => r.service_account == name,
                _ => false,
            }
        }))
    }

    /// Whether PersistentVolume `name` is bound to a claim a pod on
    /// `node` uses (the PV's `spec.claimRef`), or is a node-local volume
    /// pinned to `node` (required affinity `kubernetes.io/hostname In
    /// [node]`, as the local-path provisioner writes it: the agent holding
    /// its directory asks whether it still exists). A missing PV is
    /// related too, so that question answers 404.
    pub async fn volume_related(&self, node: &str, name: &str) -> ApiResult<bool> {
        let key = format!("/registry/persistentvolumes/{name}");
        let Some(pv) = self.objects.get_local(&key).await? else {
            return Ok(true);
        };
        if pinned_to(&pv.obj, node) {
            return Ok(true);
        }
        let claim = &pv.obj["spec"]["claimRef"];
        let (Some(ns), Some(claim)) = (claim["namespace"].as_str(), claim["name"].as_str()) else {
            return Ok(false);
        };
        self.referenced(node, ns, "persistentvolumeclaims", claim)
            .await
    }
}

/// Whether a PV's required node affinity names only `node` by hostname.
fn pinned_to(pv: &Value, node: &str) -> bool {
    let terms = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"];
    let Some(terms) = terms.as_array().filter(|t| !t.is_empty()) else {
        return false;
    };
    terms.iter().all(|t| {
        names(t, "matchExpressions").any(|e| {
            e["key"] == "kubernetes.io/hostname"
                && e["operator"] == "In"
                && e["values"]
                    .as_array()
                    .is_some_and(|v| v.len() == 1 && v[0] == node)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_reference_kind_is_found() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "d"},
            "spec": {
                "nodeName": "n1",
                "serviceAccountName": "robot",
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "a", "secret": {"secretName": "vol-secret"}},
                    {"name": "b", "configMap": {"name": "vol-cm"}},
                    {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "d", "projected": {"sources": [
                        {"secret": {"name": "proj-secret"}},
                        {"configMap": {"name": "proj-cm"}},
                        {"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "e", "ephemeral": {"volumeClaimTemplate": {}}},
                    {"name": "f", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-secret"}}}
                ],
                "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "init-cm"}}]}],
                "containers": [{"name": "c", "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                    {"name": "C", "value": "plain"}],
                    "envFrom": [{"secretRef": {"name": "from-secret"}}]}]
            }
        });
        let r = references(&pod);
        let set = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            r.secrets,
            set(&[
                "csi-secret",
                "env-secret",
                "from-secret",
                "proj-secret",
                "pull",
                "vol-secret"
            ])
        );
        assert_eq!(
            r.config_maps,
            set(&["env-cm", "init-cm", "proj-cm", "vol-cm"])
        );
        assert_eq!(r.claims, set(&["data", "web-e"]));
        assert_eq!(r.service_account, "robot");
        assert_eq!(node_of(&pod), "n1");
    }

    #[test]
    fn local_volumes_are_pinned_by_hostname() {
        let pv = |values: Value| {
            json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": values}]}]}}}})
        };
        assert!(pinned_to(&pv(json!(["n1"])), "n1"));
        assert!(!pinned_to(&pv(json!(["n2"])), "n1"));
        assert!(!pinned_to(&pv(json!(["n1", "n2"])), "n1"));
        assert!(!pinned_to(&json!({"spec": {}}), "n1"));
    }

    #[test]
    fn a_bare_pod_references_only_the_default_account() {
        let r = references(&json!({"spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(
            r,
            Refs {
                service_account: "default".into(),
                ..Default::default()
            }
        );
    }
}
