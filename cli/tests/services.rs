//! Service networking end to end on `keel up --agents 2`, driven by the
//! real kubectl: the agents' Service proxy serves a ClusterIP and a
//! NodePort of a Deployment of two `keel/echo` pods, spreads connections
//! over both, stops sending new ones to an endpoint marked terminating,
//! and pods get the Service environment variables.
//!
//! The Service is selector-less with an EndpointSlice the test writes
//! itself (the labels an EndpointSlice controller sets), as a user may do:
//! this keeps working whether or not a controller manages other slices.

mod util;

use std::collections::BTreeSet;

use serde_json::Value;
use util::kubectl::Kubectl;
use util::up::{http_get, is_ready, live, pods, ready_nodes, write, Up};
use util::wait_for;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: keel/echo
        env: [{name: PORT, value: "8080"}]
        readinessProbe:
          httpGet: {path: /ready, port: 8080}
          periodSeconds: 1
"#;

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  ports:
  - {name: http, port: 80, targetPort: 8080}
"#;

/// The EndpointSlice of `web` with each pod as `(name, ip, node, ready)`.
fn slice(pods: &[(String, String, String, bool)]) -> String {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|(name, ip, node, ready)| {
            serde_json::json!({
                "addresses": [ip],
                "nodeName": node,
                "targetRef": {"kind": "Pod", "namespace": "default", "name": name},
                "conditions": {"ready": ready, "serving": true, "terminating": !ready}
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-manual",
            "labels": {
                "kubernetes.io/service-name": "web",
                "endpointslice.kubernetes.io/managed-by": "services-test.keel.dev"
            }
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    })
    .to_string()
}

/// The `pod=<name>` an echo answer names, if it is one.
fn answered_by(answer: &str) -> Option<String> {
    let body = answer.lines().last()?;
    let pod = body
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pod="))?;
    Some(pod.to_string())
}

fn get(addr: &str, path: &str) -> Option<String> {
    http_get(addr, path).as_deref().and_then(answered_by)
}

fn web_pods(k: &Kubectl) -> Vec<(String, String, String, bool)> {
    pods(k, "app=web")
        .into_iter()
        .filter(|p| live(p) && is_ready(p))
        .map(|p| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&p["metadata"]["name"]),
                s(&p["status"]["podIP"]),
                s(&p["spec"]["nodeName"]),
                true,
            )
        })
        .collect()
}

/// A pod on the host userland that prints its environment and then asks
/// the Service (by the variables it got) from inside the cluster.
fn client_pod(name: &str, links: bool) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "enableServiceLinks": links,
            "containers": [{
                "name": "client",
                "image": "keel/host",
                "env": [
                    {"name": "EXPLICIT", "value": "$(WEB_SERVICE_PORT)"},
                    {"name": "WEB_PORT", "value": "mine"}
                ],
                "command": ["sh", "-c",
                    "env | sort; for i in 1 2 3 4 5 6 7 8 9 10; do curl -sS --max-time 5 http://${WEB_SERVICE_HOST:-none}:${WEB_SERVICE_PORT:-80}/from-pod && exit 0; sleep 1; done; exit 0"]
            }]
        }
    })
    .to_string()
}

