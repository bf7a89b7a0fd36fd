//! The 403 Status, worded exactly as kube-apiserver words it, so scripts
//! and users reading `kubectl` output see the familiar sentence:
//! `pods is forbidden: User "alice" cannot list resource "pods" in API
//! group "" in the namespace "default"`.

use serde_json::json;

use super::Attributes;
use crate::status::ApiError;

/// `User "u" cannot <verb> ...` (Kubernetes' forbiddenMessage).
pub fn message(a: &Attributes) -> String {
    let user = &a.user.name;
    if !a.resource_request {
        return format!("User {user:?} cannot {} path {:?}", a.verb, a.path);
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    if a.namespace.is_empty() {
        format!(
            "User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
            a.verb, a.api_group
        )
    } else {
        format!(
            "User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
            a.verb, a.api_group, a.namespace
        )
    }
}

/// The 403 for a request RBAC did not allow; `reason` (may be empty) is
/// appended as Kubernetes appends the authorizer's reason.
pub fn error(a: &Attributes, reason: &str) -> ApiError {
    let mut text = message(a);
    if !reason.is_empty() {
        text = format!("{text}: {reason}");
    }
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = match (qualified.is_empty(), a.name.is_empty()) {
        (true, _) => format!("forbidden: {text}"),
        (false, true) => format!("{qualified} is forbidden: {text}"),
        (false, false) => format!("{qualified} {:?} is forbidden: {text}", a.name),
    };
    let mut details = json!({"group": a.api_group, "kind": a.resource});
    if !a.name.is_empty() {
        details["name"] = json!(a.name);
    }
    ApiError {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(details),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserInfo;

    fn alice() -> UserInfo {
        UserInfo::authenticated("alice", "", &[])
    }

    #[test]
    fn namespaced_cluster_and_path_wording() {
        let a = Attributes {
            user: alice(),
            verb: "list".into(),
            resource_request: true,
            resource: "pods".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let e = error(&a, "");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#
        );
        assert_eq!(e.details.unwrap(), json!({"group": "", "kind": "pods"}));
        let a = Attributes {
            user: alice(),
            verb: "get".into(),
            resource_request: true,
            api_group: "rbac.authorization.k8s.io".into(),
            resource: "clusterroles".into(),
            name: "view".into(),
            ..Default::default()
        };
        assert_eq!(
            error(&a, "").message,
            r#"clusterroles.rbac.authorization.k8s.io "view" is forbidden: User "alice" cannot get resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope"#
        );
        let a = Attributes {
            user: alice(),
            verb: "get".into(),
            path: "/metrics".into(),
            ..Default::default()
        };
        assert_eq!(
            error(&a, "").message,
            r#"forbidden: User "alice" cannot get path "/metrics""#
        );
    }
}
