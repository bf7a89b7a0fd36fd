//! Workloads end to end, driven by the real kubectl: `keel up --agents 3`
//! runs a Deployment of the built-in echo image as real processes; a
//! rolling update keeps enough pods ready; logs come from the agent.

mod util;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::kubectl::Kubectl;
use util::up::{http_get, is_ready, live, pods, ready_nodes, write, Up};
use util::{processes_under, tail, wait_for};

const ECHO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 5
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: echo
        image: keel/echo:v1
        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
"#;

/// Acceptance 1: deploy, spread, serve, scale, roll out, undo, logs.
#[test]
fn a_deployment_runs_scales_rolls_out_and_rolls_back() {
    let up = Up::start(3, &[]);
    let k = up.kubectl();
    let dir = tempfile::tempdir().unwrap();
    wait_for("3 Ready nodes", 90, || ready_nodes(&k) == 3, || up.log());

    let manifest = write(dir.path(), "echo.yaml", ECHO);
    k.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let ready_count = |n: usize| {
        move |k: &Kubectl| {
            let p = pods(k, "app=echo");
            p.len() == n && p.iter().all(|p| live(p) && is_ready(p))
        }
    };
    let five = ready_count(5);
    wait_for("5 Ready echo pods", 120, || five(&k), || up.log());
    let p = pods(&k, "app=echo");
    let nodes: BTreeSet<&str> = p
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    assert_eq!(
        nodes.len(),
        3,
        "5 replicas spread over all 3 nodes: {nodes:?}"
    );
    for pod in &p {
        let ip = pod["status"]["podIP"].as_str().expect("a pod IP");
        assert!(ip.starts_with("127."), "pod IPs are loopback: {ip}");
        let name = pod["metadata"]["name"].as_str().unwrap();
        let answer = http_get(&format!("{ip}:8080"), "/hello").unwrap_or_default();
        assert!(
            answer.contains(&format!("pod={name}")) && answer.contains("path=/hello"),
            "{name} on {ip}: {answer}"
        );
    }

    k.ok(&["scale", "deployment/echo", "--replicas=8"]);
    let eight = ready_count(8);
    wait_for("8 Ready echo pods", 120, || eight(&k), || up.log());
    k.ok(&["scale", "deployment/echo", "--replicas=2"]);
    let two = ready_count(2);
    wait_for("2 echo pods", 120, || two(&k), || up.log());

    // Rolling update with the defaults (maxSurge 25% → 1, maxUnavailable
    // 25% → 0 of 2): ready pods must never drop below 2. minReadySeconds
    // (not part of the pod template, so no rollout by itself) keeps each
    // step long enough for the sampler to see the rollout on a busy machine.
    k.ok(&[
        "patch",
        "deployment/echo",
        "-p",
        r#"{"spec":{"minReadySeconds":2}}"#,
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let min_ready = Arc::new(AtomicUsize::new(usize::MAX));
    let sampler = {
        let (stop, min_ready) = (stop.clone(), min_ready.clone());
        let kc = up.data_dir().join("kubeconfig");
        std::thread::spawn(move || {
            let k = Kubectl::new(kc);
            let mut samples = 0;
            while !stop.load(Ordering::SeqCst) {
                let o = k.run(&["get", "pods", "-l", "app=echo", "-o", "json"]);
                if o.status.success() {
                    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
                    let ready = v["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|p| live(p) && is_ready(p))
                        .count();
                    min_ready.fetch_min(ready, Ordering::SeqCst);
                    samples += 1;
                }
            }
            samples
        })
    };
    k.ok(&["set", "image", "deployment/echo", "echo=keel/echo:v2"]);
    k.ok(&["rollout", "status", "deployment/echo", "--timeout=120s"]);
    stop.store(true, Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    let min = min_ready.load(Ordering::SeqCst);
    assert!(samples >= 3, "sampled the rollout {samples} times");
    assert!(min >= 2, "ready pods dropped to {min} during the rollout");
    let images = |k: &Kubectl| -> BTreeSet<String> {
        pods(k, "app=echo")
            .iter()
            .filter(|p| live(p))
            .map(|p| {
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    wait_for(
        "only v2 pods",
        60,
        || images(&k) == BTreeSet::from(["keel/echo:v2".to_string()]),
        || up.log(),
    );
    let history = k.ok(&["rollout", "history", "deployment/echo"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    k.ok(&["rollout", "undo", "deployment/echo"]);
    k.ok(&["rollout", "status", "deployment/echo", "--timeout=120s"]);
    let d = k.json(&["get", "deployment", "echo"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "keel/echo:v1"
    );
    wait_for(
        "only v1 pods",
        60,
        || images(&k) == BTreeSet::from(["keel/echo:v1".to_string()]),
        || up.log(),
    );

    // Logs: the echo server logs one line per request.
    let p = pods(&k, "app=echo");
    let pod = p.iter().find(|p| live(p) && is_ready(p)).unwrap();
    let name = pod["metadata"]["name"].as_str().unwrap();
    let ip = pod["status"]["podIP"].as_str().unwrap();
    http_get(&format!("{ip}:8080"), "/from-the-test").unwrap();
    let mut logs = String::new();
    wait_for(
        "the request in the logs",
        20,
        || {
            logs = k.ok(&["logs", name]);
            logs.contains("/from-the-test")
        },
        || up.log(),
    );
    let last = k.ok(&["logs", name, "--tail=1"]);
    assert_eq!(last.lines().count(), 1, "{last}");
    let o = k.run(&["logs", name, "-c", "nope"]);
    assert!(!o.status.success());

    // Deleting the Deployment takes its ReplicaSets and pods with it (the
    // garbage collector), and the pods' processes stop.
    k.ok(&["delete", "deployment", "echo"]);
    wait_for(
        "the ReplicaSets and pods to go",
        60,
        || {
            let rs = k.ok(&["get", "replicasets", "-l", "app=echo", "-o", "name"]);
            rs.trim().is_empty() && pods(&k, "app=echo").is_empty()
        },
        || up.log(),
    );
    assert!(
        http_get(&format!("{ip}:8080"), "/after-delete").is_none(),
        "the pod's server still answers"
    );
}

/// `keel up`'s promise: Ctrl-C stops everything (no process of the
/// cluster is left), and `keel up` again resumes the same cluster, whose
/// pods run again.
#[test]
fn ctrl_c_stops_everything_and_a_second_up_resumes() {
    let mut up = Up::start(1, &[]);
    let k = up.kubectl();
    wait_for("1 Ready node", 60, || ready_nodes(&k) == 1, || up.log());
    k.ok(&["create", "configmap", "kept", "--from-literal=a=b"]);
    k.ok(&[
        "create",
        "deployment",
        "sleepy",
        "--image=keel/pause",
        "--replicas=2",
    ]);
    let running = |k: &Kubectl| {
        pods(k, "app=sleepy")
            .iter()
            .filter(|p| live(p) && is_ready(p))
            .count()
    };
    wait_for("2 Ready pods", 60, || running(&k) == 2, || up.log());

    let mut child = up.child.take().unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "keel up ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}\n{}", tail(&up.log(), 40));
    wait_for(
        "every process of the cluster to exit",
        20,
        || processes_under(up.dir.path()).is_empty(),
        || format!("left: {:?}", processes_under(up.dir.path())),
    );

    up.spawn(1, &[]);
    wait_for(
        "the API to answer again",
        60,
        || k.run(&["get", "configmap", "kept"]).status.success(),
        || up.log(),
    );
    wait_for("2 Ready pods again", 60, || running(&k) == 2, || up.log());
}
