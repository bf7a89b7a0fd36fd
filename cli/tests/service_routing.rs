//! A Deployment behind an ordinary selector Service, end to end on
//! `keel up --agents 2` with the real kubectl: the EndpointSlice
//! controller lists the pods and the agents' proxy serves the cluster IP.
//! Scaling down takes an endpoint out of rotation before its pod dies, so
//! a client that keeps asking sees no failure. `kubernetes.default`'s
//! cluster IP reaches the API server.

mod util;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::time::Duration;

use util::up::{http_get, is_ready, live, pods, ready_nodes, write, Up};
use util::wait_for;

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: echo
        image: keel/echo
        env: [{name: PORT, value: "8080"}]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /ready, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
"#;

/// The `pod=<name>` an echo answer names.
fn answered_by(addr: &str) -> Option<String> {
    let answer = http_get(addr, "/")?;
    let body = answer.lines().last()?;
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("pod="))
        .map(str::to_string)
}

#[test]
fn a_selector_service_routes_spreads_and_drains_on_scale_down() {
    let up = Up::start(2, &[]);
    let k = up.kubectl();
    wait_for("2 Ready nodes", 90, || ready_nodes(&k) == 2, || up.log());
    let manifest = write(up.dir.path(), "app.yaml", APP);
    k.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let ready = || -> BTreeSet<String> {
        pods(&k, "app=web")
            .into_iter()
            .filter(|p| live(p) && is_ready(p))
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    };
    wait_for("2 Ready pods", 90, || ready().len() == 2, || up.log());
    let names = ready();
    let svc = k.json(&["get", "service", "web"]);
    let frontend = format!("{}:80", svc["spec"]["clusterIP"].as_str().unwrap());

    // The controller's Endpoints list both pods on the named port.
    wait_for(
        "both pods in the Endpoints",
        60,
        || {
            let ep = k.json(&["get", "endpoints", "web"]);
            let addrs = ep["subsets"][0]["addresses"].as_array().map_or(0, Vec::len);
            addrs == 2 && ep["subsets"][0]["ports"][0]["port"] == 8080
        },
        || up.log(),
    );
    // Every answer on the cluster IP comes from the pods, and both answer.
    let mut seen = BTreeSet::new();
    wait_for(
        "both pods to answer on the cluster IP",
        60,
        || {
            if let Some(p) = answered_by(&frontend) {
                assert!(names.contains(&p), "{p} is not a web pod");
                seen.insert(p);
            }
            seen == names
        },
        || up.log(),
    );

    // Scale to 1 while asking: the leaving pod is taken out of the slice
    // (terminating, not ready) before it stops, so no request fails.
    k.ok(&["scale", "deployment", "web", "--replicas", "1"]);
    let mut failures = 0;
    let mut last = BTreeSet::new();
    for _ in 0..200 {
        match answered_by(&frontend) {
            Some(p) => {
                last.insert(p);
            }
            None => failures += 1,
        }
        if ready().len() == 1 && pods(&k, "app=web").len() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(failures, 0, "requests failed during the scale-down");
    wait_for(
        "one address in the Endpoints",
        60,
        || {
            let ep = k.json(&["get", "endpoints", "web"]);
            ep["subsets"][0]["addresses"].as_array().map_or(0, Vec::len) == 1
        },
        || up.log(),
    );

    // kubernetes.default: its cluster IP (.1 of the range) reaches the API.
    let api = k.json(&["get", "service", "kubernetes"]);
    let api_frontend = format!("{}:443", api["spec"]["clusterIP"].as_str().unwrap());
    wait_for(
        "the kubernetes Service to accept connections",
        60,
        || TcpStream::connect(&api_frontend).is_ok(),
        || up.log(),
    );
}
