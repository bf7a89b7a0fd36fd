//! Policies end to end with the real kubectl on `keel up`: `kubectl drain`
//! honours a PodDisruptionBudget (evictions refused with 429 are retried
//! until drain's timeout); a ResourceQuota refuses the pod too many; a
//! LimitRange refuses a container over its max.

mod util;

use std::collections::BTreeSet;
use std::process::Output;

use serde_json::Value;
use util::kubectl::Kubectl;
use util::up::{is_ready, live, pods, ready_nodes, write, Up};
use util::wait_for;

const ECHO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 3
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: keel/echo:v1
        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
"#;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ready_echo_pods(k: &Kubectl) -> Vec<Value> {
    pods(k, "app=echo")
        .into_iter()
        .filter(|p| live(p) && is_ready(p))
        .collect()
}

fn node_of(p: &Value) -> String {
    p["spec"]["nodeName"].as_str().unwrap_or("").to_string()
}

fn pdb_status(k: &Kubectl) -> Value {
    k.json(&["get", "pdb", "echo"])
}

/// Waits until the budget, observed at its generation, allows `allowed`.
fn wait_budget(k: &Kubectl, up: &Up, healthy: i64, allowed: i64) {
    wait_for(
        &format!("the budget at {healthy} healthy, {allowed} allowed"),
        60,
        || {
            let b = pdb_status(k);
            let s = &b["status"];
            s["observedGeneration"] == b["metadata"]["generation"]
                && s["currentHealthy"] == healthy
                && s["disruptionsAllowed"] == allowed
        },
        || up.log(),
    );
}

/// Acceptance 3: drain is held by minAvailable 3 (it times out, the pod
/// stays), and goes through with minAvailable 2: the pod is recreated on
/// another node and the budget shows it.
#[test]
fn drain_honours_the_disruption_budget() {
    let up = Up::start(3, &[]);
    let k = up.kubectl();
    let dir = tempfile::tempdir().unwrap();
    wait_for("3 Ready nodes", 90, || ready_nodes(&k) == 3, || up.log());
    let manifest = write(dir.path(), "echo.yaml", ECHO);
    k.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    wait_for(
        "3 Ready echo pods",
        120,
        || ready_echo_pods(&k).len() == 3,
        || up.log(),
    );
    k.ok(&[
        "create",
        "pdb",
        "echo",
        "--selector=app=echo",
        "--min-available=3",
    ]);
    wait_budget(&k, &up, 3, 0);
    let b = pdb_status(&k);
    assert_eq!(b["status"]["expectedPods"], 3);
    assert_eq!(b["status"]["desiredHealthy"], 3);

    let victim = ready_echo_pods(&k)[0].clone();
    let node = node_of(&victim);
    let victim_name = victim["metadata"]["name"].as_str().unwrap().to_string();
    let drain = [
        "drain",
        node.as_str(),
        "--ignore-daemonsets",
        "--delete-emptydir-data",
    ];
    let held = k.run(&[&drain[..], &["--timeout=10s"]].concat());
    let out = text(&held);
    assert!(!held.status.success(), "drain must time out: {out}");
    assert!(
        out.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{out}"
    );
    assert!(out.contains("will retry after 5s"), "{out}");
    let still = k.json(&["get", "pod", &victim_name]);
    assert!(live(&still) && is_ready(&still), "the pod stays: {still}");
    let n = k.json(&["get", "node", &node]);
    assert_eq!(n["spec"]["unschedulable"], true, "drain cordoned {node}");

    k.ok(&[
        "patch",
        "pdb",
        "echo",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":2}}"#,
    ]);
    wait_budget(&k, &up, 3, 1);
    let done = k.run(&[&drain[..], &["--timeout=120s"]].concat());
    assert!(done.status.success(), "drain: {}", text(&done));
    assert!(text(&done).contains("evicted"), "{}", text(&done));
    wait_for(
        "3 Ready echo pods off the drained node",
        120,
        || {
            let p = ready_echo_pods(&k);
            p.len() == 3 && p.iter().all(|p| node_of(p) != node)
        },
        || up.log(),
    );
    let nodes: BTreeSet<String> = ready_echo_pods(&k).iter().map(node_of).collect();
    assert!(!nodes.contains(&node), "{nodes:?}");
    assert!(
        pods(&k, "app=echo")
            .iter()
            .all(|p| p["metadata"]["name"] != victim_name.as_str()),
        "the evicted pod is gone"
    );
    wait_budget(&k, &up, 3, 1);
    let table = k.ok(&["get", "pdb", "echo"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert!(table.contains("ALLOWED DISRUPTIONS"), "{table}");
    assert_eq!(row.get(1..4), Some(&["2", "N/A", "1"][..]), "{table}");
}

/// Acceptance 4/5 with kubectl: a `pods=2` quota refuses the third pod,
/// `kubectl get/describe quota` show the usage; a LimitRange refuses a
/// container over its max.
#[test]
fn quota_and_limit_range_refuse_with_kubernetes_messages() {
    let up = Up::start(1, &[]);
    let k = up.kubectl();
    let dir = tempfile::tempdir().unwrap();
    wait_for("a Ready node", 90, || ready_nodes(&k) == 1, || up.log());
    k.ok(&["create", "namespace", "q"]);
    k.ok(&["-n", "q", "create", "quota", "q", "--hard=pods=2"]);
    for p in ["p1", "p2"] {
        k.ok(&["-n", "q", "run", p, "--image=keel/echo:v1"]);
    }
    let third = k.run(&["-n", "q", "run", "p3", "--image=keel/echo:v1"]);
    assert!(!third.status.success());
    assert!(
        text(&third).contains(
            "Error from server (Forbidden): pods \"p3\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        ),
        "{}",
        text(&third)
    );
    assert!(!k.run(&["-n", "q", "get", "pod", "p3"]).status.success());
    let table = k.ok(&["-n", "q", "get", "quota", "q"]);
    assert!(table.contains("pods: 2/2"), "{table}");
    let described = k.ok(&["-n", "q", "describe", "quota", "q"]);
    assert!(
        described
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["pods", "2", "2"]),
        "{described}"
    );

    // Deleting a pod frees its place (the controller recounts, admission
    // counts the namespace itself).
    k.ok(&["-n", "q", "delete", "pod", "p1", "--wait=true"]);
    wait_for(
        "p3 admitted",
        60,
        || {
            k.run(&["-n", "q", "run", "p3", "--image=keel/echo:v1"])
                .status
                .success()
        },
        || up.log(),
    );

    let lr = write(
        dir.path(),
        "lr.yaml",
        r#"
apiVersion: v1
kind: LimitRange
metadata: {name: lr, namespace: q}
spec:
  limits:
  - type: Container
    max: {cpu: 500m}
"#,
    );
    k.ok(&["apply", "-f", lr.to_str().unwrap()]);
    k.ok(&["-n", "q", "delete", "quota", "q"]);
    let big = write(
        dir.path(),
        "big.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: big, namespace: q}
spec:
  containers:
  - name: c
    image: keel/echo:v1
    resources:
      limits: {cpu: "1"}
"#,
    );
    let refused = k.run(&["apply", "-f", big.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 500m, but limit is 1"
        ),
        "{}",
        text(&refused)
    );
}
