//! NodeRestriction admission, as Kubernetes' plugin of that name: what a
//! node identity (`system:node:<name>`, group `system:nodes`) may write,
//! beyond which resources the Node authorizer lets it touch. The rules
//! (a documented subset of Kubernetes'):
//! - Nodes: only its own Node object may be created, updated or deleted;
//!   an update may not change `spec.taints`, `spec.podCIDR(s)`,
//!   `spec.providerID`, `spec.configSource` or owner references, and no
//!   write may add, change or remove a label under
//!   `node-restriction.kubernetes.io/` (labels an administrator sets so
//!   workloads can trust them);
//! - Pods: only mirror pods (annotation `kubernetes.io/config.mirror`)
//!   bound to itself may be created, and they may not use a service
//!   account, Secrets, ConfigMaps or claims; only the status of pods
//!   bound to it may be updated (never their spec); only pods bound to it
//!   may be deleted or evicted;
//! - Leases: only its own (name = the node's) in `kube-node-lease`;
//! - TokenRequests (`serviceaccounts/token`): only bound to a pod
//!   (`boundObjectRef` of kind Pod, apiVersion v1, with name and uid)
//!   that is bound to the node itself ([`admit_token_request`]).
//!
//! Other users, and in-process callers (no user: the controllers, the
//! node service acting for an admin agent), are not restricted here.
//! Every refusal is a 403 naming the node and the rule.

use serde_json::Value;

use crate::auth::node::{graph, node_name, NODE_LEASE_NAMESPACE};
use crate::auth::UserInfo;
use crate::meta;
use crate::resources::{ResourceInfo, Sub};
use crate::status::{ApiError, ApiResult};

/// The label prefix only administrators may set on Nodes.
pub const RESTRICTED_LABEL_PREFIX: &str = "node-restriction.kubernetes.io/";
/// The annotation marking a mirror pod (a static pod's API copy).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// One admitted write.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    Create(&'a Value),
    /// An update or patch: the object as it would be stored, and as it is.
    Update {
        new: &'a Value,
        old: &'a Value,
    },
    /// A delete of the stored object.
    Delete(&'a Value),
    /// An eviction of the stored pod.
    Evict(&'a Value),
}

impl Op<'_> {
    /// The object the write is about (the stored one for updates).
    fn object(&self) -> &Value {
        match self {
            Op::Create(o) | Op::Delete(o) | Op::Evict(o) => o,
            Op::Update { old, .. } => old,
        }
    }
}

