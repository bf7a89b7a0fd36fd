//! The nftables rulesets keel generates (Service DNAT, NetworkPolicy) are
//! accepted by the kernel as generated, including the parts the end-to-end
//! test does not reach (ClientIP affinity sets, rejects, egress, ipBlock
//! exceptions, port ranges), and a re-apply replaces a table atomically.
//! Restart: the tables of a stopped agent stay (kube-proxy's behaviour,
//! Service traffic flows on), and what a restarted agent applies replaces
//! them, one table each, without the rules of a pod deleted meanwhile.
//!
//! Root and `nft` only (skips with a reason otherwise); the rules are
//! loaded into a network namespace this test creates and deletes, never
//! into the test's own.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use keel_node::proxy::table::{Backend, Frontend, Protocol, Route, Table};
use nftables::schema::Nftables;
use serde_json::json;

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    if !keel_node::podnet::nft::available() {
        return Some("no nft (install nftables)");
    }
    None
}

/// A scratch network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("keeltest-nft{tag}-{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(ok.is_ok_and(|s| s.success()), "ip netns add {name}");
        Netns(name)
    }

    /// `nft <args>` in the namespace, with `stdin`: (success, output).
    fn nft(&self, args: &[&str], stdin: &str) -> (bool, String) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Applies `batch` as the agent does (`nft -j -f -`), in the namespace.
    fn apply(&self, batch: &Nftables<'_>) {
        let json = serde_json::to_string(batch).unwrap();
        let (ok, out) = self.nft(&["-j", "-f", "-"], &json);
        assert!(ok, "{out}\n{json}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn service_table(affinity: bool, second_endpoint: bool) -> Table {
    let mut t = Table::default();
    let mut backends = vec![Backend::ready("10.244.0.2:8080".parse().unwrap())];
    if second_endpoint {
        backends.push(Backend::ready("10.244.1.2:8080".parse().unwrap()));
    }
    for (addr, protocol, backends) in [
        ("10.96.0.5:80", Protocol::Tcp, backends.clone()),
        ("10.96.0.10:53", Protocol::Udp, backends),
        ("10.96.0.6:80", Protocol::Tcp, vec![]),
    ] {
        t.routes.insert(
            Frontend {
                addr: addr.parse().unwrap(),
                protocol,
            },
            Arc::new(Route {
                service: "ns/svc:p".into(),
                backends,
                affinity_timeout: affinity.then_some(Duration::from_secs(300)),
            }),
        );
    }
    t
}

#[test]
fn service_and_policy_rulesets_load_and_replace() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let ns = Netns::new("");
    // A table keel does not own: no replace touches it.
    let (ok, out) = ns.nft(&["-f", "-"], "table ip user {\n  chain c {\n  }\n}\n");
    assert!(ok, "{out}");
    let dns = keel_node::proxy::nft::DnsRedirect::new(
        Some("10.96.0.10".parse().unwrap()),
        Some("10.244.0.1".parse().unwrap()),
        53,
    );
    ns.apply(&keel_node::proxy::nft::ruleset(
        &service_table(true, true),
        dns,
    ));
    let (_, listed) = ns.nft(&["list", "table", "ip", "keel"], "");
    assert!(listed.contains("10.244.1.2:8080"), "{listed}");
    assert!(listed.contains("flags dynamic,timeout"), "{listed}");
    assert!(listed.contains("dnat to 10.244.0.1:53"), "{listed}");
    // Applied as JSON, listed as the text users read.
    assert!(
        listed.contains("numgen random mod 2 vmap { 0 : goto ep-0-0, 1 : goto ep-0-1 }"),
        "{listed}"
    );
    assert!(listed.contains("update @aff-0-0 { ip saddr }"), "{listed}");
    // A replace drops what the new table lacks.
    ns.apply(&keel_node::proxy::nft::ruleset(
        &service_table(false, false),
        None,
    ));
    let (_, listed) = ns.nft(&["list", "table", "ip", "keel"], "");
    assert!(
        !listed.contains("10.244.1.2") && !listed.contains("set aff"),
        "{listed}"
    );
    assert!(listed.contains("reject"), "{listed}");
    let (_, tables) = ns.nft(&["list", "tables"], "");
    assert!(tables.contains("table ip user\n"), "{tables}");

    let pod = |name: &str, ip: &str, labels: serde_json::Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "x",
                      "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip}
        }))
        .unwrap()
    };
    let pods = [
        pod("web", "10.244.0.5", json!({"app": "web"})),
        pod("db", "10.244.0.6", json!({"app": "db"})),
        pod("client", "10.244.1.7", json!({"role": "client"})),
    ];
    let policy: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": "client"}}},
                          {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
                 "ports": [{"port": "http"}, {"protocol": "UDP", "port": 9000, "endPort": 9010}]},
                {}
            ],
            "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "SCTP"}]}]
        }
    }))
    .unwrap();
    let default_ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    ns.apply(&keel_node::podnet::policy::ruleset(
        &[&policy],
        &pods.iter().collect::<Vec<_>>(),
        &[&default_ns],
        "10.244.0.0/24".parse().unwrap(),
    ));
    let (_, listed) = ns.nft(&["list", "table", "ip", "keel-policy"], "");
    assert!(listed.contains("9000-9010"), "{listed}");
    assert!(listed.contains("jump out-1"), "{listed}");
}

