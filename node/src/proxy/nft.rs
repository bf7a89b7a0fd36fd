//! The Service proxy in **netns mode**: the routing [`Table`] as an
//! nftables ruleset (kube-proxy's nftables mode), in table `ip keel` of
//! the agent's network namespace.
//!
//! Pods live in namespaces of their own and reach cluster IPs through the
//! node bridge, so the proxy is in the kernel: a packet to a frontend is
//! DNATed to one endpoint in `prerouting` (from pods) or `output` (from the
//! node), and conntrack reverses it on the way back. Layout:
//! ```text
//! chain prerouting / output   nat hooks → jump services
//! chain services              cluster DNS ip:53 → dnat to the node's DNS server;
//!                             <frontend ip> . <proto> . <port> → goto svc-N
//! chain svc-N                 affinity sets first, then numgen random mod k → ep-N-i
//! chain ep-N-i                hairpin mark, affinity update, dnat to <endpoint>
//! chain postrouting           masquerade marked (hairpin) packets
//! chain reject-*              filter hooks: frontends without endpoints are rejected
//! ```
//! Guarantees: endpoints are the picker's candidates
//! ([`super::picker::candidates`]: ready ones, else serving-terminating
//! ones), so no new connection goes to a terminating endpoint while a
//! ready one exists; each endpoint is equally likely; with ClientIP
//! affinity a client keeps its endpoint for the timeout (renewed on each
//! new connection); a frontend without endpoints is refused at once
//! (ICMP port unreachable, i.e. ECONNREFUSED), never left to time out.
//! IPv6 frontends and backends are skipped (table `ip` is IPv4 only).
//!
//! Cluster DNS ([`DnsRedirect`]): the kube-dns cluster IP (port 53, UDP
//! and TCP) is DNATed to the agent's own DNS server on the bridge address,
//! node-local like NodeLocal DNSCache, so pods' resolv.conf names the
//! cluster IP as in Kubernetes. Any Service route on that address and
//! port is dropped from the table in favour of the redirect.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use tokio::sync::watch;

use super::picker::candidates;
use super::table::{self, NodeInfo, Protocol, Table};
use crate::agent::cache::Cache;
use crate::dns::NodeLocalDns;

/// nftables family and name of the table keel owns.
pub const FAMILY: &str = "ip";
pub const TABLE: &str = "keel";
/// Mark bit of packets an endpoint sends to its own Service (hairpin):
/// they are masqueraded, or the endpoint would answer itself directly.
pub const MASQUERADE_MARK: u32 = 0x4000;

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

fn v4(addr: SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V4(_))
}

/// Cluster DNS queries to `cluster_ip`:53 go to the node's `server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsRedirect {
    pub cluster_ip: Ipv4Addr,
    pub server: SocketAddrV4,
}

impl DnsRedirect {
    /// The redirect for `cluster_ip` to `server` on `port`; `None` when
    /// either is unknown or not IPv4, or they are the same address (no
    /// kube-dns: pods already name the server).
    pub fn new(cluster_ip: Option<IpAddr>, server: Option<IpAddr>, port: u16) -> Option<Self> {
        match (cluster_ip?, server?) {
            (IpAddr::V4(c), IpAddr::V4(s)) if c != s => Some(DnsRedirect {
                cluster_ip: c,
                server: SocketAddrV4::new(s, port),
            }),
            _ => None,
        }
    }

    fn covers(&self, fe: &table::Frontend) -> bool {
        fe.addr.ip() == IpAddr::V4(self.cluster_ip)
            && fe.addr.port() == crate::dns::DNS_PORT
            && fe.protocol != Protocol::Sctp
    }
}

