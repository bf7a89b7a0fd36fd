//! The authorization attributes of a URL, read as Kubernetes'
//! RequestInfoFactory reads them, so a rule written for kube-apiserver
//! matches the same requests here:
//! - `/api/{v}/...` and `/apis/{g}/{v}/...` with at least a resource are
//!   resource requests; everything else (`/api`, `/apis/apps/v1`,
//!   `/healthz`, `/version`) is a non-resource request whose verb is the
//!   lowercase HTTP method;
//! - `GET` is `get` with a name, `list` without, `watch` with
//!   `?watch=true`; `DELETE` without a name is `deletecollection`;
//! - `/namespaces/{ns}/{resource}...` sets the namespace;
//!   `/namespaces/{ns}` and `/namespaces/{ns}/status|finalize` are the
//!   namespace object itself (namespace = its name).

use axum::http::Method;

use super::{Attributes, UserInfo};

/// Attributes of `method path?query` for `user`.
pub fn attributes(user: &UserInfo, method: &Method, path: &str, query: Option<&str>) -> Attributes {
    let mut a = Attributes {
        user: user.clone(),
        verb: method.as_str().to_ascii_lowercase(),
        path: path.to_string(),
        ..Default::default()
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if parts.len() < 3 {
        return a;
    }
    let mut rest: &[&str] = match parts[0] {
        "api" => &parts[1..],
        "apis" if parts.len() >= 4 => {
            a.api_group = parts[1].to_string();
            &parts[2..]
        }
        _ => return a,
    };
    a.resource_request = true;
    a.api_version = rest[0].to_string();
    rest = &rest[1..];
    // `/watch/...` and `/proxy/...` name the verb in the path (deprecated
    // forms Kubernetes still parses).
    let mut special = None;
    if matches!(rest.first(), Some(&("watch" | "proxy"))) && rest.len() >= 2 {
        special = Some(rest[0]);
        rest = &rest[1..];
    }
    if rest.first() == Some(&"namespaces") {
        if let Some(ns) = rest.get(1) {
            a.namespace = ns.to_string();
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
    }
    if let Some(r) = rest.first() {
        a.resource = r.to_string();
    }
    if let Some(n) = rest.get(1) {
        a.name = n.to_string();
    }
    if let Some(s) = rest.get(2) {
        a.subresource = s.to_string();
    }
    if let Some(q) = query {
        a.field_selector = form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "fieldSelector")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
    }
    let watch = query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| k == "watch" && matches!(v.as_ref(), "true" | "1"))
        })
        .unwrap_or(false);
    a.verb = match special {
        Some(v) => v.to_string(),
        None => match *method {
            Method::POST => "create".into(),
            Method::GET | Method::HEAD if a.name.is_empty() && watch => "watch".into(),
            Method::GET | Method::HEAD if a.name.is_empty() => "list".into(),
            Method::GET | Method::HEAD if watch => "watch".into(),
            Method::GET | Method::HEAD => "get".into(),
            Method::PUT => "update".into(),
            Method::PATCH => "patch".into(),
            Method::DELETE if a.name.is_empty() => "deletecollection".into(),
            Method::DELETE => "delete".into(),
            _ => method.as_str().to_ascii_lowercase(),
        },
    };
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(method: Method, path: &str, q: Option<&str>) -> Attributes {
        attributes(&UserInfo::default(), &method, path, q)
    }

    #[test]
    fn resource_urls() {
        let a = at(Method::GET, "/api/v1/namespaces/default/pods", None);
        assert!(a.resource_request);
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.namespace.as_str()),
            ("list", "pods", "default")
        );
        let a = at(
            Method::GET,
            "/api/v1/namespaces/default/pods",
            Some("watch=true&resourceVersion=1"),
        );
        assert_eq!(a.verb, "watch");
        let a = at(Method::GET, "/api/v1/namespaces/d/pods/p/log", None);
        assert_eq!(
            (a.verb.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("get", "p", "log")
        );
        let a = at(
            Method::PUT,
            "/apis/apps/v1/namespaces/d/deployments/web/scale",
            None,
        );
        assert_eq!(
            (
                a.api_group.as_str(),
                a.verb.as_str(),
                a.subresource.as_str()
            ),
            ("apps", "update", "scale")
        );
        let a = at(Method::DELETE, "/api/v1/namespaces/d/configmaps", None);
        assert_eq!(a.verb, "deletecollection");
        let a = at(
            Method::POST,
            "/api/v1/namespaces/d/pods/p/exec",
            Some("command=ls"),
        );
        assert_eq!(
            (a.verb.as_str(), a.subresource.as_str()),
            ("create", "exec")
        );
    }

    #[test]
    fn namespaces_are_their_own_namespace() {
        let a = at(Method::GET, "/api/v1/namespaces/kube-system", None);
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("namespaces", "kube-system", "kube-system")
        );
        let a = at(Method::PUT, "/api/v1/namespaces/x/finalize", None);
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("namespaces", "x", "finalize")
        );
        let a = at(Method::GET, "/api/v1/namespaces", None);
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.namespace.as_str()),
            ("list", "namespaces", "")
        );
        let a = at(
            Method::GET,
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/view",
            None,
        );
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str(), a.name.as_str()),
            ("get", "rbac.authorization.k8s.io", "view")
        );
    }

    #[test]
    fn discovery_and_health_are_non_resource() {
        for p in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/healthz",
            "/version",
            "/openapi/v3",
        ] {
            let a = at(Method::GET, p, None);
            assert!(!a.resource_request, "{p}");
            assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", p));
        }
    }
}
