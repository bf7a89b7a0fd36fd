//! netns mode, Services, DNS and NetworkPolicy end to end: a server and
//! two agents in "host" network namespaces the test creates (see
//! [`util::netns`]), Service cluster IPs from 10.96.0.0/16 and pod IPs
//! from 10.244.0.0/16 (both only inside those namespaces).
//!
//! A client pod resolves a Service by name through the kube-dns cluster
//! IP its resolv.conf names (DNATed to the agent's DNS on the node bridge)
//! and reaches both endpoints, on its node and on the other, through
//! nftables DNAT; unknown names are NXDOMAIN. A NetworkPolicy selecting
//! the endpoints denies, then an added allow rule lets the client in while
//! another pod stays out. An egress policy on the client denies all it
//! sends (DNS keeps working: the server is node-local), then an egress
//! allow to the Service's pods (with the usual kube-dns rule) lets it reach
//! them but not another pod. An agent stopped leaves its nft tables (and
//! Service traffic) in place; restarted after one of its pods was deleted,
//! it replaces them without the pod's rules. Afterwards no namespace,
//! veth, nft table or pinned pod namespace is left.
//!
//! Needs root, `ip`, `nft`, `kubectl`, Debian's busybox-static and the
//! isolating runtime; otherwise prints why and checks nothing.

mod util;

use std::collections::BTreeSet;
use std::process::Command;

use util::netns::{busybox_image, unsupported, Hosts};
use util::wait_for;

fn web_pod(name: &str, node: &str) -> String {
    httpd_pod(name, node, "app: web")
}

fn httpd_pod(name: &str, node: &str, labels: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - name: web
    image: busybox
    ports: [{{name: http, containerPort: 8080}}]
    command: ["sh", "-c", "mkdir -p /www && echo served-by-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
    )
}

fn idle_pod(name: &str, node: &str, labels: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
"#
    )
}

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#;

const DENY: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-deny}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
"#;

const ALLOW_CLIENT: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-allow-client}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{port: http}]
"#;

const EGRESS_DENY: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress-deny}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
"#;

/// The client may reach the web pods' http port, and DNS the way a
/// Kubernetes user allows it (kube-dns' pods: keel has none, DNS is
/// node-local and passes anyway).
const EGRESS_ALLOW_WEB: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress-web}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: http}]
  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}},
          podSelector: {matchLabels: {k8s-app: kube-dns}}}]
    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
"#;

/// Inside a pod: resolve the Service's name with the pod's resolv.conf
/// and send an HTTP request to the address. Busybox's own resolver
/// (`nslookup`) and `nc`: the static libc's name and service lookups
/// (which `wget` does even for an IP) crash without their modules.
const FETCH_BY_NAME: &str = "ip=$(nslookup web.default.svc.cluster.local | sed -n '/^Name:/,$ s/^Address: *//p' | tail -n 1) && echo \"resolved $ip\" >&2 && printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 2 \"$ip\" 80";

/// A page of the Service, by name, from `pod`: the body, or `None`.
fn fetch(hosts: &Hosts, pod: &str) -> Option<String> {
    let (ok, out) = hosts.exec(pod, &["sh", "-c", FETCH_BY_NAME]);
    let body = out.lines().find(|l| l.starts_with("served-by-"))?;
    ok.then(|| body.to_string())
}

/// A page straight from `ip`:8080, from `pod`: the body, or `None`.
fn fetch_ip(hosts: &Hosts, pod: &str, ip: &str) -> Option<String> {
    let cmd = format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 8080");
    let (ok, out) = hosts.exec(pod, &["sh", "-c", &cmd]);
    let body = out.lines().find(|l| l.starts_with("served-by-"))?;
    ok.then(|| body.to_string())
}

/// Whether `pod` resolves the Service's name to `cluster_ip`.
fn resolves(hosts: &Hosts, pod: &str, cluster_ip: &str) -> bool {
    let (_, out) = hosts.exec(pod, &["nslookup", "web.default.svc.cluster.local"]);
    out.contains(cluster_ip)
}

fn apply(hosts: &Hosts, name: &str, yaml: &str) {
    std::fs::write(hosts.path(name), yaml).unwrap();
    let file = hosts.path(name).display().to_string();
    wait_for(
        &format!("{name} applied"),
        30,
        || hosts.kubectl(&["apply", "-f", &file]).status.success(),
        || hosts.log(),
    );
}

fn tables(hosts: &Hosts, h: usize) -> String {
    hosts.in_host(h, &["nft", "list", "tables"])
}

