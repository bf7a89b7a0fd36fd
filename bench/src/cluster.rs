//! Launching and tearing down local 3-replica clusters (etcd or keel).
//!
//! Both systems run as real child processes on loopback ports picked by the
//! kernel, each member in its own data dir under one temp dir, so the
//! benchmark measures the same thing an operator would deploy (fsync and
//! all) and never touches anything outside 127.0.0.1 or the temp dir.
//!
//! A [`Cluster`] owns its children: dropping it (normal return, `?`, a
//! panic unwinding through the caller, or Ctrl-C cancelling the future that
//! holds it) kills and reaps every member, so no replica outlives the run.

use std::fmt;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::PutRequest;
use tempfile::TempDir;
use tonic::transport::Endpoint;

/// Which server implementation a cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Etcd,
    Keel,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Etcd => "etcd",
            System::Keel => "keel",
        })
    }
}

/// One replica process and where to find its output.
struct Member {
    name: String,
    client_addr: SocketAddr,
    /// keel only: where the Kubernetes API is served.
    api_addr: Option<SocketAddr>,
    data_dir: PathBuf,
    child: Child,
    log: PathBuf,
    /// How it was started, to restart it on the same data dir.
    argv: Vec<std::ffi::OsString>,
}

/// A running cluster; killed on drop.
pub struct Cluster {
    system: System,
    members: Vec<Member>,
    /// Declared last so it is removed only after `Drop::drop` has reaped
    /// the children that write into it.
    dir: TempDir,
}

impl Cluster {
    /// Starts `size` replicas of `system` from `bin`, bootstrapped as one
    /// cluster. Returns as soon as the processes are spawned; call
    /// [`Cluster::wait_ready`] before sending load.
    pub fn start(system: System, bin: &Path, size: usize) -> Result<Self> {
        Self::start_with(system, bin, size, &[])
    }

    /// [`Cluster::start`] with extra command-line flags for every member.
    pub fn start_with(system: System, bin: &Path, size: usize, extra: &[&str]) -> Result<Self> {
        if !bin.is_file() {
            bail!("{system} binary not found at {}", bin.display());
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("keel-bench-{system}-"))
            .tempdir()
            .context("creating temp dir")?;
        // Reserve every port up front, holding all listeners at once so the
        // kernel hands out distinct ones; they are released just before the
        // children bind them (a small race we accept on a quiet machine).
        let ports = free_ports(size * 3)?;
        let (client_ports, rest) = ports.split_at(size);
        let (peer_ports, api_ports) = rest.split_at(size);
        let prefix = match system {
            System::Etcd => "e",
            System::Keel => "n",
        };
        let names: Vec<String> = (1..=size).map(|i| format!("{prefix}{i}")).collect();
        let initial_cluster = names
            .iter()
            .zip(peer_ports)
            .map(|(n, p)| format!("{n}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        // Unique per run so a stray member of an earlier run can never join.
        let token = format!("keel-bench-{}-{}", std::process::id(), peer_ports[0]);

        let mut cluster = Cluster {
            system,
            members: Vec::with_capacity(size),
            dir,
        };
        for (i, name) in names.iter().enumerate() {
            let client = format!("127.0.0.1:{}", client_ports[i]);
            let peer = format!("127.0.0.1:{}", peer_ports[i]);
            let data_dir = cluster.dir.path().join(name);
            let api = format!("127.0.0.1:{}", api_ports[i]);
            let mut cmd = Command::new(bin);
            match system {
                System::Etcd => {
                    let client_url = format!("http://{client}");
                    let peer_url = format!("http://{peer}");
                    cmd.arg("--name")
                        .arg(name)
                        .arg("--data-dir")
                        .arg(&data_dir)
                        .args(["--listen-client-urls", &client_url])
                        .args(["--advertise-client-urls", &client_url])
                        .args(["--listen-peer-urls", &peer_url])
                        .args(["--initial-advertise-peer-urls", &peer_url])
                        .args(["--initial-cluster", &initial_cluster])
                        .args(["--initial-cluster-state", "new"])
                        .args(["--initial-cluster-token", &token]);
                }
                System::Keel => {
                    cmd.args(["server", "--name", name])
                        .arg("--data-dir")
                        .arg(&data_dir)
                        .args(["--listen-client", &client])
                        .args(["--listen-peer", &peer])
                        .args(["--listen-api", &api])
                        .args(["--initial-cluster", &initial_cluster]);
                }
            }
            cmd.args(extra);
            let argv: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
            let log = cluster.dir.path().join(format!("{name}.log"));
            let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let err = out.try_clone()?;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err));
            // On error, `cluster` is dropped here, killing members started so far.
            let child = cmd
                .spawn()
                .with_context(|| format!("spawning {} for {name}", bin.display()))?;
            cluster.members.push(Member {
                name: name.clone(),
                client_addr: client.parse()?,
                api_addr: (system == System::Keel).then(|| api.parse()).transpose()?,
                data_dir,
                child,
                log,
                argv,
            });
        }
        Ok(cluster)
    }

