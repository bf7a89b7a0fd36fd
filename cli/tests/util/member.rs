//! One `keel server` process of a runtime-membership test: fixed loopback
//! ports, started with `--initial-cluster` and a cluster state (`new` or
//! `existing`), killed or left to exit on its own (a removed member stops).
//! Its log tail is printed when a test panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct Member {
    pub name: String,
    /// etcd client address (`host:port`).
    pub client: String,
    pub peer: String,
    /// The Kubernetes API's address (plain HTTP), or None: `--disable-api`.
    pub api: Option<String>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Member {
    /// A member without the Kubernetes API (the store only).
    pub fn store_only(dir: &Path, name: &str) -> Member {
        Member {
            name: name.into(),
            client: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            api: None,
            data_dir: dir.join(name),
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// A member that also serves the Kubernetes API over plain HTTP on
    /// loopback (no controllers).
    pub fn with_api(dir: &Path, name: &str) -> Member {
        let mut m = Member::store_only(dir, name);
        m.api = Some(format!("127.0.0.1:{}", free_port()));
        m
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}", self.peer)
    }

    /// Starts the server; `state` is `new` or `existing`.
    pub fn start(&mut self, initial_cluster: &str, state: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
        cmd.args(["server", "--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client", &self.client, "--listen-peer", &self.peer]);
        match &self.api {
            Some(api) => cmd.args([
                "--listen-api",
                api,
                "--insecure-http",
                "--disable-controllers",
            ]),
            None => cmd.arg("--disable-api"),
        };
        let child = cmd
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keel server");
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own; its exit status.
    pub fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let c = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {secs}s:\n{}",
                self.name,
                super::tail(&self.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ---\n{}",
                self.name,
                super::tail(&self.log(), 40)
            );
        }
    }
}

/// `--initial-cluster` naming `members`.
pub fn initial_cluster(members: &[&Member]) -> String {
    members
        .iter()
        .map(|n| format!("{}={}", n.name, n.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}
