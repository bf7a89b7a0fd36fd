//! `keel-bench api`: the Kubernetes API of a 3-replica keel control plane,
//! measured the way a controller-heavy cluster uses it.
//!
//! 1. creates: `--pods` pods (one container each) in `default` from
//!    `--clients` closed-loop workers spread over the replicas (followers
//!    forward writes to the leader); per-request latency from just before
//!    the request is sent to the full response body;
//! 2. full list: one `GET /api/v1/namespaces/default/pods` without a limit,
//!    `--lists` times (round-robin over the replicas), median reported;
//! 3. watch delivery: `--watchers` watches of all pods (spread round-robin
//!    over the replicas) from the list's resourceVersion, so each sees the
//!    list's pods and then `--watch-pods` more creates made at a steady
//!    `--watch-rate`; for every (event, watcher) pair, the delay from the
//!    moment the create's 201 response was received (and, second, from the
//!    moment the request was sent) to the event line's arrival. Event lines
//!    are timestamped when read and only scanned for their type and name,
//!    so the benchmark's own CPU stays small next to the servers'.
//!
//! The client is `kube` 5.0's `Client`, built from the kubeconfig each
//! replica writes (its URL, the cluster CA, the admin token), one per
//! replica and shared by the workers using that replica. kube speaks
//! HTTP/1.1 over TLS with a keep-alive pool, so every in-flight request has
//! a connection of its own (as many as the workers on that replica); the
//! connections are opened before the clock starts. Bodies are raw JSON
//! (`serde_json::Value` where the benchmark has to look inside), so client
//! CPU spent on typed decoding does not compete with the servers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::{AsyncBufReadExt, StreamExt};
use hdrhistogram::Histogram;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::Request;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

use crate::cluster::{Cluster, System};
use crate::workload::{micros, new_hist};
use crate::{READY_TIMEOUT, REPLICAS};

/// A create or list slower than this counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the watchers may take to catch up after the last create.
const WATCH_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Time for the watch streams to register with the store before the first
/// create (they start from the list's revision, so nothing is lost either
/// way; this only keeps catch-up out of the first events' latency).
const WATCH_SETTLE: Duration = Duration::from_millis(500);
const PODS_PATH: &str = "/api/v1/namespaces/default/pods";
/// Name prefixes of the two create phases.
const LOAD_PREFIX: &str = "bench-";
const WATCH_PREFIX: &str = "bench-w-";

#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// Pods created (and then listed) in the create phase.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent closed-loop clients creating them, spread over the replicas.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Full lists of all pods; the median is reported.
    #[arg(long, default_value_t = 5)]
    lists: usize,
    /// Pods created while the watches listen.
    #[arg(long, default_value_t = 2_000)]
    watch_pods: usize,
    /// Concurrent watches of all pods, spread over the replicas.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Steady rate of those creates, per second.
    #[arg(long, default_value_t = 500)]
    watch_rate: u32,
    /// keel binary [default: `keel` next to this executable].
    #[arg(long)]
    keel_bin: Option<PathBuf>,
}

/// The issue's targets.
const TARGET_CREATES_PER_SEC: f64 = 5_000.0;
const TARGET_CREATE_P99_MS: f64 = 50.0;
const TARGET_LIST_MS: f64 = 300.0;
const TARGET_WATCH_P99_MS: f64 = 20.0;

