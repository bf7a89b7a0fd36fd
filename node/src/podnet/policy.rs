//! NetworkPolicy (networking.k8s.io/v1) in **netns mode**, enforced with
//! nftables in the agent's network namespace (table `ip keel-policy`).
//!
//! Every packet to or from a pod of this node crosses the node's `forward`
//! hook: routed packets from other nodes, and bridged packets between pods
//! of the node too, because bridge netfilter hands bridged IPv4 to the `ip`
//! hooks ([`enable_bridge_netfilter`] turns it on). The chain there sends
//! packets for an *isolated* pod (one selected by a policy of that
//! direction) to a chain of its own, which returns what the policies'
//! rules allow and drops the rest. Allowed packets *return* rather than
//! being accepted, so a packet between two pods of this node passes only
//! when the receiver's ingress and the sender's egress both allow it:
//! ```text
//! chain forward   ct established,related accept; ip daddr vmap {pod: jump in-N}; ip saddr vmap {pod: jump out-N}
//! chain in-N      ip saddr {peer IPs} meta l4proto tcp th dport 8080 return; ...; drop
//! chain out-N     ip daddr {peer IPs} ...; drop
//! ```
//! Semantics, as Kubernetes': a pod no policy selects (for a direction) is
//! not isolated; the allowed traffic of an isolated pod is the union of
//! every selecting policy's rules; a rule without peers allows every peer
//! and one without ports every port; `podSelector` peers are pods of the
//! policy's namespace, `namespaceSelector` peers pods of the matching
//! namespaces (both: pods matching both); `ipBlock` is a CIDR minus its
//! `except`s; a port is a number, a range (`endPort`) or a named container
//! port (of the selected pod for ingress, of the peer pods for egress);
//! policyTypes default to Ingress, plus Egress when egress rules exist.
//! Replies of allowed connections pass (conntrack). Traffic between a pod
//! and its own node is not filtered (the node's probes must reach it).
//! Not done: IPv6 peers and pods (table `ip`), SCTP is matched like TCP/UDP.
//! The table is built as typed nft JSON ([`super::nft::TableBatch`]) and
//! replaced whole in one `nft -j -f -` transaction; the layout above is
//! how `nft list table ip keel-policy` shows it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as TypedSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keel_apimachinery::selector::LabelSelector;
use nftables::expr::{Expression, NamedExpression, CT};
use nftables::schema::Nftables;
use nftables::stmt::{Operator, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};

use super::nft::{
    addr, anonymous_set, is, jump, l4_ports, matches, net, payload, verdict_map, Stmt, TableBatch,
};

use crate::agent::cache::{Cache, SyncState};

/// nftables family and name of the table keel owns for policies.
pub const FAMILY: NfFamily = NfFamily::IP;
pub const TABLE: &str = "keel-policy";
/// How often the table is re-applied without a change.
const RESYNC: Duration = Duration::from_secs(30);
/// The label the API server puts on every Namespace.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Which way a policy rule looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

/// A pod as policies see it.
struct PodView<'a> {
    namespace: &'a str,
    labels: Option<&'a BTreeMap<String, String>>,
    ip: Ipv4Addr,
    pod: &'a Pod,
}

fn view(pod: &Pod) -> Option<PodView<'_>> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip = status.pod_ip.as_deref()?.parse().ok()?;
    Some(PodView {
        namespace: pod.metadata.namespace.as_deref().unwrap_or("default"),
        labels: pod.metadata.labels.as_ref(),
        ip,
        pod,
    })
}

/// A selector that does not parse selects nothing (the API validated it;
/// failing closed is the safe reading of anything else).
fn selector(s: Option<&TypedSelector>) -> Option<LabelSelector> {
    match s {
        None => Some(LabelSelector::default()),
        Some(s) => LabelSelector::from_typed(s).ok(),
    }
}

fn selects(s: Option<&TypedSelector>, labels: Option<&BTreeMap<String, String>>) -> bool {
    selector(s).is_some_and(|sel| sel.matches_labels(labels))
}

fn types(p: &NetworkPolicy) -> (bool, bool) {
    let spec = p.spec.as_ref();
    match spec.and_then(|s| s.policy_types.as_ref()) {
        Some(t) => (
            t.iter().any(|t| t == "Ingress"),
            t.iter().any(|t| t == "Egress"),
        ),
        None => (
            true,
            spec.and_then(|s| s.egress.as_ref())
                .is_some_and(|e| !e.is_empty()),
        ),
    }
}

