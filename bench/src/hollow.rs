//! `keel-bench hollow`: the Kubernetes scalability SLOs with hollow nodes
//! (kubemark's idea), all on this machine.
//!
//! 1. starts `--replicas` `keel server` replicas with their default node
//!    monitor (a node that stops renewing its Lease goes NotReady, as in
//!    production);
//! 2. starts `--nodes` hollow nodes in this process
//!    ([`keel_node::hollow`]): each registers over the node gRPC protocol,
//!    renews its Lease in `kube-node-lease` every `--heartbeat-s`, follows
//!    the pods bound to it over `WatchPods` and reports each one Running
//!    (no process runs); `--nodes-per-conn` nodes share one HTTP/2
//!    connection, the connections spread over the replicas;
//! 3. creates `--pods` bare pods (10m cpu, 16Mi) from `--clients`
//!    closed-loop workers spread over the replicas, at most `--qps` per
//!    second when set; the replicas' scheduler places them;
//! 4. reports the mutating API latency (pod creates), pod startup latency
//!    from the create's response to the hollow node's Running report being
//!    accepted (Kubernetes' pod startup SLI, as reported by the node),
//!    list latencies once every pod runs (nodes, all pods in pages of 500,
//!    the pods of one node as its agent lists them), and RSS per replica.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use hdrhistogram::Histogram;
use keel_node::agent::client::ControlClient;
use keel_node::agent::read_kubeconfig;
use keel_node::hollow::{HollowConfig, HollowNode, OnRunning};
use kube::Client;
use serde_json::Value;

use crate::e2e::rss_kib;
use crate::scheduler::{
    cpu_ticks, for_each_concurrently, get_json, pod, post, start_and_connect, warm_up, Procs,
};
use crate::workload::{micros, new_hist};

const NS_PODS: &str = "/api/v1/namespaces/default/pods";
/// Name prefix of the measured pods; the rest is the pod's index.
const PREFIX: &str = "hollow-pod-";
const NODE_PREFIX: &str = "hollow-node-";
/// Registrations in flight at once.
const REGISTER_CONCURRENCY: usize = 64;
/// Kubernetes' SLOs (p99): mutating API calls, pod startup.
const SLO_MUTATING: Duration = Duration::from_secs(1);
const SLO_STARTUP: Duration = Duration::from_secs(5);
/// Page size of the paginated pod list (what informers use).
const PAGE: usize = 500;

#[derive(clap::Args, Debug)]
pub struct HollowArgs {
    /// Hollow nodes.
    #[arg(long, default_value_t = 500)]
    nodes: usize,
    /// Pods created (bare pods, scheduled by keel).
    #[arg(long, default_value_t = 15_000)]
    pods: usize,
    /// keel server replicas (1, 3 or 5).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Concurrent closed-loop clients creating pods.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Pod creates per second at most (0: as fast as the clients go).
    #[arg(long, default_value_t = 0.0)]
    qps: f64,
    /// Hollow nodes per shared HTTP/2 connection.
    #[arg(long, default_value_t = 50)]
    nodes_per_conn: usize,
    /// Lease renewal period of the hollow nodes, in seconds.
    #[arg(long, default_value_t = 10)]
    heartbeat_s: u64,
    /// Give up waiting for Running pods this long after the first create.
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
    /// keel binary [default: `keel` next to this executable].
    #[arg(long)]
    keel_bin: Option<std::path::PathBuf>,
}