    /// Client URLs, one per member, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.client_addr))
            .collect()
    }

    /// keel only: each member's API address and the kubeconfig it writes
    /// into its data dir once it serves, in member order.
    pub fn api_endpoints(&self) -> Vec<(SocketAddr, PathBuf)> {
        self.members
            .iter()
            .filter_map(|m| Some((m.api_addr?, m.data_dir.join("kubeconfig"))))
            .collect()
    }

    /// Process ids of the members, in member order (for profiling).
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.child.id()).collect()
    }

    /// Waits until every member accepts a put. A put (not a health or
    /// status call) is the readiness test because it proves a leader is
    /// elected and that this member can reach it, which is exactly what the
    /// workloads need; etcd's own health endpoint is not part of keel's API.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let system = self.system;
        for i in 0..self.members.len() {
            let url = format!("http://{}", self.members[i].client_addr);
            let mut last_err = String::from("not tried");
            loop {
                self.check_alive()?;
                if Instant::now() >= deadline {
                    let m = &self.members[i];
                    bail!(
                        "{system} member {} ({url}) not ready after {timeout:?}: {last_err}\n--- {} ---\n{}",
                        m.name,
                        m.log.display(),
                        log_tail(&m.log, 30)
                    );
                }
                match probe_put(&url).await {
                    Ok(()) => break,
                    Err(e) => last_err = format!("{e:#}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// SIGKILLs member `i` (no chance to flush or hand anything over).
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        m.child.kill()?;
        m.child.wait()?;
        Ok(())
    }

    /// Starts member `i` again on its data dir, with the same flags.
    pub fn restart(&mut self, i: usize, bin: &Path) -> Result<()> {
        let m = &mut self.members[i];
        let out = std::fs::OpenOptions::new().append(true).open(&m.log)?;
        let err = out.try_clone()?;
        m.child = Command::new(bin)
            .args(&m.argv)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("restarting {}", m.name))?;
        Ok(())
    }

    /// Fails with the member's log tail if any member has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for m in &mut self.members {
            if let Some(status) = m.child.try_wait()? {
                bail!(
                    "{} member {} exited early ({status})\n--- {} ---\n{}",
                    self.system,
                    m.name,
                    m.log.display(),
                    log_tail(&m.log, 30)
                );
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGKILL, not a graceful stop: the data is throwaway and a hung
        // member must not be able to block the benchmark's exit.
        for m in &mut self.members {
            let _ = m.child.kill();
        }
        for m in &mut self.members {
            let _ = m.child.wait();
        }
    }
}

/// One put with a short deadline on a fresh connection.
async fn probe_put(url: &str) -> Result<()> {
    let attempt = async {
        let channel = Endpoint::from_shared(url.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await?;
        KvClient::new(channel)
            .put(PutRequest {
                key: b"keel-bench/ready".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            })
            .await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .context("put timed out")?
}

/// `n` distinct free TCP ports on 127.0.0.1.
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("reserving loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read log: {e})"),
    }
}