/// One match on the peer side of a rule: addresses, or a CIDR minus
/// exceptions. `None` addresses: any peer.
#[derive(Debug, Clone, PartialEq)]
enum Peer {
    Any,
    Pods(BTreeSet<Ipv4Addr>),
    Block { cidr: Ipv4Net, except: Vec<Ipv4Net> },
}

/// A protocol with an optional port or port range.
#[derive(Debug, Clone, PartialEq)]
struct PortMatch {
    protocol: &'static str,
    ports: Option<(u16, u16)>,
}

fn protocol(p: Option<&str>) -> Option<&'static str> {
    match p.unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

/// The numbers a named port has among `pods`' containers.
fn named_port(pods: &[&Pod], name: &str, proto: &str) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for pod in pods {
        let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
        for p in containers.flat_map(|c| c.ports.iter().flatten()) {
            let p_proto = protocol(p.protocol.as_deref());
            if p.name.as_deref() == Some(name) && p_proto == Some(proto) {
                out.extend(u16::try_from(p.container_port).ok());
            }
        }
    }
    out
}

/// The port matches of a rule's `ports`; `named_in` are the pods whose
/// container ports give names their numbers. An empty list allows every
/// port; a list whose entries all fail to resolve allows none.
fn port_matches(ports: Option<&Vec<NetworkPolicyPort>>, named_in: &[&Pod]) -> Vec<PortMatch> {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return vec![PortMatch {
            protocol: "",
            ports: None,
        }];
    };
    let mut out = Vec::new();
    for p in ports {
        let Some(proto) = protocol(p.protocol.as_deref()) else {
            continue;
        };
        match &p.port {
            None => out.push(PortMatch {
                protocol: proto,
                ports: None,
            }),
            Some(IntOrString::Int(n)) => {
                let Ok(start) = u16::try_from(*n) else {
                    continue;
                };
                let end = p
                    .end_port
                    .and_then(|e| u16::try_from(e).ok())
                    .filter(|e| *e >= start)
                    .unwrap_or(start);
                out.push(PortMatch {
                    protocol: proto,
                    ports: Some((start, end)),
                });
            }
            Some(IntOrString::String(name)) => {
                for n in named_port(named_in, name, proto) {
                    out.push(PortMatch {
                        protocol: proto,
                        ports: Some((n, n)),
                    });
                }
            }
        }
    }
    out
}

/// The pods one peer designates.
fn peer_pods<'a>(
    peer: &NetworkPolicyPeer,
    policy_ns: &str,
    pods: &'a [PodView<'a>],
    ns_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<&'a PodView<'a>> {
    pods.iter()
        .filter(|p| match &peer.namespace_selector {
            None => p.namespace == policy_ns,
            Some(sel) => selects(Some(sel), ns_labels.get(p.namespace)),
        })
        .filter(|p| selects(peer.pod_selector.as_ref(), p.labels))
        .collect()
}

/// A rule's peers and ports, either direction.
type Rule<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

