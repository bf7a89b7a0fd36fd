//! Which rules apply to a user: the roles bound to them cluster-wide and in
//! one namespace, with aggregated ClusterRoles expanded.

use serde_json::Value;

use super::cache::Cache;
use super::Rule;
use crate::auth::{UserInfo, SERVICE_ACCOUNT_PREFIX};
use crate::resources;
use crate::status::ApiResult;
use crate::storage::Objects;

pub const GROUP: &str = "rbac.authorization.k8s.io";

pub fn info(resource: &str) -> &'static resources::ResourceInfo {
    resources::find(GROUP, "v1", resource).expect("the RBAC resources are in the registry")
}

/// Whether one binding subject names `user`. A ServiceAccount subject
/// without a namespace means the binding's own.
pub fn subject_applies(s: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = s["name"].as_str().unwrap_or("");
    match s["kind"].as_str().unwrap_or("") {
        "User" => !name.is_empty() && user.name == name,
        "Group" => user.in_group(name),
        "ServiceAccount" => {
            let ns = s["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("{SERVICE_ACCOUNT_PREFIX}{ns}:{name}")
        }
        _ => false,
    }
}

fn binds(binding: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    binding["subjects"]
        .as_array()
        .is_some_and(|l| l.iter().any(|s| subject_applies(s, user, binding_ns)))
}

pub fn rules_of(role: &Value) -> Vec<Rule> {
    serde_json::from_value(role["rules"].clone()).unwrap_or_default()
}

/// The rules of a ClusterRole: its own, and when it aggregates, those of
/// every ClusterRole its selectors match (what the aggregation controller
/// writes into it, so a fresh label counts before the controller ran).
pub fn cluster_role_rules(role: &Value, all: &[Value]) -> Vec<Rule> {
    let mut out = rules_of(role);
    for r in super::aggregation::aggregated(role, all).unwrap_or_default() {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// The rules one binding's roleRef grants (none when the role is missing,
/// as Kubernetes treats a dangling reference).
fn granted(
    binding: &Value,
    binding_ns: &str,
    cluster_roles: &[Value],
    roles: &[Value],
) -> Vec<Rule> {
    let name = binding["roleRef"]["name"].as_str().unwrap_or("");
    let by_name = |l: &[Value]| -> Option<Value> {
        l.iter()
            .find(|r| r["metadata"]["name"].as_str() == Some(name))
            .cloned()
    };
    match binding["roleRef"]["kind"].as_str() {
        Some("ClusterRole") => by_name(cluster_roles)
            .map(|r| cluster_role_rules(&r, cluster_roles))
            .unwrap_or_default(),
        Some("Role") if !binding_ns.is_empty() => {
            by_name(roles).map(|r| rules_of(&r)).unwrap_or_default()
        }
        _ => vec![],
    }
}

/// Every rule granted to `user` cluster-wide and, when `namespace` is not
/// empty, in that namespace, from this replica's applied state (decoded
/// objects reused from `cache` while their prefix is unchanged).
pub async fn rules_for(
    objects: &Objects,
    cache: &Cache,
    user: &UserInfo,
    namespace: &str,
) -> ApiResult<Vec<Rule>> {
    let crbs = cache
        .list(objects, &info("clusterrolebindings").prefix(None))
        .await?;
    let cluster_roles = cache
        .list(objects, &info("clusterroles").prefix(None))
        .await?;
    let mut out: Vec<Rule> = Vec::new();
    let mut add = |rules: Vec<Rule>| {
        for r in rules {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    };
    for b in crbs.iter().filter(|b| binds(b, user, "")) {
        add(granted(b, "", &cluster_roles, &[]));
    }
    if !namespace.is_empty() {
        let rbs = cache
            .list(objects, &info("rolebindings").prefix(Some(namespace)))
            .await?;
        let applying: Vec<&Value> = rbs.iter().filter(|b| binds(b, user, namespace)).collect();
        if !applying.is_empty() {
            let roles = cache
                .list(objects, &info("roles").prefix(Some(namespace)))
                .await?;
            for b in applying {
                add(granted(b, namespace, &cluster_roles, &roles));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subjects() {
        let alice = UserInfo::authenticated("alice", "", &["dev".into()]);
        let sa = UserInfo::authenticated("system:serviceaccount:ns:robot", "", &[]);
        assert!(subject_applies(
            &json!({"kind": "User", "name": "alice"}),
            &alice,
            ""
        ));
        assert!(!subject_applies(
            &json!({"kind": "User", "name": "bob"}),
            &alice,
            ""
        ));
        assert!(subject_applies(
            &json!({"kind": "Group", "name": "dev"}),
            &alice,
            ""
        ));
        assert!(subject_applies(
            &json!({"kind": "Group", "name": "system:authenticated"}),
            &sa,
            ""
        ));
        assert!(subject_applies(
            &json!({"kind": "ServiceAccount", "name": "robot", "namespace": "ns"}),
            &sa,
            ""
        ));
        assert!(subject_applies(
            &json!({"kind": "ServiceAccount", "name": "robot"}),
            &sa,
            "ns"
        ));
        assert!(!subject_applies(
            &json!({"kind": "ServiceAccount", "name": "robot"}),
            &sa,
            "other"
        ));
    }

    #[test]
    fn aggregation_collects_matching_roles() {
        let view = json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}});
        let part = json!({"metadata": {"name": "p", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]});
        let other = json!({"metadata": {"name": "o"}, "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]});
        let all = vec![view.clone(), part, other];
        let rules = cluster_role_rules(&view, &all);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].resources, vec!["pods".to_string()]);
    }
}
