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
//! chain services              <frontend ip> . <proto> . <port> → goto svc-N
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

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::picker::candidates;
use super::table::{self, NodeInfo, Protocol, Table};
use crate::agent::cache::Cache;

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

/// The body of table `ip keel` for `table` (see the module docs).
pub fn ruleset(table: &Table) -> String {
    let mut services = String::new();
    let mut rejects = String::new();
    let mut chains = String::new();
    // Sets are declared before the chains that name them.
    let mut sets = String::new();
    for (n, (fe, route)) in table.routes.iter().filter(|(f, _)| v4(f.addr)).enumerate() {
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

/// The whole replacing script for `table`.
pub fn script(table: &Table) -> String {
    crate::podnet::nft::replace_script(FAMILY, TABLE, &ruleset(table))
}

/// Runs the netns-mode proxy for `node`: rebuilds the table on every
/// Service or EndpointSlice change and applies it when it differs from the
/// last one applied (and every [`RESYNC`], which repairs a table deleted
/// by hand). A refused apply is logged and retried on the next round.
pub async fn run(services: Cache<Service>, slices: Cache<EndpointSlice>, node: NodeInfo) {
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
        let script = script(&table);
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
            () = tokio::time::sleep(RESYNC) => last = None,
        }
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
        let r = ruleset(&t);
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
        let r = ruleset(&t);
        assert!(!r.contains("10.244.0.3") && r.contains("mod 1"), "{r}");
        let mut t = Table::default();
        t.routes
            .insert(fe("10.96.0.5:80"), route(vec![draining], None));
        assert!(ruleset(&t).contains("dnat to 10.244.0.3:8080"));
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
        let r = ruleset(&t);
        assert!(r.contains("ip saddr @aff-0-0 goto ep-0-0"), "{r}");
        assert!(r.contains("timeout 60s") && r.contains("update @aff-0-0 { ip saddr }"));
    }
}
