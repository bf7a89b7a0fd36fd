//! The route table: keel's Ingresses, their Services and EndpointSlices
//! turned into a matcher from (host, path) to a backend. Pure; rebuilt
//! whole on every change and swapped in atomically by the router.
//!
//! Precedence, as the Ingress spec and the common controllers apply it:
//! 1. hosts: rules of the precise host, then of the matching wildcard
//!    (`*.example.com`), then rules without a host; a group whose paths
//!    all miss falls through to the next;
//! 2. within a group, across Ingresses: the longest matching path wins,
//!    `Exact` over `Prefix` at equal length, then the oldest Ingress
//!    (creationTimestamp, then namespace/name);
//! 3. nothing matched: the oldest `defaultBackend`; otherwise 404.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

use super::backend::{self, Backend};
use super::matcher::{normalize_host, path_matches, wildcard_of, PathKind};

pub use keel_apimachinery::ingress_class::{
    handled, CLASS, CLASS_ANNOTATION, CONTROLLER, DEFAULT_CLASS_ANNOTATION,
};

/// Everything the table (and the TLS certificates) are built from: the
/// reflector caches' contents at one moment.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    pub ingresses: Vec<Arc<Ingress>>,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    /// `kubernetes.io/tls` Secrets (others are ignored).
    pub secrets: Vec<Arc<Secret>>,
    /// Whether the `keel` class is the cluster's default, so Ingresses
    /// without a class are keel's too.
    pub keel_is_default: bool,
}