/// Admits `op` on `info` (subresource `sub`) by `user`; see the module docs.
pub fn admit(
    user: Option<&UserInfo>,
    info: &ResourceInfo,
    sub: Option<Sub>,
    op: Op<'_>,
) -> ApiResult<()> {
    let Some(node) = user.and_then(node_name) else {
        return Ok(());
    };
    let forbid = |why: String| {
        Err(ApiError::forbidden(format!(
            "{} {:?} is forbidden: {why}",
            info.qualified(),
            meta::name(op.object())
        )))
    };
    match (info.group, info.resource) {
        ("", "nodes") => {
            let name = meta::name(op.object());
            if name != node {
                return forbid(format!(
                    "node {node:?} is not allowed to modify node {name:?}"
                ));
            }
            if let Some(label) = restricted_label_change(op) {
                return forbid(format!(
                    "is not allowed to modify labels: {label} (node {node:?} may not set labels with the prefix {RESTRICTED_LABEL_PREFIX})"
                ));
            }
            if let Op::Update { new, old } = op {
                for (field, what) in [
                    ("taints", "taints"),
                    ("podCIDR", "podCIDR"),
                    ("podCIDRs", "podCIDRs"),
                    ("providerID", "providerID"),
                    ("configSource", "configSource"),
                ] {
                    if sub.is_none() && new["spec"][field] != old["spec"][field] {
                        return forbid(format!("node {node:?} is not allowed to modify {what}"));
                    }
                }
                if new["metadata"]["ownerReferences"] != old["metadata"]["ownerReferences"] {
                    return forbid(format!(
                        "node {node:?} is not allowed to modify ownerReferences"
                    ));
                }
            }
            Ok(())
        }
        ("", "pods") => {
            let pod = op.object();
            let bound = graph::node_of(pod) == node;
            match op {
                Op::Create(_) => {
                    if pod["metadata"]["annotations"][MIRROR_ANNOTATION].is_null() {
                        return forbid(format!(
                            "pod does not have {MIRROR_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"
                        ));
                    }
                    if !bound {
                        return forbid(format!(
                            "node {node:?} can only create pods with spec.nodeName set to itself"
                        ));
                    }
                    mirror_references(pod)
                        .map_or(Ok(()), |what| forbid(format!(
                            "node {node:?} can not create pods that reference {what}"
                        )))
                }
                Op::Update { .. } if sub != Some(Sub::Status) => {
                    forbid(format!("node {node:?} can only update pod status"))
                }
                Op::Update { .. } if !bound => forbid(format!(
                    "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                )),
                Op::Delete(_) if !bound => forbid(format!(
                    "node {node:?} can only delete pods with spec.nodeName set to itself"
                )),
                Op::Evict(_) if !bound => forbid(format!(
                    "node {node:?} can only evict pods with spec.nodeName set to itself"
                )),
                _ => Ok(()),
            }
        }
        ("coordination.k8s.io", "leases") => {
            let lease = op.object();
            if lease["metadata"]["namespace"].as_str().unwrap_or("") != NODE_LEASE_NAMESPACE
                || meta::name(lease) != node
            {
                return forbid(format!(
                    "node {node:?} can only access node lease with the same name as the requesting node in {NODE_LEASE_NAMESPACE}"
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Admits a TokenRequest for service account `ns/account` by `user`:
/// a node may only ask for a token bound to one of its own pods, so a
/// node cannot mint long-lived credentials for accounts its pods do not
/// run as (Kubernetes' NodeRestriction `admitServiceAccount`). `pod` is
/// the stored pod `boundObjectRef` names (None: not found, or no
/// reference). Errors: 403 naming the node and the rule; 404 when the
/// pod does not exist (as Kubernetes answers).
pub fn admit_token_request(
    user: &UserInfo,
    account: &str,
    bound_ref: &Value,
    pod: Option<&Value>,
) -> ApiResult<()> {
    let Some(node) = node_name(user) else {
        return Ok(());
    };
    let forbid = |why: String| {
        Err(ApiError::forbidden(format!(
            "serviceaccounts \"{account}\" is forbidden: {why}"
        )))
    };
    let field = |k: &str| bound_ref[k].as_str().unwrap_or("");
    if bound_ref.is_null()
        || field("apiVersion") != "v1"
        || field("kind") != "Pod"
        || field("name").is_empty()
    {
        return forbid(format!("node {node:?} requested token not bound to a pod"));
    }
    if field("uid").is_empty() {
        return forbid(format!(
            "node {node:?} requested token with a pod binding without a uid"
        ));
    }
    match pod {
        Some(p) if meta::uid(p) != field("uid") => forbid(format!(
            "the UID in the bound object reference ({}) does not match the UID in record; the object might have been deleted and then recreated",
            field("uid")
        )),
        Some(p) if graph::node_of(p) != node => forbid(format!(
            "node {node:?} requested token bound to a pod scheduled on a different node"
        )),
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(
            crate::resources::find("", "v1", "pods").expect("pods are served"),
            field("name"),
        )),
    }
}

/// The first `node-restriction.kubernetes.io/` label the write adds,
/// changes or removes.
fn restricted_label_change(op: Op<'_>) -> Option<String> {
    let empty = Value::Null;
    let (new, old) = match op {
        Op::Create(o) => (&o["metadata"]["labels"], &empty),
        Op::Update { new, old } => (&new["metadata"]["labels"], &old["metadata"]["labels"]),
        Op::Delete(_) | Op::Evict(_) => return None,
    };
    let keys = |v: &Value| {
        v.as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    keys(new)
        .into_iter()
        .chain(keys(old))
        .filter(|k| k.starts_with(RESTRICTED_LABEL_PREFIX))
        .find(|k| new[k] != old[k])
}

/// What a mirror pod may not reference, if it does.
fn mirror_references(pod: &Value) -> Option<&'static str> {
    let explicit_account = pod["spec"]["serviceAccountName"]
        .as_str()
        .is_some_and(|s| !s.is_empty());
    let r = graph::references(pod);
    if explicit_account {
        return Some("service accounts");
    }
    if !r.secrets.is_empty() {
        return Some("secrets");
    }
    if !r.config_maps.is_empty() {
        return Some("configmaps");
    }
    if !r.claims.is_empty() {
        return Some("persistentvolumeclaims");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::node::node_user;
    use serde_json::json;

    fn info(group: &str, resource: &str) -> &'static ResourceInfo {
        crate::resources::find(group, "v1", resource).unwrap()
    }

    fn n1() -> Option<UserInfo> {
        Some(node_user("n1"))
    }

    fn node(name: &str, labels: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "spec": {}})
    }

    fn pod(node: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "d"},
               "spec": {"nodeName": node, "containers": [{"name": "c"}]}})
    }

    #[test]
    fn nodes_write_only_themselves() {
        let nodes = info("", "nodes");
        let own = node("n1", json!({"zone": "a"}));
        assert!(admit(n1().as_ref(), nodes, None, Op::Create(&own)).is_ok());
        let e = admit(
            n1().as_ref(),
            nodes,
            None,
            Op::Create(&node("n2", json!({}))),
        )
        .unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            r#"nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2""#
        );
        let other = node("n2", json!({}));
        let e = admit(
            n1().as_ref(),
            nodes,
            Some(Sub::Status),
            Op::Update {
                new: &other,
                old: &other,
            },
        )
        .unwrap_err();
        assert_eq!(e.code, 403);
        // Admins and in-process callers are not restricted.
        let admin = UserInfo::admin();
        assert!(admit(Some(&admin), nodes, None, Op::Create(&other)).is_ok());
        assert!(admit(None, nodes, None, Op::Delete(&other)).is_ok());
    }

    #[test]
    fn restricted_labels_taints_and_cidrs() {
        let nodes = info("", "nodes");
        let old = node(
            "n1",
            json!({"zone": "a", "node-restriction.kubernetes.io/pool": "gold"}),
        );
        let mut new = old.clone();
        new["metadata"]["labels"]["zone"] = json!("b");
        assert!(admit(
            n1().as_ref(),
            nodes,
            None,
            Op::Update {
                new: &new,
                old: &old
            }
        )
        .is_ok());
        for change in [json!("silver"), Value::Null] {
            let mut new = old.clone();
            new["metadata"]["labels"]["node-restriction.kubernetes.io/pool"] = change;
            let e = admit(
                n1().as_ref(),
                nodes,
                None,
                Op::Update {
                    new: &new,
                    old: &old,
                },
            )
            .unwrap_err();
            assert!(
                e.message.contains("node-restriction.kubernetes.io/pool"),
                "{}",
                e.message
            );
        }
        let created = node("n1", json!({"node-restriction.kubernetes.io/pool": "gold"}));
        assert!(admit(n1().as_ref(), nodes, None, Op::Create(&created)).is_err());
        let mut new = old.clone();
        new["spec"]["taints"] = json!([{"key": "k", "effect": "NoSchedule"}]);
        let e = admit(
            n1().as_ref(),
            nodes,
            None,
            Op::Update {
                new: &new,
                old: &old,
            },
        )
        .unwrap_err();
        assert!(
            e.message
                .ends_with(r#"node "n1" is not allowed to modify taints"#),
            "{}",
            e.message
        );
        let mut new = old.clone();
        new["spec"]["podCIDR"] = json!("10.0.0.0/24");
        assert!(admit(
            n1().as_ref(),
            nodes,
            None,
            Op::Update {
                new: &new,
                old: &old
            }
        )
        .is_err());
    }

    #[test]
    fn pods_only_bound_ones_and_only_status() {
        let pods = info("", "pods");
        let mine = pod("n1");
        let theirs = pod("n2");
        let status = Some(Sub::Status);
        assert!(admit(
            n1().as_ref(),
            pods,
            status,
            Op::Update {
                new: &mine,
                old: &mine
            }
        )
        .is_ok());
        let e = admit(
            n1().as_ref(),
            pods,
            status,
            Op::Update {
                new: &theirs,
                old: &theirs,
            },
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            r#"pods "p" is forbidden: node "n1" can only update pod status for pods with spec.nodeName set to itself"#
        );
        assert!(admit(
            n1().as_ref(),
            pods,
            None,
            Op::Update {
                new: &mine,
                old: &mine
            }
        )
        .is_err());
        assert!(admit(n1().as_ref(), pods, None, Op::Delete(&mine)).is_ok());
        assert!(admit(n1().as_ref(), pods, None, Op::Delete(&theirs)).is_err());
        assert!(admit(n1().as_ref(), pods, None, Op::Evict(&theirs)).is_err());
        // Creates: mirror pods bound to itself, referencing nothing.
        assert!(admit(n1().as_ref(), pods, None, Op::Create(&mine)).is_err());
        let mut mirror = mine.clone();
        mirror["metadata"]["annotations"] = json!({MIRROR_ANNOTATION: "hash"});
        assert!(admit(n1().as_ref(), pods, None, Op::Create(&mirror)).is_ok());
        let mut elsewhere = mirror.clone();
        elsewhere["spec"]["nodeName"] = json!("n2");
        assert!(admit(n1().as_ref(), pods, None, Op::Create(&elsewhere)).is_err());
        let mut secret = mirror.clone();
        secret["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "x"}}]);
        let e = admit(n1().as_ref(), pods, None, Op::Create(&secret)).unwrap_err();
        assert!(
            e.message
                .ends_with("can not create pods that reference secrets"),
            "{}",
            e.message
        );
    }

    #[test]
    fn leases_only_its_own() {
        let leases = info("coordination.k8s.io", "leases");
        let lease = |ns: &str, name: &str| json!({"metadata": {"name": name, "namespace": ns}});
        assert!(admit(
            n1().as_ref(),
            leases,
            None,
            Op::Create(&lease("kube-node-lease", "n1"))
        )
        .is_ok());
        assert!(admit(
            n1().as_ref(),
            leases,
            None,
            Op::Create(&lease("kube-node-lease", "n2"))
        )
        .is_err());
        assert!(admit(
            n1().as_ref(),
            leases,
            None,
            Op::Create(&lease("default", "n1"))
        )
        .is_err());
    }

    #[test]
    fn token_requests_only_bound_to_its_own_pods() {
        let n1 = node_user("n1");
        let mut own = pod("n1");
        own["metadata"]["uid"] = json!("u1");
        let mut other = pod("n2");
        other["metadata"]["uid"] = json!("u1");
        let r = json!({"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u1"});
        let msg = |r: &Value, p: Option<&Value>| {
            let e = admit_token_request(&n1, "default", r, p).unwrap_err();
            (e.code, e.message)
        };
        assert!(admit_token_request(&n1, "default", &r, Some(&own)).is_ok());
        let (code, m) = msg(&r, Some(&other));
        assert_eq!(code, 403);
        assert!(
            m.contains("bound to a pod scheduled on a different node"),
            "{m}"
        );
        let (code, m) = msg(&Value::Null, None);
        assert_eq!(code, 403);
        assert!(m.contains("requested token not bound to a pod"), "{m}");
        let secret_ref = json!({"apiVersion": "v1", "kind": "Secret", "name": "s", "uid": "u"});
        assert!(msg(&secret_ref, None).1.contains("not bound to a pod"));
        let no_uid = json!({"apiVersion": "v1", "kind": "Pod", "name": "p"});
        assert!(msg(&no_uid, Some(&own)).1.contains("without a uid"));
        let stale = json!({"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "old"});
        assert!(msg(&stale, Some(&own)).1.contains("does not match the UID"));
        assert_eq!(msg(&r, None).0, 404);
        // Anyone else is not restricted here (RBAC decided already).
        let admin = UserInfo::admin();
        assert!(admit_token_request(&admin, "default", &Value::Null, None).is_ok());
    }
}
