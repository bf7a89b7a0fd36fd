//! Service endpoints end to end, driven by the real kubectl on `keel up
//! --agents 2`: a Deployment of two keel/echo pods behind a Service shows
//! both pod IPs and the target port in `kubectl get endpoints` and
//! `endpointslices`, one after a scale to 1; and the `kubernetes` Service
//! sits at the `.1` of the cluster's Service range, its Endpoints at the
//! API server's address, whose certificate carries the Service's names.

mod util;

use std::collections::BTreeSet;

use serde_json::Value;
use util::kubectl::Kubectl;
use util::up::{is_ready, live, pods, ready_nodes, write, Up};
use util::wait_for;

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ep-echo
spec:
  replicas: 2
  selector:
    matchLabels: {app: ep-echo}
  template:
    metadata:
      labels: {app: ep-echo}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: keel/echo:v1
        env:
        - name: PORT
          value: "8080"
        ports:
        - name: http
          containerPort: 8080
        readinessProbe:
          httpGet: {path: /ready, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: ep-echo
spec:
  selector: {app: ep-echo}
  ports:
  - name: web
    port: 80
    targetPort: http
"#;

/// The IPs of the live, Ready echo pods.
fn ready_pod_ips(k: &Kubectl) -> BTreeSet<String> {
    pods(k, "app=ep-echo")
        .iter()
        .filter(|p| live(p) && is_ready(p))
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .collect()
}

fn json_of(k: &Kubectl, args: &[&str]) -> Value {
    let o = k.run(args);
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// (ready addresses as ip:port) of an Endpoints.
fn endpoints_addresses(k: &Kubectl, name: &str) -> BTreeSet<String> {
    let ep = json_of(k, &["get", "endpoints", name, "-o", "json"]);
    let mut out = BTreeSet::new();
    for s in ep["subsets"].as_array().into_iter().flatten() {
        for a in s["addresses"].as_array().into_iter().flatten() {
            for p in s["ports"].as_array().into_iter().flatten() {
                out.insert(format!("{}:{}", a["ip"].as_str().unwrap_or(""), p["port"]));
            }
        }
    }
    out
}

/// (ready endpoint addresses as ip:port) of the Service's EndpointSlices.
fn slice_addresses(k: &Kubectl, svc: &str) -> BTreeSet<String> {
    let selector = format!("kubernetes.io/service-name={svc}");
    let l = json_of(k, &["get", "endpointslices", "-l", &selector, "-o", "json"]);
    let mut out = BTreeSet::new();
    for s in l["items"].as_array().into_iter().flatten() {
        for e in s["endpoints"].as_array().into_iter().flatten() {
            if e["conditions"]["ready"] != true {
                continue;
            }
            for p in s["ports"].as_array().into_iter().flatten() {
                out.insert(format!(
                    "{}:{}",
                    e["addresses"][0].as_str().unwrap_or(""),
                    p["port"]
                ));
            }
        }
    }
    out
}

fn with_port(ips: &BTreeSet<String>, port: u16) -> BTreeSet<String> {
    ips.iter().map(|ip| format!("{ip}:{port}")).collect()
}

#[test]
fn endpoints_follow_a_deployment_and_the_kubernetes_service_points_at_the_api() {
    let up = Up::start(2, &[]);
    let k = up.kubectl();
    wait_for("2 Ready nodes", 90, || ready_nodes(&k) == 2, || up.log());

    // The kubernetes Service: `.1` of the fixture's range, the API behind it.
    let range = up.service_cidr();
    let first = format!("{}.1", range.trim_end_matches(".0/17"));
    wait_for(
        "the kubernetes service at the range's .1",
        30,
        || json_of(&k, &["get", "svc", "kubernetes", "-o", "json"])["spec"]["clusterIP"] == *first,
        || up.log(),
    );
    let kubeconfig = std::fs::read_to_string(up.data_dir().join("kubeconfig")).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("the kubeconfig names the server");
    let api_addr = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .to_string();
    wait_for(
        "the kubernetes Endpoints at the API address",
        30,
        || endpoints_addresses(&k, "kubernetes") == BTreeSet::from([api_addr.clone()]),
        || up.log(),
    );
    let table = k.ok(&["get", "endpoints", "kubernetes"]);
    assert!(table.contains(&api_addr), "{table}");
    // Pods verify the API by the Service's names: the certificate has them.
    for name in [
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        k.ok(&["--tls-server-name", name, "get", "svc", "kubernetes"]);
    }
    let other = k.run(&["--tls-server-name", "elsewhere.example", "get", "svc"]);
    assert!(
        !other.status.success(),
        "a name not in the certificate was accepted"
    );

    let dir = tempfile::tempdir().unwrap();
    let manifest = write(dir.path(), "echo.yaml", MANIFEST);
    k.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    wait_for(
        "2 Ready echo pods",
        120,
        || ready_pod_ips(&k).len() == 2,
        || up.log(),
    );
    let ips = ready_pod_ips(&k);
    let want = with_port(&ips, 8080);
    wait_for(
        "the Endpoints list both pods on 8080",
        60,
        || endpoints_addresses(&k, "ep-echo") == want,
        || up.log(),
    );
    wait_for(
        "the EndpointSlice lists both pods on 8080",
        60,
        || slice_addresses(&k, "ep-echo") == want,
        || up.log(),
    );
    let table = k.ok(&["get", "endpoints", "ep-echo"]);
    for addr in &want {
        assert!(table.contains(addr.as_str()), "{addr} not in {table}");
    }
    let table = k.ok(&["get", "endpointslices"]);
    assert!(table.contains("8080"), "{table}");

    k.ok(&["scale", "deployment/ep-echo", "--replicas=1"]);
    wait_for(
        "one address left in the Endpoints",
        90,
        || {
            let now = endpoints_addresses(&k, "ep-echo");
            now.len() == 1 && now.is_subset(&want)
        },
        || up.log(),
    );
    wait_for(
        "one ready endpoint left in the slices",
        90,
        || {
            let now = slice_addresses(&k, "ep-echo");
            now.len() == 1 && now.is_subset(&want)
        },
        || up.log(),
    );
}
