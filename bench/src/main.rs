//! keel-bench: runs the same etcd v3 client workloads against a local
//! 3-replica etcd 3.4 cluster and a local 3-replica keel cluster and prints
//! the results side by side.
//!
//! The clusters run one after the other, never together, so on a small
//! machine neither steals CPU or disk from the other's measurement. Each is
//! started fresh in a temp dir on free loopback ports and killed when its
//! workloads are done (or the run fails, panics or is interrupted).
//!
//! ```text
//! cargo build --release -p keel -p keel-bench
//! target/release/keel-bench                 # both systems
//! target/release/keel-bench --only etcd --ops 5000
//! target/release/keel-bench api            # Kubernetes API of 3 keel replicas
//! target/release/keel-bench scheduler      # 10,000 pods onto 1,000 fake nodes
//! target/release/keel-bench hollow         # 500 hollow nodes, 15,000 pods, the SLOs
//! target/release/keel-bench e2e            # 100-replica Deployment on keel up
//! target/release/keel-bench ingress        # Ingress router vs direct, HTTP/1.1
//! target/release/keel-bench dns            # cluster DNS queries/s
//! target/release/keel-bench proxy          # Service proxy data path + updates
//! target/release/keel-bench failover       # leader SIGKILLs: write outage, vs etcd
//! target/release/keel-bench watch          # watch fan-out 1k/5k/10k watchers, vs etcd
//! target/release/keel-bench pods           # pod start, memory, exec per runtime
//! target/release/keel-bench runtime-steps  # container start step by step, in process
//! ```

mod api;
mod cluster;
mod dns;
mod e2e;
mod failover;
mod hollow;
mod ingress;
mod pods;
mod proxy;
mod report;
mod runtime_steps;
mod scheduler;
mod watch;
mod workload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use cluster::{Cluster, System};
use report::Row;

