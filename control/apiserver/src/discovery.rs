//! Discovery: `/version`, aggregated discovery (`/api`, `/apis`), the
//! legacy per-version documents, and the OpenAPI v3 documents kubectl reads
//! before `create -f`/`apply -f`/`edit` to learn that the server validates
//! fields itself (`fieldValidation`).
//!
//! All of it is generated from [`crate::resources::RESOURCES`], so it can
//! never advertise a resource the router does not serve.

use serde_json::{json, Value};

use crate::resources::{self, ResourceInfo, VERBS};

/// The content type kubectl needs to read aggregated discovery; with plain
/// `application/json` it silently sees zero resources.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The Kubernetes version keel's API and types (k8s-openapi `v1_33`) match.
pub const KUBE_MINOR: &str = "33";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-keel.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

/// Does the Accept header ask for aggregated discovery?
pub fn wants_aggregated(accept: &str) -> bool {
    accept.contains("as=APIGroupDiscoveryList")
}

fn response_kind(g: &str, v: &str, k: &str) -> Value {
    json!({"group": g, "version": v, "kind": k})
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let subs: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| {
            let (g, v, k) = s
                .response_kind()
                .unwrap_or((r.group, r.version, r.kind));
            json!({"subresource": s.name(), "responseKind": response_kind(g, v, k), "verbs": s.verbs()})
        })
        .collect();
    let mut out = json!({
        "resource": r.resource,
        "responseKind": response_kind(r.group, r.version, r.kind),
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": VERBS,
        "subresources": subs,
    });
    if !r.short_names.is_empty() {
        out["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        out["categories"] = json!(r.categories);
    }
    out
}

fn aggregated_group(group: &str) -> Value {
    let versions: Vec<Value> = resources::groups()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| {
            let res: Vec<Value> = resources::RESOURCES
                .iter()
                .filter(|r| r.group == g && r.version == v)
                .map(aggregated_resource)
                .collect();
            json!({"version": v, "resources": res, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

/// The create-only review kinds ([`crate::auth::reviews`]), served
/// outside the resource registry: (group, resource, kind, singular,
/// namespaced). Discovery lists them so kubectl maps
/// `selfsubjectaccessreviews` and friends to their groups.
pub const REVIEWS: &[(&str, &str, &str, &str, bool)] = &[
    (
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        "localsubjectaccessreview",
        true,
    ),
    (
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreview",
        false,
    ),
    (
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreview",
        false,
    ),
    (
        "authorization.k8s.io",
        "subjectaccessreviews",
        "SubjectAccessReview",
        "subjectaccessreview",
        false,
    ),
    (
        "authentication.k8s.io",
        "selfsubjectreviews",
        "SelfSubjectReview",
        "selfsubjectreview",
        false,
    ),
    (
        "authentication.k8s.io",
        "tokenreviews",
        "TokenReview",
        "tokenreview",
        false,
    ),
];

const REVIEW_GROUPS: &[&str] = &["authentication.k8s.io", "authorization.k8s.io"];

fn review_group_aggregated(group: &str) -> Value {
    let res: Vec<Value> = REVIEWS
        .iter()
        .filter(|r| r.0 == group)
        .map(|(g, r, k, singular, ns)| {
            json!({"resource": r, "responseKind": response_kind(g, "v1", k),
                   "scope": if *ns { "Namespaced" } else { "Cluster" },
                   "singularResource": singular, "verbs": ["create"]})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null},
           "versions": [{"version": "v1", "resources": res, "freshness": "Current"}]})
}

/// `/apis/{group}` and `/apis/{group}/v1` of the review groups (None for
/// any other path).
pub fn review_group_doc(path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["apis", g] if REVIEW_GROUPS.contains(g) => Some(legacy_group_v1(g)),
        ["apis", g, "v1"] if REVIEW_GROUPS.contains(g) => {
            let out: Vec<Value> = REVIEWS
                .iter()
                .filter(|r| r.0 == *g)
                .map(|(_, r, k, singular, ns)| {
                    json!({"name": r, "singularName": singular, "namespaced": ns, "kind": k, "verbs": ["create"]})
                })
                .collect();
            Some(json!({"kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": format!("{g}/v1"), "resources": out}))
        }
        _ => None,
    }
}

fn legacy_group_v1(g: &str) -> Value {
    let v = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [v.clone()], "preferredVersion": v})
}

