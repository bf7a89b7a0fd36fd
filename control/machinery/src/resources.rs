//! The resources keel serves: one row per (group, version, resource), the
//! single source for routing, discovery, storage keys and OpenAPI.
//!
//! Guarantee: what discovery advertises is exactly what the router serves
//! (kubectl's `get all` fails on an advertised resource that errors).

/// A subresource and the verbs it supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Status,
    Scale,
    Binding,
    Eviction,
    Log,
    /// `pods/exec`, `pods/attach`, `pods/portforward`: streams, upgraded
    /// to WebSocket (or SPDY) and bridged to the node's agent.
    Exec,
    Attach,
    PortForward,
    /// `serviceaccounts/token`: TokenRequest, a signed token for the
    /// account (never stored).
    Token,
    /// `certificatesigningrequests/approval`: the Approved/Denied
    /// conditions only (who may approve is RBAC on this subresource).
    Approval,
}

impl Sub {
    pub fn name(self) -> &'static str {
        match self {
            Sub::Status => "status",
            Sub::Scale => "scale",
            Sub::Binding => "binding",
            Sub::Eviction => "eviction",
            Sub::Log => "log",
            Sub::Exec => "exec",
            Sub::Attach => "attach",
            Sub::PortForward => "portforward",
            Sub::Token => "token",
            Sub::Approval => "approval",
        }
    }

    pub fn parse(s: &str) -> Option<Sub> {
        [
            Sub::Status,
            Sub::Scale,
            Sub::Binding,
            Sub::Eviction,
            Sub::Log,
            Sub::Exec,
            Sub::Attach,
            Sub::PortForward,
            Sub::Token,
            Sub::Approval,
        ]
        .into_iter()
        .find(|sub| sub.name() == s)
    }

    /// (group, version, kind) of the object the subresource speaks, when it
    /// is not the parent's own kind.
    pub fn response_kind(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Sub::Scale => Some(("autoscaling", "v1", "Scale")),
            Sub::Binding => Some(("", "v1", "Binding")),
            Sub::Eviction => Some(("policy", "v1", "Eviction")),
            Sub::Status | Sub::Log | Sub::Approval => None,
            Sub::Exec => Some(("", "v1", "PodExecOptions")),
            Sub::Attach => Some(("", "v1", "PodAttachOptions")),
            Sub::PortForward => Some(("", "v1", "PodPortForwardOptions")),
            Sub::Token => Some(("authentication.k8s.io", "v1", "TokenRequest")),
        }
    }

    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Sub::Status | Sub::Scale | Sub::Approval => &["get", "patch", "update"],
            Sub::Binding | Sub::Eviction | Sub::Token => &["create"],
            Sub::Log => &["get"],
            Sub::Exec | Sub::Attach | Sub::PortForward => &["create", "get"],
        }
    }
}

/// Everything the API server knows about one resource.
#[derive(Debug)]
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    /// Plural, lowercase: the URL segment.
    pub resource: &'static str,
    pub kind: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Sub],
}

pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

const ALL: &[&str] = &["all"];
const STATUS: &[Sub] = &[Sub::Status];
const SCALABLE: &[Sub] = &[Sub::Status, Sub::Scale];
const APPROVABLE: &[Sub] = &[Sub::Status, Sub::Approval];

macro_rules! res {
    ($g:expr, $v:expr, $r:expr, $k:expr, $s:expr, $ns:expr, $short:expr, $cat:expr, $sub:expr) => {
        ResourceInfo {
            group: $g,
            version: $v,
            resource: $r,
            kind: $k,
            singular: $s,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
        }
    };
}