#[test]
fn pods_reach_services_by_name_and_policies_deny_then_allow() {
    if let Some(why) = unsupported() {
        eprintln!("skipping: netns mode cannot be tested here: {why}");
        return;
    }
    if !keel_node::podnet::nft::available() {
        eprintln!("skipping: no nft (install nftables)");
        return;
    }
    let mut hosts = Hosts::new();
    let names = hosts.ns.clone();
    let dir = hosts.dir.path().to_path_buf();
    busybox_image(&hosts.path("images"));
    hosts.start_server(&["--service-cluster-ip-range", "10.96.0.0/16"]);
    wait_for(
        "server kubeconfig",
        30,
        || hosts.path("server/kubeconfig").exists(),
        || hosts.log(),
    );
    hosts.start_agent(0);
    hosts.start_agent(1);
    let pods = [
        web_pod("web-0", "n0"),
        web_pod("web-1", "n1"),
        idle_pod("client", "n0", "role: client"),
        httpd_pod("stranger", "n0", "role: other"),
        SERVICE.to_string(),
    ]
    .join("---\n");
    apply(&hosts, "pods.yaml", &pods);
    let mut ips = std::collections::BTreeMap::new();
    for p in ["web-0", "web-1", "client", "stranger"] {
        ips.insert(p, hosts.running(p).1);
    }
    let svc = hosts.kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let cluster_ip = String::from_utf8_lossy(&svc.stdout).to_string();
    assert!(
        cluster_ip.starts_with("10.96."),
        "cluster IP {cluster_ip:?}"
    );

    // DNS: the pod's resolv.conf names kube-dns' cluster IP (the service
    // range's network + 10), which the node DNATs to its own server; the
    // name resolves to the cluster IP; unknown names are NXDOMAIN.
    let (_, resolv) = hosts.exec("client", &["cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("nameserver 10.96.0.10\n") && resolv.contains("default.svc.cluster.local"),
        "{resolv}"
    );
    let last = std::cell::RefCell::new(String::new());
    wait_for(
        "the client resolves the Service name",
        60,
        || {
            let (_, out) = hosts.exec("client", &["nslookup", "web.default.svc.cluster.local"]);
            let ok = out.contains(&cluster_ip);
            *last.borrow_mut() = out;
            ok
        },
        || format!("last: {}\n{}", last.borrow(), hosts.log()),
    );
    let (_, out) = hosts.exec("client", &["nslookup", "nosuch.default.svc.cluster.local"]);
    assert!(out.contains("NXDOMAIN"), "{out}");

    // The Service by name reaches both endpoints (one per node).
    let seen = std::cell::RefCell::new(BTreeSet::new());
    wait_for(
        "both endpoints answer through the Service",
        60,
        || {
            if let Some(body) = fetch(&hosts, "client") {
                seen.borrow_mut().insert(body.trim().to_string());
            }
            seen.borrow().len() == 2
        },
        || {
            let (_, wget) = hosts.exec("client", &["sh", "-c", FETCH_BY_NAME]);
            let (_, rules) = hosts.exec("client", &["cat", "/etc/resolv.conf"]);
            format!(
                "{}\nseen: {:?}\nwget: {wget}\nresolv.conf: {rules}",
                hosts.log(),
                seen.borrow(),
            )
        },
    );
    for h in 0..2 {
        let t = tables(&hosts, h);
        assert!(
            t.contains("table ip keel\n") && t.contains("table ip keel-policy"),
            "host {h}: {t}"
        );
    }

    // Deny: the endpoints are isolated and nothing is allowed in.
    apply(&hosts, "deny.yaml", DENY);
    wait_for(
        "the policy denies",
        30,
        || fetch(&hosts, "client").is_none(),
        || hosts.log(),
    );
    for _ in 0..3 {
        assert_eq!(fetch(&hosts, "client"), None, "denied by web-deny");
    }

    // Allow the client (by label, named port): it gets in, the other
    // pod of the same node stays out.
    apply(&hosts, "allow.yaml", ALLOW_CLIENT);
    let seen = std::cell::RefCell::new(BTreeSet::new());
    wait_for(
        "the client is allowed to both endpoints",
        30,
        || {
            if let Some(body) = fetch(&hosts, "client") {
                seen.borrow_mut().insert(body.trim().to_string());
            }
            seen.borrow().len() == 2
        },
        || format!("seen: {:?}\n{}", seen.borrow(), hosts.log()),
    );
    for _ in 0..3 {
        assert_eq!(fetch(&hosts, "stranger"), None, "stranger is not allowed");
    }

    // Egress: the client, isolated for egress with nothing allowed,
    // reaches neither the Service nor the other pod; DNS still answers
    // (the server is on the client's own node, which policies leave open).
    let stranger_ip = ips["stranger"].clone();
    wait_for(
        "the client reaches the stranger directly",
        30,
        || fetch_ip(&hosts, "client", &stranger_ip).is_some(),
        || hosts.log(),
    );
    apply(&hosts, "egress-deny.yaml", EGRESS_DENY);
    wait_for(
        "the egress policy denies",
        30,
        || fetch_ip(&hosts, "client", &stranger_ip).is_none(),
        || hosts.log(),
    );
    assert_eq!(fetch(&hosts, "client"), None, "Service denied by egress");
    assert!(
        resolves(&hosts, "client", &cluster_ip),
        "DNS under egress deny"
    );

    // Allowed to the web pods' http port: both endpoints through the
    // Service, still not the other pod.
    apply(&hosts, "egress-allow.yaml", EGRESS_ALLOW_WEB);
    let seen = std::cell::RefCell::new(BTreeSet::new());
    wait_for(
        "the egress allow lets the client reach both endpoints",
        30,
        || {
            if let Some(body) = fetch(&hosts, "client") {
                seen.borrow_mut().insert(body.trim().to_string());
            }
            seen.borrow().len() == 2
        },
        || format!("seen: {:?}\n{}", seen.borrow(), hosts.log()),
    );
    for _ in 0..3 {
        assert_eq!(
            fetch_ip(&hosts, "client", &stranger_ip),
            None,
            "egress to the stranger is not allowed"
        );
    }

    // Restart: a stopped agent leaves its tables, and Service traffic
    // from its node flows on; a pod deleted meanwhile loses its rules
    // when the restarted agent replaces the tables (one of each).
    hosts.kill_agent(1);
    let web1_ip = ips["web-1"].clone();
    let t = hosts.in_host(1, &["nft", "list", "ruleset"]);
    assert!(
        t.contains(&web1_ip) && t.contains("table ip keel-policy"),
        "{t}"
    );
    // From the node itself (the output hook): web-1 is on this node; the
    // other endpoint only lets the client in, hence a few tries. The node
    // needs a route for the cluster IP, as a default route gives it.
    util::netns::ip(&[
        "-n",
        &names[1],
        "route",
        "add",
        "default",
        "via",
        util::netns::H1_IP,
    ]);
    let node_fetch = format!(
        "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | ip netns exec {} {} nc -w 2 {cluster_ip} 80",
        names[1],
        util::netns::BUSYBOX
    );
    wait_for(
        "the Service answers on the node while its agent is stopped",
        30,
        || {
            let o = Command::new("sh")
                .arg("-c")
                .arg(&node_fetch)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).contains("served-by-web-1")
        },
        || hosts.log(),
    );
    let deleted = hosts.kubectl(&["delete", "pod", "web-1", "--grace-period=0", "--force"]);
    assert!(deleted.status.success(), "{deleted:?}");
    hosts.start_agent(1);
    let last = std::cell::RefCell::new(String::new());
    wait_for(
        "the restarted agent drops the deleted pod's rules",
        60,
        || {
            let t = hosts.in_host(1, &["nft", "list", "ruleset"]);
            let ok = !t.contains(&web1_ip) && t.contains("table ip keel-policy");
            *last.borrow_mut() = t;
            ok
        },
        || format!("{}\n{}", last.borrow(), hosts.log()),
    );
    let t = tables(&hosts, 1);
    assert_eq!(t.matches("table ip keel\n").count(), 1, "{t}");
    assert_eq!(t.matches("table ip keel-policy\n").count(), 1, "{t}");

    // Cleanup: nothing of the test is left outside its namespaces.
    hosts.teardown();
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout);
    for n in &names {
        assert!(!netns.contains(n.as_str()), "{n} left: {netns}");
    }
    let veths = Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .unwrap();
    let veths = String::from_utf8_lossy(&veths.stdout);
    assert!(
        !veths.contains(": kte") && !veths.contains(": kv"),
        "{veths}"
    );
    let root_tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    let root_tables = String::from_utf8_lossy(&root_tables.stdout);
    assert!(!root_tables.contains("keel"), "{root_tables}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir.display().to_string()), "pins left");
}