/// `/api` (core = true) or `/apis` as an `APIGroupDiscoveryList`.
pub fn aggregated(core: bool) -> Value {
    let mut names: Vec<&str> = Vec::new();
    for (g, _) in resources::groups() {
        if g.is_empty() == core && !names.contains(&g) {
            names.push(g);
        }
    }
    let mut items: Vec<Value> = names.into_iter().map(aggregated_group).collect();
    if !core {
        items.extend(REVIEW_GROUPS.iter().map(|g| review_group_aggregated(g)));
        items.push(crate::metricsapi::aggregated_group());
    }
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// Legacy `/api`.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

fn legacy_group(g: &str) -> Value {
    let versions: Vec<Value> = resources::groups()
        .into_iter()
        .filter(|(gr, _)| *gr == g)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": versions, "preferredVersion": preferred})
}

/// Legacy `/apis`.
pub fn api_group_list() -> Value {
    let mut names: Vec<&str> = Vec::new();
    for (g, _) in resources::groups() {
        if !g.is_empty() && !names.contains(&g) {
            names.push(g);
        }
    }
    let mut groups: Vec<Value> = names.into_iter().map(legacy_group).collect();
    groups.extend(REVIEW_GROUPS.iter().map(|g| legacy_group_v1(g)));
    groups.push(crate::metricsapi::legacy_group());
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups,
    })
}

/// `/apis/{group}`.
pub fn api_group(g: &str) -> Value {
    legacy_group(g)
}

/// `/api/v1` or `/apis/{g}/{v}`: an `APIResourceList`, subresources as
/// `pods/status` entries.
pub fn resource_list(g: &str, v: &str) -> Value {
    let mut out = Vec::new();
    for r in resources::RESOURCES
        .iter()
        .filter(|r| r.group == g && r.version == v)
    {
        let mut e = json!({
            "name": r.resource, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        out.push(e);
        for s in r.subresources {
            let (sg, sv, sk) = s.response_kind().unwrap_or((r.group, r.version, r.kind));
            let mut e = json!({
                "name": format!("{}/{}", r.resource, s.name()), "singularName": "",
                "namespaced": r.namespaced, "kind": sk, "verbs": s.verbs(),
            });
            if sg != r.group || sv != r.version {
                e["group"] = json!(sg);
                e["version"] = json!(sv);
            }
            out.push(e);
        }
    }
    let gv = if g.is_empty() {
        v.to_string()
    } else {
        format!("{g}/{v}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
}

fn openapi_key(g: &str, v: &str) -> String {
    if g.is_empty() {
        format!("api/{v}")
    } else {
        format!("apis/{g}/{v}")
    }
}

/// `/openapi/v3`: every group-version users can create or apply into.
pub fn openapi_root() -> Value {
    let paths: serde_json::Map<String, Value> = resources::groups()
        .into_iter()
        .map(|(g, v)| {
            let k = openapi_key(g, v);
            let url = json!({"serverRelativeURL": format!("/openapi/v3/{k}")});
            (k, url)
        })
        .collect();
    json!({ "paths": paths })
}

/// `/openapi/v3/{api/v1 | apis/g/v}`: one PATCH operation per object path
/// with the GVK extension and the `fieldValidation` parameter, which is
/// what tells kubectl the server validates fields (it then sends
/// `fieldValidation=Strict` and skips client-side schema checks).
pub fn openapi_group_version(g: &str, v: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for r in resources::RESOURCES
        .iter()
        .filter(|r| r.group == g && r.version == v)
    {
        let base = format!("/{}", openapi_key(g, v));
        let path = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.resource)
        } else {
            format!("{base}/{}/{{name}}", r.resource)
        };
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true},
             "description": "Strict, Warn or Ignore: how unknown or duplicate fields are treated"},
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "force", "in": "query", "schema": {"type": "boolean"}}
        ]);
        let gvk = json!({"group": g, "version": v, "kind": r.kind});
        paths.insert(
            path,
            json!({
                "patch": {
                    "operationId": format!("patch{}", r.kind),
                    "parameters": params,
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                    "responses": {"200": {"description": "OK"}},
                }
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR}.0")},
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_has_short_names_and_all() {
        let core = aggregated(true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        let pods = &core["items"][0]["versions"][0]["resources"][0];
        assert_eq!(pods["resource"], "pods");
        assert_eq!(pods["shortNames"][0], "po");
        assert_eq!(pods["categories"][0], "all");
        let apis = aggregated(false);
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = &apps["versions"][0]["resources"][0];
        assert_eq!(deploy["subresources"][1]["responseKind"]["kind"], "Scale");
    }

    #[test]
    fn openapi_lists_every_kind_with_field_validation() {
        let root = openapi_root();
        assert!(root["paths"]["apis/apps/v1"]["serverRelativeURL"].is_string());
        let apps = openapi_group_version("apps", "v1");
        let p = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert_eq!(p["parameters"][0]["name"], "fieldValidation");
        let core = openapi_group_version("", "v1");
        assert!(core["paths"]["/api/v1/namespaces/{name}"].is_object());
    }

    #[test]
    fn legacy_lists_have_subresources() {
        let l = resource_list("apps", "v1");
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"deployments/scale"));
        assert_eq!(api_group_list()["groups"][0]["name"], "apps");
    }
}
