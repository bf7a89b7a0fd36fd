//! `keel up --agents N` as a test fixture: one process, its data dir and
//! kubeconfig, killed with every pod it started on drop; plus the small
//! kubectl-JSON readers the workload tests share.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::kubectl::Kubectl;
use super::{free_port, kill_processes_under, unmount_under, wait_for};

/// One `keel up` process and its data dir; killed (with its pods) on drop.
pub struct Up {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// Kept across restarts: the cluster's raft membership names them.
    pub ports: (u16, u16),
}

impl Up {
    pub fn start(agents: usize, extra: &[&str]) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let mut up = Up {
            child: None,
            dir,
            ports: (free_port(), free_port()),
        };
        up.spawn(agents, extra);
        up
    }

    pub fn spawn(&mut self, agents: usize, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("up.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("up")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--agents", &agents.to_string()])
            .args(["--listen-client", &format!("127.0.0.1:{}", self.ports.0)])
            .args(["--listen-peer", &format!("127.0.0.1:{}", self.ports.1)])
            .args(["--listen-api", "127.0.0.1:0"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--cluster-cidr", &self.cluster_cidr()])
            .args(["--service-cluster-ip-range", &self.service_cidr()])
            .args(["--node-ip", &self.node_ip()])
            // Tests reach no registry beyond loopback (e.g. pods naming nginx).
            .args(["--allowed-registries", "127.0.0.1,localhost"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keel up");
        self.child = Some(child);
    }

    /// A loopback pod range of this fixture's own (the lower half of
    /// 127.64-223.0.0/16, from its random client port, so it survives
    /// restarts): concurrent clusters would otherwise hand out the same pod
    /// IPs, and their pods would fight over the same addresses and ports.
    pub fn cluster_cidr(&self) -> String {
        format!("127.{}.0.0/17", self.own_octet())
    }

    /// This fixture's loopback Service range: the upper half of the same
    /// /16, for the same reason (cluster IPs are listening addresses in
    /// loopback mode).
    pub fn service_cidr(&self) -> String {
        format!("127.{}.128.0/17", self.own_octet())
    }

    /// The first agent's node IP (agent i has this plus i): in the pod
    /// range's last /24, which no test cluster reaches, so NodePorts and
    /// routers of concurrent clusters listen on addresses of their own.
    pub fn node_ip(&self) -> String {
        format!("127.{}.127.1", self.own_octet())
    }

    fn own_octet(&self) -> u16 {
        64 + self.ports.0 % 160
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("keel-data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    /// Waits for the kubeconfig `keel up` writes.
    pub fn kubectl(&self) -> Kubectl {
        let path = self.data_dir().join("kubeconfig");
        wait_for("the kubeconfig", 60, || path.exists(), || self.log());
        Kubectl::new(path)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.stop();
        kill_processes_under(self.dir.path());
        unmount_under(self.dir.path());
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

pub fn live(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
}

pub fn pods(k: &Kubectl, selector: &str) -> Vec<Value> {
    let o = k.run(&["get", "pods", "-l", selector, "-o", "json"]);
    if !o.status.success() {
        return vec![];
    }
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    v["items"].as_array().cloned().unwrap_or_default()
}

pub fn ready_nodes(k: &Kubectl) -> usize {
    let o = k.run(&["get", "nodes", "-o", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| is_ready(n))
        .count()
}

/// GET http://<ip>:<port>/<path> with a plain socket (no proxy can interfere).
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
