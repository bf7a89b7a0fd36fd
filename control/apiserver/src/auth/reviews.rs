//! The access and identity reviews: create-only kinds whose answer is
//! computed, never stored.
//!
//! - authorization.k8s.io/v1 SelfSubjectAccessReview (`kubectl auth
//!   can-i`), SubjectAccessReview, LocalSubjectAccessReview (namespaced)
//!   and SelfSubjectRulesReview (`kubectl auth can-i --list`);
//! - authentication.k8s.io/v1 SelfSubjectReview (`kubectl auth whoami`)
//!   and TokenReview (static and service account tokens).
//!
//! Who may create each is decided by the usual authorization before the
//! request gets here (`system:basic-user` grants the self reviews to every
//! authenticated user). Bad input is a 400 or a 422 naming the field.

use serde_json::{json, Map, Value};

use super::authn::{token_user, StaticToken};
use super::rbac::{Rbac, Rule};
use super::{Attributes, Authorizer, Decision, UserInfo};
use crate::status::{ApiError, ApiResult, Cause};

const AUTHZ: &str = "authorization.k8s.io";
const AUTHN: &str = "authentication.k8s.io";

/// What the reviews need from the server.
pub struct Reviews<'a> {
    pub authz: &'a dyn Authorizer,
    pub rbac: &'a Rbac,
    pub tokens: &'a [StaticToken],
    /// Service account tokens, verified against the objects they name.
    pub sa_tokens: &'a super::sa_token::Tokens,
    pub objects: &'a crate::storage::Objects,
}

/// The kind a review resource is created as, when `a` addresses one.
pub fn kind_of(a: &Attributes) -> Option<&'static str> {
    if !a.resource_request || a.api_version != "v1" || !a.name.is_empty() {
        return None;
    }
    let ns = !a.namespace.is_empty();
    match (a.api_group.as_str(), a.resource.as_str(), ns) {
        (AUTHZ, "selfsubjectaccessreviews", false) => Some("SelfSubjectAccessReview"),
        (AUTHZ, "subjectaccessreviews", false) => Some("SubjectAccessReview"),
        (AUTHZ, "localsubjectaccessreviews", true) => Some("LocalSubjectAccessReview"),
        (AUTHZ, "selfsubjectrulesreviews", false) => Some("SelfSubjectRulesReview"),
        (AUTHN, "selfsubjectreviews", false) => Some("SelfSubjectReview"),
        (AUTHN, "tokenreviews", false) => Some("TokenReview"),
        _ => None,
    }
}

/// Whether the path is under a group only the reviews serve.
pub fn is_review_group(a: &Attributes) -> bool {
    a.resource_request && matches!(a.api_group.as_str(), AUTHZ | AUTHN)
}

fn invalid(kind: &str, field: &str, message: &str) -> ApiError {
    let cause = Cause {
        field: field.to_string(),
        reason: "FieldValueInvalid".into(),
        message: message.to_string(),
    };
    let mut e = ApiError::new(
        422,
        "Invalid",
        format!(
            "{kind}.{} \"\" is invalid: {field}: {message}",
            group_of(kind)
        ),
    );
    e.details = Some(json!({"group": group_of(kind), "kind": kind, "causes": [cause]}));
    e
}

fn group_of(kind: &str) -> &'static str {
    if matches!(kind, "SelfSubjectReview" | "TokenReview") {
        AUTHN
    } else {
        AUTHZ
    }
}