fn pod_phase(k: &Kubectl, name: &str) -> String {
    let o = k.run(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn cluster_ip_and_node_port_reach_the_pods_spread_and_drain_and_pods_get_service_env() {
    let up = Up::start(2, &[]);
    let k = up.kubectl();
    wait_for("2 Ready nodes", 90, || ready_nodes(&k) == 2, || up.log());
    let dir = up.dir.path();
    k.ok(&[
        "apply",
        "-f",
        write(dir, "web.yaml", DEPLOYMENT).to_str().unwrap(),
    ]);
    wait_for(
        "2 Ready web pods",
        90,
        || web_pods(&k).len() == 2,
        || up.log(),
    );
    let backends = web_pods(&k);
    let names: BTreeSet<String> = backends.iter().map(|b| b.0.clone()).collect();

    k.ok(&[
        "apply",
        "-f",
        write(dir, "svc.yaml", SERVICE).to_str().unwrap(),
    ]);
    let slice_file = write(dir, "slice.json", &slice(&backends));
    k.ok(&["apply", "-f", slice_file.to_str().unwrap()]);
    let svc = k.json(&["get", "service", "web"]);
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("a cluster IP")
        .to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .expect("a node port");
    let frontend = format!("{cluster_ip}:80");

    // Reachable on the cluster IP from the host, answered by the pods.
    wait_for(
        "the cluster IP to answer",
        60,
        || get(&frontend, "/").is_some_and(|p| names.contains(&p)),
        || up.log(),
    );
    // Spread: both endpoints answer (round-robin per agent, and the kernel
    // spreads connections over the two agents' listeners).
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        if let Some(p) = get(&frontend, "/spread") {
            seen.insert(p);
        }
    }
    assert_eq!(seen, names, "answers on {frontend}");

    // The NodePort answers on both nodes' addresses.
    let first_node_ip = up.node_ip();
    let (base, last) = first_node_ip.rsplit_once('.').unwrap();
    let second_node_ip = format!("{base}.{}", last.parse::<u8>().unwrap() + 1);
    for ip in [&first_node_ip, &second_node_ip] {
        let addr = format!("{ip}:{node_port}");
        wait_for(
            &format!("the NodePort on {addr}"),
            60,
            || get(&addr, "/np").is_some_and(|p| names.contains(&p)),
            || up.log(),
        );
    }

    // From inside a pod, through the variables the kubelet would set.
    k.ok(&[
        "apply",
        "-f",
        write(dir, "c1.json", &client_pod("client", true))
            .to_str()
            .unwrap(),
    ]);
    k.ok(&[
        "apply",
        "-f",
        write(dir, "c2.json", &client_pod("nolinks", false))
            .to_str()
            .unwrap(),
    ]);
    for pod in ["client", "nolinks"] {
        wait_for(
            &format!("{pod} to finish"),
            90,
            || pod_phase(&k, pod) == "Succeeded",
            || up.log(),
        );
    }
    let logs = k.ok(&["logs", "client"]);
    let lines: BTreeSet<&str> = logs.lines().collect();
    for want in [
        format!("WEB_SERVICE_HOST={cluster_ip}"),
        "WEB_SERVICE_PORT=80".to_string(),
        "WEB_SERVICE_PORT_HTTP=80".to_string(),
        format!("WEB_PORT_80_TCP=tcp://{cluster_ip}:80"),
        "WEB_PORT_80_TCP_PROTO=tcp".to_string(),
        "WEB_PORT_80_TCP_PORT=80".to_string(),
        format!("WEB_PORT_80_TCP_ADDR={cluster_ip}"),
        "EXPLICIT=80".to_string(),
        // Explicit container env wins over a Service variable.
        "WEB_PORT=mine".to_string(),
    ] {
        assert!(lines.contains(want.as_str()), "{want} missing in:\n{logs}");
    }
    assert!(
        logs.lines()
            .any(|l| l.contains("path=/from-pod") && l.contains("pod=web-")),
        "the pod reached no endpoint through the cluster IP:\n{logs}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("WEB_PORT=tcp://")),
        "{logs}"
    );
    let no_links = k.ok(&["logs", "nolinks"]);
    assert!(!no_links.contains("WEB_SERVICE_HOST"), "{no_links}");
    let has_api_service = k.run(&["get", "service", "kubernetes"]).status.success();
    if has_api_service {
        assert!(logs.contains("KUBERNETES_SERVICE_HOST="), "{logs}");
        assert!(no_links.contains("KUBERNETES_SERVICE_HOST="), "{no_links}");
    }

    // One endpoint terminating (serving, not ready): new connections go
    // only to the ready one.
    let mut draining = backends.clone();
    draining[1].3 = false;
    let (kept, drained) = (draining[0].0.clone(), draining[1].0.clone());
    std::fs::write(&slice_file, slice(&draining)).unwrap();
    k.ok(&["apply", "-f", slice_file.to_str().unwrap()]);
    let only_kept = || (0..10).all(|_| get(&frontend, "/drain").as_deref() == Some(kept.as_str()));
    wait_for("only the ready endpoint to answer", 60, only_kept, || {
        up.log()
    });
    for _ in 0..20 {
        let p = get(&frontend, "/after-drain");
        assert_eq!(p.as_deref(), Some(kept.as_str()), "{drained} still chosen");
    }

    // Loopback mode cannot enforce a NetworkPolicy: kubectl shows the
    // server's warning on create, and the policy gets a Warning Event.
    let policy = write(dir, "deny.yaml", DENY_ALL);
    let out = k.run(&["create", "-f", policy.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning: NetworkPolicy is not enforced on nodes in loopback")
            && stderr.contains("--network netns"),
        "no warning on create: {stderr}"
    );
    let not_enforced = || {
        let events = k.json(&["get", "events", "--field-selector", "reason=NotEnforced"]);
        events["items"].as_array().is_some_and(|items| {
            items.iter().any(|e| {
                e["involvedObject"]["kind"] == "NetworkPolicy"
                    && e["involvedObject"]["name"] == "deny-all"
                    && e["type"] == "Warning"
            })
        })
    };
    wait_for(
        "a NotEnforced event on the policy",
        30,
        not_enforced,
        || up.log(),
    );
}

const DENY_ALL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;