pub async fn main(args: ApiArgs) -> Result<()> {
    ensure!(
        args.pods > 0 && args.clients > 0 && args.lists > 0,
        "--pods, --clients and --lists must be positive"
    );
    ensure!(
        args.watch_pods > 0 && args.watch_rate > 0 && args.watchers > 0,
        "--watch-pods, --watch-rate and --watchers must be positive"
    );
    let bin = match &args.keel_bin {
        Some(p) => p.clone(),
        None => crate::default_keel_bin()?,
    };
    eprintln!("keel: starting {REPLICAS} replicas ({})", bin.display());
    let mut cluster = Cluster::start(System::Keel, &bin, REPLICAS)?;
    cluster.wait_ready(READY_TIMEOUT).await?;
    let clients = connect(&mut cluster, READY_TIMEOUT).await?;
    eprintln!(
        "keel: API served by all replicas (pids {:?})",
        cluster.pids()
    );

    let pids = cluster.pids();
    let report = tokio::select! {
        r = run(&args, &clients, &pids) => r?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    drop(clients);
    drop(cluster);

    println!(
        "\n{REPLICAS} replicas; creates: {} pods from {} clients; list: median of {}; \
         watch: {} watches over the replicas, {} pods created at {}/s\n",
        args.pods, args.clients, args.lists, args.watchers, args.watch_pods, args.watch_rate
    );
    print!("{}", report.markdown(&args));
    Ok(())
}

/// What the three phases measured.
struct Report {
    creates: Phase,
    /// CPU seconds the replicas used during the create phase.
    create_cpu_s: Option<f64>,
    list_ms: Vec<f64>,
    list_bytes: usize,
    /// Event delay from the create's response.
    watch_from_done: Histogram<u64>,
    /// Event delay from the create's request being sent.
    watch_from_start: Histogram<u64>,
    /// (event, watcher) pairs that arrived before the 201 did.
    watch_before_ack: u64,
    /// (event, watcher) pairs for successful creates that never arrived.
    watch_missing: u64,
    watch_creates: Phase,
}

/// Latencies and failures of one batch of creates.
struct Phase {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Phase {
    fn per_sec(&self) -> f64 {
        self.hist.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

impl Report {
    fn markdown(&self, args: &ApiArgs) -> String {
        let met = |ok: bool| if ok { "met" } else { "not met" };
        let c = &self.creates;
        let list = median(&self.list_ms);
        let w50 = ms(&self.watch_from_done, 0.50);
        let w99 = ms(&self.watch_from_done, 0.99);
        let mut out = String::new();
        out.push_str("| metric | measured | target | |\n|---|---:|---|---|\n");
        let mut row = |name: String, value: String, target: &str, verdict: &str| {
            out.push_str(&format!("| {name} | {value} | {target} | {verdict} |\n"));
        };
        row(
            format!("creates/s ({} pods, {} clients)", args.pods, args.clients),
            format!("{:.0}", c.per_sec()),
            "≥ 5,000/s",
            met(c.per_sec() >= TARGET_CREATES_PER_SEC),
        );
        if let Some(cpu) = self.create_cpu_s {
            let n = c.hist.len().max(1) as f64;
            row(
                "API CPU per create, ms (3 replicas together)".into(),
                format!("{:.2}", cpu * 1000.0 / n),
                "",
                "",
            );
        }
        row(
            "create p50 ms".into(),
            format!("{:.2}", ms(&c.hist, 0.50)),
            "",
            "",
        );
        row(
            "create p99 ms".into(),
            format!("{:.2}", ms(&c.hist, 0.99)),
            "< 50 ms",
            met(ms(&c.hist, 0.99) < TARGET_CREATE_P99_MS),
        );
        row(
            format!(
                "full list ms ({} pods, {:.1} MB, median of {})",
                args.pods,
                self.list_bytes as f64 / 1e6,
                self.list_ms.len()
            ),
            format!("{list:.0}"),
            "< 300 ms",
            met(list < TARGET_LIST_MS),
        );
        let watched = format!("{} watchers", args.watchers);
        row(
            format!("watch delivery p50 ms (from create response, {watched})"),
            format!("{w50:.2}"),
            "",
            "",
        );
        row(
            format!("watch delivery p99 ms (from create response, {watched})"),
            format!("{w99:.2}"),
            "< 20 ms",
            met(w99 < TARGET_WATCH_P99_MS && self.watch_missing == 0),
        );
        row(
            "watch delivery p50 / p99 ms (from create request sent)".into(),
            format!(
                "{:.2} / {:.2}",
                ms(&self.watch_from_start, 0.50),
                ms(&self.watch_from_start, 0.99)
            ),
            "",
            "",
        );
        let wc = &self.watch_creates;
        out.push_str(&format!(
            "\nlists (ms, in order): {}\n",
            self.list_ms
                .iter()
                .map(|m| format!("{m:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push_str(&format!(
            "watch phase creates: {:.0}/s achieved, p50 {:.2} ms, p99 {:.2} ms; \
             {} of {} (event, watcher) pairs arrived before the create's response \
             (counted as 0 ms from the response)\n",
            wc.per_sec(),
            ms(&wc.hist, 0.50),
            ms(&wc.hist, 0.99),
            self.watch_before_ack,
            self.watch_from_done.len(),
        ));
        for (name, p) in [("create", c), ("watch-phase create", wc)] {
            if p.errors > 0 {
                out.push_str(&format!(
                    "note: {} {name} requests failed; first: {}\n",
                    p.errors,
                    p.first_error.as_deref().unwrap_or("?")
                ));
            }
        }
        if self.watch_missing > 0 {
            out.push_str(&format!(
                "note: {} (event, watcher) pairs never arrived\n",
                self.watch_missing
            ));
        }
        out
    }
}

async fn run(args: &ApiArgs, clients: &[Client], pids: &[u32]) -> Result<Report> {
    let before = scrape_all(clients).await;
    eprintln!(
        "keel: creating {} pods from {} clients ...",
        args.pods, args.clients
    );
    let cpu_before = crate::scheduler::cpu_ticks(pids);
    let creates = create_closed_loop(clients, args.clients, args.pods).await?;
    let cpu_after = crate::scheduler::cpu_ticks(pids);
    // Clock ticks are 1/100 s on Linux.
    let create_cpu_s = cpu_before
        .zip(cpu_after)
        .map(|(b, a)| (a - b) as f64 / 100.0);
    eprintln!(
        "keel: creates: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} ok, {} errors)",
        creates.per_sec(),
        ms(&creates.hist, 0.50),
        ms(&creates.hist, 0.99),
        creates.hist.max() as f64 / 1000.0,
        creates.hist.len(),
        creates.errors
    );
    let after = scrape_all(clients).await;
    print_server_side(&before, &after, "POST");

    eprintln!("keel: listing all pods {} times ...", args.lists);
    let mut list_ms = Vec::with_capacity(args.lists);
    let mut list_bytes = 0;
    let mut list_rv = 0;
    for i in 0..args.lists {
        let client = &clients[i % clients.len()];
        let (took, bytes, rv, items) = list_pods(client).await?;
        ensure!(
            items as u64 == creates.hist.len(),
            "list {i} returned {items} pods, {} were created",
            creates.hist.len()
        );
        eprintln!(
            "keel: list {i} via replica {}: {:.1} ms, {items} pods, {bytes} bytes, rv {rv}",
            i % clients.len() + 1,
            took.as_secs_f64() * 1000.0
        );
        list_ms.push(took.as_secs_f64() * 1000.0);
        list_bytes = bytes;
        list_rv = rv;
    }
    print_server_side(&after, &scrape_all(clients).await, "GET");

    eprintln!(
        "keel: watching from rv {list_rv} on every replica, creating {} pods at {}/s ...",
        args.watch_pods, args.watch_rate
    );
    let w = watch_phase(clients, args, list_rv).await?;
    Ok(Report {
        creates,
        create_cpu_s,
        list_ms,
        list_bytes,
        watch_from_done: w.from_done,
        watch_from_start: w.from_start,
        watch_before_ack: w.before_ack,
        watch_missing: w.missing,
        watch_creates: w.creates,
    })
}

/// One client per replica, from the kubeconfig that replica wrote, once it
/// answers for the `default` namespace (so it serves with a quorum).
async fn connect(cluster: &mut Cluster, timeout: Duration) -> Result<Vec<Client>> {
    let deadline = Instant::now() + timeout;
    let mut clients = Vec::new();
    for (addr, kubeconfig) in cluster.api_endpoints() {
        let mut last_err = String::from("not tried");
        loop {
            cluster.check_alive()?;
            if Instant::now() >= deadline {
                bail!("keel API at {addr} not ready after {timeout:?}: {last_err}");
            }
            match try_client(&kubeconfig, addr.port()).await {
                Ok(c) => {
                    clients.push(c);
                    break;
                }
                Err(e) => last_err = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(clients)
}

async fn try_client(kubeconfig: &Path, port: u16) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    // Count what the server answered: kube's default retry of 503/504
    // would resend a create whose first attempt may have been written,
    // turning a slow answer into a 409 AlreadyExists.
    config.default_retry = false;
    ensure!(
        config.cluster_url.port_u16() == Some(port),
        "{} names {}, not port {port}",
        kubeconfig.display(),
        config.cluster_url
    );
    let client = Client::try_from(config)?;
    let attempt = client.request_text(get("/api/v1/namespaces/default"));
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .context("GET namespace default timed out")??;
    Ok(client)
}

fn get(path: &str) -> Request<Vec<u8>> {
    Request::get(path)
        .header(ACCEPT, "application/json")
        .body(Vec::new())
        .expect("valid request")
}

/// The smallest valid pod: one container with a name and an image.
fn create_pod(name: &str) -> Request<Vec<u8>> {
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"containers":[{{"name":"app","image":"registry.k8s.io/pause:3.10"}}]}}}}"#
    );
    Request::post(PODS_PATH)
        .header(ACCEPT, "application/json")
        .header(CONTENT_TYPE, "application/json")
        .body(body.into_bytes())
        .expect("valid request")
}

/// One create; Err carries the reason it failed.
async fn create(client: &Client, name: &str) -> Result<(), String> {
    match tokio::time::timeout(OP_TIMEOUT, client.request_text(create_pod(name))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {OP_TIMEOUT:?}")),
    }
}

/// Opens (and pools) one connection per worker before the clock starts, so
/// TLS handshakes are not measured as create latency.
async fn warm_up(clients: &[Client], workers: usize) -> Result<()> {
    let gets = (0..workers).map(|w| {
        let c = clients[w % clients.len()].clone();
        async move { c.request_text(get("/api/v1/namespaces/default")).await }
    });
    for r in futures::future::join_all(gets).await {
        r.context("warm-up GET")?;
    }
    Ok(())
}

/// `n` creates from `workers` closed-loop tasks; worker `w` uses replica
/// `w % replicas`.
async fn create_closed_loop(clients: &[Client], workers: usize, n: usize) -> Result<Phase> {
    warm_up(clients, workers).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let client = clients[w % clients.len()].clone();
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let name = format!("{LOAD_PREFIX}{i:06}");
                let t = Instant::now();
                match create(&client, &name).await {
                    Ok(()) => hist.record(micros(t.elapsed()))?,
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            anyhow::Ok((hist, errors, first_error))
        }));
    }
    let mut phase = Phase {
        hist: new_hist(),
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (h, e, first) = t.await??;
        phase.hist.add(h)?;
        phase.errors += e;
        if phase.first_error.is_none() {
            phase.first_error = first;
        }
    }
    phase.elapsed = start.elapsed();
    Ok(phase)
}