/// The rules (without the final drop) of the chain allowing `dir`
/// traffic of the pod `target` under `policies` (all already known to
/// select it); each rule returns what it allows.
fn allow_rules(
    dir: Direction,
    target: &PodView<'_>,
    policies: &[&NetworkPolicy],
    pods: &[PodView<'_>],
    ns_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<Vec<Stmt>> {
    let peer_field = || match dir {
        Direction::Ingress => payload("ip", "saddr"),
        Direction::Egress => payload("ip", "daddr"),
    };
    let mut rules = Vec::new();
    for policy in policies {
        let policy_ns = policy.metadata.namespace.as_deref().unwrap_or("default");
        let Some(spec) = policy.spec.as_ref() else {
            continue;
        };
        let dir_rules: Vec<Rule<'_>> = match dir {
            Direction::Ingress => spec
                .ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                .collect(),
            Direction::Egress => spec
                .egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                .collect(),
        };
        for (peers, ports) in dir_rules {
            let (peer_list, peer_pod_refs): (Vec<Peer>, Vec<&Pod>) =
                match peers.filter(|p| !p.is_empty()) {
                    None => (vec![Peer::Any], pods.iter().map(|p| p.pod).collect()),
                    Some(peers) => {
                        let mut list = Vec::new();
                        let mut refs = Vec::new();
                        for peer in peers {
                            if let Some(block) = &peer.ip_block {
                                if let Ok(cidr) = block.cidr.parse::<Ipv4Net>() {
                                    let except = block
                                        .except
                                        .iter()
                                        .flatten()
                                        .filter_map(|e| e.parse::<Ipv4Net>().ok())
                                        .collect();
                                    list.push(Peer::Block {
                                        cidr: cidr.trunc(),
                                        except,
                                    });
                                }
                                continue;
                            }
                            let matched = peer_pods(peer, policy_ns, pods, ns_labels);
                            refs.extend(matched.iter().map(|p| p.pod));
                            list.push(Peer::Pods(matched.iter().map(|p| p.ip).collect()));
                        }
                        (list, refs)
                    }
                };
            let named_in: Vec<&Pod> = match dir {
                Direction::Ingress => vec![target.pod],
                Direction::Egress => peer_pod_refs,
            };
            for port in port_matches(ports, &named_in) {
                for peer in &peer_list {
                    let mut rule = match peer {
                        Peer::Any => Vec::new(),
                        Peer::Pods(ips) if ips.is_empty() => continue,
                        Peer::Pods(ips) => {
                            vec![is(
                                peer_field(),
                                anonymous_set(ips.iter().map(|i| addr(*i))),
                            )]
                        }
                        Peer::Block { cidr, except } => {
                            let mut m = vec![is(peer_field(), net(*cidr))];
                            if !except.is_empty() {
                                let ex = anonymous_set(except.iter().map(|e| net(*e)));
                                m.push(matches(peer_field(), Operator::NEQ, ex));
                            }
                            m
                        }
                    };
                    if !port.protocol.is_empty() {
                        rule.extend(l4_ports(port.protocol, port.ports));
                    }
                    rule.push(Statement::Return(None));
                    if !rules.contains(&rule) {
                        rules.push(rule);
                    }
                }
            }
        }
    }
    rules
}

/// The batch replacing table `ip keel-policy` with the rules for the pods
/// of this node (those with an IP in `local`), from every policy, pod and
/// namespace.
pub fn ruleset(
    policies: &[&NetworkPolicy],
    pods: &[&Pod],
    namespaces: &[&Namespace],
    local: Ipv4Net,
) -> Nftables<'static> {
    let views: Vec<PodView<'_>> = pods.iter().filter_map(|p| view(p)).collect();
    let mut ns_labels: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for ns in namespaces {
        let Some(name) = ns.metadata.name.clone() else {
            continue;
        };
        let mut labels = ns.metadata.labels.clone().unwrap_or_default();
        labels
            .entry(NAMESPACE_NAME_LABEL.into())
            .or_insert_with(|| name.clone());
        ns_labels.insert(name, labels);
    }
    let mut t = TableBatch::new(FAMILY, TABLE);
    t.base_chain("forward", NfChainType::Filter, NfHook::Forward, 0);
    let established = Expression::List(vec![
        Expression::String("established".into()),
        Expression::String("related".into()),
    ]);
    let ct_state = Expression::Named(NamedExpression::CT(CT {
        key: "state".into(),
        family: None,
        dir: None,
    }));
    t.rule(
        "forward",
        vec![
            matches(ct_state, Operator::IN, established),
            Statement::Accept(None),
        ],
    );
    let mut dispatch: [Vec<(Ipv4Addr, String)>; 2] = [Vec::new(), Vec::new()];
    let local_pods = views
        .iter()
        .filter(|p| local.contains(&p.ip) && p.ip != local.network());
    for (n, target) in local_pods.enumerate() {
        for (d, dir) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            let selecting: Vec<&NetworkPolicy> = policies
                .iter()
                .copied()
                .filter(|p| {
                    p.metadata.namespace.as_deref().unwrap_or("default") == target.namespace
                })
                .filter(|p| {
                    let (ing, eg) = types(p);
                    if dir == Direction::Ingress {
                        ing
                    } else {
                        eg
                    }
                })
                .filter(|p| {
                    let sel = p.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
                    selects(sel, target.labels)
                })
                .collect();
            if selecting.is_empty() {
                continue;
            }
            let name = match dir {
                Direction::Ingress => format!("in-{n}"),
                Direction::Egress => format!("out-{n}"),
            };
            t.chain(&name);
            for rule in allow_rules(dir, target, &selecting, &views, &ns_labels) {
                t.rule(&name, rule);
            }
            let counter = Statement::Counter(nftables::stmt::Counter::Anonymous(None));
            t.rule(&name, vec![counter, Statement::Drop(None)]);
            dispatch[d].push((target.ip, name));
        }
    }
    for (field, arms) in ["daddr", "saddr"].into_iter().zip(dispatch) {
        if !arms.is_empty() {
            let arms = arms.into_iter().map(|(ip, chain)| (addr(ip), jump(chain)));
            t.rule("forward", vec![verdict_map(payload("ip", field), arms)]);
        }
    }
    t.replace()
}

