//! URL → what is asked for. Kubernetes' URL grammar:
//! `/api/v1/[namespaces/{ns}/]{resource}[/{name}[/{subresource}]]` and the
//! same under `/apis/{group}/{version}`.

use std::collections::HashMap;

use crate::resources::{self, ResourceInfo, Sub};
use crate::status::ApiError;

/// A resource URL, resolved.
#[derive(Debug, Clone)]
pub struct Target {
    pub info: &'static ResourceInfo,
    /// Set for namespaced resources addressed inside a namespace.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<Sub>,
}

#[derive(Debug)]
pub enum Route {
    Version,
    /// `/api`
    CoreGroups,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`
    GroupVersion(String, String),
    /// `/openapi/v3`
    OpenApiRoot,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/{g}/{v}`
    OpenApiGroupVersion(String, String),
    Healthz,
    Livez,
    Readyz,
    Metrics,
    Resource(Target),
    /// `/apis/metrics.k8s.io/...` ([`crate::metricsapi`]).
    ResourceMetrics(crate::metricsapi::MetricsRoute),
}

/// Parses a request path. `Err` is a 404 Status.
pub fn parse(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["version"] => Ok(Route::Version),
        ["healthz", ..] => Ok(Route::Healthz),
        ["livez", ..] => Ok(Route::Livez),
        ["readyz", ..] => Ok(Route::Readyz),
        ["metrics"] => Ok(Route::Metrics),
        ["api"] => Ok(Route::CoreGroups),
        ["apis"] => Ok(Route::Groups),
        ["apis", crate::metricsapi::GROUP, rest @ ..] => crate::metricsapi::parse(rest),
        ["apis", g] => known_group(g).map(|_| Route::Group(g.to_string())),
        ["api", v] => group_version("", v),
        ["apis", g, v] => group_version(g, v),
        ["openapi", "v3"] => Ok(Route::OpenApiRoot),
        ["openapi", "v3", "api", v] => openapi_gv("", v),
        ["openapi", "v3", "apis", g, v] => openapi_gv(g, v),
        ["api", v, rest @ ..] => resource_route("", v, rest),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        _ => Err(ApiError::no_route()),
    }
}

fn known_group(g: &str) -> Result<(), ApiError> {
    resources::groups()
        .iter()
        .any(|(group, _)| *group == g)
        .then_some(())
        .ok_or_else(ApiError::no_route)
}

fn group_version(g: &str, v: &str) -> Result<Route, ApiError> {
    resources::groups()
        .contains(&(g, v))
        .then(|| Route::GroupVersion(g.to_string(), v.to_string()))
        .ok_or_else(ApiError::no_route)
}

fn openapi_gv(g: &str, v: &str) -> Result<Route, ApiError> {
    match group_version(g, v)? {
        Route::GroupVersion(g, v) => Ok(Route::OpenApiGroupVersion(g, v)),
        _ => Err(ApiError::no_route()),
    }
}

fn resource_route(g: &str, v: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let find = |r: &str| resources::find(g, v, r).ok_or_else(ApiError::no_route);
    // `namespaces/{ns}/{resource}...` when the third segment names a
    // namespaced resource; otherwise it is the namespace object itself.
    if let ["namespaces", ns, res, tail @ ..] = rest {
        if let Some(info) = resources::find(g, v, res).filter(|i| i.namespaced) {
            check_segment(ns)?;
            return target(info, Some(ns.to_string()), tail);
        }
    }
    match rest {
        [res, tail @ ..] if !res.is_empty() => {
            let info = find(res)?;
            target(info, None, tail)
        }
        _ => Err(ApiError::no_route()),
    }
}

fn check_segment(s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s == "." || s == ".." {
        return Err(ApiError::bad_request(format!("invalid path segment {s:?}")));
    }
    Ok(())
}

fn target(
    info: &'static ResourceInfo,
    namespace: Option<String>,
    tail: &[&str],
) -> Result<Route, ApiError> {
    let (name, sub) = match tail {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, sub] => {
            let s = Sub::parse(sub)
                .filter(|s| info.has(*s))
                .ok_or_else(ApiError::no_route)?;
            (Some(*name), Some(s))
        }
        _ => return Err(ApiError::no_route()),
    };
    if let Some(n) = name {
        check_segment(n)?;
    }
    Ok(Route::Resource(Target {
        info,
        namespace: if info.namespaced { namespace } else { None },
        name: name.map(str::to_string),
        sub,
    }))
}

/// Query parameters (last value wins, as Go's `url.Values.Get` reads the first; kubectl never repeats one).
pub type Query = HashMap<String, String>;

pub fn parse_query(q: Option<&str>) -> Query {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A boolean query flag: `true`/`1` (Kubernetes accepts both).
pub fn flag(q: &Query, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("true" | "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> Target {
        match parse(path).unwrap() {
            Route::Resource(t) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn resource_urls() {
        let t = res("/api/v1/namespaces/default/pods/x/status");
        assert_eq!(t.info.resource, "pods");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("x"));
        assert_eq!(t.sub, Some(Sub::Status));
        let t = res("/api/v1/namespaces/kube-system");
        assert_eq!(t.info.resource, "namespaces");
        assert_eq!(t.name.as_deref(), Some("kube-system"));
        let t = res("/api/v1/namespaces/a/status");
        assert_eq!((t.info.resource, t.sub), ("namespaces", Some(Sub::Status)));
        let t = res("/apis/apps/v1/namespaces/d/deployments/web/scale");
        assert_eq!(t.sub, Some(Sub::Scale));
        let t = res("/api/v1/pods");
        assert!(t.namespace.is_none() && t.name.is_none());
    }

    #[test]
    fn unknown_urls_are_404() {
        for p in [
            "/api/v2/pods",
            "/apis/apps/v1/foos",
            "/apis/nope/v1",
            "/api/v1/namespaces/d/pods/x/scale",
            "/api/v1/namespaces/d/pods/x/status/extra",
            "/",
        ] {
            assert_eq!(parse(p).unwrap_err().code, 404, "{p}");
        }
        assert_eq!(parse("/api/v1/namespaces/d/pods/..").unwrap_err().code, 400);
    }

    #[test]
    fn discovery_urls() {
        assert!(matches!(parse("/api").unwrap(), Route::CoreGroups));
        assert!(
            matches!(parse("/apis/apps/v1").unwrap(), Route::GroupVersion(g, v) if g == "apps" && v == "v1")
        );
        assert!(matches!(
            parse("/openapi/v3/apis/apps/v1").unwrap(),
            Route::OpenApiGroupVersion(..)
        ));
    }
}
