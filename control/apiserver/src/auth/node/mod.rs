//! The Node authorizer (kube-apiserver's `--authorization-mode=Node`),
//! asked before RBAC. It has an opinion only on node identities: a user
//! `system:node:<name>` in the group `system:nodes`. For them it allows:
//! - `get` of a Secret, ConfigMap, PersistentVolumeClaim or
//!   PersistentVolume only when a pod bound to the node references it
//!   (see [`graph`]; a PV also when it is pinned to the node or gone), and `create` of `serviceaccounts/token` only for the
//!   service accounts of its pods;
//! - `get` of a pod (and its status) only when the pod is bound to the
//!   node (or is gone: the answer is then 404); `list`/`watch` of pods only with the field selector
//!   `spec.nodeName=<name>` (Kubernetes' selector-aware node
//!   authorization), so a node sees only its own assignments;
//! - Leases only in `kube-node-lease` and only its own (a `create`, whose
//!   name is in the body, is checked by NodeRestriction admission);
//! - everything else the `system:node` ClusterRole of the bootstrap
//!   policy grants (node, pod-status and event writes, reads of Services,
//!   Nodes, ...). Which Node or pod a write may touch is NodeRestriction
//!   admission's decision ([`crate::admission::node_restriction`]).
//!
//! A denial is a NoOpinion with Kubernetes' reason (`no relationship
//! found between node 'n1' and this object`), so RBAC still decides next,
//! as in Kubernetes' `Node,RBAC` chain.

pub mod graph;

use futures::future::BoxFuture;

use super::rbac::resolve::rules_of;
use super::rbac::Rule;
use super::{Attributes, Authorizer, Decision, UserInfo};
use crate::status::ApiResult;
use crate::storage::Objects;
use graph::Graph;

/// The group of every node identity.
pub const NODES_GROUP: &str = "system:nodes";
/// A node identity's user name is this prefix and the node's name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Where nodes' heartbeat Leases live.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node name of a node identity; None for any other user.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    if !user.in_group(NODES_GROUP) {
        return None;
    }
    user.name
        .strip_prefix(NODE_USER_PREFIX)
        .filter(|n| !n.is_empty())
}

/// The identity of node `name`, as its client certificate authenticates.
pub fn node_user(name: &str) -> UserInfo {
    UserInfo::authenticated(
        &format!("{NODE_USER_PREFIX}{name}"),
        "",
        &[NODES_GROUP.to_string()],
    )
}

/// See the module docs.
pub struct NodeAuthorizer {
    objects: Objects,
    /// The `system:node` ClusterRole's rules (the static part).
    rules: Vec<Rule>,
}

impl NodeAuthorizer {
    pub fn new(objects: Objects) -> NodeAuthorizer {
        NodeAuthorizer {
            objects,
            rules: node_rules(),
        }
    }

    async fn decide(&self, node: &str, a: &Attributes) -> ApiResult<Decision> {
        let graph = Graph {
            objects: &self.objects,
        };
        let no_relationship = || {
            Ok(Decision::NoOpinion(format!(
                "no relationship found between node '{node}' and this object"
            )))
        };
        let deny = |why: &str| Ok(Decision::NoOpinion(why.to_string()));
        let core = a.api_group.is_empty();
        match (core, a.resource.as_str(), a.subresource.as_str()) {
            (true, "secrets" | "configmaps" | "persistentvolumeclaims", "") => {
                if a.verb != "get" || a.name.is_empty() {
                    return deny(&format!(
                        "can only get individual resources of this type, not {} {}",
                        a.verb, a.resource
                    ));
                }
                match graph
                    .referenced(node, &a.namespace, &a.resource, &a.name)
                    .await?
                {
                    true => Ok(Decision::Allow),
                    false => no_relationship(),
                }
            }
            (true, "persistentvolumeclaims", "status") => {
                if !matches!(a.verb.as_str(), "get" | "update" | "patch") || a.name.is_empty() {
                    return deny("can only get, update or patch the status of individual claims");
                }
                match graph
                    .referenced(node, &a.namespace, "persistentvolumeclaims", &a.name)
                    .await?
                {
                    true => Ok(Decision::Allow),
                    false => no_relationship(),
                }
            }
            (true, "persistentvolumes", "") => {
                if a.verb != "get" || a.name.is_empty() {
                    return deny("can only get individual persistentvolumes");
                }
                match graph.volume_related(node, &a.name).await? {
                    true => Ok(Decision::Allow),
                    false => no_relationship(),
                }
            }
            (true, "serviceaccounts", "token") => {
                if a.verb != "create" || a.name.is_empty() {
                    return deny("can only create tokens for individual service accounts");
                }
                match graph
                    .referenced(node, &a.namespace, "serviceaccounts", &a.name)
                    .await?
                {
                    true => Ok(Decision::Allow),
                    false => no_relationship(),
                }
            }
            (true, "pods", "" | "status") if a.verb == "get" && !a.name.is_empty() => {
                match graph.pod_bound(node, &a.namespace, &a.name).await? {
                    Some(true) | None => Ok(Decision::Allow),
                    Some(false) => no_relationship(),
                }
            }
            (true, "pods", "") if matches!(a.verb.as_str(), "get" | "list" | "watch") => {
                match selects_node(&a.field_selector, node) {
                    true => Ok(Decision::Allow),
                    false => deny(&format!(
                        "can only list/watch pods with spec.nodeName field selector '{node}'"
                    )),
                }
            }
            (false, "leases", "") if a.api_group == "coordination.k8s.io" => {
                if a.namespace != NODE_LEASE_NAMESPACE {
                    return deny("can only access leases in the kube-node-lease namespace");
                }
                if a.name != node && !(a.verb == "create" && a.name.is_empty()) {
                    return deny(
                        "can only access node lease with the same name as the requesting node",
                    );
                }
                self.static_rules(a)
            }
            _ => self.static_rules(a),
        }
    }

