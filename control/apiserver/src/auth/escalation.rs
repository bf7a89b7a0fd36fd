//! Privilege-escalation prevention, as Kubernetes' RBAC storage enforces
//! it: writing a Role or ClusterRole with rules the writer does not hold,
//! or a binding to a role whose rules the writer does not hold, is 403 —
//! unless the writer has the `escalate` verb on that role (for roles) or
//! the `bind` verb on the referenced role (for bindings). An
//! `aggregationRule` needs full authority (cluster-admin) or `escalate`.
//!
//! Runs in admission, after validation, on create, update and patch
//! (with the object as it would be stored). In-process callers (the
//! controllers) carry no user and are not checked.

use serde_json::Value;

use super::rbac::resolve::{cluster_role_rules, info, rules_of, GROUP};
use super::rbac::rules::uncovered;
use super::rbac::Rule;
use super::{authorizer, Attributes, Authorizer, Decision, UserInfo, MASTERS};
use crate::status::{ApiError, ApiResult};
use crate::storage::Objects;

fn may(verb: &str, user: &UserInfo, resource: &str, namespace: &str, name: &str) -> Attributes {
    Attributes {
        user: user.clone(),
        verb: verb.into(),
        resource_request: true,
        api_group: GROUP.into(),
        api_version: "v1".into(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
        ..Default::default()
    }
}

fn rule_text(r: &Rule) -> String {
    let q = |l: &[String]| {
        let items: Vec<String> = l.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", items.join(" "))
    };
    if r.non_resource_urls.is_empty() {
        let names = if r.resource_names.is_empty() {
            String::new()
        } else {
            format!(", ResourceNames:{}", q(&r.resource_names))
        };
        format!(
            "{{APIGroups:{}, Resources:{}{names}, Verbs:{}}}",
            q(&r.api_groups),
            q(&r.resources),
            q(&r.verbs)
        )
    } else {
        format!(
            "{{NonResourceURLs:{}, Verbs:{}}}",
            q(&r.non_resource_urls),
            q(&r.verbs)
        )
    }
}

fn refused(resource: &str, name: &str, user: &UserInfo, missing: &[Rule]) -> ApiError {
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let list: Vec<String> = missing.iter().map(rule_text).collect();
    let mut e = ApiError::new(
        403,
        "Forbidden",
        format!(
            "{resource}.{GROUP} {name:?} is forbidden: user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
            user.name,
            groups.join(" "),
            list.join("\n")
        ),
    );
    e.details = Some(serde_json::json!({"name": name, "group": GROUP, "kind": resource}));
    e
}

fn full_authority() -> Vec<Rule> {
    let star = || vec!["*".to_string()];
    vec![
        Rule {
            verbs: star(),
            api_groups: star(),
            resources: star(),
            ..Default::default()
        },
        Rule {
            verbs: star(),
            non_resource_urls: star(),
            ..Default::default()
        },
    ]
}

/// Admits one RBAC object `obj` written by `user` to `resource` in
/// `namespace` ("" for cluster-scoped).
pub async fn admit(
    objects: &Objects,
    user: Option<&UserInfo>,
    resource: &str,
    namespace: &str,
    obj: &Value,
) -> ApiResult<()> {
    let Some(user) = user else {
        return Ok(());
    };
    if user.in_group(MASTERS) {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    // RBAC writes are rare: read afresh, no cache kept between them.
    let rbac = super::rbac::Rbac::new(objects.clone());
    let authz = authorizer(&rbac);
    let allowed = |a: Attributes| {
        let authz = &authz;
        async move { Ok::<_, ApiError>(authz.authorize(&a).await? == Decision::Allow) }
    };
    let requested: Vec<Rule> = match resource {
        "roles" | "clusterroles" => {
            if allowed(may("escalate", user, resource, namespace, name)).await? {
                return Ok(());
            }
            let mut r = rules_of(obj);
            if resource == "clusterroles"
                && obj.get("aggregationRule").is_some_and(|a| !a.is_null())
            {
                r.extend(full_authority());
            }
            r
        }
        "rolebindings" | "clusterrolebindings" => {
            let kind = obj["roleRef"]["kind"].as_str().unwrap_or("");
            let role = obj["roleRef"]["name"].as_str().unwrap_or("");
            let (role_resource, role_ns) = if kind == "Role" {
                ("roles", namespace)
            } else {
                ("clusterroles", "")
            };
            if allowed(may("bind", user, role_resource, namespace, role)).await? {
                return Ok(());
            }
            let stored = objects
                .get_local(&info(role_resource).key(Some(role_ns), role))
                .await?;
            match stored {
                // A binding to a role that does not exist grants nothing yet,
                // but would grant it once the role appears: only a binder may.
                None => vec![Rule {
                    verbs: vec!["bind".into()],
                    api_groups: vec![GROUP.into()],
                    resources: vec![role_resource.into()],
                    resource_names: vec![role.into()],
                    ..Default::default()
                }],
                Some(s) if role_resource == "clusterroles" => {
                    let all = objects
                        .list_local(&info("clusterroles").prefix(None))
                        .await?;
                    cluster_role_rules(&s.obj, &all)
                }
                Some(s) => rules_of(&s.obj),
            }
        }
        _ => return Ok(()),
    };
    let owner = rbac.rules_for(user, namespace).await?;
    let missing = uncovered(&owner, &requested);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(refused(resource, name, user, &missing))
    }
}
