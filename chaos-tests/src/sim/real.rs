//! Real-process mode: the same workload, watchers and checkers against
//! `keel server` processes on loopback. Faults: SIGKILL (then a restart on
//! the same data dir), SIGSTOP/SIGCONT (a pause: the replica's clock,
//! timers and sockets all freeze), and partitions made by cutting ordered
//! links between replicas at their peer proxies: the simulation's shapes
//! (one replica isolated both ways, the leader against the rest, random
//! halves, a bridge) and a one-way cut. This is how a user Jepsen-tests real
//! binaries, with real fsync and real TCP.
//!
//! Every replica gets the same `--initial-cluster` (the proxies' addresses):
//! a replica dials the peer address recorded in the replicated raft
//! membership, and the cluster id hashes that list, so per-replica maps
//! would neither route per pair nor form one cluster. The proxies instead
//! tell dialers apart by process (see `proxy.rs`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

use keel_proto::etcdserverpb::{maintenance_client::MaintenanceClient, StatusRequest};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::client::{execute, now, reset_clock, run_workload_client, Target, Workload};
use super::proxy::{Links, Proxy};
use super::run::{evaluate, run_finale, watcher_specs, Evaluate, FaultSpan, Finale, SeedResult};
use super::watcher::{run_watcher, Shared};
use crate::history::{Call, History};
use crate::recorder::Recorder;
use keel_store::Transport;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessFault {
    /// SIGKILL one replica, restart it after a while.
    Kill,
    /// SIGSTOP one replica, SIGCONT it after a while.
    Pause,
    /// Cut every link *to* one replica (a one-way partition: it can still
    /// dial out), then heal.
    Cut,
    /// Cut one replica off from all others, both ways.
    Isolate,
    /// Cut the current leader off from all others, both ways.
    IsolateLeader,
    /// Cut the replicas into two random halves.
    Partition,
    /// Two majorities that overlap in one replica: the rest are split in
    /// two halves that cannot talk, both talk to the middle one.
    Bridge,
}

impl ProcessFault {
    pub const ALL: [ProcessFault; 7] = [
        ProcessFault::Kill,
        ProcessFault::Pause,
        ProcessFault::Cut,
        ProcessFault::Isolate,
        ProcessFault::IsolateLeader,
        ProcessFault::Partition,
        ProcessFault::Bridge,
    ];
}

impl fmt::Display for ProcessFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProcessFault::Kill => "kill",
            ProcessFault::Pause => "pause",
            ProcessFault::Cut => "cut",
            ProcessFault::Isolate => "isolate",
            ProcessFault::IsolateLeader => "isolate-leader",
            ProcessFault::Partition => "partition",
            ProcessFault::Bridge => "bridge",
        })
    }
}

impl FromStr for ProcessFault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProcessFault::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| {
                let known: Vec<String> = ProcessFault::ALL.iter().map(|k| k.to_string()).collect();
                format!("unknown process fault {s:?} (known: {})", known.join(", "))
            })
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
    _proxies: Vec<Proxy>,
    /// Which links between replicas are cut.
    links: Links,
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
        let links = Links::new(n)?;
        for i in 0..n {
            let peer = format!("127.0.0.1:{}", free_port()?);
            let upstream = peer.parse().expect("loopback address");
            proxies.push(Proxy::start(i, upstream, links.clone()).await?);
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
            _proxies: proxies,
            links,
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
            .arg("--disable-api")
            .args(["--initial-cluster", &self.initial])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--snapshot-count", "500", "--request-timeout-ms", "2000"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.links.set_pid(i, Some(child.id()));
        self.replicas[i].child = Some(child);
        Ok(())
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.links.set_pid(i, None);
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

/// How long each phase of a seed may take before the seed fails with the
/// reason, instead of the runner hanging: a wedged cluster must show up as
/// a failed seed, never as a run that never ends. Generous on a loaded
/// machine: a seed of 100 ops per client takes about 15 s alone, and up to
/// 105 s beside another run on a 2-core machine busy with builds, where
/// the workload is slow but never stops.
struct Deadlines {
    /// Every replica answering a linearizable read.
    ready: Duration,
    /// No workload operation succeeding for this long: the cluster is
    /// wedged (a fault is held for at most 2 s).
    workload_stall: Duration,
    /// The workload clients finishing their operations, progress or not.
    workload_cap: Duration,
    /// After healing: the liveness write and the final reads.
    finale: Duration,
    /// Then the watchers catching up.
    watchers: Duration,
}

impl Deadlines {
    fn new(cfg: &RealConfig) -> Self {
        Deadlines {
            ready: Duration::from_secs(30),
            workload_stall: cfg.liveness_bound * 2,
            workload_cap: Duration::from_secs(20)
                + Duration::from_millis(1500) * cfg.workload.ops_per_client as u32,
            finale: cfg.liveness_bound * 2 + Duration::from_secs(30),
            watchers: Duration::from_secs(45),
        }
    }
}

/// Ends the workload phase of a seed that stopped making progress or ran
/// past its cap, and says which.
struct WorkloadWatch<'a> {
    shared: &'a Shared,
    stall: Duration,
    end: Instant,
    /// Successful operations counted at the last check, and since when.
    last_ok: Cell<(u64, Instant)>,
}

