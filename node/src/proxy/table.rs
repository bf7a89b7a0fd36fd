//! The routing table: Services and EndpointSlices in, one [`Route`] per
//! listening address out. Pure (no I/O), so every rule is unit-tested.
//!
//! Rules, as kube-proxy applies them:
//! - Services of type ClusterIP, NodePort and LoadBalancer with a cluster
//!   IP get a frontend `<clusterIP>:<port>` per port (and per address of a
//!   dual-stack `clusterIPs`); headless (`None`) and ExternalName Services
//!   get none, nor do Services annotated [`SERVED_BY_ANNOTATION`]` = agent`
//!   (the agent serves that address itself, e.g. cluster DNS).
//! - NodePort and LoadBalancer ports with a `nodePort` also get
//!   `<nodeIP>:<nodePort>`; with `externalTrafficPolicy: Local` its backends
//!   are only the endpoints on this node (none: connections are refused).
//!   `internalTrafficPolicy: Local` does the same for the cluster IP.
//! - Backends come from the EndpointSlices labelled
//!   `kubernetes.io/service-name=<service>` in the Service's namespace: the
//!   slice port with the Service port's name (both may be unnamed) and
//!   protocol gives the target port; every IP address of an endpoint is a
//!   backend, with its `ready`/`serving`/`terminating` conditions (absent
//!   `ready` counts as ready, absent `serving` as `ready`). An address in
//!   several slices is one backend, the most available of its copies.
//! - `sessionAffinity: ClientIP` gives the route an affinity timeout
//!   (`sessionAffinityConfig.clientIP.timeoutSeconds`, default 10800 s).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Services with this annotation set to `agent` are not proxied.
pub const SERVED_BY_ANNOTATION: &str = "keel.dev/served-by";
/// The label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Kubernetes' default ClientIP affinity timeout (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10_800);

/// A transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Kubernetes' protocol name; absent means TCP; unknown names are `None`.
    pub fn parse(name: Option<&str>) -> Option<Protocol> {
        match name.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// Where the proxy listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    pub addr: SocketAddr,
    pub protocol: Protocol,
}

/// One endpoint address and port, with its conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// The node the endpoint runs on, if the slice says.
    pub node_name: Option<String>,
}

impl Backend {
    /// A ready backend (what tests and benchmarks mostly want).
    pub fn ready(addr: SocketAddr) -> Backend {
        Backend {
            addr,
            ready: true,
            serving: true,
            terminating: false,
            node_name: None,
        }
    }

    /// Higher is more available: ready, then serving, then the rest.
    fn rank(&self) -> u8 {
        match (self.ready, self.serving) {
            (true, _) => 2,
            (false, true) => 1,
            (false, false) => 0,
        }
    }
}

/// What one frontend forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `<namespace>/<service>:<port name or number>`, for logs.
    pub service: String,
    /// Sorted by address.
    pub backends: Vec<Backend>,
    /// `Some` for `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<Duration>,
}

/// Every frontend of the node and its route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub routes: BTreeMap<Frontend, Arc<Route>>,
}

/// The node the table is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// Where NodePorts listen.
    pub ip: IpAddr,
}

/// Builds the table for `node` from every Service and EndpointSlice.
pub fn build<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &NodeInfo,
) -> Table {
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let labels = slice.metadata.labels.as_ref();
        let Some(svc) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            continue;
        };
        let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
        by_service
            .entry((ns, svc.as_str()))
            .or_default()
            .push(slice);
    }
    let mut table = Table::default();
    for svc in services {
        let Some(ips) = proxied_ips(svc) else {
            continue;
        };
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let slices = by_service
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let spec = svc.spec.as_ref().expect("proxied_ips checked the spec");
        let affinity_timeout = affinity_timeout(svc);
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        for port in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                continue;
            };
            let Ok(port_number) = u16::try_from(port.port) else {
                continue;
            };
            let all = backends(slices, port, protocol);
            let label = format!(
                "{ns}/{name}:{}",
                port.name.clone().unwrap_or_else(|| port.port.to_string())
            );
            let route = |local: bool| {
                let backends = match local {
                    true => all
                        .iter()
                        .filter(|b| b.node_name.as_deref() == Some(node.name.as_str()))
                        .cloned()
                        .collect(),
                    false => all.clone(),
                };
                Arc::new(Route {
                    service: label.clone(),
                    backends,
                    affinity_timeout,
                })
            };
            let cluster_route = route(internal_local);
            for ip in &ips {
                let addr = SocketAddr::new(*ip, port_number);
                table
                    .routes
                    .insert(Frontend { addr, protocol }, cluster_route.clone());
            }
            let node_port = port.node_port.and_then(|p| u16::try_from(p).ok());
            if let (true, Some(node_port)) = (node_ports, node_port.filter(|p| *p != 0)) {
                let addr = SocketAddr::new(node.ip, node_port);
                table
                    .routes
                    .insert(Frontend { addr, protocol }, route(external_local));
            }
        }
    }
    table
}

