//! Objects every cluster has from its first start: the `default`,
//! `kube-system`, `kube-public` and `kube-node-lease` namespaces, each with
//! its `default` ServiceAccount, the default StorageClass `local-path`
//! (as k3s ships one), and the default IngressClass `keel` (the router
//! every agent runs, as k3s ships Traefik's).

use serde_json::json;

use crate::meta;
use crate::resources;
use crate::storage::Objects;

pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces that do not exist yet. Every replica
/// runs this at start; creation is create-if-absent, so they race safely.
pub async fn ensure_namespaces(objects: &Objects) {
    let info = resources::find("", "v1", "namespaces").expect("namespaces are served");
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": meta::now_rfc3339(),
                "labels": {"kubernetes.io/metadata.name": ns},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        if let Err(e) = objects.create(&info.key(None, ns), &obj).await {
            tracing::warn!(namespace = ns, error = %e.message, "could not create a system namespace");
        }
    }
}

/// Creates the `default` ServiceAccount of each system namespace when it
/// does not exist yet. The serviceaccounts controller does the same for
/// every namespace, but only once a replica leads the controllers; pods
/// need the account to be admitted, and the first ones (in `default`) may
/// come before that. Create-if-absent, like the namespaces.
pub async fn ensure_default_service_accounts(objects: &Objects) {
    let info = resources::find("", "v1", "serviceaccounts").expect("serviceaccounts are served");
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": "default",
                "namespace": ns,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": meta::now_rfc3339(),
            },
        });
        if let Err(e) = objects.create(&info.key(Some(ns), "default"), &obj).await {
            tracing::warn!(namespace = ns, error = %e.message, "could not create a default service account");
        }
    }
}

/// The default StorageClass's name.
pub const LOCAL_PATH_CLASS: &str = "local-path";
/// The provisioner of [`LOCAL_PATH_CLASS`]: keel-controllers' local-path
/// provisioner acts on every class naming it.
pub const LOCAL_PATH_PROVISIONER: &str = "keel.dev/local-path";

/// Creates the default StorageClass `local-path` when absent: volumes are
/// directories on the node that first runs a consumer
/// (WaitForFirstConsumer), deleted with their claim. Every replica runs
/// this at start (create-if-absent); a class an admin deleted comes back
/// at the next start, as k3s re-applies its manifests.
pub async fn ensure_storage_class(objects: &Objects) {
    let info = resources::find("storage.k8s.io", "v1", "storageclasses")
        .expect("storage classes are served");
    let obj = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": LOCAL_PATH_CLASS,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": meta::now_rfc3339(),
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": false,
    });
    if let Err(e) = objects
        .create(&info.key(None, LOCAL_PATH_CLASS), &obj)
        .await
    {
        tracing::warn!(error = %e.message, "could not create the default storage class");
    }
}

/// The default IngressClass's name.
pub const INGRESS_CLASS: &str = "keel";
/// The controller of [`INGRESS_CLASS`]: the router in every keel agent.
pub const INGRESS_CONTROLLER: &str = "keel.dev/ingress";

/// Creates the default IngressClass `keel` when absent, so Ingresses
/// without a class are routed by the agents' built-in router. Every
/// replica runs this at start (create-if-absent); a class an admin deleted
/// comes back at the next start, like [`ensure_storage_class`].
pub async fn ensure_ingress_class(objects: &Objects) {
    let info = resources::find("networking.k8s.io", "v1", "ingressclasses")
        .expect("ingress classes are served");
    let obj = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "name": INGRESS_CLASS,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": meta::now_rfc3339(),
            "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
        },
        "spec": {"controller": INGRESS_CONTROLLER},
    });
    if let Err(e) = objects.create(&info.key(None, INGRESS_CLASS), &obj).await {
        tracing::warn!(error = %e.message, "could not create the default ingress class");
    }
}