impl<'a> WorkloadWatch<'a> {
    fn new(shared: &'a Shared, d: &Deadlines) -> Self {
        let now = Instant::now();
        WorkloadWatch {
            shared,
            stall: d.workload_stall,
            end: now + d.workload_cap,
            last_ok: Cell::new((shared.ok_ops.get(), now)),
        }
    }

    /// Why the workload must end now, if it must.
    fn expired(&self) -> Option<String> {
        let now = Instant::now();
        let ok = self.shared.ok_ops.get();
        let (seen, since) = self.last_ok.get();
        if ok != seen {
            self.last_ok.set((ok, now));
        } else if now - since >= self.stall {
            return Some(format!(
                "no workload operation succeeded for {} s (the cluster stayed unavailable)",
                self.stall.as_secs()
            ));
        }
        (now >= self.end).then(|| "the workload did not finish in time".to_string())
    }
}

/// A run that could not start: no history, just the error.
fn setup_failed(cfg: &RealConfig, error: String) -> SeedResult {
    failed(cfg, vec![], vec![], History::default(), error)
}

/// A run that failed with `error`, after injecting `faults` and recording
/// `history` (kept for the failures file and the report; not checked).
fn failed(
    cfg: &RealConfig,
    faults: Vec<String>,
    fault_spans: Vec<FaultSpan>,
    history: History,
    error: String,
) -> SeedResult {
    evaluate(Evaluate {
        seed: cfg.seed,
        faults,
        fault_spans,
        leader_changes: vec![],
        history,
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
    let deadlines = Deadlines::new(cfg);
    let target = procs.target();
    if let Err(e) = wait_ready(&target, deadlines.ready).await {
        return setup_failed(cfg, e);
    }
    let rec = Rc::new(RefCell::new(Recorder::new()));
    let shared = Rc::new(Shared::default());
    let finished = Rc::new(Cell::new(0usize));
    let mut watcher_logs = Vec::new();
    // The watchers' and the clients' tasks.
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
    let watch = WorkloadWatch::new(&shared, &deadlines);
    let (faults, fault_spans) = nemesis(cfg, &mut procs, &finished, &watch).await;
    // Heal: every replica running, resumed and reachable.
    procs.links.heal_all();
    for i in 0..cfg.replicas {
        procs.signal(i, "-CONT");
        if procs.replicas[i].child.is_none() {
            let _ = procs.spawn(i);
        }
    }
    if finished.get() < cfg.workload.clients {
        abort_all(&tasks);
        let why = watch.expired().unwrap_or_else(|| "stopped".into());
        let error = format!(
            "{why}: {} of {} clients done after {} s",
            finished.get(),
            cfg.workload.clients,
            (Instant::now() + deadlines.workload_cap - watch.end).as_secs()
        );
        let history = std::mem::take(&mut *rec.borrow_mut()).finish();
        return failed(cfg, faults, fault_spans, history, error);
    }
    shared.healed.set(true);
    let finale = Rc::new(RefCell::new(Finale::default()));
    let give_up = cfg.liveness_bound * 2;
    let finale_run = run_finale(target, cfg.workload.keys, give_up, &finale);
    if tokio::time::timeout(deadlines.finale, finale_run)
        .await
        .is_err()
    {
        abort_all(&tasks);
        let error = format!(
            "the final reads after healing did not finish within {} s",
            deadlines.finale.as_secs()
        );
        let history = std::mem::take(&mut *rec.borrow_mut()).finish();
        return failed(cfg, faults, fault_spans, history, error);
    }
    let joined = async {
        for t in tasks.iter_mut() {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(deadlines.watchers, joined)
        .await
        .is_err()
    {
        abort_all(&tasks);
        let error = format!(
            "the watchers did not catch up within {} s after the final reads",
            deadlines.watchers.as_secs()
        );
        let history = std::mem::take(&mut *rec.borrow_mut()).finish();
        return failed(cfg, faults, fault_spans, history, error);
    }
    let history = std::mem::take(&mut *rec.borrow_mut()).finish();
    let watchers = watcher_logs.iter().map(|l| l.borrow().clone()).collect();
    let finale = finale.take();
    evaluate(Evaluate {
        seed: cfg.seed,
        faults,
        fault_spans,
        leader_changes: vec![],
        history,
        watchers,
        finale,
        liveness_bound: cfg.liveness_bound,
        error: None,
    })
}

/// Stops every task (a failed seed's clients and watchers).
fn abort_all<T>(tasks: &[tokio::task::JoinHandle<T>]) {
    for t in tasks {
        t.abort();
    }
}

/// Waits until every replica answers a linearizable read, for at most
/// `timeout` in all.
async fn wait_ready(target: &Target, timeout: Duration) -> Result<(), String> {
    let end = tokio::time::Instant::now() + timeout;
    let mut chans = super::client::Channels::new(target.clone());
    for i in 0..target.replicas() {
        let mut ok = false;
        while tokio::time::Instant::now() < end {
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
                "replica r{i} ({}) was not ready within {} s",
                target.addrs[i],
                timeout.as_secs()
            ));
        }
    }
    Ok(())
}

/// One fault at a time until the workload finishes or `watch` ends it.
/// Returns each fault's description and when it was active.
async fn nemesis(
    cfg: &RealConfig,
    procs: &mut Processes,
    finished: &Cell<usize>,
    watch: &WorkloadWatch<'_>,
) -> (Vec<String>, Vec<FaultSpan>) {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x7265_616c);
    let mut done = Vec::new();
    let mut spans = Vec::new();
    let all_done = || finished.get() == cfg.workload.clients || watch.expired().is_some();
    let n = cfg.replicas;
    while !all_done() {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1200))).await;
        if all_done() || cfg.faults.is_empty() {
            continue;
        }
        let fault = cfg.faults[rng.gen_range(0..cfg.faults.len())];
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let victim = order[0];
        let hold = Duration::from_millis(rng.gen_range(300..2000));
        let start = now();
        let what = match fault {
            ProcessFault::Kill => {
                procs.kill(victim);
                format!("r{victim}")
            }
            ProcessFault::Pause => {
                procs.signal(victim, "-STOP");
                format!("r{victim}")
            }
            ProcessFault::Cut => {
                for from in (0..n).filter(|&f| f != victim) {
                    procs.links.cut(from, victim);
                }
                format!("-> r{victim}")
            }
            ProcessFault::Isolate => isolate(&procs.links, victim, n),
            ProcessFault::IsolateLeader => match leader(&procs.target()).await {
                Some(l) => isolate(&procs.links, l, n),
                None => format!("no leader; {}", isolate(&procs.links, victim, n)),
            },
            ProcessFault::Partition => {
                let cut = rng.gen_range(1..n);
                let (a, b) = order.split_at(cut);
                procs.links.cut_between(a, b);
                format!("{}|{}", names(a), names(b))
            }
            ProcessFault::Bridge => {
                let rest = &order[1..];
                let (left, right) = rest.split_at(rest.len() / 2);
                procs.links.cut_between(left, right);
                format!("{}<r{victim}>{}", names(left), names(right))
            }
        };
        let label = format!("{fault} {what} {}ms", hold.as_millis());
        done.push(label.clone());
        tokio::time::sleep(hold).await;
        match fault {
            ProcessFault::Kill => {
                let _ = procs.spawn(victim);
            }
            ProcessFault::Pause => procs.signal(victim, "-CONT"),
            _ => procs.links.heal_all(),
        }
        spans.push(FaultSpan {
            start,
            end: Some(now()),
            label,
        });
    }
    (done, spans)
}