/// The body of table `ip keel` for `table` and the cluster DNS redirect
/// `dns` (see the module docs).
pub fn ruleset(table: &Table, dns: Option<DnsRedirect>) -> String {
    let mut services = String::new();
    let mut rejects = String::new();
    let mut chains = String::new();
    // Sets are declared before the chains that name them.
    let mut sets = String::new();
    if let Some(d) = dns {
        for p in ["udp", "tcp"] {
            let _ = writeln!(
                services,
                "    ip daddr {} meta l4proto {p} th dport {} dnat to {}",
                d.cluster_ip,
                crate::dns::DNS_PORT,
                d.server
            );
        }
    }
    let routes = table
        .routes
        .iter()
        .filter(|(f, _)| v4(f.addr) && !dns.is_some_and(|d| d.covers(f)));
    for (n, (fe, route)) in routes.enumerate() {
        let matcher = format!(
            "ip daddr {} meta l4proto {} th dport {}",
            fe.addr.ip(),
            proto(fe.protocol),
            fe.addr.port()
        );
        let eps: Vec<SocketAddr> = candidates(&route.backends)
            .into_iter()
            .map(|b| b.addr)
            .filter(|a| v4(*a))
            .collect();
        if eps.is_empty() {
            let _ = writeln!(rejects, "    {matcher} reject");
            continue;
        }
        let _ = writeln!(services, "    {matcher} goto svc-{n}");
        let _ = writeln!(chains, "  chain svc-{n} {{");
        if route.affinity_timeout.is_some() {
            for i in 0..eps.len() {
                let _ = writeln!(chains, "    ip saddr @aff-{n}-{i} goto ep-{n}-{i}");
            }
        }
        let arms: Vec<String> = (0..eps.len())
            .map(|i| format!("{i} : goto ep-{n}-{i}"))
            .collect();
        let _ = writeln!(
            chains,
            "    numgen random mod {} vmap {{ {} }}\n  }}",
            eps.len(),
            arms.join(", ")
        );
        for (i, ep) in eps.iter().enumerate() {
            if let Some(t) = route.affinity_timeout {
                let _ = writeln!(
                    sets,
                    "  set aff-{n}-{i} {{\n    type ipv4_addr\n    flags dynamic,timeout\n    timeout {}s\n  }}",
                    t.as_secs().max(1)
                );
            }
            let _ = writeln!(chains, "  chain ep-{n}-{i} {{");
            let _ = writeln!(
                chains,
                "    ip saddr {} meta mark set meta mark | {MASQUERADE_MARK:#x}",
                ep.ip()
            );
            if route.affinity_timeout.is_some() {
                let _ = writeln!(chains, "    update @aff-{n}-{i} {{ ip saddr }}");
            }
            // nft needs the protocol in the rule that maps the port.
            let _ = writeln!(
                chains,
                "    meta l4proto {} dnat to {ep}\n  }}",
                proto(fe.protocol)
            );
        }
    }
    let mut body = String::new();
    body.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }\n");
    body.push_str("  chain output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }\n");
    let _ = writeln!(
        body,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} masquerade\n  }}"
    );
    let _ = writeln!(body, "  chain services {{\n{services}  }}");
    let _ = writeln!(body, "  chain no-endpoints {{\n{rejects}  }}");
    for hook in ["prerouting", "output"] {
        // Filter priority before NAT: the frontend address is still the
        // packet's destination here.
        let _ = writeln!(
            body,
            "  chain reject-{hook} {{\n    type filter hook {hook} priority -150; policy accept;\n    jump no-endpoints\n  }}"
        );
    }
    body.push_str(&sets);
    body.push_str(&chains);
    body
}

/// The whole replacing script for `table` and `dns`.
pub fn script(table: &Table, dns: Option<DnsRedirect>) -> String {
    crate::podnet::nft::replace_script(FAMILY, TABLE, &ruleset(table, dns))
}

/// Runs the netns-mode proxy for `node`: rebuilds the table on every
/// Service, EndpointSlice or cluster DNS address change and applies it
/// when it differs from the last one applied (and every [`RESYNC`], which
/// repairs a table deleted by hand). A refused apply is logged and retried
/// on the next round. `dns`: the node-local cluster DNS redirect, if any.
///
/// The table outlives the agent, as kube-proxy's rules do: Service traffic
/// keeps flowing while the agent is stopped or restarting, and the next
/// agent replaces the table whole (atomically) once its caches have
/// listed, which drops whatever changed meanwhile.
pub async fn run(
    services: Cache<Service>,
    slices: Cache<EndpointSlice>,
    node: NodeInfo,
    dns: Option<NodeLocalDns>,
) {
    let (mut dns_from, mut dns_to, dns_port) = match dns {
        Some(d) => (Some(d.from), Some(d.to), d.port),
        None => (None, None, 0),
    };
    let mut svc_changes = services.changes();
    let mut slice_changes = slices.changes();
    let first_svc = svc_changes.wait_for(|n| *n > 0).await.is_ok();
    let first_slice = slice_changes.wait_for(|n| *n > 0).await.is_ok();
    if !(first_svc && first_slice) {
        return;
    }
    tracing::info!(node = %node.name, table = TABLE, "service proxy started (nftables)");
    let mut last: Option<String> = None;
    loop {
        svc_changes.mark_unchanged();
        slice_changes.mark_unchanged();
        let (svcs, eps) = (services.store().state(), slices.store().state());
        let table = table::build(
            svcs.iter().map(AsRef::as_ref),
            eps.iter().map(AsRef::as_ref),
            &node,
        );
        let redirect = DnsRedirect::new(
            dns_from.as_mut().and_then(|r| *r.borrow_and_update()),
            dns_to.as_mut().and_then(|r| *r.borrow_and_update()),
            dns_port,
        );
        let script = script(&table, redirect);
        if last.as_ref() != Some(&script) {
            let s = script.clone();
            match tokio::task::spawn_blocking(move || crate::podnet::nft::apply(&s)).await {
                Ok(Ok(())) => {
                    tracing::debug!(frontends = table.routes.len(), "nftables services applied");
                    last = Some(script);
                }
                Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "nftables services"),
                Err(e) => tracing::warn!(error = %e, "nftables services"),
            }
        }
        tokio::select! {
            r = svc_changes.changed() => if r.is_err() { return },
            r = slice_changes.changed() => if r.is_err() { return },
            // A closed address channel stays at its last value.
            Ok(()) = changed(&mut dns_from) => {},
            Ok(()) = changed(&mut dns_to) => {},
            () = tokio::time::sleep(RESYNC) => last = None,
        }
    }
}

