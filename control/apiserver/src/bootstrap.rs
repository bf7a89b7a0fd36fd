//! Objects every cluster has from its first start: the `default`,
//! `kube-system`, `kube-public` and `kube-node-lease` namespaces, each with
//! its `default` ServiceAccount, the default StorageClass `local-path`
//! (as k3s ships one), the default IngressClass `keel` (the router every
//! agent runs, as k3s ships Traefik's), and the `kube-system/kube-dns`
//! Service the agents serve cluster DNS on.

use std::net::Ipv4Addr;

use serde_json::json;

use crate::admission;
use crate::api::services::{self, ServiceRange};
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

/// The default IngressClass's name, and its controller: the router in
/// every keel agent (shared with the router and the status controller).
pub use keel_apimachinery::ingress_class::{
    CLASS as INGRESS_CLASS, CONTROLLER as INGRESS_CONTROLLER, DEFAULT_CLASS_ANNOTATION,
};

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
            "annotations": {DEFAULT_CLASS_ANNOTATION: "true"},
        },
        "spec": {"controller": INGRESS_CONTROLLER},
    });
    if let Err(e) = objects.create(&info.key(None, INGRESS_CLASS), &obj).await {
        tracing::warn!(error = %e.message, "could not create the default ingress class");
    }
}

/// Namespace and name of the cluster DNS Service.
pub const KUBE_DNS: (&str, &str) = ("kube-system", "kube-dns");
/// The annotation telling the service proxy that agents serve this
/// Service's address themselves (no endpoints to proxy to).
pub const SERVED_BY_ANNOTATION: &str = "keel.dev/served-by";

/// The kube-dns cluster IP: the service range's network + 10 (as
/// kubeadm's `10.96.0.10`), e.g. `127.43.0.10` for `127.43.0.0/16`.
pub fn kube_dns_ip(range: ServiceRange) -> Ipv4Addr {
    range.dns_service_ip()
}

/// Creates `kube-system/kube-dns` when absent: cluster IP
/// [`kube_dns_ip`], ports `dns` 53/UDP and `dns-tcp` 53/TCP, no selector,
/// annotated [`SERVED_BY_ANNOTATION`]`: agent` (every agent binds the
/// address itself, see keel-node's `dns` module). The address is claimed
/// through the service allocator like any Service's, so it is never handed
/// out at random. Every replica runs this at start (create-if-absent); a
/// replica that loses the race to another finds the Service and stays
/// quiet. The address already held by another Service is a warning, and
/// the cluster runs without kube-dns (agents accept `--cluster-dns`).
pub async fn ensure_kube_dns(objects: &Objects, range: ServiceRange) {
    let info = resources::find("", "v1", "services").expect("services are served");
    let (ns, name) = KUBE_DNS;
    let key = info.key(Some(ns), name);
    let exists =
        |r: &crate::status::ApiResult<Option<crate::storage::Stored>>| matches!(r, Ok(Some(_)));
    if exists(&objects.get(&key).await) {
        return;
    }
    let ip = kube_dns_ip(range).to_string();
    let mut obj = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": meta::now_rfc3339(),
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true"},
            "annotations": {SERVED_BY_ANNOTATION: "agent"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
        "status": {"loadBalancer": {}},
    });
    admission::apply_defaults("", "services", &mut obj);
    admission::fill_zero_values("", "services", &mut obj);
    if let Err(e) = services::allocate(objects, range, info, &key, &mut obj).await {
        if !exists(&objects.get(&key).await) {
            tracing::warn!(%ip, error = %e.message, "could not create the kube-dns service");
        }
        return;
    }
    match objects.create(&key, &obj).await {
        Ok(Some(_)) => tracing::info!(%ip, "created service kube-system/kube-dns"),
        Ok(None) => services::release(objects, &key, &obj).await,
        Err(e) => {
            services::release(objects, &key, &obj).await;
            tracing::warn!(error = %e.message, "could not create the kube-dns service");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_dns_is_the_tenth_address_of_the_range() {
        let r: ServiceRange = "127.43.0.0/16".parse().unwrap();
        assert_eq!(kube_dns_ip(r), Ipv4Addr::new(127, 43, 0, 10));
        let r: ServiceRange = "127.7.128.0/17".parse().unwrap();
        assert_eq!(kube_dns_ip(r), Ipv4Addr::new(127, 7, 128, 10));
    }
}