/// Replicas per cluster: the smallest size that tolerates a failure, and
/// the one keel and etcd are usually deployed at.
pub(crate) const REPLICAS: usize = 3;
/// How long a fresh cluster may take to elect a leader and accept a put.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser, Debug)]
#[command(
    name = "keel-bench",
    version,
    about = "Benchmark a 3-replica keel cluster against a 3-replica etcd 3.4 cluster",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Which systems to benchmark.
    #[arg(long, value_enum, default_value_t = Only::Both)]
    only: Only,
    /// Operations in each put/get workload (puts write this many distinct keys).
    #[arg(long, default_value_t = 20_000)]
    ops: usize,
    /// Concurrent clients in the put/get workloads, spread over the endpoints.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// HTTP/2 connections opened to each endpoint and shared by the clients.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Value size of the put workload, in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Watchers in the watch workload, all on one prefix.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Watch streams the watchers are multiplexed over.
    #[arg(long, default_value_t = 10)]
    watch_streams: usize,
    /// Keys put while the watchers listen (the M in "M events x watchers").
    #[arg(long, default_value_t = 500)]
    watch_events: usize,
    /// keel binary [default: `keel` next to this executable].
    #[arg(long)]
    keel_bin: Option<PathBuf>,
    /// etcd binary (3.4 from Debian's etcd-server).
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Kubernetes API of a 3-replica keel control plane: pod creates,
    /// a full list, watch delivery, against the targets.
    Api(api::ApiArgs),
    /// Scheduling throughput: fake nodes registered through the API, then
    /// pending pods created as fast as possible and timed until all are bound.
    Scheduler(scheduler::SchedulerArgs),
    /// Hollow nodes (kubemark): simulated agents speaking the node protocol
    /// in this process, pods created and reported Running; the Kubernetes
    /// SLOs (mutating API p99, pod startup p99), list latencies, RSS.
    Hollow(hollow::HollowArgs),
    /// `keel up --agents N` end to end: time from a Deployment's create to
    /// all its replicas Ready.
    E2e(e2e::E2eArgs),
    /// Per container runtime (keel, exec, docker): pod start latency
    /// (create → Running), supervisor memory per pod, `exec` round trips.
    Pods(pods::PodsArgs),
    /// Container starts through keel's runtimes in process (no API, no
    /// agent), timed step by step: namespaces, mounts, cgroups, process
    /// starts; p50/p99/max per step and the totals per runtime.
    RuntimeSteps(runtime_steps::RuntimeStepsArgs),
    /// keel's Ingress router in process: requests/s and latency through
    /// the router vs straight to the upstream, HTTP/1.1 keep-alive.
    Ingress(ingress::IngressArgs),
    /// Cluster DNS: UDP queries per second of the agents' DNS server
    /// (cluster names and NXDOMAIN) with N concurrent clients.
    Dns(dns::DnsArgs),
    /// The agents' Service proxy on loopback: throughput, connections/s and
    /// round-trip latency through a cluster IP vs direct, and the time from
    /// an EndpointSlice change to the proxy using it.
    Proxy(proxy::ProxyArgs),
    /// Leader SIGKILLs in a 3-replica keel cluster and a 3-replica etcd 3.4
    /// cluster: how long writes fail, p50/p99/max side by side.
    Failover(failover::FailoverArgs),
    /// Watch fan-out at 1,000 / 5,000 / 10,000 watchers on one prefix,
    /// keel vs etcd: events/s, p99 delivery, and with one stalled watcher.
    Watch(watch::WatchArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Only {
    Etcd,
    Keel,
    Both,
}

impl Only {
    fn systems(self) -> &'static [System] {
        match self {
            Only::Etcd => &[System::Etcd],
            Only::Keel => &[System::Keel],
            Only::Both => &[System::Etcd, System::Keel],
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    match args.command.take() {
        Some(Command::Api(a)) => return api::main(a).await,
        Some(Command::Scheduler(a)) => return scheduler::main(a).await,
        Some(Command::Hollow(a)) => return hollow::main(a).await,
        Some(Command::E2e(a)) => return e2e::main(a).await,
        Some(Command::Pods(a)) => return pods::main(a).await,
        Some(Command::RuntimeSteps(a)) => return runtime_steps::main(a).await,
        Some(Command::Ingress(a)) => return ingress::main(a).await,
        Some(Command::Dns(a)) => return dns::main(a).await,
        Some(Command::Proxy(a)) => return proxy::main(a).await,
        Some(Command::Failover(a)) => return failover::main(a).await,
        Some(Command::Watch(a)) => return watch::main(a).await,
        None => {}
    }
    ensure!(
        args.ops > 0 && args.clients > 0 && args.conns > 0,
        "--ops, --clients and --conns must be positive"
    );
    ensure!(
        args.watch_streams > 0 && args.watchers >= args.watch_streams && args.watch_events > 0,
        "need --watch-streams > 0, --watchers >= --watch-streams and --watch-events > 0"
    );

    let mut rows = Vec::new();
    // Ctrl-C drops the benchmark future, and with it the live `Cluster`,
    // whose Drop kills the replicas; rows measured so far are still printed.
    tokio::select! {
        res = run(&args, &mut rows) => res?,
        _ = tokio::signal::ctrl_c() => eprintln!("interrupted; printing what was measured"),
    }

    println!(
        "\n{REPLICAS} replicas each; {} ops/workload, {} clients, {} conn(s)/endpoint, \
         {}-byte values; watch: {} watchers on {} streams, {} events\n",
        args.ops,
        args.clients,
        args.conns,
        args.value_size,
        args.watchers,
        args.watch_streams,
        args.watch_events
    );
    print!("{}", report::markdown(&rows));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report::json(&rows))?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Benchmarks each selected system in turn, appending to `rows` as results
/// arrive so an interrupted run still reports the finished workloads.
async fn run(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    for &system in args.only.systems() {
        let bin = system_bin(system, &args.etcd_bin, args.keel_bin.as_deref())?;
        eprintln!("{system}: starting {REPLICAS} replicas ({})", bin.display());
        let mut cluster = Cluster::start(system, &bin, REPLICAS)?;
        cluster.wait_ready(READY_TIMEOUT).await?;
        let channels = workload::connect(&cluster.endpoints(), args.conns).await?;

        let mut record = |name: &'static str, sample: workload::Sample| {
            let row = Row::new(name, system, &sample);
            eprintln!("{system}: {name}: {}", row.summary());
            rows.push(row);
        };

        eprintln!("{system}: put ...");
        let s = workload::puts(&channels, args.clients, args.ops, args.value_size).await?;
        record("put", s);
        eprintln!("{system}: linearizable get ...");
        let s = workload::gets(&channels, args.clients, args.ops, args.ops, false).await?;
        record("get linearizable", s);
        eprintln!("{system}: serializable get ...");
        let s = workload::gets(&channels, args.clients, args.ops, args.ops, true).await?;
        record("get serializable", s);
        eprintln!(
            "{system}: watch ({} watchers x {} events) ...",
            args.watchers, args.watch_events
        );
        let params = watch::FanoutParams {
            prefix: "w/".into(),
            watchers: args.watchers,
            streams: args.watch_streams,
            events: args.watch_events,
            writers: 1,
            value_size: 0,
            stalled: None,
        };
        let s = watch::fanout(&channels, params).await?.sample;
        record("watch delivery", s);

        // Close connections before killing the servers, then stop them.
        drop(channels);
        drop(cluster);
    }
    Ok(())
}

/// The binary to run for `system`: `etcd_bin`, or [`keel_bin`] of `keel`.
pub(crate) fn system_bin(system: System, etcd_bin: &Path, keel: Option<&Path>) -> Result<PathBuf> {
    match system {
        System::Etcd => Ok(etcd_bin.to_path_buf()),
        System::Keel => keel_bin(keel),
    }
}

/// The keel binary given with `--keel-bin`, else [`default_keel_bin`].
/// Errors when no file is there, naming the path.
pub(crate) fn keel_bin(given: Option<&Path>) -> Result<PathBuf> {
    let bin = match given {
        Some(p) => p.to_path_buf(),
        None => default_keel_bin()?,
    };
    anyhow::ensure!(bin.is_file(), "keel binary not found at {}", bin.display());
    Ok(bin)
}

/// `keel` in the directory of this executable: `cargo build --release`
/// puts both binaries in `target/release/`.
pub(crate) fn default_keel_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating keel-bench executable")?;
    let dir = exe
        .parent()
        .context("keel-bench executable has no parent directory")?;
    Ok(dir.join("keel"))
}
