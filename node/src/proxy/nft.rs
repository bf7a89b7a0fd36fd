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
//! The table is built as typed nft JSON ([`crate::podnet::nft::TableBatch`])
//! and replaced whole in one `nft -j -f -` transaction.
//!
//! Cluster DNS ([`DnsRedirect`]): the kube-dns cluster IP (port 53, UDP
//! and TCP) is DNATed to the agent's own DNS server on the bridge address,
//! node-local like NodeLocal DNSCache, so pods' resolv.conf names the
//! cluster IP as in Kubernetes. Any Service route on that address and
//! port is dropped from the table in favour of the redirect.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nftables::expr::{BinaryOperation, Expression, MetaKey, NamedExpression, NgMode, Numgen};
use nftables::schema::Nftables;
use nftables::stmt::{Mangle, Statement, NAT};
use nftables::types::{NfChainType, NfFamily, NfHook};

use tokio::sync::watch;

use super::picker::candidates;
use super::table::{self, NodeInfo, Protocol, Table};
use crate::agent::cache::Cache;
use crate::dns::NodeLocalDns;
use crate::podnet::nft::{
    addr, goto, goto_stmt, is, jump_stmt, l4_ports, meta, number, payload, set_ref, update_set,
    verdict_map, Stmt, TableBatch,
};

/// nftables family and name of the table keel owns.
pub const FAMILY: NfFamily = NfFamily::IP;
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

/// Priorities of the base chains (nft's names for the standard ones).
const PRIORITY_DSTNAT: i32 = -100;
const PRIORITY_SRCNAT: i32 = 100;
/// Filter before NAT: the frontend address is still the packet's
/// destination there.
const PRIORITY_BEFORE_DSTNAT: i32 = -150;

/// `ip daddr <frontend ip> meta l4proto <proto> th dport <port>`.
fn frontend_match(ip: Ipv4Addr, protocol: Protocol, port: u16) -> Vec<Stmt> {
    let mut m = vec![is(payload("ip", "daddr"), addr(ip))];
    m.extend(l4_ports(proto(protocol), Some((port, port))));
    m
}

/// `<matcher> <then>`.
fn then(mut matcher: Vec<Stmt>, then: Stmt) -> Vec<Stmt> {
    matcher.push(then);
    matcher
}

/// `dnat to <to>`.
fn dnat(to: SocketAddrV4) -> Stmt {
    Statement::DNAT(Some(NAT {
        addr: Some(addr(*to.ip())),
        family: None,
        port: Some(number(to.port())),
        flags: None,
    }))
}