fn names(ids: &[usize]) -> String {
    let v: Vec<String> = ids.iter().map(|i| format!("r{i}")).collect();
    format!("[{}]", v.join(","))
}

/// Cuts `victim` off from every other replica, both ways.
fn isolate(links: &Links, victim: usize, n: usize) -> String {
    let rest: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
    links.cut_between(&[victim], &rest);
    format!("{}|{}", names(&[victim]), names(&rest))
}

/// The replica the others agree leads, by asking each for its status.
async fn leader(target: &Target) -> Option<usize> {
    let mut chans = super::client::Channels::new(target.clone());
    let mut members = Vec::new();
    let mut leaders = Vec::new();
    for i in 0..target.replicas() {
        let mut m = MaintenanceClient::new(chans.channel(i));
        match tokio::time::timeout(Duration::from_millis(500), m.status(StatusRequest {})).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                members.push(r.header.map(|h| h.member_id));
                if r.leader != 0 {
                    leaders.push(r.leader);
                }
            }
            _ => members.push(None),
        }
    }
    // The most reported leader.
    leaders.sort_unstable();
    let id = leaders
        .chunk_by(|a, b| a == b)
        .max_by_key(|c| c.len())
        .map(|c| c[0])?;
    members.iter().position(|m| *m == Some(id))
}
