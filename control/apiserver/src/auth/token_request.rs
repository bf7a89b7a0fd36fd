//! TokenRequest (`POST .../serviceaccounts/{name}/token`, what
//! `kubectl create token` sends): a signed token for the account,
//! optionally bound to a pod, never stored.
//!
//! As Kubernetes: `expirationSeconds` defaults to one hour and may not be
//! under ten minutes; `audiences` default to the API's; the bound object
//! must be a Pod of the same namespace that exists (with the given uid,
//! when one is given). Errors are 400/404/422 naming the problem.

use jiff::Timestamp;
use serde_json::{json, Value};

use super::node::node_name;
use super::sa_token::{current_uid, now_s, Ref, Tokens};
use super::UserInfo;
use crate::admission::node_restriction;
use crate::resources;
use crate::status::{ApiError, ApiResult, Cause};

/// Without `expirationSeconds`.
pub const DEFAULT_EXPIRATION_S: i64 = 3600;
/// Kubernetes refuses shorter tokens.
pub const MIN_EXPIRATION_S: i64 = 600;
/// 2^32 seconds, Kubernetes' upper bound.
pub const MAX_EXPIRATION_S: i64 = 1 << 32;

fn invalid(name: &str, field: &str, message: String) -> ApiError {
    let mut e = ApiError::new(
        422,
        "Invalid",
        format!("TokenRequest.authentication.k8s.io \"{name}\" is invalid: {field}: {message}"),
    );
    let cause = Cause {
        field: field.to_string(),
        reason: "FieldValueInvalid".into(),
        message,
    };
    e.details = Some(
        json!({"name": name, "group": "authentication.k8s.io", "kind": "TokenRequest", "causes": [cause]}),
    );
    e
}

/// Answers a TokenRequest `body` for account `ns/name` asked by `user`:
/// the request with `status.token` and `status.expirationTimestamp`
/// filled. A node may ask only for tokens bound to its own pods
/// (NodeRestriction, 403).
pub async fn create(
    tokens: &Tokens,
    objects: &crate::storage::Objects,
    user: &UserInfo,
    ns: &str,
    name: &str,
    body: &Value,
) -> ApiResult<Value> {
    if let Some(k) = body["kind"].as_str().filter(|k| *k != "TokenRequest") {
        return Err(ApiError::bad_request(format!(
            "expected a TokenRequest, got kind {k:?}"
        )));
    }
    let spec = &body["spec"];
    let expiration_s = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION_S,
        v => v.as_i64().ok_or_else(|| {
            invalid(
                name,
                "spec.expirationSeconds",
                format!("Invalid value: {v}: must be an integer"),
            )
        })?,
    };
    if expiration_s < MIN_EXPIRATION_S {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            format!(
                "Invalid value: {expiration_s}: may not specify a duration less than 10 minutes"
            ),
        ));
    }
    if expiration_s > MAX_EXPIRATION_S {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            format!("Invalid value: {expiration_s}: may not specify a duration larger than 2^32 seconds"),
        ));
    }
    let audiences: Vec<String> = match spec["audiences"].as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|x| x.as_str().filter(|s| !s.is_empty()).map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                invalid(
                    name,
                    "spec.audiences",
                    "audiences must be non-empty strings".into(),
                )
            })?,
        _ => tokens.audiences.clone(),
    };
    let sa_info = resources::find("", "v1", "serviceaccounts").expect("served");
    let sa_uid = current_uid(objects, "serviceaccounts", ns, name)
        .await?
        .ok_or_else(|| ApiError::not_found(sa_info, name))?;
    let bound_ref = &spec["boundObjectRef"];
    if node_name(user).is_some() {
        let pod = match bound_ref["name"].as_str().filter(|n| !n.is_empty()) {
            Some(pod_name) => stored_pod(objects, ns, pod_name).await?,
            None => None,
        };
        node_restriction::admit_token_request(user, name, bound_ref, pod.as_ref())?;
    }
    let pod = bound_pod(objects, ns, name, bound_ref).await?;
    let now = now_s();
    let claims = tokens.claims(
        ns,
        Ref {
            name: name.to_string(),
            uid: sa_uid,
        },
        pod,
        &audiences,
        now,
        expiration_s,
    );
    let token = tokens
        .sign(&claims)
        .map_err(|e| ApiError::internal(format!("signing the token failed: {e}")))?;
    let expires = Timestamp::from_second(claims.exp)
        .map_err(|e| ApiError::internal(format!("expiry out of range: {e}")))?;
    let mut out_spec = spec.as_object().cloned().unwrap_or_default();
    out_spec.insert("audiences".into(), json!(audiences));
    out_spec.insert("expirationSeconds".into(), json!(expiration_s));
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": Timestamp::from_second(now).map(|t| t.to_string()).unwrap_or_default(),
        },
        "spec": out_spec,
        "status": {
            "token": token,
            "expirationTimestamp": expires.to_string(),
        },
    }))
}

/// The pod `boundObjectRef` names, checked to exist (and to have the
/// given uid); None when the token is not bound.
async fn bound_pod(
    objects: &crate::storage::Objects,
    ns: &str,
    name: &str,
    r: &Value,
) -> ApiResult<Option<Ref>> {
    if r.is_null() {
        return Ok(None);
    }
    let kind = r["kind"].as_str().unwrap_or("");
    if kind != "Pod" {
        return Err(invalid(
            name,
            "spec.boundObjectRef.kind",
            format!("Unsupported value: {kind:?}: supported values: \"Pod\""),
        ));
    }
    if let Some(v) = r["apiVersion"]
        .as_str()
        .filter(|v| !v.is_empty() && *v != "v1")
    {
        return Err(invalid(
            name,
            "spec.boundObjectRef.apiVersion",
            format!("Unsupported value: {v:?}: supported values: \"v1\""),
        ));
    }
    let pod_name = r["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid(name, "spec.boundObjectRef.name", "Required value".into()))?;
    let pods = resources::find("", "v1", "pods").expect("served");
    let uid = current_uid(objects, "pods", ns, pod_name)
        .await?
        .ok_or_else(|| ApiError::not_found(pods, pod_name))?;
    if let Some(want) = r["uid"].as_str().filter(|u| !u.is_empty()) {
        if want != uid {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("the UID in the bound object reference ({want}) does not match the UID in record ({uid}); the object might have been deleted and then recreated"),
            ));
        }
    }
    Ok(Some(Ref {
        name: pod_name.to_string(),
        uid,
    }))
}

/// The stored pod `ns/name`, None when there is none.
async fn stored_pod(
    objects: &crate::storage::Objects,
    ns: &str,
    name: &str,
) -> ApiResult<Option<Value>> {
    let key = format!("/registry/pods/{ns}/{name}");
    let found = match objects.get_local(&key).await? {
        Some(s) => Some(s),
        None => objects.get(&key).await?,
    };
    Ok(found.map(|s| s.obj))
}
