//! The default roles and bindings, reconciled at every start as
//! kube-apiserver's bootstrap policy is: a missing one is created; an
//! existing one with `rbac.authorization.kubernetes.io/autoupdate: "true"`
//! gets the default rules and subjects it lacks (never loses any); one a
//! user set to `autoupdate: "false"` is left alone.
//!
//! Names, labels and rules follow Kubernetes' (plugin/pkg/auth/authorizer/
//! rbac/bootstrappolicy), trimmed to the resources keel serves.

use serde_json::{json, Value};

use super::rbac::resolve::{info, rules_of};
use crate::storage::Objects;

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const AGG_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const AGG_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const AGG_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// The ClusterRole (and its binding) of agents' Ingress routers.
pub const INGRESS_ROUTER_ROLE: &str = "system:keel:ingress-router";
/// The group of the Ingress routers' client certificates (`keel up`
/// issues each agent's router `system:keel:ingress-router:<node>` in it).
pub const INGRESS_ROUTERS_GROUP: &str = "system:keel:ingress-routers";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn meta(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for (k, v) in labels {
        l.insert(k.to_string(), json!(v));
    }
    json!({"name": name, "labels": l, "annotations": {AUTOUPDATE: "true"}})
}

fn cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": meta(name, labels), "rules": rules})
}