/// Turns on bridge netfilter in the caller's network namespace, so that
/// packets between pods of one bridge cross the `ip` hooks (policies and
/// Service replies need it). A kernel without it leaves no file: Ok, and
/// only routed traffic is filtered.
pub fn enable_bridge_netfilter() -> anyhow::Result<()> {
    let path = std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => Ok(()),
        Ok(_) => std::fs::write(path, "1").map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(_) => {
            tracing::warn!("no bridge netfilter: policies do not apply between pods of one node");
            Ok(())
        }
    }
}

/// Enforces policies for this node's pods (`local`, its podCIDR): the
/// table is rebuilt on every change of a policy, pod or namespace, and
/// applied when it differs from the last one (and every [`RESYNC`]). No
/// table is applied before all three caches have listed once, so a
/// partial list never drops traffic.
pub async fn run(
    policies: Cache<NetworkPolicy>,
    pods: Cache<Pod>,
    namespaces: Cache<Namespace>,
    local: Ipv4Net,
) {
    let mut changes = [policies.changes(), pods.changes(), namespaces.changes()];
    // Shared with the blocking apply rather than cloned (large tables).
    let mut last: Option<std::sync::Arc<Nftables<'static>>> = None;
    loop {
        for c in changes.iter_mut() {
            c.mark_unchanged();
        }
        let synced = [
            policies.sync_state(),
            pods.sync_state(),
            namespaces.sync_state(),
        ]
        .iter()
        .all(|s| *s == SyncState::Synced);
        if synced {
            let (pol, pod, ns) = (
                policies.store().state(),
                pods.store().state(),
                namespaces.store().state(),
            );
            let pol: Vec<&NetworkPolicy> = pol.iter().map(AsRef::as_ref).collect();
            let pod: Vec<&Pod> = pod.iter().map(AsRef::as_ref).collect();
            let ns: Vec<&Namespace> = ns.iter().map(AsRef::as_ref).collect();
            let batch = std::sync::Arc::new(ruleset(&pol, &pod, &ns, local));
            if last.as_ref() != Some(&batch) {
                let b = std::sync::Arc::clone(&batch);
                match tokio::task::spawn_blocking(move || super::nft::apply(&b)).await {
                    Ok(Ok(())) => {
                        tracing::debug!("network policies applied");
                        last = Some(batch);
                    }
                    Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "network policies"),
                    Err(e) => tracing::warn!(error = %e, "network policies"),
                }
            }
        }
        let [a, b, c] = &mut changes;
        tokio::select! {
            r = a.changed() => if r.is_err() { return },
            r = b.changed() => if r.is_err() { return },
            r = c.changed() => if r.is_err() { return },
            () = tokio::time::sleep(RESYNC) => last = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podnet::nft::render::rules;
    use serde_json::{json, Value};

    fn pod(ns: &str, name: &str, ip: &str, labels: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "x",
                      "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip}
        }))
        .unwrap()
    }

    fn policy(ns: &str, spec: Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": ns}, "spec": spec}))
            .unwrap()
    }

    fn namespace(name: &str, labels: Value) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn local() -> Ipv4Net {
        "10.244.0.0/24".parse().unwrap()
    }

    fn daddr_vmap(field: &str, arms: Value) -> Value {
        json!([{"vmap": {"key": {"payload": {"protocol": "ip", "field": field}},
                         "data": {"set": arms}}}])
    }

    fn peer(field: &str, op: &str, right: Value) -> Value {
        json!({"match": {"op": op, "left": {"payload": {"protocol": "ip", "field": field}}, "right": right}})
    }

    fn l4(proto: &str) -> Value {
        json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": proto}})
    }

    fn dport(port: Value) -> Value {
        json!({"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": port}})
    }

    fn drop_rule() -> Value {
        json!([{"counter": null}, {"drop": null}])
    }

    #[test]
    fn unselected_pods_are_open_and_deny_all_drops() {
        let web = pod("default", "web", "10.244.0.5", json!({"app": "web"}));
        let other = pod("default", "db", "10.244.0.6", json!({"app": "db"}));
        let b = ruleset(&[], &[&web, &other], &[], local());
        assert_eq!(
            rules(&b, "forward"),
            [
                json!([{"match": {"op": "in", "left": {"ct": {"key": "state"}},
                               "right": ["established", "related"]}}, {"accept": null}])
            ]
        );
        let deny = policy(
            "default",
            json!({"podSelector": {"matchLabels": {"app": "web"}}}),
        );
        let b = ruleset(&[&deny], &[&web, &other], &[], local());
        assert_eq!(
            rules(&b, "forward")[1..],
            [daddr_vmap(
                "daddr",
                json!([["10.244.0.5", {"jump": {"target": "in-0"}}]])
            )]
        );
        assert_eq!(rules(&b, "in-0"), [drop_rule()]);
        assert!(rules(&b, "in-1").is_empty() && rules(&b, "out-0").is_empty());
    }

    #[test]
    fn pod_and_namespace_selectors_with_named_ports() {
        let web = pod("default", "web", "10.244.0.5", json!({"app": "web"}));
        let client = pod("default", "client", "10.244.1.7", json!({"role": "client"}));
        let stranger = pod("default", "x", "10.244.1.8", json!({}));
        let mon = pod("mon", "prom", "10.244.1.9", json!({}));
        let allow = policy(
            "default",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
              {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
               "ports": [{"port": "http"}]},
              {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}],
               "ports": [{"protocol": "UDP", "port": 9000, "endPort": 9010}]},
              {"from": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}]}
            ]}),
        );
        let nss = [namespace("default", json!({})), namespace("mon", json!({}))];
        let b = ruleset(
            &[&allow],
            &[&web, &client, &stranger, &mon],
            &nss.iter().collect::<Vec<_>>(),
            local(),
        );
        let prefix = |a: &str, len: u32| json!({"prefix": {"addr": a, "len": len}});
        assert_eq!(
            rules(&b, "in-0"),
            [
                json!([peer("saddr", "==", json!({"set": ["10.244.1.7"]})), l4("tcp"),
                       dport(json!(8080)), {"return": null}]),
                json!([peer("saddr", "==", json!({"set": ["10.244.1.9"]})), l4("udp"),
                       dport(json!({"range": [9000, 9010]})), {"return": null}]),
                json!([peer("saddr", "==", prefix("192.168.0.0", 16)),
                       peer("saddr", "!=", json!({"set": [prefix("192.168.1.0", 24)]})),
                       {"return": null}]),
                drop_rule(),
            ]
        );
        // Only pods of this node get chains.
        assert_eq!(
            rules(&b, "forward")[1..],
            [daddr_vmap(
                "daddr",
                json!([["10.244.0.5", {"jump": {"target": "in-0"}}]])
            )]
        );
    }

    #[test]
    fn egress_rules_filter_by_destination() {
        let web = pod("default", "web", "10.244.0.5", json!({"app": "web"}));
        let db = pod("default", "db", "10.244.1.6", json!({"app": "db"}));
        let p = policy(
            "default",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                               "ports": [{"port": "http"}]}]}),
        );
        let b = ruleset(&[&p], &[&web, &db], &[], local());
        assert_eq!(
            rules(&b, "forward")[1..],
            [daddr_vmap(
                "saddr",
                json!([["10.244.0.5", {"jump": {"target": "out-0"}}]])
            )]
        );
        assert_eq!(
            rules(&b, "out-0")[0],
            json!([peer("daddr", "==", json!({"set": ["10.244.1.6"]})), l4("tcp"),
                   dport(json!(8080)), {"return": null}])
        );
    }

    #[test]
    fn an_ingress_allow_does_not_bypass_the_senders_egress() {
        let web = pod("default", "web", "10.244.0.5", json!({"app": "web"}));
        let client = pod("default", "client", "10.244.0.6", json!({"role": "client"}));
        let ingress = policy(
            "default",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}),
        );
        let egress = policy(
            "default",
            json!({"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"]}),
        );
        let b = ruleset(&[&ingress, &egress], &[&web, &client], &[], local());
        // web's ingress chain returns to `forward`, where the client's
        // egress chain (nothing allowed) still drops.
        assert_eq!(
            rules(&b, "in-0"),
            [
                json!([peer("saddr", "==", json!({"set": ["10.244.0.6"]})), {"return": null}]),
                drop_rule()
            ]
        );
        assert_eq!(
            rules(&b, "forward")[1..],
            [
                daddr_vmap(
                    "daddr",
                    json!([["10.244.0.5", {"jump": {"target": "in-0"}}]])
                ),
                daddr_vmap(
                    "saddr",
                    json!([["10.244.0.6", {"jump": {"target": "out-1"}}]])
                ),
            ]
        );
        assert_eq!(rules(&b, "out-1"), [drop_rule()]);
    }

    #[test]
    fn an_empty_rule_allows_everything() {
        let web = pod("default", "web", "10.244.0.5", json!({}));
        let p = policy("default", json!({"podSelector": {}, "ingress": [{}]}));
        let b = ruleset(&[&p], &[&web], &[], local());
        assert_eq!(rules(&b, "in-0"), [json!([{"return": null}]), drop_rule()]);
    }
}