impl Inputs {
    /// keel's Ingresses, oldest first (the precedence order of ties).
    pub fn keel_ingresses(&self) -> Vec<&Ingress> {
        let mut out: Vec<&Ingress> = self
            .ingresses
            .iter()
            .map(Arc::as_ref)
            .filter(|i| handled(i, self.keel_is_default))
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .collect();
        out.sort_by(|a, b| {
            let key = |i: &Ingress| {
                (
                    i.metadata.creation_timestamp.clone().map(|t| t.0),
                    i.metadata.namespace.clone(),
                    i.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        out
    }
}

/// Whether the `keel` class exists and is annotated as the default.
pub fn keel_is_default(classes: &[Arc<IngressClass>]) -> bool {
    classes
        .iter()
        .any(|c| keel_apimachinery::ingress_class::is_keel_default(c))
}

/// Where a request goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// A Service port (possibly without ready endpoints: 503).
    Backend(Arc<Backend>),
    /// No rule and no default backend matched (404).
    NotFound,
}

#[derive(Debug)]
struct PathRule {
    kind: PathKind,
    path: String,
    backend: Arc<Backend>,
}

/// The matcher. Cheap to query from many connections at once.
#[derive(Debug, Default)]
pub struct RouteTable {
    precise: HashMap<String, Vec<PathRule>>,
    wildcard: HashMap<String, Vec<PathRule>>,
    any_host: Vec<PathRule>,
    default_backend: Option<Arc<Backend>>,
}

impl RouteTable {
    /// Builds the table from keel's Ingresses in `inputs`. Paths with an
    /// unknown pathType and `resource` backends are skipped (keel routes
    /// to Services only).
    pub fn build(inputs: &Inputs) -> RouteTable {
        let slices: Vec<&EndpointSlice> = inputs.slices.iter().map(Arc::as_ref).collect();
        let services: HashMap<(&str, &str), &Service> = inputs
            .services
            .iter()
            .map(|s| {
                let ns = s.metadata.namespace.as_deref().unwrap_or_default();
                let name = s.metadata.name.as_deref().unwrap_or_default();
                ((ns, name), s.as_ref())
            })
            .collect();
        let mut backends: HashMap<String, Arc<Backend>> = HashMap::new();
        let mut backend_of = |ns: &str, b: &IngressBackend| -> Option<Arc<Backend>> {
            let svc = b.service.as_ref()?;
            let port = svc.port.clone().unwrap_or_default();
            let port_key = match (&port.number, &port.name) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.clone(),
                (None, None) => String::new(),
            };
            let key = format!("{ns}/{}:{port_key}", svc.name);
            let entry = backends.entry(key.clone()).or_insert_with(|| {
                let found = services.get(&(ns, svc.name.as_str())).copied();
                Arc::new(Backend::new(key, backend::resolve(found, &port, &slices)))
            });
            Some(entry.clone())
        };
        let mut table = RouteTable::default();
        for ing in inputs.keel_ingresses() {
            let ns = ing.metadata.namespace.as_deref().unwrap_or_default();
            let Some(spec) = &ing.spec else { continue };
            if table.default_backend.is_none() {
                if let Some(b) = &spec.default_backend {
                    table.default_backend = backend_of(ns, b);
                }
            }
            for rule in spec.rules.iter().flatten() {
                let host = rule.host.as_deref().map(normalize_host).unwrap_or_default();
                let group = match host.as_str() {
                    "" => &mut table.any_host,
                    h if h.starts_with("*.") => table.wildcard.entry(host.clone()).or_default(),
                    _ => table.precise.entry(host.clone()).or_default(),
                };
                for p in rule.http.iter().flat_map(|h| &h.paths) {
                    let Some(kind) = PathKind::parse(&p.path_type) else {
                        continue;
                    };
                    let Some(backend) = backend_of(ns, &p.backend) else {
                        continue;
                    };
                    let path = p
                        .path
                        .clone()
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "/".into());
                    group.push(PathRule {
                        kind,
                        path,
                        backend,
                    });
                }
            }
        }
        for group in table
            .precise
            .values_mut()
            .chain(table.wildcard.values_mut())
            .chain(std::iter::once(&mut table.any_host))
        {
            // Stable: equal rules keep the oldest Ingress first.
            group.sort_by(|a, b| b.path.len().cmp(&a.path.len()).then(b.kind.cmp(&a.kind)));
        }
        table
    }

    /// The route of a request for `host` (the Host header or :authority,
    /// port allowed) and `path` (without query).
    pub fn route(&self, host: &str, path: &str) -> Route {
        let host = normalize_host(host);
        let wildcard = wildcard_of(&host);
        let groups = [
            self.precise.get(&host),
            wildcard.as_ref().and_then(|w| self.wildcard.get(w)),
            Some(&self.any_host),
        ];
        for group in groups.into_iter().flatten() {
            if let Some(r) = group.iter().find(|r| path_matches(r.kind, &r.path, path)) {
                return Route::Backend(r.backend.clone());
            }
        }
        match &self.default_backend {
            Some(b) => Route::Backend(b.clone()),
            None => Route::NotFound,
        }
    }

    /// Whether any route exists (for logs).
    pub fn is_empty(&self) -> bool {
        self.precise.is_empty()
            && self.wildcard.is_empty()
            && self.any_host.is_empty()
            && self.default_backend.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn ingress(name: &str, created: &str, spec: Value) -> Arc<Ingress> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    /// Service `name` with port 80 → slice port 8000 + i on 127.1.0.<i>.
    fn service(name: &str, i: u8) -> (Arc<Service>, Arc<EndpointSlice>) {
        let svc = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        }))
        .unwrap();
        let slice = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-1"), "namespace": "ns",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8000 + u16::from(i)}],
            "endpoints": [{"addresses": [format!("127.1.0.{i}")]}],
        }))
        .unwrap();
        (Arc::new(svc), Arc::new(slice))
    }

    fn inputs(ingresses: Vec<Arc<Ingress>>) -> Inputs {
        let mut i = Inputs {
            ingresses,
            keel_is_default: true,
            ..Inputs::default()
        };
        for (n, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let (s, e) = service(name, n as u8 + 1);
            i.services.push(s);
            i.slices.push(e);
        }
        i
    }

    fn path(p: &str, ty: &str, svc: &str) -> Value {
        json!({"path": p, "pathType": ty, "backend": {"service": {"name": svc, "port": {"number": 80}}}})
    }

    /// The service a request reaches (by its endpoint), or "404".
    fn hit(t: &RouteTable, host: &str, p: &str) -> String {
        match t.route(host, p) {
            Route::Backend(b) => {
                let port = b.pick().expect("endpoints").port();
                ["a", "b", "c", "d", "e"][usize::from(port - 8001)].to_string()
            }
            Route::NotFound => "404".into(),
        }
    }

    #[test]
    fn longest_path_wins_and_exact_beats_prefix_at_equal_length() {
        let ing = ingress(
            "i",
            "2024-01-01T00:00:00Z",
            json!({"rules": [{"host": "x.test", "http": {"paths": [
                path("/", "Prefix", "a"),
                path("/foo", "Prefix", "b"),
                path("/foo", "Exact", "c"),
                path("/foo/bar", "ImplementationSpecific", "d"),
            ]}}]}),
        );
        let t = RouteTable::build(&inputs(vec![ing]));
        assert_eq!(hit(&t, "x.test", "/foo"), "c");
        assert_eq!(hit(&t, "x.test", "/foo/"), "b");
        assert_eq!(hit(&t, "x.test", "/foo/baz"), "b");
        assert_eq!(hit(&t, "x.test", "/foo/bar/1"), "d");
        assert_eq!(hit(&t, "x.test", "/foobar"), "a");
        assert_eq!(hit(&t, "X.TEST:8080", "/"), "a");
        assert_eq!(hit(&t, "y.test", "/"), "404");
    }

    #[test]
    fn precise_host_beats_wildcard_beats_any_host_then_default_backend() {
        let ing = ingress(
            "i",
            "2024-01-01T00:00:00Z",
            json!({
                "defaultBackend": {"service": {"name": "e", "port": {"number": 80}}},
                "rules": [
                    {"http": {"paths": [path("/any", "Prefix", "c")]}},
                    {"host": "*.foo.com", "http": {"paths": [path("/", "Prefix", "b")]}},
                    {"host": "bar.foo.com", "http": {"paths": [path("/only", "Exact", "a")]}},
                ]
            }),
        );
        let t = RouteTable::build(&inputs(vec![ing]));
        assert_eq!(hit(&t, "bar.foo.com", "/only"), "a");
        // The precise host's paths miss: its wildcard group answers.
        assert_eq!(hit(&t, "bar.foo.com", "/other"), "b");
        assert_eq!(hit(&t, "baz.foo.com", "/any"), "b");
        // A wildcard covers one label only.
        assert_eq!(hit(&t, "a.baz.foo.com", "/any"), "c");
        assert_eq!(hit(&t, "foo.com", "/x"), "e");
        assert_eq!(hit(&t, "other.org", "/any/1"), "c");
    }

    #[test]
    fn the_oldest_ingress_wins_a_tie_and_foreign_classes_are_ignored() {
        let young = ingress(
            "young",
            "2024-02-01T00:00:00Z",
            json!({"rules": [{"host": "h", "http": {"paths": [path("/", "Prefix", "b")]}}]}),
        );
        let old = ingress(
            "old",
            "2024-01-01T00:00:00Z",
            json!({"rules": [{"host": "h", "http": {"paths": [path("/", "Prefix", "a")]}}]}),
        );
        let nginx = ingress(
            "nginx",
            "2023-01-01T00:00:00Z",
            json!({"ingressClassName": "nginx",
                   "rules": [{"host": "h", "http": {"paths": [path("/", "Prefix", "c")]}}]}),
        );
        let mut old_annotated = (*ingress(
            "annotated",
            "2023-06-01T00:00:00Z",
            json!({"rules": [{"host": "g", "http": {"paths": [path("/", "Prefix", "d")]}}]}),
        ))
        .clone();
        old_annotated.metadata.annotations =
            Some([(CLASS_ANNOTATION.to_string(), "other".to_string())].into());
        let mut i = inputs(vec![young, old.clone(), nginx, Arc::new(old_annotated)]);
        let t = RouteTable::build(&i);
        assert_eq!(hit(&t, "h", "/"), "a");
        assert_eq!(hit(&t, "g", "/"), "404");
        // Without keel as the default class, class-less Ingresses are not keel's.
        i.keel_is_default = false;
        assert!(RouteTable::build(&i).is_empty());
        let mut classed = (*old).clone();
        classed.spec.as_mut().unwrap().ingress_class_name = Some(CLASS.into());
        i.ingresses = vec![Arc::new(classed)];
        assert_eq!(hit(&RouteTable::build(&i), "h", "/"), "a");
    }

    #[test]
    fn a_service_without_endpoints_is_a_backend_with_none() {
        let ing = ingress(
            "i",
            "2024-01-01T00:00:00Z",
            json!({"rules": [{"http": {"paths": [path("/", "Prefix", "missing")]}}]}),
        );
        let t = RouteTable::build(&inputs(vec![ing]));
        match t.route("x", "/") {
            Route::Backend(b) => assert!(b.pick().is_none()),
            Route::NotFound => panic!("a rule matched"),
        }
    }

    #[test]
    fn the_default_class_is_the_annotated_keel_class() {
        let class = |name: &str, default: &str| -> Arc<IngressClass> {
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": name,
                    "annotations": {DEFAULT_CLASS_ANNOTATION: default}}}))
                .unwrap(),
            )
        };
        assert!(keel_is_default(&[
            class("nginx", "false"),
            class("keel", "true")
        ]));
        assert!(!keel_is_default(&[class("keel", "false")]));
        assert!(!keel_is_default(&[class("nginx", "true")]));
    }
}