/// One full list: time to the last byte of the body, its size, its
/// resourceVersion and item count (decoded after the clock stops).
async fn list_pods(client: &Client) -> Result<(Duration, usize, i64, usize)> {
    let t = Instant::now();
    let text = tokio::time::timeout(OP_TIMEOUT, client.request_text(get(PODS_PATH)))
        .await
        .context("list timed out")??;
    let took = t.elapsed();
    let v: Value = serde_json::from_str(&text).context("list body is not JSON")?;
    let rv = v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("list has no resourceVersion")?;
    let items = v["items"].as_array().map_or(0, Vec::len);
    Ok((took, text.len(), rv, items))
}

/// What the watch phase measured.
struct WatchResult {
    from_done: Histogram<u64>,
    from_start: Histogram<u64>,
    before_ack: u64,
    missing: u64,
    creates: Phase,
}

/// When create `i` of the watch phase was sent and answered (None: failed).
type Timing = Option<(Instant, Instant)>;

async fn watch_phase(clients: &[Client], args: &ApiArgs, rv: i64) -> Result<WatchResult> {
    let n = args.watch_pods;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(None::<Instant>);
    let mut watchers = Vec::new();
    for k in 0..args.watchers {
        let r = k % clients.len();
        let path = format!("{PODS_PATH}?watch=true&resourceVersion={rv}");
        let stream = clients[r]
            .request_stream(get(&path))
            .await
            .with_context(|| format!("opening watch {k} on replica {}", r + 1))?;
        let stop = stop_rx.clone();
        watchers.push((r, tokio::spawn(watcher(stream, n, stop))));
    }
    tokio::time::sleep(WATCH_SETTLE).await;

    // Paced creates: create `i` is due at `t0 + i / rate`; worker `w` owns
    // every `workers`-th create, so a slow create delays only its worker.
    let workers = args.clients.min(n);
    warm_up(clients, workers).await?;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.watch_rate));
    let t0 = Instant::now() + Duration::from_millis(10);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = clients[w % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut out: Vec<(usize, Result<Timing, String>)> = Vec::new();
            for i in (w..n).step_by(workers) {
                let due = t0 + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                let name = format!("{WATCH_PREFIX}{i:06}");
                let sent = Instant::now();
                let r = create(&client, &name).await;
                out.push((i, r.map(|()| Some((sent, Instant::now())))));
            }
            out
        }));
    }
    let mut timings: Vec<Timing> = vec![None; n];
    let mut creates = Phase {
        hist: new_hist(),
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        for (i, r) in t.await? {
            match r {
                Ok(timing) => {
                    if let Some((sent, done)) = timing {
                        creates.hist.record(micros(done - sent))?;
                    }
                    timings[i] = timing;
                }
                Err(e) => {
                    creates.errors += 1;
                    creates.first_error.get_or_insert(e);
                }
            }
        }
    }
    creates.elapsed = t0.elapsed();
    let _ = stop_tx.send(Some(Instant::now() + WATCH_DRAIN_TIMEOUT));

    let mut res = WatchResult {
        from_done: new_hist(),
        from_start: new_hist(),
        before_ack: 0,
        missing: 0,
        creates,
    };
    let mut per_replica: Vec<Histogram<u64>> = clients.iter().map(|_| new_hist()).collect();
    for (r, w) in watchers {
        let arrivals = w.await??;
        let mine = &mut per_replica[r];
        for (timing, arrival) in timings.iter().zip(&arrivals) {
            let Some((sent, done)) = timing else { continue };
            let Some(at) = arrival else {
                res.missing += 1;
                continue;
            };
            let from_done = at.saturating_duration_since(*done);
            if *at < *done {
                res.before_ack += 1;
            }
            res.from_done.record(micros(from_done))?;
            mine.record(micros(from_done))?;
            res.from_start
                .record(micros(at.saturating_duration_since(*sent)))?;
        }
    }
    for (r, mine) in per_replica.iter().enumerate() {
        eprintln!(
            "keel: watches on replica {}: {} events, from create response p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            r + 1,
            mine.len(),
            ms(mine, 0.50),
            ms(mine, 0.99),
            mine.max() as f64 / 1000.0
        );
    }
    Ok(res)
}