fn web_pods(with_db: bool) -> Vec<Pod> {
    let pod = |name: &str, ip: &str, labels: serde_json::Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "podIP": ip}
        }))
        .unwrap()
    };
    let mut pods = vec![pod("web", "10.244.0.5", json!({"app": "web"}))];
    if with_db {
        pods.push(pod("db", "10.244.0.66", json!({"app": "db"})));
    }
    pods
}

/// Both tables as an agent with `with_db`'s pods applies them: the
/// Service table (db is an endpoint) and the policy table (a deny-all
/// policy isolates every pod).
fn agent_batches(with_db: bool) -> [Nftables<'static>; 2] {
    let mut t = Table::default();
    let mut backends = vec![Backend::ready("10.244.0.5:8080".parse().unwrap())];
    if with_db {
        backends.push(Backend::ready("10.244.0.66:8080".parse().unwrap()));
    }
    t.routes.insert(
        Frontend {
            addr: "10.96.0.5:80".parse().unwrap(),
            protocol: Protocol::Tcp,
        },
        Arc::new(Route {
            service: "default/svc:p".into(),
            backends,
            affinity_timeout: None,
        }),
    );
    let deny: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "deny", "namespace": "default"},
        "spec": {"podSelector": {}}
    }))
    .unwrap();
    let pods = web_pods(with_db);
    [
        keel_node::proxy::nft::ruleset(&t, None),
        keel_node::podnet::policy::ruleset(
            &[&deny],
            &pods.iter().collect::<Vec<_>>(),
            &[],
            "10.244.0.0/24".parse().unwrap(),
        ),
    ]
}

#[test]
fn a_restarted_agent_replaces_its_tables_without_stale_rules() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let ns = Netns::new("-restart");
    // The first agent applies its tables, then stops: nothing deletes
    // them (no table is deleted on exit), so they stay as they were.
    for batch in agent_batches(true) {
        ns.apply(&batch);
    }
    let (_, before) = ns.nft(&["list", "ruleset"], "");
    assert!(before.contains("10.244.0.66"), "{before}");
    // db was deleted while no agent ran; the restarted agent applies
    // what its fresh caches give, twice (its first round and a resync).
    for _ in 0..2 {
        for batch in agent_batches(false) {
            ns.apply(&batch);
        }
    }
    let (_, tables) = ns.nft(&["list", "tables"], "");
    assert_eq!(tables.matches("table ip keel\n").count(), 1, "{tables}");
    assert_eq!(
        tables.matches("table ip keel-policy\n").count(),
        1,
        "{tables}"
    );
    let (_, after) = ns.nft(&["list", "ruleset"], "");
    assert!(!after.contains("10.244.0.66"), "stale rules of db: {after}");
    assert!(after.contains("dnat to 10.244.0.5:8080"), "{after}");
    assert!(after.contains("10.244.0.5 : jump in-0"), "{after}");
    assert_eq!(after.matches("chain forward").count(), 1, "{after}");
}