/// The batch replacing table `ip keel` with the rules for `table` and the
/// cluster DNS redirect `dns` (see the module docs), applied whole by
/// [`crate::podnet::nft::apply`].
pub fn ruleset(table: &Table, dns: Option<DnsRedirect>) -> Nftables<'static> {
    let mut t = TableBatch::new(FAMILY, TABLE);
    t.base_chain(
        "prerouting",
        NfChainType::NAT,
        NfHook::Prerouting,
        PRIORITY_DSTNAT,
    );
    t.rule("prerouting", vec![jump_stmt("services")]);
    t.base_chain("output", NfChainType::NAT, NfHook::Output, PRIORITY_DSTNAT);
    t.rule("output", vec![jump_stmt("services")]);
    t.base_chain(
        "postrouting",
        NfChainType::NAT,
        NfHook::Postrouting,
        PRIORITY_SRCNAT,
    );
    let mark = || meta(MetaKey::Mark);
    let masquerade_bit = Expression::BinaryOperation(Box::new(BinaryOperation::AND(
        mark(),
        number(MASQUERADE_MARK),
    )));
    t.rule(
        "postrouting",
        vec![
            is(masquerade_bit, number(MASQUERADE_MARK)),
            Statement::Masquerade(None),
        ],
    );
    t.chain("services");
    t.chain("no-endpoints");
    for (name, hook) in [
        ("reject-prerouting", NfHook::Prerouting),
        ("reject-output", NfHook::Output),
    ] {
        t.base_chain(name, NfChainType::Filter, hook, PRIORITY_BEFORE_DSTNAT);
        t.rule(name, vec![jump_stmt("no-endpoints")]);
    }
    if let Some(d) = dns {
        for p in [Protocol::Udp, Protocol::Tcp] {
            let m = frontend_match(d.cluster_ip, p, crate::dns::DNS_PORT);
            t.rule("services", then(m, dnat(d.server)));
        }
    }
    let routes = table
        .routes
        .iter()
        .filter(|(f, _)| !dns.is_some_and(|d| d.covers(f)))
        .filter_map(|(f, r)| match f.addr {
            SocketAddr::V4(a) => Some((a, f.protocol, r)),
            SocketAddr::V6(_) => None,
        });
    for (n, (fe, protocol, route)) in routes.enumerate() {
        let matcher = frontend_match(*fe.ip(), protocol, fe.port());
        let eps: Vec<SocketAddrV4> = candidates(&route.backends)
            .into_iter()
            .filter_map(|b| match b.addr {
                SocketAddr::V4(a) => Some(a),
                SocketAddr::V6(_) => None,
            })
            .collect();
        if eps.is_empty() {
            t.rule("no-endpoints", then(matcher, Statement::Reject(None)));
            continue;
        }
        let svc = format!("svc-{n}");
        t.rule("services", then(matcher, goto_stmt(&svc)));
        t.chain(&svc);
        let affinity_s = route
            .affinity_timeout
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1));
        let ep_chain = |i: u32| format!("ep-{n}-{i}");
        let aff_set = |i: u32| format!("aff-{n}-{i}");
        // Endpoint indexes, as numgen's values.
        let k = u32::try_from(eps.len()).unwrap_or(u32::MAX);
        if affinity_s.is_some() {
            for i in 0..k {
                let known = is(payload("ip", "saddr"), set_ref(&aff_set(i)));
                t.rule(&svc, vec![known, goto_stmt(ep_chain(i))]);
            }
        }
        let pick = Expression::Named(NamedExpression::Numgen(Numgen {
            mode: NgMode::Random,
            ng_mod: k,
            offset: None,
        }));
        let arms = (0..k).map(|i| (number(i), goto(ep_chain(i))));
        t.rule(&svc, vec![verdict_map(pick, arms)]);
        for (i, ep) in (0..k).zip(&eps) {
            let chain = ep_chain(i);
            t.chain(&chain);
            let set_mark = Statement::Mangle(Mangle {
                key: mark(),
                value: Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
                    mark(),
                    number(MASQUERADE_MARK),
                ]))),
            });
            t.rule(
                &chain,
                vec![is(payload("ip", "saddr"), addr(*ep.ip())), set_mark],
            );
            if let Some(timeout_s) = affinity_s {
                t.timed_addr_set(aff_set(i), timeout_s);
                t.rule(
                    &chain,
                    vec![update_set(payload("ip", "saddr"), &aff_set(i))],
                );
            }
            t.rule(&chain, then(l4_ports(proto(protocol), None), dnat(*ep)));
        }
    }
    t.replace()
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
    // Shared with the blocking apply rather than cloned (large tables).
    let mut last: Option<std::sync::Arc<Nftables<'static>>> = None;
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
        let batch = std::sync::Arc::new(ruleset(&table, redirect));
        if last.as_ref() != Some(&batch) {
            let b = std::sync::Arc::clone(&batch);
            match tokio::task::spawn_blocking(move || crate::podnet::nft::apply(&b)).await {
                Ok(Ok(())) => {
                    tracing::debug!(frontends = table.routes.len(), "nftables services applied");
                    last = Some(batch);
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
    use crate::podnet::nft::render::{added, rules};
    use crate::proxy::table::{Backend, Frontend, Route};
    use serde_json::{json, Value};
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

    fn daddr_port(ip: &str, proto: &str, port: u16) -> Vec<Value> {
        vec![
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": ip}}),
            json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": proto}}),
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": port}}),
        ]
    }

    fn with(mut m: Vec<Value>, then: Value) -> Value {
        m.push(then);
        Value::Array(m)
    }

    fn dnat(ip: &str, port: u16) -> Value {
        json!({"dnat": {"addr": ip, "port": port}})
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
        let b = ruleset(&t, None);
        assert_eq!(
            rules(&b, "services"),
            [with(
                daddr_port("10.96.0.5", "tcp", 80),
                json!({"goto": {"target": "svc-0"}})
            )]
        );
        assert_eq!(
            rules(&b, "svc-0"),
            [
                json!([{"vmap": {"key": {"numgen": {"mode": "random", "mod": 2}},
                "data": {"set": [[0, {"goto": {"target": "ep-0-0"}}],
                                 [1, {"goto": {"target": "ep-0-1"}}]]}}}])
            ]
        );
        let ep = rules(&b, "ep-0-1");
        assert_eq!(
            ep[0][1],
            json!({"mangle": {"key": {"meta": {"key": "mark"}},
                   "value": {"|": [{"meta": {"key": "mark"}}, MASQUERADE_MARK]}}})
        );
        assert_eq!(ep[1][1], dnat("10.244.1.2", 8080));
        assert_eq!(rules(&b, "ep-0-0")[1][1], dnat("10.244.0.2", 8080));
        assert_eq!(
            rules(&b, "no-endpoints"),
            [with(
                daddr_port("10.96.0.6", "tcp", 80),
                json!({"reject": null})
            )]
        );
        assert!(added(&b, "set").is_empty());
        assert_eq!(
            rules(&b, "postrouting"),
            [
                json!([{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, MASQUERADE_MARK]},
                     "right": MASQUERADE_MARK}}, {"masquerade": null}])
            ]
        );
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
        let b = ruleset(&t, None);
        assert_eq!(rules(&b, "svc-0")[0][0]["vmap"]["key"]["numgen"]["mod"], 1);
        assert_eq!(rules(&b, "ep-0-0")[1][1], dnat("10.244.0.4", 8080));
        assert!(rules(&b, "ep-0-1").is_empty());
        let mut t = Table::default();
        t.routes
            .insert(fe("10.96.0.5:80"), route(vec![draining], None));
        assert_eq!(
            rules(&ruleset(&t, None), "ep-0-0")[1][1],
            dnat("10.244.0.3", 8080)
        );
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
        let b = ruleset(&t, None);
        assert_eq!(
            added(&b, "set"),
            [
                json!({"family": "ip", "table": "keel", "name": "aff-0-0", "type": "ipv4_addr",
                    "flags": ["timeout"], "timeout": 60})
            ]
        );
        assert_eq!(
            rules(&b, "svc-0")[0],
            json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                              "right": "@aff-0-0"}},
                   {"goto": {"target": "ep-0-0"}}])
        );
        assert_eq!(
            rules(&b, "ep-0-0")[1],
            json!([{"set": {"op": "update", "elem": {"payload": {"protocol": "ip", "field": "saddr"}},
                            "set": "@aff-0-0"}}])
        );
    }

    #[test]
    fn cluster_dns_goes_to_the_node_server() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let dns = DnsRedirect::new(ip("10.96.0.10"), ip("10.244.0.1"), 53);
        let mut t = Table::default();
        // A route on the same address (a kube-dns without the served-by
        // annotation) gives way to the redirect.
        t.routes.insert(fe("10.96.0.10:53"), route(vec![], None));
        let b = ruleset(&t, dns);
        assert_eq!(
            rules(&b, "services"),
            [
                with(daddr_port("10.96.0.10", "udp", 53), dnat("10.244.0.1", 53)),
                with(daddr_port("10.96.0.10", "tcp", 53), dnat("10.244.0.1", 53)),
            ]
        );
        assert!(rules(&b, "no-endpoints").is_empty());
        assert_eq!(
            DnsRedirect::new(ip("10.244.0.1"), ip("10.244.0.1"), 53),
            None
        );
        assert_eq!(DnsRedirect::new(None, ip("10.244.0.1"), 53), None);
        assert_eq!(DnsRedirect::new(ip("fd00::a"), ip("10.244.0.1"), 53), None);
    }

    #[test]
    fn base_chains_hook_nat_and_filter_before_nat() {
        let b = ruleset(&Table::default(), None);
        let chains = added(&b, "chain");
        let base = |name: &str| chains.iter().find(|c| c["name"] == name).unwrap().clone();
        assert_eq!(
            base("prerouting"),
            json!({"family": "ip", "table": "keel", "name": "prerouting", "type": "nat",
                   "hook": "prerouting", "prio": -100, "policy": "accept"})
        );
        assert_eq!(base("output")["prio"], -100);
        assert_eq!(base("postrouting")["prio"], 100);
        assert_eq!(base("reject-output")["type"], "filter");
        assert_eq!(base("reject-output")["prio"], -150);
        assert_eq!(
            rules(&b, "output"),
            [json!([{"jump": {"target": "services"}}])]
        );
    }
}