/// The cluster IPs to listen on, or `None` when the Service is not proxied.
fn proxied_ips(svc: &Service) -> Option<Vec<IpAddr>> {
    let served_by = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SERVED_BY_ANNOTATION));
    if served_by.map(String::as_str) == Some("agent") {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let listed = spec.cluster_ips.clone().unwrap_or_default();
    let texts = match listed.is_empty() {
        true => spec.cluster_ip.iter().cloned().collect(),
        false => listed,
    };
    let ips: Vec<IpAddr> = texts.iter().filter_map(|t| t.parse().ok()).collect();
    (!ips.is_empty()).then_some(ips)
}

fn affinity_timeout(svc: &Service) -> Option<Duration> {
    let spec = svc.spec.as_ref()?;
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let seconds = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0);
    Some(seconds.map_or(DEFAULT_AFFINITY_TIMEOUT, Duration::from_secs))
}

/// The backends of one Service port, deduplicated by address.
fn backends(slices: &[&EndpointSlice], port: &ServicePort, protocol: Protocol) -> Vec<Backend> {
    let want_name = port.name.as_deref().unwrap_or("");
    let mut out: BTreeMap<SocketAddr, Backend> = BTreeMap::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let target = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == want_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        });
        let Some(target) = target
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let cond = ep.conditions.as_ref();
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            for text in &ep.addresses {
                let Ok(ip) = text.parse::<IpAddr>() else {
                    continue;
                };
                let b = Backend {
                    addr: SocketAddr::new(ip, target),
                    ready,
                    serving,
                    terminating,
                    node_name: ep.node_name.clone(),
                };
                match out.get(&b.addr) {
                    Some(old) if old.rank() >= b.rank() => {}
                    _ => {
                        out.insert(b.addr, b);
                    }
                }
            }
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn svc(v: Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn node() -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            ip: "127.0.5.1".parse().unwrap(),
        }
    }

    fn web(extra_spec: Value) -> Service {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {
                "clusterIP": "127.43.0.7",
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "dns", "port": 53, "protocol": "UDP"}
                ]
            }
        });
        for (k, val) in extra_spec.as_object().unwrap() {
            v["spec"][k] = val.clone();
        }
        svc(v)
    }

    fn web_slice(name: &str, endpoints: Value) -> EndpointSlice {
        slice(json!({
            "metadata": {"name": name, "namespace": "ns",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": endpoints
        }))
    }

    fn fe(addr: &str, protocol: Protocol) -> Frontend {
        Frontend {
            addr: addr.parse().unwrap(),
            protocol,
        }
    }

    fn addrs(r: &Route) -> Vec<String> {
        r.backends.iter().map(|b| b.addr.to_string()).collect()
    }

    #[test]
    fn cluster_ip_ports_route_to_the_matching_slice_ports() {
        let s = web(json!({}));
        let sl = web_slice(
            "web-1",
            json!([{"addresses": ["127.16.0.2"]}, {"addresses": ["127.16.0.3"], "nodeName": "n1"}]),
        );
        let t = build([&s], [&sl], &node());
        assert_eq!(t.routes.len(), 2);
        let http = &t.routes[&fe("127.43.0.7:80", Protocol::Tcp)];
        assert_eq!(addrs(http), ["127.16.0.2:8080", "127.16.0.3:8080"]);
        assert_eq!(http.service, "ns/web:http");
        assert_eq!(http.affinity_timeout, None);
        let dns = &t.routes[&fe("127.43.0.7:53", Protocol::Udp)];
        assert_eq!(addrs(dns), ["127.16.0.2:5353", "127.16.0.3:5353"]);
    }

    #[test]
    fn unproxied_services_get_no_frontend() {
        let headless = web(json!({"clusterIP": "None"}));
        let external = web(json!({"type": "ExternalName", "externalName": "x.example"}));
        let mut agent = web(json!({}));
        agent.metadata.annotations = Some([(SERVED_BY_ANNOTATION.into(), "agent".into())].into());
        let no_ip = web(json!({"clusterIP": null}));
        let t = build([&headless, &external, &agent, &no_ip], [], &node());
        assert!(t.routes.is_empty(), "{t:?}");
    }

    #[test]
    fn slices_of_other_services_or_namespaces_and_unknown_ports_are_ignored() {
        let s = web(json!({}));
        let mut other_ns = web_slice("a", json!([{"addresses": ["127.16.0.9"]}]));
        other_ns.metadata.namespace = Some("elsewhere".into());
        let mut other_svc = web_slice("b", json!([{"addresses": ["127.16.0.8"]}]));
        other_svc.metadata.labels = Some([(SERVICE_NAME_LABEL.into(), "api".into())].into());
        let mut unnamed = web_slice("c", json!([{"addresses": ["127.16.0.7"]}]));
        unnamed.ports = Some(vec![serde_json::from_value(json!({"port": 1})).unwrap()]);
        let mut fqdn = web_slice("d", json!([{"addresses": ["db.example"]}]));
        fqdn.address_type = "FQDN".into();
        let t = build([&s], [&other_ns, &other_svc, &unnamed, &fqdn], &node());
        let http = &t.routes[&fe("127.43.0.7:80", Protocol::Tcp)];
        assert!(http.backends.is_empty(), "{http:?}");
    }

    #[test]
    fn conditions_default_like_kubernetes_and_duplicates_merge() {
        let s = web(json!({}));
        let a = web_slice(
            "a",
            json!([
                {"addresses": ["127.16.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["127.16.0.3"], "conditions": {"ready": false}},
                {"addresses": ["127.16.0.4"], "conditions": {"ready": false}}
            ]),
        );
        // The same address in a second slice, ready there: the ready copy wins.
        let b = web_slice("b", json!([{"addresses": ["127.16.0.4"]}]));
        let t = build([&s], [&a, &b], &node());
        let http = &t.routes[&fe("127.43.0.7:80", Protocol::Tcp)];
        let b = &http.backends;
        assert_eq!(b.len(), 3);
        assert!(!b[0].ready && b[0].serving && b[0].terminating);
        assert!(!b[1].ready && !b[1].serving && !b[1].terminating);
        assert!(b[2].ready && b[2].serving);
    }

    #[test]
    fn node_ports_listen_on_the_node_ip_and_local_policy_keeps_local_endpoints() {
        let mut s = web(json!({"type": "NodePort", "externalTrafficPolicy": "Local"}));
        s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30080);
        let sl = web_slice(
            "a",
            json!([{"addresses": ["127.16.0.2"], "nodeName": "n2"},
                   {"addresses": ["127.16.0.3"], "nodeName": "n1"}]),
        );
        let t = build([&s], [&sl], &node());
        let np = &t.routes[&fe("127.0.5.1:30080", Protocol::Tcp)];
        assert_eq!(addrs(np), ["127.16.0.3:8080"]);
        // The cluster IP still uses every endpoint.
        let cip = &t.routes[&fe("127.43.0.7:80", Protocol::Tcp)];
        assert_eq!(cip.backends.len(), 2);

        s.spec.as_mut().unwrap().external_traffic_policy = Some("Cluster".into());
        s.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
        let t = build([&s], [&sl], &node());
        assert_eq!(
            t.routes[&fe("127.0.5.1:30080", Protocol::Tcp)]
                .backends
                .len(),
            2
        );
        assert_eq!(
            addrs(&t.routes[&fe("127.43.0.7:80", Protocol::Tcp)]),
            ["127.16.0.3:8080"]
        );
        // A ClusterIP Service has no NodePort frontend even with a nodePort.
        s.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let t = build([&s], [&sl], &node());
        assert!(!t.routes.keys().any(|f| f.addr.port() == 30080));
    }

    #[test]
    fn client_ip_affinity_takes_the_configured_or_default_timeout() {
        let s = web(json!({"sessionAffinity": "ClientIP"}));
        let t = build([&s], [], &node());
        let r = &t.routes[&fe("127.43.0.7:80", Protocol::Tcp)];
        assert_eq!(r.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        let s = web(json!({"sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}));
        let t = build([&s], [], &node());
        let r = &t.routes[&fe("127.43.0.7:80", Protocol::Tcp)];
        assert_eq!(r.affinity_timeout, Some(Duration::from_secs(60)));
    }

    #[test]
    fn dual_stack_cluster_ips_each_get_a_frontend() {
        let s = web(json!({"clusterIPs": ["127.43.0.7", "::1"]}));
        let t = build([&s], [], &node());
        assert!(t.routes.contains_key(&fe("127.43.0.7:80", Protocol::Tcp)));
        assert!(t.routes.contains_key(&fe("[::1]:80", Protocol::Tcp)));
    }
}