/// Reads one watch stream until it has seen an ADDED event for each of the
/// `n` watch-phase pods or the drain deadline passes; returns when each
/// arrived (timestamped as the line is read, before it is decoded).
async fn watcher(
    stream: impl futures::AsyncBufRead + Unpin,
    n: usize,
    mut stop: tokio::sync::watch::Receiver<Option<Instant>>,
) -> Result<Vec<Option<Instant>>> {
    let mut lines = stream.lines();
    let mut arrivals: Vec<Option<Instant>> = vec![None; n];
    let mut seen = 0;
    while seen < n {
        let deadline = *stop.borrow();
        let line = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), lines.next()).await {
                Ok(l) => l,
                Err(_) => break,
            },
            None => tokio::select! {
                l = lines.next() => l,
                _ = stop.changed() => continue,
            },
        };
        let at = Instant::now();
        let Some(line) = line else { break };
        let line = line.context("reading the watch stream")?;
        let (kind, name) = event_type_and_name(&line)?;
        ensure!(kind != "ERROR", "watch ended with an error: {line}");
        let Some(i) = name
            .strip_prefix(WATCH_PREFIX)
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        if kind == "ADDED" && i < n && arrivals[i].is_none() {
            arrivals[i] = Some(at);
            seen += 1;
        }
    }
    Ok(arrivals)
}