/// Discovery order matters: kubectl's `get all` lists in this order.
pub static RESOURCES: &[ResourceInfo] = &[
    res!(
        "",
        "v1",
        "pods",
        "Pod",
        "pod",
        true,
        &["po"],
        ALL,
        &[
            Sub::Status,
            Sub::Binding,
            Sub::Eviction,
            Sub::Log,
            Sub::Exec,
            Sub::Attach,
            Sub::PortForward
        ]
    ),
    res!(
        "",
        "v1",
        "replicationcontrollers",
        "ReplicationController",
        "replicationcontroller",
        true,
        &["rc"],
        ALL,
        SCALABLE
    ),
    res!(
        "",
        "v1",
        "services",
        "Service",
        "service",
        true,
        &["svc"],
        ALL,
        STATUS
    ),
    res!(
        "",
        "v1",
        "namespaces",
        "Namespace",
        "namespace",
        false,
        &["ns"],
        &[],
        STATUS
    ),
    res!(
        "",
        "v1",
        "nodes",
        "Node",
        "node",
        false,
        &["no"],
        &[],
        STATUS
    ),
    res!(
        "",
        "v1",
        "endpoints",
        "Endpoints",
        "endpoints",
        true,
        &["ep"],
        &[],
        &[]
    ),
    res!(
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        "configmap",
        true,
        &["cm"],
        &[],
        &[]
    ),
    res!("", "v1", "secrets", "Secret", "secret", true, &[], &[], &[]),
    res!(
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        "serviceaccount",
        true,
        &["sa"],
        &[],
        &[Sub::Token]
    ),
    res!(
        "",
        "v1",
        "events",
        "Event",
        "event",
        true,
        &["ev"],
        &[],
        &[]
    ),
    res!(
        "",
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        "persistentvolume",
        false,
        &["pv"],
        &[],
        STATUS
    ),
    res!(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        "persistentvolumeclaim",
        true,
        &["pvc"],
        &[],
        STATUS
    ),
    res!(
        "",
        "v1",
        "resourcequotas",
        "ResourceQuota",
        "resourcequota",
        true,
        &["quota"],
        &[],
        STATUS
    ),
    res!(
        "",
        "v1",
        "limitranges",
        "LimitRange",
        "limitrange",
        true,
        &["limits"],
        &[],
        &[]
    ),
    res!(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        "deployment",
        true,
        &["deploy"],
        ALL,
        SCALABLE
    ),
    res!(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        "replicaset",
        true,
        &["rs"],
        ALL,
        SCALABLE
    ),
    res!(
        "apps",
        "v1",
        "controllerrevisions",
        "ControllerRevision",
        "controllerrevision",
        true,
        &[],
        &[],
        &[]
    ),
    res!(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        "statefulset",
        true,
        &["sts"],
        ALL,
        SCALABLE
    ),
    res!(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        "daemonset",
        true,
        &["ds"],
        ALL,
        STATUS
    ),
    res!("batch", "v1", "jobs", "Job", "job", true, &[], ALL, STATUS),
    res!(
        "batch",
        "v1",
        "cronjobs",
        "CronJob",
        "cronjob",
        true,
        &["cj"],
        ALL,
        STATUS
    ),
    res!(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscaler",
        true,
        &["hpa"],
        ALL,
        STATUS
    ),
    res!(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        "lease",
        true,
        &[],
        &[],
        &[]
    ),
    res!(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        "endpointslice",
        true,
        &[],
        &[],
        &[]
    ),
    res!(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        "ingress",
        true,
        &["ing"],
        &[],
        STATUS
    ),
    res!(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "IngressClass",
        "ingressclass",
        false,
        &[],
        &[],
        &[]
    ),
    res!(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        "networkpolicy",
        true,
        &["netpol"],
        &[],
        &[]
    ),
    res!(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        "event",
        true,
        &["ev"],
        &[],
        &[]
    ),
    res!(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        "poddisruptionbudget",
        true,
        &["pdb"],
        &[],
        STATUS
    ),
    res!(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        "storageclass",
        false,
        &["sc"],
        &[],
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        "role",
        true,
        &[],
        &[],
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        "clusterrole",
        false,
        &[],
        &[],
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        "rolebinding",
        true,
        &[],
        &[],
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        "clusterrolebinding",
        false,
        &[],
        &[],
        &[]
    ),
    res!(
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        "certificatesigningrequest",
        false,
        &["csr"],
        &[],
        APPROVABLE
    ),
];

/// The API groups in discovery order (core first).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

pub fn find(group: &str, version: &str, resource: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.resource == resource)
}

/// The resource stored for a kind in a group (used by owner references and
/// the garbage collector).
pub fn by_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

impl ResourceInfo {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `deployments.apps`, or `pods` for the core group: how Kubernetes
    /// names a resource in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// The storage key segment. Resources that share a plural across
    /// groups (events) keep the non-core one under its group so both
    /// shapes never mix under one prefix.
    fn storage_name(&self) -> String {
        let clash = RESOURCES
            .iter()
            .any(|o| o.resource == self.resource && o.group.is_empty() && !self.group.is_empty());
        if clash {
            format!("{}/{}", self.group, self.resource)
        } else {
            self.resource.to_string()
        }
    }

    /// `/registry/<resource>/[<namespace>/]`: the prefix of a list. With
    /// `namespace` None on a namespaced resource, every namespace.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/", self.storage_name(), ns),
            _ => format!("/registry/{}/", self.storage_name()),
        }
    }

    /// The key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{}", self.prefix(namespace), name)
    }

    pub fn has(&self, sub: Sub) -> bool {
        self.subresources.contains(&sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_registry_layout() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("default"), "x"), "/registry/pods/default/x");
        assert_eq!(pods.prefix(None), "/registry/pods/");
        let ns = find("", "v1", "namespaces").unwrap();
        assert_eq!(
            ns.key(Some("ignored"), "kube-system"),
            "/registry/namespaces/kube-system"
        );
        let ev = find("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(ev.prefix(Some("a")), "/registry/events.k8s.io/events/a/");
        let core_ev = find("", "v1", "events").unwrap();
        assert_eq!(core_ev.prefix(Some("a")), "/registry/events/a/");
    }

    #[test]
    fn names_are_unique_per_group_version() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.resource == b.resource),
                    "{} twice",
                    a.resource
                );
            }
        }
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().qualified(),
            "deployments.apps"
        );
    }
}