    fn static_rules(&self, a: &Attributes) -> ApiResult<Decision> {
        Ok(match self.rules.iter().any(|r| r.allows(a)) {
            true => Decision::Allow,
            false => Decision::NoOpinion(String::new()),
        })
    }
}

/// The rules of the bootstrap policy's `system:node` ClusterRole.
fn node_rules() -> Vec<Rule> {
    super::bootstrap_policy::cluster_roles()
        .iter()
        .find(|r| r["metadata"]["name"] == "system:node")
        .map(rules_of)
        .unwrap_or_default()
}

/// Whether a field selector (`a=b,c!=d`, as sent) requires
/// `spec.nodeName=<node>`.
fn selects_node(selector: &str, node: &str) -> bool {
    selector.split(',').any(|term| {
        let term = term.trim();
        let (k, v) = match term.split_once("==").or_else(|| term.split_once('=')) {
            Some(kv) => kv,
            None => return false,
        };
        !k.ends_with('!') && k.trim() == "spec.nodeName" && v.trim() == node
    })
}

impl Authorizer for NodeAuthorizer {
    fn authorize<'a>(&'a self, a: &'a Attributes) -> BoxFuture<'a, ApiResult<Decision>> {
        Box::pin(async move {
            match node_name(&a.user) {
                Some(node) if a.resource_request => self.decide(node, a).await,
                // Discovery, health: RBAC's (system:discovery and friends).
                _ => Ok(Decision::NoOpinion(String::new())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_identities() {
        assert_eq!(node_name(&node_user("n1")), Some("n1"));
        // The name alone, without the group, is not a node.
        let u = UserInfo::authenticated("system:node:n1", "", &[]);
        assert_eq!(node_name(&u), None);
        let u = UserInfo::authenticated("system:node:", "", &[NODES_GROUP.into()]);
        assert_eq!(node_name(&u), None);
        assert_eq!(node_name(&UserInfo::admin()), None);
    }

    #[test]
    fn field_selectors() {
        assert!(selects_node("spec.nodeName=n1", "n1"));
        assert!(selects_node("status.phase=Running,spec.nodeName==n1", "n1"));
        assert!(!selects_node("spec.nodeName=n2", "n1"));
        assert!(!selects_node("spec.nodeName!=n1", "n1"));
        assert!(!selects_node("", "n1"));
        assert!(!selects_node("metadata.name=n1", "n1"));
    }

    #[test]
    fn the_static_rules_are_the_node_role() {
        let rules = node_rules();
        let req = |verb: &str, group: &str, resource: &str, sub: &str| Attributes {
            user: node_user("n1"),
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let allows = |a: Attributes| rules.iter().any(|r| r.allows(&a));
        for (verb, group, resource, sub) in [
            ("create", "", "events", ""),
            ("patch", "", "nodes", "status"),
            ("update", "", "pods", "status"),
            ("create", "", "nodes", ""),
            ("get", "", "services", ""),
            ("list", "discovery.k8s.io", "endpointslices", ""),
            ("delete", "", "pods", ""),
        ] {
            assert!(
                allows(req(verb, group, resource, sub)),
                "{verb} {resource}/{sub}"
            );
        }
        for (verb, group, resource, sub) in [
            ("delete", "", "nodes", ""),
            ("create", "", "secrets", ""),
            ("patch", "", "secrets", ""),
            ("update", "", "pods", ""),
            ("create", "", "pods", "binding"),
            ("create", "", "namespaces", ""),
            ("list", "networking.k8s.io", "ingresses", ""),
        ] {
            assert!(
                !allows(req(verb, group, resource, sub)),
                "{verb} {resource}/{sub}"
            );
        }
    }
}
