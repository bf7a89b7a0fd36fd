//! `keel agent --network netns` end to end: a server and two agents, each
//! agent in a "host" network namespace the test creates (joined by a veth,
//! 192.168.233.1 and .2, which exist only inside those namespaces). Pods
//! get 10.244.x IPs in namespaces of their own; a pod on one node reaches a
//! pod on the other over host-gw routes; an agent restart keeps pod IPs; a
//! deleted pod's IP is reused and its veth and namespace pin are gone.
//!
//! Needs root, `ip`, `kubectl`, Debian's busybox-static and the isolating
//! runtime; otherwise prints why and checks nothing.

mod util;

use std::net::SocketAddr;
use std::time::Duration;

use util::netns::{busybox_image, get_from, unsupported, Hosts};
use util::wait_for;

fn pod_yaml(name: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo served-by-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
    )
}

#[test]
fn pods_in_their_own_namespaces_talk_across_nodes() {
    if let Some(why) = unsupported() {
        eprintln!("skipping: netns mode cannot be tested here: {why}");
        return;
    }
    let mut hosts = Hosts::new();
    busybox_image(&hosts.path("images"));
    hosts.start_server(&[]);
    wait_for(
        "server kubeconfig",
        30,
        || hosts.path("server/kubeconfig").exists(),
        || hosts.log(),
    );
    hosts.start_agent(0);
    hosts.start_agent(1);
    std::fs::write(
        hosts.path("pods.yaml"),
        format!("{}---\n{}", pod_yaml("client", "n0"), pod_yaml("web", "n1")),
    )
    .unwrap();
    let pods = hosts.path("pods.yaml").display().to_string();
    wait_for(
        "pods created",
        30,
        || hosts.kubectl(&["apply", "-f", &pods]).status.success(),
        || hosts.log(),
    );
    let (client_uid, client_ip) = hosts.running("client");
    let (web_uid, web_ip) = hosts.running("web");
    assert!(client_ip.starts_with("10.244."), "client IP {client_ip}");
    assert!(web_ip.starts_with("10.244."), "web IP {web_ip}");
    assert_ne!(
        client_ip.rsplit_once('.').unwrap().0,
        web_ip.rsplit_once('.').unwrap().0,
        "the nodes have different podCIDRs"
    );

    // Pod to pod across nodes, over host-gw routes (the client's side of
    // the exchange runs in the client pod's own namespace).
    let client_ns = hosts.path(&format!("agent0/pods/{client_uid}/ns/net"));
    let web_addr: SocketAddr = format!("{web_ip}:8080").parse().unwrap();
    let body = std::cell::RefCell::new(String::new());
    wait_for(
        "client pod reaches web pod",
        30,
        || {
            let got = get_from(&client_ns, web_addr).unwrap_or_else(|e| e.to_string());
            *body.borrow_mut() = got;
            body.borrow().contains("served-by-web")
        },
        || format!("last answer: {}\n{}", body.borrow(), hosts.log()),
    );

    // Agent restart: the pod keeps its IP and stays reachable.
    hosts.kill_agent(1);
    hosts.start_agent(1);
    std::thread::sleep(Duration::from_secs(2));
    let (uid_after, ip_after) = hosts.running("web");
    assert_eq!(
        (uid_after.as_str(), ip_after.as_str()),
        (web_uid.as_str(), web_ip.as_str())
    );
    assert!(get_from(&client_ns, web_addr)
        .unwrap()
        .contains("served-by-web"));

    // Deletion: veth and pin go; the next pod on the node reuses the IP.
    let web_pin = hosts.path(&format!("agent1/pods/{web_uid}/ns/net"));
    assert!(hosts
        .host_veths(1)
        .contains(&keel_node::podnet::veth_name(&web_uid)));
    assert!(
        hosts
            .kubectl(&["delete", "pod", "web", "--wait=true", "--timeout=60s"])
            .status
            .success(),
        "{}",
        hosts.log()
    );
    wait_for(
        "web veth and pin removed",
        30,
        || !hosts.host_veths(1).contains(" kv") && !web_pin.exists(),
        || hosts.log(),
    );
    std::fs::write(hosts.path("web2.yaml"), pod_yaml("web2", "n1")).unwrap();
    let web2 = hosts.path("web2.yaml").display().to_string();
    assert!(hosts.kubectl(&["apply", "-f", &web2]).status.success());
    let (_, web2_ip) = hosts.running("web2");
    assert_eq!(web2_ip, web_ip, "the released IP is handed out again");

    // Deleting every pod leaves no pod veth and no pinned namespace.
    assert!(hosts
        .kubectl(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"])
        .status
        .success());
    wait_for(
        "no pod veths or pins left",
        30,
        || {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            !hosts.host_veths(0).contains(" kv")
                && !hosts.host_veths(1).contains(" kv")
                && !mounts.contains(&format!("{}/agent", hosts.dir.path().display()))
        },
        || hosts.log(),
    );
}
