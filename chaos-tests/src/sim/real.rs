//! Real-process mode: the same workload, watchers and checkers against
//! `keel server` processes on loopback. Faults: SIGKILL (then a restart on
//! the same data dir), SIGSTOP/SIGCONT (a pause: the replica's clock,
//! timers and sockets all freeze), and cutting a replica's peer proxy. This is
//! how a user Jepsen-tests real binaries, with real fsync and real TCP.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::client::{execute, reset_clock, run_workload_client, Target, Workload};
use super::proxy::Proxy;
use super::run::{evaluate, run_finale, watcher_specs, Evaluate, Finale, SeedResult};
use super::watcher::{run_watcher, Shared};
use crate::history::Call;
use crate::recorder::Recorder;
use keel_store::Transport;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessFault {
    /// SIGKILL one replica, restart it after a while.
    Kill,
    /// SIGSTOP one replica, SIGCONT it after a while.
    Pause,
    /// Cut every connection to one replica through its peer proxy (a
    /// one-way partition: it can still dial out), then heal.
    Cut,
}

impl fmt::Display for ProcessFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProcessFault::Kill => "kill",
            ProcessFault::Pause => "pause",
            ProcessFault::Cut => "cut",
        })
    }
}

impl FromStr for ProcessFault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kill" => Ok(ProcessFault::Kill),
            "pause" => Ok(ProcessFault::Pause),
            "cut" => Ok(ProcessFault::Cut),
            _ => Err(format!(
                "unknown process fault {s:?} (known: kill, pause, cut)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RealConfig {
    pub seed: u64,
    pub replicas: usize,
    pub workload: Workload,
    pub faults: Vec<ProcessFault>,
    /// The `keel` binary to run as replicas.
    pub keel_bin: PathBuf,
    pub liveness_bound: Duration,
}

struct Replica {
    name: String,
    client: String,
    peer: String,
    dir: PathBuf,
    child: Option<Child>,
}

/// The replicas; every process is killed on drop.
struct Processes {
    bin: PathBuf,
    initial: String,
    replicas: Vec<Replica>,
    /// One per replica, in front of its peer port.
    proxies: Vec<Proxy>,
    logs: PathBuf,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Processes {
    async fn start(bin: &Path, n: usize, root: &Path) -> std::io::Result<Processes> {
        let mut replicas = Vec::new();
        let mut proxies = Vec::new();
        for i in 0..n {
            let peer = format!("127.0.0.1:{}", free_port()?);
            proxies.push(Proxy::start(peer.parse().expect("loopback address")).await?);
            replicas.push(Replica {
                name: format!("r{i}"),
                client: format!("127.0.0.1:{}", free_port()?),
                peer,
                dir: root.join(format!("r{i}")),
                child: None,
            });
        }
        // Peers reach each replica through its proxy.
        let initial = replicas
            .iter()
            .zip(&proxies)
            .map(|(r, p)| format!("{}=http://{}", r.name, p.addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut p = Processes {
            bin: bin.to_path_buf(),
            initial,
            replicas,
            proxies,
            logs: root.to_path_buf(),
        };
        for i in 0..n {
            p.spawn(i)?;
        }
        Ok(p)
    }

    fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let r = &self.replicas[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{}.log", r.name)))?;
        let child = Command::new(&self.bin)
            .args(["server", "--name", &r.name])
            .arg("--data-dir")
            .arg(&r.dir)
            .args(["--listen-client", &r.client, "--listen-peer", &r.peer])
            .args(["--listen-api", "127.0.0.1:0"])
            .args(["--initial-cluster", &self.initial])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--snapshot-count", "500", "--request-timeout-ms", "2000"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.replicas[i].child = Some(child);
        Ok(())
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, i: usize, sig: &str) {
        if let Some(c) = &self.replicas[i].child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    fn target(&self) -> Target {
        Target {
            addrs: self.replicas.iter().map(|r| r.client.clone()).collect(),
            transport: Transport::Tcp,
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for i in 0..self.replicas.len() {
            self.signal(i, "-CONT");
            self.kill(i);
        }
    }
}

/// A run that could not start: no history, just the error.
fn setup_failed(cfg: &RealConfig, error: String) -> SeedResult {
    evaluate(Evaluate {
        seed: cfg.seed,
        faults: vec![],
        history: Default::default(),
        watchers: vec![],
        finale: Finale::default(),
        liveness_bound: cfg.liveness_bound,
        error: Some(error),
    })
}

/// Runs one seed against real processes.
pub fn run_real(cfg: &RealConfig) -> SeedResult {
    reset_clock();
    let fail = |error: String| setup_failed(cfg, error);
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return fail(format!("temp dir: {e}")),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        match Processes::start(&cfg.keel_bin, cfg.replicas, dir.path()).await {
            Ok(procs) => drive(cfg, procs).await,
            Err(e) => fail(format!("starting {}: {e}", cfg.keel_bin.display())),
        }
    })
}

async fn drive(cfg: &RealConfig, mut procs: Processes) -> SeedResult {
    let target = procs.target();
    if let Err(e) = wait_ready(&target).await {
        return setup_failed(cfg, e);
    }
    let rec = Rc::new(RefCell::new(Recorder::new()));
    let shared = Rc::new(Shared::default());
    let finished = Rc::new(Cell::new(0usize));
    let mut watcher_logs = Vec::new();
    let mut tasks = Vec::new();
    for (i, spec) in watcher_specs().into_iter().enumerate() {
        let log = spec.new_log();
        watcher_logs.push(log.clone());
        tasks.push(tokio::task::spawn_local(run_watcher(
            spec,
            i,
            target.clone(),
            shared.clone(),
            log,
        )));
    }
    for c in 0..cfg.workload.clients {
        let (rec, shared, finished, target, w) = (
            rec.clone(),
            shared.clone(),
            finished.clone(),
            target.clone(),
            cfg.workload.clone(),
        );
        let seed = cfg.seed;
        tasks.push(tokio::task::spawn_local(async move {
            let r = run_workload_client(c as u64, seed, target, w, rec, shared).await;
            finished.set(finished.get() + 1);
            r
        }));
    }
    let faults = nemesis(cfg, &mut procs, &finished).await;
    // Heal: every replica running, resumed and reachable.
    for i in 0..cfg.replicas {
        procs.proxies[i].heal();
        procs.signal(i, "-CONT");
        if procs.replicas[i].child.is_none() {
            let _ = procs.spawn(i);
        }
    }
    shared.healed.set(true);
    let finale = Rc::new(RefCell::new(Finale::default()));
    run_finale(target, cfg.workload.keys, cfg.liveness_bound * 2, &finale).await;
    for t in tasks {
        let _ = t.await;
    }
    let history = std::mem::take(&mut *rec.borrow_mut()).finish();
    let watchers = watcher_logs.iter().map(|l| l.borrow().clone()).collect();
    let finale = finale.take();
    evaluate(Evaluate {
        seed: cfg.seed,
        faults,
        history,
        watchers,
        finale,
        liveness_bound: cfg.liveness_bound,
        error: None,
    })
}

async fn wait_ready(target: &Target) -> Result<(), String> {
    let mut chans = super::client::Channels::new(target.clone());
    for i in 0..target.replicas() {
        let mut ok = false;
        for _ in 0..300 {
            let call = Call::Get {
                key: "__ready".into(),
                linearizable: true,
            };
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(1), execute(&mut chans.kv(i), &call)).await
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ok {
            return Err(format!(
                "replica r{i} ({}) never became ready",
                target.addrs[i]
            ));
        }
    }
    Ok(())
}

/// Faults one replica at a time until the workload finishes.
async fn nemesis(cfg: &RealConfig, procs: &mut Processes, finished: &Cell<usize>) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x7265_616c);
    let mut done = Vec::new();
    let all_done = || finished.get() == cfg.workload.clients;
    while !all_done() {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1200))).await;
        if all_done() || cfg.faults.is_empty() {
            continue;
        }
        let fault = cfg.faults[rng.gen_range(0..cfg.faults.len())];
        let victim = rng.gen_range(0..cfg.replicas);
        let hold = Duration::from_millis(rng.gen_range(300..2000));
        match fault {
            ProcessFault::Kill => procs.kill(victim),
            ProcessFault::Pause => procs.signal(victim, "-STOP"),
            ProcessFault::Cut => procs.proxies[victim].cut(),
        }
        done.push(format!("{fault} r{victim} {}ms", hold.as_millis()));
        tokio::time::sleep(hold).await;
        match fault {
            ProcessFault::Kill => {
                let _ = procs.spawn(victim);
            }
            ProcessFault::Pause => procs.signal(victim, "-CONT"),
            ProcessFault::Cut => procs.proxies[victim].heal(),
        }
    }
    done
}
