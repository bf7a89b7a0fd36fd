//! Failures with real processes: a `keel agent` SIGKILLed (its node goes
//! NotReady and its pods move), the replica running the controllers
//! SIGKILLed (another takes over), and pods that crash or never get ready.

mod util;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use util::kubectl::Kubectl;
use util::{kill_processes_under, wait_for, Cluster};

/// `keel agent` processes; they and their containers are killed on drop.
struct Agents {
    children: Vec<Option<Child>>,
    dir: tempfile::TempDir,
}

impl Agents {
    fn start(servers: &[String], kubeconfig: &Path, names: &[&str]) -> Agents {
        let dir = tempfile::tempdir().unwrap();
        let mut children = vec![];
        for name in names {
            let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
            cmd.arg("agent")
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["--node-name", name])
                .arg("--root-dir")
                .arg(dir.path().join(name))
                .args(["--listen-logs", "127.0.0.1:0"])
                .args(["--heartbeat-interval-ms", "500"])
                .args(["--restart-backoff-base-ms", "1000"]);
            for s in servers {
                cmd.args(["--server", s]);
            }
            let child = cmd
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start keel agent");
            children.push(Some(child));
        }
        Agents { children, dir }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                out.push_str(&format!("--- {:?}\n", e.file_name()));
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        kill_processes_under(self.dir.path());
    }
}

fn kubeconfig(c: &Cluster, i: usize) -> PathBuf {
    c.api_addr(i);
    c.replicas[i].data_dir.join("kubeconfig")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn condition<'a>(obj: &'a Value, t: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
}

fn is_ready(obj: &Value) -> bool {
    condition(obj, "Ready").is_some_and(|c| c["status"] == "True")
}

fn list(k: &Kubectl, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["get"];
    a.extend(args);
    a.extend(["-o", "json"]);
    let o = k.run(&a);
    if !o.status.success() {
        return vec![];
    }
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    v["items"].as_array().cloned().unwrap_or_default()
}

fn ready_pods(k: &Kubectl, selector: &str) -> Vec<Value> {
    list(k, &["pods", "-l", selector])
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && is_ready(p))
        .collect()
}

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 2
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}}
      containers:
      - {{name: main, image: "keel/pause"}}
"#
    )
}

/// Acceptance 2 and 4: an agent dies → NotReady, pods recreated on the
/// other node; a crash-looping container backs off; a failing readiness
/// probe keeps its pod out of Ready.
#[test]
fn a_dead_agents_pods_move_and_bad_pods_are_reported() {
    let cluster = Cluster::start(1, &["--node-monitor-grace-period-s", "3"]);
    let kc = kubeconfig(&cluster, 0);
    let k = Kubectl::new(kc.clone());
    let mut agents = Agents::start(&[], &kc, &["node-a", "node-b"]);
    let logs = || format!("{}\n{}", cluster.log(0), agents.logs());
    wait_for(
        "2 Ready nodes",
        60,
        || list(&k, &["nodes"]).iter().filter(|n| is_ready(n)).count() == 2,
        logs,
    );

    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "d.yaml", &deployment("sleepy", 4));
    k.ok(&["apply", "-f", m.to_str().unwrap()]);
    wait_for(
        "4 Ready pods",
        90,
        || ready_pods(&k, "app=sleepy").len() == 4,
        logs,
    );
    let on = |node: &str| {
        ready_pods(&k, "app=sleepy")
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .count()
    };
    assert!(
        on("node-b") > 0,
        "the scheduler spread pods onto node-b too"
    );

    // Acceptance 4, on the live cluster.
    let bad = write(
        dir.path(),
        "bad.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
  - {name: main, image: keel/host, command: [sh, -c, "echo boom; exit 1"]}
---
apiVersion: v1
kind: Pod
metadata: {name: never-ready}
spec:
  containers:
  - name: main
    image: keel/echo
    readinessProbe:
      httpGet: {path: /, port: 9}
      periodSeconds: 1
"#,
    );
    k.ok(&["apply", "-f", bad.to_str().unwrap()]);
    let crasher = || k.json(&["get", "pod", "crasher"]);
    wait_for(
        "CrashLoopBackOff",
        60,
        || {
            let p = crasher();
            let cs = &p["status"]["containerStatuses"][0];
            cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && cs["restartCount"].as_i64().unwrap_or(0) >= 2
        },
        logs,
    );
    let shown = k.ok(&["get", "pod", "crasher"]);
    assert!(
        shown.contains("CrashLoopBackOff") || shown.contains("Error"),
        "{shown}"
    );
    let ev = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=crasher",
    ]);
    assert!(ev.contains("BackOff"), "{ev}");
    let nr = k.json(&["get", "pod", "never-ready"]);
    assert_eq!(nr["status"]["phase"], "Running", "{nr}");
    assert!(
        !is_ready(&nr),
        "a failing readiness probe keeps the pod out of Ready: {nr}"
    );
    k.ok(&["delete", "pod", "crasher", "never-ready", "--wait=false"]);

    // Acceptance 2.
    agents.kill(1);
    let logs = || format!("{}\n{}", cluster.log(0), agents.logs());
    wait_for(
        "node-b NotReady with the unreachable taint",
        60,
        || {
            let n = k.json(&["get", "node", "node-b"]);
            let tainted = n["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["key"] == "node.kubernetes.io/unreachable");
            !is_ready(&n) && tainted
        },
        logs,
    );
    wait_for("4 Ready pods on node-a", 90, || on("node-a") == 4, logs);
    // The dead node's pods cannot be confirmed gone by their agent: the
    // controller removes them (grace 0) once they are terminating.
    let nodes_used = || -> BTreeSet<String> {
        list(&k, &["pods", "-l", "app=sleepy"])
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
            .collect()
    };
    wait_for(
        "no pods left on node-b",
        30,
        || nodes_used() == BTreeSet::from(["node-a".to_string()]),
        logs,
    );
}

