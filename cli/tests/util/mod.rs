//! Test harness: real `keel server` processes on loopback ports, killed
//! with SIGKILL, restarted on the same data dir.
#![allow(dead_code)]

pub mod agent_port;
pub mod kubectl;
pub mod member;
pub mod netns;
pub mod ports;
pub mod up;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_proto::etcdserverpb::{
    kv_client::KvClient, maintenance_client::MaintenanceClient, PutRequest, RangeRequest,
    StatusRequest,
};
use tonic::transport::Channel;

/// A port on 127.0.0.1 reserved for this test process (see [`ports`]).
pub fn free_port() -> u16 {
    ports::reserve("127.0.0.1")
}

pub struct Replica {
    pub name: String,
    pub client_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
}

/// A cluster of keel processes; all are killed on drop.
pub struct Cluster {
    pub replicas: Vec<Replica>,
    pub initial_cluster: String,
    pub extra_args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(n: usize, extra_args: &[&str]) -> Cluster {
        let mut c = Cluster::prepare(n, extra_args);
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    /// Like [`Cluster::start`] but starts nothing, for tests that write the
    /// data dirs first (restores).
    pub fn prepare(n: usize, extra_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let replicas: Vec<Replica> = (0..n)
            .map(|i| Replica {
                name: format!("r{i}"),
                client_addr: format!("127.0.0.1:{}", free_port()),
                peer_addr: format!("127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("r{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = replicas
            .iter()
            .map(|r| format!("{}=http://{}", r.name, r.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            replicas,
            initial_cluster,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            _dir: dir,
        }
    }

    /// The temp dir holding the data dirs and logs.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn spawn(&mut self, i: usize) {
        let r = &self.replicas[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self._dir.path().join(format!("{}.log", r.name)))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["server", "--name", &r.name])
            .arg("--data-dir")
            .arg(&r.data_dir)
            .args([
                "--listen-client",
                &r.client_addr,
                "--listen-peer",
                &r.peer_addr,
                // Port 0: the bound address is in the kubeconfig the replica
                // writes (a port picked here could be taken before the bind).
                "--listen-api",
                "127.0.0.1:0",
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keel server");
        self.replicas[i].child = Some(child);
    }

    /// SIGKILL: no chance to flush anything not already durable.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The Kubernetes API address replica `i` serves, from the kubeconfig
    /// it writes once it serves (waits up to 60 s for it).
    pub fn api_addr(&self, i: usize) -> String {
        let path = self.replicas[i].data_dir.join("kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let server = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("server: https://"));
            if let Some(addr) = server {
                return addr.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no kubeconfig from r{i}:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}", self.replicas[i].client_addr)
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self._dir
                .path()
                .join(format!("{}.log", self.replicas[i].name)),
        )
        .unwrap_or_default()
    }

    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(channel(&self.endpoint(i)).await)
    }

    /// Index of the replica that reports itself leader, waiting for one.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for (i, r) in self.replicas.iter().enumerate() {
                if r.child.is_none() {
                    continue;
                }
                let mut m = MaintenanceClient::new(channel(&self.endpoint(i)).await);
                if let Ok(Ok(s)) =
                    tokio::time::timeout(Duration::from_secs(1), m.status(StatusRequest {})).await
                {
                    let s = s.into_inner();
                    if s.leader != 0 && s.leader == s.header.unwrap().member_id {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Puts through replica `i`, retrying errors for up to 30 s (for use
    /// while the cluster elects). Only for idempotent test writes.
    pub async fn put_retry(&self, i: usize, key: &str, value: &str) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut kv = self.kv(i).await;
            let req = PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            };
            match tokio::time::timeout(Duration::from_secs(6), kv.put(req)).await {
                Ok(Ok(r)) => return r.into_inner().header.unwrap().revision,
                other => assert!(
                    Instant::now() < deadline,
                    "put {key} via r{i} kept failing: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_ready(&self) {
        for i in 0..self.replicas.len() {
            if self.replicas[i].child.is_some() {
                self.put_retry(i, "__ready", "1").await;
            }
        }
    }

    /// All live keys with a serializable (local) read of replica `i`.
    pub async fn local_dump(
        &self,
        i: usize,
    ) -> Option<(i64, Vec<(Vec<u8>, Vec<u8>, i64, i64, i64)>)> {
        let mut kv = self.kv(i).await;
        let r = kv
            .range(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                serializable: true,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        let kvs = r
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    kv.key,
                    kv.value,
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                )
            })
            .collect();
        Some((r.header?.revision, kvs))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.replicas.len() {
            self.kill(i);
        }
    }
}

/// A lazily connecting channel that fails fast when the replica is down.
pub async fn channel(endpoint: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy()
}

/// Container supervisors outlive a killed agent by design (the next agent
/// re-adopts them), and a container's main process runs in the
/// supervisor's session without the dir in its command line: tests kill
/// every process started under their dir and every process in those
/// processes' sessions.
/// Processes whose command line mentions `dir` (supervisors, agents,
/// servers started on it).
#[allow(dead_code)]
pub fn processes_under(dir: &std::path::Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().to_string();
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
                .filter(|pid| *pid != me)
                .filter(|pid| {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    String::from_utf8_lossy(&cmdline).contains(&needle)
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn kill_processes_under(dir: &std::path::Path) {
    let sid = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split_whitespace().nth(3)?.parse().ok()
    };
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut sessions = std::collections::HashSet::new();
    let mut victims = processes_under(dir);
    for &pid in &victims {
        if let Some(s) = sid(pid).filter(|s| *s > 1 && *s != std::process::id() as i32) {
            sessions.insert(s);
        }
    }
    for &pid in &pids {
        if sid(pid).is_some_and(|s| sessions.contains(&s)) {
            victims.push(pid);
        }
    }
    let me = std::process::id() as i32;
    for pid in victims.into_iter().filter(|p| *p != me) {
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Polls `ok` every 250 ms; after `secs` fails with the last 80 lines of `log`.
#[allow(dead_code)]
pub fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}\n--- log tail ---\n{}",
            tail(&log(), 80)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The last `n` lines of `s`.
#[allow(dead_code)]
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Detaches every mount below `dir`, deepest first: the isolating runtime
/// pins each pod's IPC/UTS namespaces with bind mounts under its state dir,
/// and an agent killed with SIGKILL (as test teardown does) never releases
/// them, which would leave the temp dir undeletable.
pub fn unmount_under(dir: &std::path::Path) {
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = std::process::Command::new("umount")
            .args(["-l", &p])
            .status();
    }
}
