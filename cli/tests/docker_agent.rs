//! `keel agent --runtime docker` end to end: a pod applied with kubectl
//! runs as a container in the local Docker Engine, its logs reach
//! `kubectl logs`, and deleting the pod removes the container.
//!
//! Needs the Docker daemon (the image is built from host files, see
//! `node/tests/support/docker_image.rs`); `KEEL_SKIP_DOCKER=1` skips it.

mod util;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use keel_node::runtime::docker::LABEL_OWNER;
use serde_json::Value;
use util::kubectl::Kubectl;
use util::{wait_for, Cluster};

#[path = "../../node/tests/support/docker_image.rs"]
mod docker_image;

/// The agent process and every container it owns go when the test ends.
struct Agent {
    child: Child,
    node: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn containers(&self, all: bool) -> Vec<String> {
        let filter = format!("label={LABEL_OWNER}={}", self.node);
        let mut cmd = Command::new("docker");
        cmd.args(["ps", "-q", "--filter", &filter]);
        if all {
            cmd.arg("-a");
        }
        let out = cmd.output().expect("docker ps");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let ids = self.containers(true);
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

fn pod_phase_ready(k: &Kubectl, name: &str) -> (String, bool) {
    let o = k.run(&["get", "pod", name, "-o", "json"]);
    let p: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let ready = p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    (
        p["status"]["phase"].as_str().unwrap_or("").to_string(),
        ready,
    )
}

/// Starts `keel agent --runtime docker` against `cluster`'s first replica.
fn start_agent(cluster: &Cluster) -> Agent {
    let kc = cluster.replicas[0].data_dir.join("kubeconfig");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let node = format!("docker-{}-{nanos:x}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("agent")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["--node-name", &node, "--runtime", "docker"])
        .arg("--root-dir")
        .arg(dir.path().join("root"))
        .args([
            "--listen-logs",
            "127.0.0.1:0",
            "--heartbeat-interval-ms",
            "500",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start keel agent");
    Agent {
        child,
        node,
        log,
        _dir: dir,
    }
}

#[test]
fn a_pod_runs_logs_and_stops_in_docker() {
    if !docker_image::docker_available() {
        return;
    }
    docker_image::ensure_image();
    let cluster = Cluster::start(1, &[]);
    cluster.api_addr(0);
    let k = Kubectl::new(cluster.replicas[0].data_dir.join("kubeconfig"));
    let agent = start_agent(&cluster);
    let node = agent.node.clone();
    let logs = || format!("{}\n--- agent ---\n{}", cluster.log(0), agent.log());

    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "hello"}},
            "spec": {{"nodeName": "{node}", "terminationGracePeriodSeconds": 1,
              "containers": [{{"name": "main", "image": "{}",
                "command": ["sh", "-c", "echo hello-from-docker $POD_NAME; sleep 3600"],
                "env": [{{"name": "POD_NAME", "valueFrom": {{"fieldRef": {{"fieldPath": "metadata.name"}}}}}}]}}]}}}}"#,
        docker_image::IMAGE
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), manifest).unwrap();
    wait_for(
        "the docker node to register",
        60,
        || k.run(&["get", "node", &node]).status.success(),
        logs,
    );
    k.ok(&["apply", "-f", file.path().to_str().unwrap()]);
    wait_for(
        "the pod to run and be ready",
        60,
        || pod_phase_ready(&k, "hello") == ("Running".to_string(), true),
        logs,
    );
    assert_eq!(agent.containers(false).len(), 1, "one running container");
    wait_for(
        "kubectl logs to show the container's output",
        30,
        || {
            let o = k.run(&["logs", "hello"]);
            String::from_utf8_lossy(&o.stdout).contains("hello-from-docker hello")
        },
        logs,
    );

    k.ok(&["delete", "pod", "hello", "--timeout=60s"]);
    wait_for(
        "the container to be removed",
        30,
        || agent.containers(true).is_empty(),
        logs,
    );
}

/// No registry: the agent makes `keel/pause` itself (the keel binary and
/// its libraries, imported into the engine) and the pod runs from it.
#[test]
fn a_builtin_pause_pod_runs_in_docker_from_a_locally_made_image() {
    if !docker_image::docker_available() {
        return;
    }
    let cluster = Cluster::start(1, &[]);
    cluster.api_addr(0);
    let k = Kubectl::new(cluster.replicas[0].data_dir.join("kubeconfig"));
    let agent = start_agent(&cluster);
    let node = agent.node.clone();
    let logs = || format!("{}\n--- agent ---\n{}", cluster.log(0), agent.log());
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "paused"}},
            "spec": {{"nodeName": "{node}", "terminationGracePeriodSeconds": 1,
              "containers": [{{"name": "pause", "image": "keel/pause"}}]}}}}"#
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), manifest).unwrap();
    wait_for(
        "the docker node to register",
        60,
        || k.run(&["get", "node", &node]).status.success(),
        logs,
    );
    k.ok(&["apply", "-f", file.path().to_str().unwrap()]);
    // The first start imports the (debug: large) keel binary.
    wait_for(
        "the keel/pause pod to run and be ready",
        120,
        || pod_phase_ready(&k, "paused") == ("Running".to_string(), true),
        logs,
    );
    let ids = agent.containers(false);
    assert_eq!(ids.len(), 1, "one running container");
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.Config.Image}} {{json .Config.Entrypoint}}",
        ])
        .arg(&ids[0])
        .output()
        .expect("docker inspect");
    let inspect = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        inspect.starts_with("keel/pause:bin-") && inspect.ends_with(r#"["/keel","image","pause"]"#),
        "the container runs the locally made image: {inspect}"
    );
    k.ok(&["delete", "pod", "paused", "--timeout=60s"]);
    wait_for(
        "the container to be removed",
        30,
        || agent.containers(true).is_empty(),
        logs,
    );
}