/// Acceptance 3: SIGKILL the replica holding the controller-manager
/// lease; another takes over and a later scale-up completes.
#[test]
fn controllers_fail_over_to_another_replica() {
    let cluster = Cluster::start(
        3,
        &[
            "--leader-elect-lease-duration-s",
            "3",
            "--leader-elect-retry-period-ms",
            "500",
        ],
    );
    let kcs: Vec<PathBuf> = (0..3).map(|i| kubeconfig(&cluster, i)).collect();
    let servers: Vec<String> = (0..3)
        .map(|i| format!("https://{}", cluster.api_addr(i)))
        .collect();
    let agents = Agents::start(&servers, &kcs[0], &["node-x"]);
    let k0 = Kubectl::new(kcs[0].clone());
    let logs = || {
        let mut s = (0..3)
            .map(|i| cluster.log(i))
            .collect::<Vec<_>>()
            .join("\n");
        s.push_str(&agents.logs());
        s
    };
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "d.yaml", &deployment("web", 2));
    wait_for(
        "a Ready node",
        60,
        || list(&k0, &["nodes"]).iter().any(is_ready),
        logs,
    );
    k0.ok(&["apply", "-f", m.to_str().unwrap()]);
    wait_for(
        "2 Ready pods",
        90,
        || ready_pods(&k0, "app=web").len() == 2,
        logs,
    );

    let holder = k0.json(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "keel-controller-manager",
    ])["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    let leader: usize = holder
        .trim_start_matches('r')
        .parse()
        .expect("holder is a replica name");
    let mut cluster = cluster;
    cluster.kill(leader);
    let other = (leader + 1) % 3;
    let k = Kubectl::new(kcs[other].clone());
    let logs = || {
        let mut s = (0..3)
            .map(|i| cluster.log(i))
            .collect::<Vec<_>>()
            .join("\n");
        s.push_str(&agents.logs());
        s
    };
    wait_for(
        "scale accepted",
        30,
        || {
            k.run(&["scale", "deployment/web", "--replicas=4"])
                .status
                .success()
        },
        logs,
    );
    wait_for(
        "4 Ready pods after failover",
        90,
        || ready_pods(&k, "app=web").len() == 4,
        logs,
    );
    let new_holder = k.json(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "keel-controller-manager",
    ])["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_holder, holder, "another replica holds the lease");
}
