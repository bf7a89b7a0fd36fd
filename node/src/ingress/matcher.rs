//! Host and path matching as networking.k8s.io/v1 defines it, pure.
//!
//! Hosts: a rule host is either precise (`foo.example.com`, equal to the
//! request host) or a wildcard whose first label is `*`
//! (`*.example.com`), which matches exactly one more label
//! (`bar.example.com`, not `example.com` nor `a.b.example.com`). Request
//! hosts are compared without port, lower-cased.
//!
//! Paths: `Exact` compares the whole path, case-sensitively. `Prefix`
//! compares `/`-separated elements (`/foo` matches `/foo` and `/foo/bar`,
//! not `/foobar`; a trailing `/` in either is ignored; `/` matches every
//! path). `ImplementationSpecific` is treated as `Prefix`.

/// How a path rule compares request paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathKind {
    /// Element-wise prefix (also `ImplementationSpecific`).
    Prefix,
    /// Whole path, case-sensitive. Ordered after `Prefix` so that, at equal
    /// length, `Exact` sorts as the more specific one.
    Exact,
}

impl PathKind {
    /// The kind of a `pathType`; `None` for an unknown type (the API server
    /// refuses those, so such a path is skipped rather than guessed).
    pub fn parse(path_type: &str) -> Option<PathKind> {
        match path_type {
            "Exact" => Some(PathKind::Exact),
            "Prefix" | "ImplementationSpecific" => Some(PathKind::Prefix),
            _ => None,
        }
    }
}

/// Whether the rule path `rule` of kind `kind` matches the request path.
pub fn path_matches(kind: PathKind, rule: &str, request: &str) -> bool {
    match kind {
        PathKind::Exact => rule == request,
        PathKind::Prefix => {
            let mut req = elements(request);
            elements(rule).all(|e| req.next() == Some(e))
        }
    }
}

/// The non-empty `/`-separated elements of a path.
fn elements(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|e| !e.is_empty())
}

/// A request's host as rules compare it: without a port, lower-case,
/// without a trailing dot. IPv6 literals keep their brackets.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let bare = match host.strip_prefix('[') {
        Some(rest) => match rest.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        },
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    bare.trim_end_matches('.').to_ascii_lowercase()
}

/// The wildcard rule host (`*.rest`) a request host would match, if any:
/// its first label replaced by `*`. `None` for a single-label host.
pub fn wildcard_of(host: &str) -> Option<String> {
    let (first, rest) = host.split_once('.')?;
    (!first.is_empty() && !rest.is_empty()).then(|| format!("*.{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_whole_elements() {
        let p = PathKind::Prefix;
        assert!(path_matches(p, "/foo", "/foo"));
        assert!(path_matches(p, "/foo", "/foo/"));
        assert!(path_matches(p, "/foo", "/foo/bar"));
        assert!(path_matches(p, "/foo/", "/foo"));
        assert!(!path_matches(p, "/foo", "/foobar"));
        assert!(!path_matches(p, "/foo/bar", "/foo"));
        assert!(path_matches(p, "/", "/anything/at/all"));
        assert!(path_matches(p, "/", "/"));
        assert!(!path_matches(p, "/aaa/bb", "/aaa/bbb"));
        assert!(path_matches(p, "/aaa/bbb", "/aaa/bbb/ccc"));
    }

    #[test]
    fn exact_is_the_whole_path_and_case_sensitive() {
        let e = PathKind::Exact;
        assert!(path_matches(e, "/foo", "/foo"));
        assert!(!path_matches(e, "/foo", "/foo/"));
        assert!(!path_matches(e, "/foo", "/FOO"));
        assert!(!path_matches(e, "/foo", "/foo/bar"));
    }

    #[test]
    fn path_types() {
        assert_eq!(PathKind::parse("Exact"), Some(PathKind::Exact));
        assert_eq!(PathKind::parse("Prefix"), Some(PathKind::Prefix));
        assert_eq!(
            PathKind::parse("ImplementationSpecific"),
            Some(PathKind::Prefix)
        );
        assert_eq!(PathKind::parse("Regex"), None);
        assert!(PathKind::Exact > PathKind::Prefix);
    }

    #[test]
    fn hosts_lose_port_case_and_trailing_dot() {
        assert_eq!(normalize_host("Foo.Example.COM:8080"), "foo.example.com");
        assert_eq!(normalize_host("foo.example.com."), "foo.example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        assert_eq!(wildcard_of("bar.foo.com").as_deref(), Some("*.foo.com"));
        assert_eq!(wildcard_of("foo.com").as_deref(), Some("*.com"));
        assert_eq!(wildcard_of("localhost"), None);
        // `baz.bar.foo.com` yields `*.bar.foo.com`, never `*.foo.com`.
        assert_eq!(
            wildcard_of("baz.bar.foo.com").as_deref(),
            Some("*.bar.foo.com")
        );
    }
}
