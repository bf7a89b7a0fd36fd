//! Impersonation (`kubectl --as alice --as-group dev`): the
//! `Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid` and
//! `Impersonate-Extra-<key>` headers make the request act as another
//! identity, provided the requester may `impersonate` each part of it
//! (users and groups in the core group, uids and userextras/<key> in
//! authentication.k8s.io, or a service account by its
//! namespace and name), as kube-apiserver's impersonation filter checks.
//!
//! Errors: a denied part is the usual 403 naming it; groups or extras
//! without a user are a 400.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

use super::{forbidden, Attributes, Authorizer, Decision, UserInfo};
use super::{ANONYMOUS, AUTHENTICATED, SERVICE_ACCOUNT_PREFIX, UNAUTHENTICATED};
use crate::status::{ApiError, ApiResult};

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

fn values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

/// Whether the request asks to impersonate anyone.
pub fn requested(h: &HeaderMap) -> bool {
    h.keys().any(|k| k.as_str().starts_with("impersonate-"))
}

/// The identity the request acts as: `user` itself when no impersonation
/// header is present.
pub async fn apply(authz: &dyn Authorizer, user: UserInfo, h: &HeaderMap) -> ApiResult<UserInfo> {
    if !requested(h) {
        return Ok(user);
    }
    let name = values(h, USER).into_iter().next().unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "impersonating groups, a uid or extra fields requires impersonating a user (Impersonate-User)",
        ));
    }
    let groups = values(h, GROUP);
    let uid = values(h, UID).into_iter().next().unwrap_or_default();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in h {
        if let Some(key) = k.as_str().strip_prefix(EXTRA) {
            let key = percent_decode(key);
            if let Ok(v) = v.to_str() {
                extra.entry(key).or_default().push(v.to_string());
            }
        }
    }
    let check = |resource: &str, sub: &str, namespace: &str, obj: &str| Attributes {
        user: user.clone(),
        verb: "impersonate".into(),
        resource_request: true,
        api_group: if matches!(resource, "uids" | "userextras") {
            "authentication.k8s.io".into()
        } else {
            String::new()
        },
        resource: resource.into(),
        subresource: sub.into(),
        namespace: namespace.into(),
        name: obj.into(),
        ..Default::default()
    };
    let mut asks = Vec::new();
    match name
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => asks.push(check("serviceaccounts", "", ns, sa)),
        None => asks.push(check("users", "", "", &name)),
    }
    for g in &groups {
        asks.push(check("groups", "", "", g));
    }
    if !uid.is_empty() {
        asks.push(check("uids", "", "", &uid));
    }
    for (k, vs) in &extra {
        for v in vs {
            asks.push(check("userextras", k, "", v));
        }
    }
    for a in &asks {
        if let Decision::NoOpinion(reason) = authz.authorize(a).await? {
            return Err(forbidden::error(a, &reason));
        }
    }
    let mut out_groups = groups;
    if out_groups.is_empty() {
        if let Some((ns, _)) = name
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)
            .and_then(|r| r.split_once(':'))
        {
            out_groups.push("system:serviceaccounts".into());
            out_groups.push(format!("system:serviceaccounts:{ns}"));
        }
    }
    let implied = if name == ANONYMOUS {
        UNAUTHENTICATED
    } else {
        AUTHENTICATED
    };
    if !out_groups.iter().any(|g| g == implied) {
        out_groups.push(implied.into());
    }
    Ok(UserInfo {
        name,
        uid,
        groups: out_groups,
        extra,
    })
}

/// Extra keys are percent-encoded in header names (`%2F` for `/`).
fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("k={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}