/// Decodes a review body: JSON, YAML or Kubernetes protobuf.
pub fn decode(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type.to_ascii_lowercase();
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if ct.contains("protobuf") {
        return crate::protobuf::decode_protobuf(body).map_err(|e| {
            ApiError::bad_request(format!("the protobuf request body cannot be decoded: {e}"))
        });
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    serde_saphyr::from_str::<Value>(text).map_err(|e| {
        ApiError::bad_request(format!("the request body is not valid JSON or YAML: {e}"))
    })
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or("").to_string()
}

/// The attributes a review's spec asks about, for `user`.
fn spec_attributes(kind: &str, spec: &Value, user: UserInfo) -> ApiResult<Attributes> {
    let res = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    match (res, non) {
        (Some(r), None) => Ok(Attributes {
            user,
            verb: s(r, "verb"),
            resource_request: true,
            api_group: s(r, "group"),
            api_version: s(r, "version"),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            namespace: s(r, "namespace"),
            name: s(r, "name"),
            path: String::new(),
            field_selector: s(&r["fieldSelector"], "rawSelector"),
        }),
        (None, Some(n)) => Ok(Attributes {
            user,
            verb: s(n, "verb"),
            path: s(n, "path"),
            ..Default::default()
        }),
        _ => Err(invalid(
            kind,
            "spec.resourceAttributes",
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}

/// Answers one review created by `user` at `a`; the reply body (201).
pub async fn serve(
    ctx: &Reviews<'_>,
    user: &UserInfo,
    a: &Attributes,
    content_type: &str,
    body: &[u8],
) -> ApiResult<Value> {
    let kind = kind_of(a).ok_or_else(ApiError::no_route)?;
    let obj = decode(content_type, body)?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the request body is not a {kind} object"
        )));
    }
    if let Some(k) = obj["kind"].as_str().filter(|k| !k.is_empty() && *k != kind) {
        return Err(ApiError::bad_request(format!(
            "the body is a {k}, but this URL creates {kind}"
        )));
    }
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match kind {
        "SelfSubjectAccessReview" => {
            access(ctx, spec_attributes(kind, &spec, user.clone())?).await?
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let subject = subject(kind, &spec)?;
            let attrs = spec_attributes(kind, &spec, subject)?;
            if kind == "LocalSubjectAccessReview"
                && (!attrs.resource_request || attrs.namespace != a.namespace)
            {
                return Err(invalid(
                    kind,
                    "spec.resourceAttributes.namespace",
                    &format!(
                        "Invalid value: {:?}: must match metadata.namespace",
                        attrs.namespace
                    ),
                ));
            }
            access(ctx, attrs).await?
        }
        "SelfSubjectRulesReview" => {
            let ns = s(&spec, "namespace");
            rules_status(&ctx.rbac.rules_for(user, &ns).await?)
        }
        "SelfSubjectReview" => json!({"userInfo": user.to_json()}),
        "TokenReview" => {
            let audiences = spec.get("audiences").cloned().unwrap_or_else(|| json!([]));
            let token = s(&spec, "token");
            let user = match token_user(ctx.tokens, &token) {
                Some(u) => Some(u),
                None if super::sa_token::looks_like_jwt(&token) => {
                    ctx.sa_tokens.authenticate(ctx.objects, &token).await.ok()
                }
                None => None,
            };
            match user {
                Some(u) => {
                    json!({"authenticated": true, "user": u.to_json(), "audiences": audiences})
                }
                None => {
                    json!({"authenticated": false, "user": {}, "error": "invalid bearer token"})
                }
            }
        }
        _ => return Err(ApiError::no_route()),
    };
    let mut meta = obj["metadata"]
        .as_object()
        .cloned()
        .unwrap_or_else(Map::new);
    meta.insert("creationTimestamp".into(), Value::Null);
    if !a.namespace.is_empty() {
        meta.insert("namespace".into(), json!(a.namespace));
    }
    let mut out = json!({
        "kind": kind,
        "apiVersion": format!("{}/v1", group_of(kind)),
        "metadata": meta,
        "status": status,
    });
    if kind != "SelfSubjectReview" {
        let mut spec = spec;
        if kind == "TokenReview" {
            // Never echo the credential back.
            spec.as_object_mut().map(|m| m.remove("token"));
        }
        out["spec"] = spec;
    }
    Ok(out)
}

fn subject(kind: &str, spec: &Value) -> ApiResult<UserInfo> {
    let groups: Vec<String> = spec["groups"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let name = s(spec, "user");
    if name.is_empty() && groups.is_empty() {
        return Err(invalid(
            kind,
            "spec.user",
            "Invalid value: \"\": at least one of user or group must be specified",
        ));
    }
    Ok(UserInfo {
        name,
        uid: s(spec, "uid"),
        groups,
        extra: Default::default(),
    })
}

async fn access(ctx: &Reviews<'_>, attrs: Attributes) -> ApiResult<Value> {
    Ok(match ctx.authz.authorize(&attrs).await? {
        Decision::Allow => json!({"allowed": true}),
        Decision::NoOpinion(r) if r.is_empty() => json!({"allowed": false}),
        Decision::NoOpinion(r) => json!({"allowed": false, "reason": r}),
    })
}

/// SelfSubjectRulesReview's status: resource and non-resource rules apart.
pub fn rules_status(rules: &[Rule]) -> Value {
    let mut resource = Vec::new();
    let mut non_resource = Vec::new();
    for r in rules {
        if !r.resources.is_empty() {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            resource.push(v);
        }
        if !r.non_resource_urls.is_empty() {
            non_resource.push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false})
}