/// The type of a watch event line and, for a watch-phase pod, its name,
/// found by scanning (a watch-phase pod's name is the only string starting
/// with [`WATCH_PREFIX`]; the server writes `{"type":"..."` first). Lines
/// of another shape are decoded in full.
fn event_type_and_name(line: &str) -> Result<(String, String)> {
    let kind = line
        .strip_prefix(r#"{"type":""#)
        .and_then(|rest| rest.split('"').next());
    let Some(kind) = kind else {
        let ev: Value = serde_json::from_str(line).context("watch event is not JSON")?;
        let kind = ev["type"].as_str().unwrap_or("").to_string();
        let name = ev["object"]["metadata"]["name"].as_str().unwrap_or("");
        return Ok((kind, name.to_string()));
    };
    let needle = format!(r#""name":"{WATCH_PREFIX}"#);
    let name = line
        .find(&needle)
        .and_then(|at| line[at + 8..].split('"').next())
        .unwrap_or("");
    Ok((kind.to_string(), name.to_string()))
}

/// `/metrics` of every replica as series → value (empty on failure).
async fn scrape_all(clients: &[Client]) -> Vec<HashMap<String, f64>> {
    let mut out = Vec::new();
    for c in clients {
        let text = c.request_text(get("/metrics")).await.unwrap_or_default();
        out.push(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect(),
        );
    }
    out
}

/// Where the time went on the servers: each replica's mean handling time
/// of `verb` pods (until the response is built, not sent) and the mean
/// time in replicated store writes made there, from `/metrics` deltas.
fn print_server_side(before: &[HashMap<String, f64>], after: &[HashMap<String, f64>], verb: &str) {
    let post =
        format!(r#"apiserver_request_duration_seconds_{{}}{{verb="{verb}",resource="pods"}}"#);
    const WRITE: &str = "keel_store_write_duration_seconds_{}";
    for (r, (b, a)) in before.iter().zip(after).enumerate() {
        let delta = |series: &str, stat: &str| {
            let k = series.replace("{}", stat);
            a.get(&k).copied().unwrap_or(0.0) - b.get(&k).copied().unwrap_or(0.0)
        };
        let mean_ms = |series: &str| {
            let n = delta(series, "count");
            if n > 0.0 {
                format!("{:.2} ms over {n:.0}", delta(series, "sum") / n * 1000.0)
            } else {
                "-".to_string()
            }
        };
        let leader = a.get("keel_raft_is_leader").copied().unwrap_or(0.0) == 1.0;
        eprintln!(
            "keel: replica {}{}: server-side {verb} pods mean {}; store write mean {}",
            r + 1,
            if leader { " (leader)" } else { "" },
            mean_ms(&post),
            mean_ms(WRITE)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_body_is_json() {
        let req = create_pod("bench-000001");
        let v: Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(v["metadata"]["name"], "bench-000001");
        assert_eq!(
            v["spec"]["containers"][0]["image"],
            "registry.k8s.io/pause:3.10"
        );
    }

    #[test]
    fn event_lines_are_scanned_like_decoded() {
        let line = r#"{"type":"ADDED","object":{"metadata":{"resourceVersion":"9","name":"bench-w-000012"},"spec":{"containers":[{"name":"app"}]}}}"#;
        let (kind, name) = event_type_and_name(line).unwrap();
        assert_eq!((kind.as_str(), name.as_str()), ("ADDED", "bench-w-000012"));
        let other = r#"{"object":{"metadata":{"name":"bench-000001"}},"type":"MODIFIED"}"#;
        let (kind, name) = event_type_and_name(other).unwrap();
        assert_eq!((kind.as_str(), name.as_str()), ("MODIFIED", "bench-000001"));
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