pub async fn main(args: HollowArgs) -> Result<()> {
    ensure!(
        args.nodes > 0 && args.pods > 0 && args.clients > 0 && args.nodes_per_conn > 0,
        "--nodes, --pods, --clients and --nodes-per-conn must be positive"
    );
    let bin = crate::keel_bin(args.keel_bin.as_deref())?;
    let mut procs = Procs::new("keel-bench-hollow-")?;
    let (kubeconfigs, clients) = start_and_connect(&mut procs, &bin, args.replicas, &[]).await?;
    let hollow = hollow_config(&kubeconfigs, args.heartbeat_s)?;

    let report = tokio::select! {
        r = run(&args, hollow, &clients, &mut procs) => r?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    drop(clients);
    drop(procs);
    println!(
        "\n{} replica(s); {} hollow nodes (cpu 32, memory 128Gi, 110 pods; lease every {} s, \
         {} nodes per connection); {} pods (10m cpu, 16Mi) created by {} clients{}\n",
        args.replicas,
        args.nodes,
        args.heartbeat_s,
        args.nodes_per_conn,
        args.pods,
        args.clients,
        match args.qps > 0.0 {
            true => format!(" at <= {} /s", args.qps),
            false => String::new(),
        }
    );
    print!("{}", report.markdown(&args));
    Ok(())
}

/// The hollow nodes' settings: every replica's URL, with the CA and the
/// admin token of the first kubeconfig (the replicas share both).
fn hollow_config(kubeconfigs: &[std::path::PathBuf], heartbeat_s: u64) -> Result<HollowConfig> {
    let mut servers = Vec::new();
    let mut first = None;
    for kc in kubeconfigs {
        let auth = read_kubeconfig(kc)?;
        servers.push(auth.server.clone());
        first.get_or_insert(auth);
    }
    let auth = first.context("no replica")?;
    let mut cfg = HollowConfig::new(servers, auth.token, auth.ca_pem);
    cfg.heartbeat_interval = Duration::from_secs(heartbeat_s.max(1));
    Ok(cfg)
}

/// Microseconds since `t0` per pod; 0 = not yet.
struct Stamps {
    t0: Instant,
    at: Vec<AtomicU64>,
}

impl Stamps {
    fn new(t0: Instant, n: usize) -> Stamps {
        Stamps {
            t0,
            at: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn set(&self, i: usize, at: Instant) {
        let us = micros(at.saturating_duration_since(self.t0)).max(1);
        if let Some(slot) = self.at.get(i) {
            let _ = slot.compare_exchange(0, us, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn get(&self, i: usize) -> Option<u64> {
        let v = self.at[i].load(Ordering::Relaxed);
        (v > 0).then_some(v)
    }

    /// How many slots are stamped here and in `also`.
    fn count_with(&self, also: &Stamps) -> usize {
        (0..self.at.len())
            .filter(|&i| self.get(i).is_some() && also.get(i).is_some())
            .count()
    }
}

fn pod_index(name: Option<&str>) -> Option<usize> {
    name?.strip_prefix(PREFIX)?.parse().ok()
}

/// One list: what, and (took, items) or why it failed.
type ListRow = (String, Result<(Duration, usize), String>);

struct Report {
    register_took: Duration,
    creates_ok: usize,
    create_errors: usize,
    first_error: Option<String>,
    create_span: Duration,
    create_latency: Histogram<u64>,
    /// Create response → Running accepted, per pod that got there.
    startup: Histogram<u64>,
    running: usize,
    /// First create → last Running.
    all_running_took: Option<Duration>,
    lists: Vec<ListRow>,
    /// Per replica: (VmRSS, VmHWM) KiB.
    rss_kib: Vec<Option<(u64, u64)>>,
    bench_rss_kib: Option<(u64, u64)>,
    server_cpu_s: Option<f64>,
    run_span: Duration,
}

async fn run(
    args: &HollowArgs,
    hollow: HollowConfig,
    clients: &[Client],
    procs: &mut Procs,
) -> Result<Report> {
    let t0 = Instant::now();
    let created = Arc::new(Stamps::new(t0, args.pods));
    let running = Arc::new(Stamps::new(t0, args.pods));
    let on_running: OnRunning = {
        let running = running.clone();
        Arc::new(move |pod, at| {
            if let Some(i) = pod_index(pod.metadata.name.as_deref()) {
                running.set(i, at);
            }
        })
    };

    eprintln!(
        "keel: registering {} hollow nodes ({} connections) ...",
        args.nodes,
        args.nodes.div_ceil(args.nodes_per_conn)
    );
    let t = Instant::now();
    let nodes = register_all(args, Arc::new(hollow), on_running).await?;
    let register_took = t.elapsed();
    eprintln!(
        "keel: {} hollow nodes registered in {:.2} s",
        nodes.len(),
        register_took.as_secs_f64()
    );
    let runners: Vec<_> = nodes.into_iter().map(|n| tokio::spawn(n.run())).collect();
    let _abort = AbortOnDrop(runners);
    procs.check_alive()?;

    warm_up(clients, args.clients).await?;
    let cpu_before = cpu_ticks(&procs.pids());
    let latency = Arc::new(Mutex::new(new_hist()));
    eprintln!("keel: creating {} pods ...", args.pods);
    let start = Instant::now();
    let pace = (args.qps > 0.0).then(|| Duration::from_secs_f64(1.0 / args.qps));
    let results = {
        let (latency, created) = (latency.clone(), created.clone());
        for_each_concurrently(clients, args.clients, args.pods, move |c, i| {
            let (latency, created) = (latency.clone(), created.clone());
            async move {
                if let Some(p) = pace {
                    tokio::time::sleep_until((start + p * i as u32).into()).await;
                }
                let sent = Instant::now();
                let r = post(&c, NS_PODS, &pod(&format!("{PREFIX}{i:06}"))).await;
                let done = Instant::now();
                if r.is_ok() {
                    created.set(i, done);
                    if let Ok(mut h) = latency.lock() {
                        let _ = h.record(micros(done - sent));
                    }
                }
                r
            }
        })
        .await
    };
    let create_span = start.elapsed();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.1.as_ref().err()).collect();
    let creates_ok = results.len() - errors.len();
    eprintln!(
        "keel: {creates_ok} pods created in {:.2} s ({} errors); waiting for Running ...",
        create_span.as_secs_f64(),
        errors.len()
    );

    let deadline = start + Duration::from_secs(args.timeout_s);
    let mut last_print = Instant::now();
    loop {
        procs.check_alive()?;
        // Only pods whose create was answered 201: a failed create may
        // still have been written, and its pod may run too.
        let n = running.count_with(&created);
        if n >= creates_ok || Instant::now() >= deadline {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            eprintln!("keel: {n} of {creates_ok} pods Running");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run_span = start.elapsed();
    let cpu_after = cpu_ticks(&procs.pids());
    let rss: Vec<_> = procs.pids().into_iter().map(rss_kib).collect();

    let mut startup = new_hist();
    let mut last_running = 0;
    for i in 0..args.pods {
        if let (Some(c), Some(r)) = (created.get(i), running.get(i)) {
            let _ = startup.record(r.saturating_sub(c));
            last_running = last_running.max(r);
        }
    }
    let n_running = startup.len() as usize;
    let since_start = micros(start - t0);
    eprintln!("keel: {n_running} pods Running; listing ...");
    let lists = lists(&clients[0], args).await;
    let create_latency = latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| new_hist());
    Ok(Report {
        register_took,
        creates_ok,
        create_errors: errors.len(),
        first_error: errors.first().map(|e| e.to_string()),
        create_span,
        create_latency,
        startup,
        running: n_running,
        all_running_took: (n_running == creates_ok && n_running > 0)
            .then(|| Duration::from_micros(last_running.saturating_sub(since_start))),
        lists,
        rss_kib: rss,
        bench_rss_kib: rss_kib(std::process::id()),
        server_cpu_s: cpu_before
            .zip(cpu_after)
            .map(|(b, a)| (a - b) as f64 / 100.0),
        run_span,
    })
}

/// Registers every hollow node, `REGISTER_CONCURRENCY` at a time.
async fn register_all(
    args: &HollowArgs,
    cfg: Arc<HollowConfig>,
    on_running: OnRunning,
) -> Result<Vec<HollowNode>> {
    let conns: Vec<Arc<ControlClient>> = (0..args.nodes.div_ceil(args.nodes_per_conn))
        .map(|i| cfg.client(i).map(Arc::new))
        .collect::<Result<_>>()?;
    let registering = (0..args.nodes).map(|i| {
        let client = conns[i / args.nodes_per_conn].clone();
        let (cfg, on_running) = (cfg.clone(), on_running.clone());
        async move {
            let name = format!("{NODE_PREFIX}{i:05}");
            HollowNode::register(client, cfg, &name, on_running).await
        }
    });
    let register = futures::stream::iter(registering)
        .buffer_unordered(REGISTER_CONCURRENCY)
        .collect::<Vec<_>>();
    tokio::time::timeout(Duration::from_secs(600), register)
        .await
        .context("hollow nodes did not register within 600 s")
}

/// Aborts the hollow nodes' tasks when the run ends.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The list latencies: (what, Ok((took, items))).
async fn lists(
    client: &Client,
    args: &HollowArgs,
) -> Vec<(String, Result<(Duration, usize), String>)> {
    let mut out = Vec::new();
    let timed = |path: String| async move {
        let t = Instant::now();
        let v: Value = get_json(client, &path)
            .await
            .map_err(|e| format!("{e:#}"))?;
        Ok::<_, String>((t.elapsed(), items(&v), v))
    };
    let r = timed("/api/v1/nodes".into()).await.map(|(d, n, _)| (d, n));
    out.push((format!("list nodes ({})", args.nodes), r));
    let node0 = format!("{NODE_PREFIX}00000");
    let r = timed(format!(
        "/api/v1/pods?fieldSelector=spec.nodeName%3D{node0}"
    ))
    .await
    .map(|(d, n, _)| (d, n));
    out.push(("list the pods of one node (field selector)".into(), r));
    // Paginated, as informers list: the total time over every page.
    let t = Instant::now();
    let (mut total, mut cont, mut pages) = (0, String::new(), 0);
    let paged = loop {
        let path = format!("/api/v1/pods?limit={PAGE}&continue={cont}");
        match timed(path).await {
            Ok((_, n, v)) => {
                total += n;
                pages += 1;
                match v["metadata"]["continue"].as_str().filter(|c| !c.is_empty()) {
                    Some(c) => cont = c.to_string(),
                    None => break Ok((t.elapsed(), total)),
                }
            }
            Err(e) => break Err(e),
        }
    };
    out.push((
        format!("list all pods, pages of {PAGE} ({pages} pages)"),
        paged,
    ));
    let r = timed("/api/v1/pods".into()).await.map(|(d, n, _)| (d, n));
    out.push(("list all pods, one response".into(), r));
    out
}

fn items(v: &Value) -> usize {
    v["items"].as_array().map_or(0, Vec::len)
}

impl Report {
    fn markdown(&self, args: &HollowArgs) -> String {
        let met = |ok: bool| if ok { "met" } else { "not met" };
        let ms = |us: u64| format!("{:.0}", us as f64 / 1000.0);
        let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
        let mut out = String::new();
        out.push_str("| metric | measured | SLO / target | |\n|---|---:|---|---|\n");
        let mut row = |name: &str, value: String, target: &str, verdict: &str| {
            out.push_str(&format!("| {name} | {value} | {target} | {verdict} |\n"));
        };
        row(
            &format!("register {} hollow nodes, s", args.nodes),
            format!("{:.2}", self.register_took.as_secs_f64()),
            "",
            "",
        );
        row(
            &format!(
                "create {} pods, s ({:.0} creates/s)",
                self.creates_ok,
                self.creates_ok as f64 / self.create_span.as_secs_f64().max(1e-9)
            ),
            format!("{:.2}", self.create_span.as_secs_f64()),
            "",
            "",
        );
        let h = &self.create_latency;
        row(
            "mutating API: pod create p50 / p99 / max, ms",
            format!("{} / {} / {}", ms(q(h, 0.5)), ms(q(h, 0.99)), ms(h.max())),
            "p99 ≤ 1 s",
            met(!h.is_empty() && q(h, 0.99) <= micros(SLO_MUTATING)),
        );
        row(
            "pods Running (reported by their hollow node)",
            format!("{} of {}", self.running, self.creates_ok),
            "all",
            met(self.running == self.creates_ok),
        );
        row(
            "first create → all pods Running, s",
            self.all_running_took
                .map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64())),
            "",
            "",
        );
        let h = &self.startup;
        row(
            "pod startup (create → Running) p50 / p90 / p99 / max, ms",
            format!(
                "{} / {} / {} / {}",
                ms(q(h, 0.5)),
                ms(q(h, 0.9)),
                ms(q(h, 0.99)),
                ms(h.max())
            ),
            "p99 ≤ 5 s",
            met(!h.is_empty() && q(h, 0.99) <= micros(SLO_STARTUP)),
        );
        for (what, r) in &self.lists {
            let value = match r {
                Ok((d, n)) => format!("{:.0} ({n} items)", d.as_secs_f64() * 1000.0),
                Err(e) => format!("failed: {e}"),
            };
            row(&format!("{what}, ms"), value, "", "");
        }
        for (i, r) in self.rss_kib.iter().enumerate() {
            let value = r.map_or("-".into(), |(rss, hwm)| {
                format!("{:.0} / {:.0}", rss as f64 / 1024.0, hwm as f64 / 1024.0)
            });
            row(
                &format!("replica n{} RSS now / peak, MiB", i + 1),
                value,
                "",
                "",
            );
        }
        if let Some((rss, hwm)) = self.bench_rss_kib {
            row(
                "this process (hollow nodes + clients) RSS now / peak, MiB",
                format!("{:.0} / {:.0}", rss as f64 / 1024.0, hwm as f64 / 1024.0),
                "",
                "",
            );
        }
        if let Some(cpu) = self.server_cpu_s {
            row(
                "keel CPU from first create to end, s (cores busy)",
                format!(
                    "{cpu:.1} ({:.2})",
                    cpu / self.run_span.as_secs_f64().max(1e-9)
                ),
                "",
                "",
            );
        }
        if self.create_errors > 0 {
            out.push_str(&format!(
                "\nnote: {} creates failed; first: {}\n",
                self.create_errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        out
    }
}
