//! Ingress backends: a Service port resolved to the ready endpoints that
//! serve it, picked round-robin.
//!
//! Resolution, as ingress controllers that route to endpoints do it: the
//! backend's port (a number or a name) selects the Service's port; that
//! port's name selects the EndpointSlice port of the same name in every
//! slice labelled `kubernetes.io/service-name=<service>`. A slice without a
//! port of that name falls back to the Service port's numeric
//! `targetPort` (or its `port` when none is given). Endpoints whose
//! `ready` condition is false are left out (unset means ready, as the
//! EndpointSlice API says).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceBackendPort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One Service port's ready endpoints, shared by every rule that names it.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`, for logs.
    pub name: String,
    endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backend {
    pub fn new(name: String, endpoints: Vec<SocketAddr>) -> Backend {
        Backend {
            name,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The next endpoint in round-robin order; `None` when none is ready.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        Some(self.endpoints[i])
    }

    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }
}

/// The ready endpoints of `service`'s port `port` (sorted, deduplicated),
/// from `slices` (all slices of the cluster; the Service's are picked by
/// label and namespace). Empty when the Service or the port is unknown.
pub fn resolve(
    service: Option<&Service>,
    port: &ServiceBackendPort,
    slices: &[&EndpointSlice],
) -> Vec<SocketAddr> {
    let Some(svc) = service else {
        return vec![];
    };
    let Some(svc_port) = service_port(svc, port) else {
        return vec![];
    };
    let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let port_name = svc_port.name.as_deref().unwrap_or_default();
    let mut out: Vec<SocketAddr> = slices
        .iter()
        .filter(|s| s.metadata.namespace.as_deref().unwrap_or_default() == ns)
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .is_some_and(|n| n == name)
        })
        .flat_map(|s| {
            let port = slice_port(s, port_name).or_else(|| numeric_target(svc_port));
            s.endpoints
                .iter()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                .filter_map(|e| e.addresses.first()?.parse::<IpAddr>().ok())
                .filter_map(move |ip| Some(SocketAddr::new(ip, port?)))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The Service port a backend names: by `number` (the Service `port`) or
/// by `name`.
pub fn service_port<'a>(svc: &'a Service, port: &ServiceBackendPort) -> Option<&'a ServicePort> {
    let ports = svc.spec.as_ref()?.ports.as_deref()?;
    match (port.number, port.name.as_deref().filter(|n| !n.is_empty())) {
        (Some(n), _) => ports.iter().find(|p| p.port == n),
        (None, Some(name)) => ports.iter().find(|p| p.name.as_deref() == Some(name)),
        (None, None) => None,
    }
}

/// The port of the slice's entry named `name` (`""` = the unnamed one).
fn slice_port(slice: &EndpointSlice, name: &str) -> Option<u16> {
    slice
        .ports
        .as_deref()?
        .iter()
        .find(|p| p.name.as_deref().unwrap_or_default() == name)
        .and_then(|p| u16::try_from(p.port?).ok())
}

/// A Service port's numeric target (its `port` when unset); `None` for a
/// named target, which only a slice can resolve.
fn numeric_target(p: &ServicePort) -> Option<u16> {
    match &p.target_port {
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(_)) => None,
        None => u16::try_from(p.port).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc() -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "admin", "port": 9000, "targetPort": 9001},
            ]}
        }))
        .unwrap()
    }

    fn slice(
        ns: &str,
        svc: &str,
        ports: serde_json::Value,
        endpoints: serde_json::Value,
    ) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-x"), "namespace": ns,
                         "labels": {SERVICE_NAME_LABEL: svc}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn by_number(n: i32) -> ServiceBackendPort {
        ServiceBackendPort {
            number: Some(n),
            name: None,
        }
    }

    fn by_name(n: &str) -> ServiceBackendPort {
        ServiceBackendPort {
            number: None,
            name: Some(n.into()),
        }
    }

    fn addrs(v: &[&str]) -> Vec<SocketAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_port_number_or_name_resolves_through_the_slice_port_name() {
        let s = slice(
            "ns",
            "web",
            json!([{"name": "http", "port": 8080}, {"name": "admin", "port": 9001}]),
            json!([{"addresses": ["127.1.0.2"]}, {"addresses": ["127.1.0.1"], "conditions": {"ready": true}}]),
        );
        let svc = svc();
        assert_eq!(
            resolve(Some(&svc), &by_number(80), &[&s]),
            addrs(&["127.1.0.1:8080", "127.1.0.2:8080"])
        );
        assert_eq!(
            resolve(Some(&svc), &by_name("admin"), &[&s]),
            addrs(&["127.1.0.1:9001", "127.1.0.2:9001"])
        );
        assert_eq!(resolve(Some(&svc), &by_number(81), &[&s]), vec![]);
        assert_eq!(resolve(Some(&svc), &by_name("nope"), &[&s]), vec![]);
        assert_eq!(resolve(None, &by_number(80), &[&s]), vec![]);
    }

    #[test]
    fn only_ready_endpoints_of_the_services_own_slices_count() {
        let mine = slice(
            "ns",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([{"addresses": ["127.1.0.1"], "conditions": {"ready": false}},
                   {"addresses": ["127.1.0.3"]}]),
        );
        let other_ns = slice(
            "other",
            "web",
            json!([{"name": "http", "port": 1}]),
            json!([{"addresses": ["127.9.0.1"]}]),
        );
        let other_svc = slice(
            "ns",
            "db",
            json!([{"name": "http", "port": 2}]),
            json!([{"addresses": ["127.9.0.2"]}]),
        );
        let svc = svc();
        assert_eq!(
            resolve(Some(&svc), &by_number(80), &[&mine, &other_ns, &other_svc]),
            addrs(&["127.1.0.3:8080"])
        );
    }

    #[test]
    fn a_slice_without_the_named_port_falls_back_to_a_numeric_target() {
        let s = slice(
            "ns",
            "web",
            json!([]),
            json!([{"addresses": ["127.1.0.1"]}]),
        );
        let svc = svc();
        assert_eq!(
            resolve(Some(&svc), &by_number(9000), &[&s]),
            addrs(&["127.1.0.1:9001"])
        );
        // A named target needs the slice.
        assert_eq!(resolve(Some(&svc), &by_number(80), &[&s]), vec![]);
    }

    #[test]
    fn round_robin_visits_every_endpoint_in_turn() {
        let b = Backend::new("ns/web:80".into(), addrs(&["127.1.0.1:1", "127.1.0.2:1"]));
        let picks: Vec<_> = (0..4).map(|_| b.pick().unwrap()).collect();
        assert_eq!(
            picks,
            addrs(&["127.1.0.1:1", "127.1.0.2:1", "127.1.0.1:1", "127.1.0.2:1"])
        );
        assert_eq!(Backend::new("x".into(), vec![]).pick(), None);
    }
}