/// The next change of `rx`; never, without one.
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// How often the table is re-applied without a change.
pub const RESYNC: std::time::Duration = std::time::Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::table::{Backend, Frontend, Route};
    use std::sync::Arc;
    use std::time::Duration;

    fn route(backends: Vec<Backend>, affinity: Option<Duration>) -> Arc<Route> {
        Arc::new(Route {
            service: "ns/web:80".into(),
            backends,
            affinity_timeout: affinity,
        })
    }

    fn fe(addr: &str) -> Frontend {
        Frontend {
            addr: addr.parse().unwrap(),
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn endpoints_are_spread_and_empty_frontends_rejected() {
        let mut t = Table::default();
        t.routes.insert(
            fe("10.96.0.5:80"),
            route(
                vec![
                    Backend::ready("10.244.0.2:8080".parse().unwrap()),
                    Backend::ready("10.244.1.2:8080".parse().unwrap()),
                ],
                None,
            ),
        );
        t.routes.insert(fe("10.96.0.6:80"), route(vec![], None));
        let r = ruleset(&t, None);
        assert!(
            r.contains("ip daddr 10.96.0.5 meta l4proto tcp th dport 80 goto svc-0"),
            "{r}"
        );
        assert!(r.contains("numgen random mod 2 vmap { 0 : goto ep-0-0, 1 : goto ep-0-1 }"));
        assert!(r.contains("dnat to 10.244.0.2:8080") && r.contains("dnat to 10.244.1.2:8080"));
        assert!(r.contains("ip daddr 10.96.0.6 meta l4proto tcp th dport 80 reject"));
        assert!(!r.contains("@aff"));
    }

    #[test]
    fn terminating_endpoints_only_when_none_is_ready() {
        let mut draining = Backend::ready("10.244.0.3:8080".parse().unwrap());
        draining.ready = false;
        draining.terminating = true;
        let ready = Backend::ready("10.244.0.4:8080".parse().unwrap());
        let mut t = Table::default();
        t.routes.insert(
            fe("10.96.0.5:80"),
            route(vec![draining.clone(), ready], None),
        );
        let r = ruleset(&t, None);
        assert!(!r.contains("10.244.0.3") && r.contains("mod 1"), "{r}");
        let mut t = Table::default();
        t.routes
            .insert(fe("10.96.0.5:80"), route(vec![draining], None));
        assert!(ruleset(&t, None).contains("dnat to 10.244.0.3:8080"));
    }

    #[test]
    fn client_ip_affinity_uses_timed_sets() {
        let mut t = Table::default();
        t.routes.insert(
            fe("10.96.0.5:80"),
            route(
                vec![Backend::ready("10.244.0.2:8080".parse().unwrap())],
                Some(Duration::from_secs(60)),
            ),
        );
        let r = ruleset(&t, None);
        assert!(r.contains("ip saddr @aff-0-0 goto ep-0-0"), "{r}");
        assert!(r.contains("timeout 60s") && r.contains("update @aff-0-0 { ip saddr }"));
    }

    #[test]
    fn cluster_dns_goes_to_the_node_server() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let dns = DnsRedirect::new(ip("10.96.0.10"), ip("10.244.0.1"), 53);
        let mut t = Table::default();
        // A route on the same address (a kube-dns without the served-by
        // annotation) gives way to the redirect.
        t.routes.insert(fe("10.96.0.10:53"), route(vec![], None));
        let r = ruleset(&t, dns);
        assert!(
            r.contains("ip daddr 10.96.0.10 meta l4proto udp th dport 53 dnat to 10.244.0.1:53"),
            "{r}"
        );
        assert!(r.contains("meta l4proto tcp th dport 53 dnat to 10.244.0.1:53"));
        assert!(!r.contains(" reject\n"), "{r}");
        assert_eq!(
            DnsRedirect::new(ip("10.244.0.1"), ip("10.244.0.1"), 53),
            None
        );
        assert_eq!(DnsRedirect::new(None, ip("10.244.0.1"), 53), None);
        assert_eq!(DnsRedirect::new(ip("fd00::a"), ip("10.244.0.1"), 53), None);
    }
}