fn aggregate(name: &str, labels: &[(&str, &str)], to: &str) -> Value {
    let mut r = cluster_role(name, labels, vec![]);
    r["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {to: "true"}}]});
    r
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, n)| json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": n}))
        .collect();
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
           "metadata": meta(name, &[]),
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
           "subjects": subjects})
}

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let rw: Vec<&str> = READ.iter().chain(WRITE).copied().collect();
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        aggregate("admin", &[], AGG_ADMIN),
        aggregate("edit", &[(AGG_ADMIN, "true")], AGG_EDIT),
        aggregate("view", &[(AGG_EDIT, "true")], AGG_VIEW),
        cluster_role(
            "system:aggregate-to-admin",
            &[(AGG_ADMIN, "true")],
            vec![
                rule(
                    &rw,
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings", "roles"],
                ),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                rule(&rw, &["networking.k8s.io"], &["networkpolicies"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[(AGG_EDIT, "true")],
            vec![
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
                rule(
                    &rw,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "pods/eviction",
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(
                    &rw,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                rule(&rw, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(&rw, &["batch"], &["cronjobs", "jobs"]),
                rule(
                    &rw,
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                ),
                rule(&rw, &["policy"], &["poddisruptionbudgets"]),
                rule(&rw, &["coordination.k8s.io"], &["leases"]),
                rule(&rw, &["discovery.k8s.io"], &["endpointslices"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[(AGG_VIEW, "true")],
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "pods",
                        "pods/log",
                        "pods/status",
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "replicationcontrollers/status",
                        "serviceaccounts",
                        "services",
                        "services/status",
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                rule(READ, &[""], &["namespaces"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                rule(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
                rule(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(READ, &["events.k8s.io"], &["events"]),
            ],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        // Service accounts (and whoever else is bound) may read the OIDC
        // discovery documents, so workloads can verify each other's tokens.
        cluster_role(
            "system:service-account-issuer-discovery",
            &[],
            vec![urls(
                &["get"],
                &["/.well-known/openid-configuration", "/openid/v1/jwks"],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        // Kubernetes' NodeRules, plus EndpointSlice reads for the Service
        // proxy each agent runs (kube-proxy's system:node-proxier). The
        // Node authorizer narrows the pod, Secret, ConfigMap, volume,
        // Lease and token rules to a node's own objects.
        cluster_role(
            "system:node",
            &[],
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews", "subjectaccessreviews"],
                ),
                rule(READ, &[""], &["services"]),
                rule(&["create", "get", "list", "watch"], &[""], &["nodes"]),
                rule(&["update", "patch"], &[""], &["nodes/status"]),
                rule(&["update", "patch"], &[""], &["nodes"]),
                rule(&["create", "update", "patch"], &[""], &["events"]),
                rule(
                    &["create", "update", "patch"],
                    &["events.k8s.io"],
                    &["events"],
                ),
                rule(READ, &[""], &["pods"]),
                rule(&["create", "delete"], &[""], &["pods"]),
                rule(&["update", "patch"], &[""], &["pods/status"]),
                rule(&["create"], &[""], &["pods/eviction"]),
                rule(READ, &[""], &["secrets", "configmaps"]),
                rule(
                    &["get"],
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes", "endpoints"],
                ),
                rule(
                    &["get", "update", "patch"],
                    &[""],
                    &["persistentvolumeclaims/status"],
                ),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
                rule(
                    &["create", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
                rule(
                    &["get", "create", "update", "patch", "delete"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                rule(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
                rule(READ, &["storage.k8s.io"], &["csidrivers", "csinodes"]),
                rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    &["create", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
            ],
        ),
        // The Ingress router each `keel up` agent runs: it reads every
        // Ingress and the TLS Secrets they name, which a node identity
        // may not, so it has an identity of its own (never the admin's).
        cluster_role(
            INGRESS_ROUTER_ROLE,
            &[],
            vec![
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingressclasses"],
                ),
                rule(READ, &[""], &["services", "endpoints", "secrets"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            &[],
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
    ]
}

/// The default ClusterRoleBindings. `system:node` binds no one by
/// default (as in Kubernetes since 1.8); the Node authorizer will decide.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            &[("Group", "system:masters")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &[("Group", "system:serviceaccounts")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        binding(
            INGRESS_ROUTER_ROLE,
            INGRESS_ROUTER_ROLE,
            &[("Group", INGRESS_ROUTERS_GROUP)],
        ),
        // Agent join tokens may submit CSRs, and nodes may submit their
        // renewals (the auto-approver decides which get approved).
        binding(
            "system:node-bootstrapper",
            "system:node-bootstrapper",
            &[
                ("Group", super::bootstrap_token::AGENT_JOIN_GROUP),
                ("Group", "system:nodes"),
            ],
        ),
        binding(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[("Group", super::bootstrap_token::AGENT_JOIN_GROUP)],
        ),
        binding(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[("Group", "system:nodes")],
        ),
    ]
}

fn auto_updates(obj: &Value) -> bool {
    obj["metadata"]["annotations"][AUTOUPDATE].as_str() != Some("false")
}

/// What `want` adds to the stored `have`: missing rules, subjects,
/// labels and the aggregation rule. None when nothing is missing.
pub fn merged(have: &Value, want: &Value) -> Option<Value> {
    let mut out = have.clone();
    let mut changed = false;
    for list in ["rules", "subjects"] {
        let Some(wanted) = want[list].as_array() else {
            continue;
        };
        let mut cur: Vec<Value> = out[list].as_array().cloned().unwrap_or_default();
        for w in wanted {
            let present = match list {
                "rules" => rules_of(&json!({"rules": cur})).iter().any(|r| {
                    serde_json::from_value::<super::rbac::Rule>(w.clone()).is_ok_and(|w| *r == w)
                }),
                _ => cur
                    .iter()
                    .any(|c| c["kind"] == w["kind"] && c["name"] == w["name"]),
            };
            // Aggregated roles' rules belong to the aggregation controller.
            let owned_by_aggregation = list == "rules" && want.get("aggregationRule").is_some();
            if !(present || owned_by_aggregation) {
                cur.push(w.clone());
                changed = true;
            }
        }
        out[list] = json!(cur);
    }
    if want.get("aggregationRule").is_some()
        && out.get("aggregationRule") != want.get("aggregationRule")
    {
        out["aggregationRule"] = want["aggregationRule"].clone();
        changed = true;
    }
    if let Some(labels) = want["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if out["metadata"]["labels"][k] != *v {
                if !out["metadata"]["labels"].is_object() {
                    out["metadata"]["labels"] = json!({});
                }
                out["metadata"]["labels"][k] = v.clone();
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

/// Creates or tops up every default role and binding. Failures are logged
/// and retried at the next start; they never stop the server.
pub async fn ensure(objects: &Objects) {
    let sets = [
        ("clusterroles", cluster_roles()),
        ("clusterrolebindings", cluster_role_bindings()),
    ];
    for (resource, objs) in sets {
        for mut want in objs {
            let name = want["metadata"]["name"].as_str().unwrap_or("").to_string();
            let key = info(resource).key(None, &name);
            let result = match objects.get(&key).await {
                Ok(None) => {
                    want["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                    want["metadata"]["creationTimestamp"] = json!(crate::meta::now_rfc3339());
                    objects.create(&key, &want).await.map(|_| ())
                }
                Ok(Some(cur)) if auto_updates(&cur.obj) => match merged(&cur.obj, &want) {
                    Some(next) => objects
                        .update(&key, &next, cur.mod_revision)
                        .await
                        .map(|_| ()),
                    None => Ok(()),
                },
                Ok(Some(_)) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(%resource, %name, error = %e.message, "reconciling the default RBAC policy");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_only_what_is_missing() {
        let want = binding("b", "r", &[("Group", "g")]);
        assert!(merged(&want, &want).is_none());
        let mut have = want.clone();
        have["subjects"] = json!([{"kind": "User", "name": "u"}]);
        let next = merged(&have, &want).unwrap();
        assert_eq!(next["subjects"].as_array().unwrap().len(), 2);
        let role = cluster_role("r", &[], vec![rule(&["get"], &[""], &["pods"])]);
        let mut custom = role.clone();
        custom["rules"] = json!([{"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]);
        assert_eq!(
            merged(&custom, &role).unwrap()["rules"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn defaults_are_valid_roles() {
        for r in cluster_roles() {
            assert!(
                crate::admission::validate("rbac.authorization.k8s.io", "clusterroles", &r)
                    .is_empty(),
                "{r}"
            );
        }
        for b in cluster_role_bindings() {
            assert!(
                crate::admission::validate("rbac.authorization.k8s.io", "clusterrolebindings", &b)
                    .is_empty(),
                "{b}"
            );
        }
    }
}
