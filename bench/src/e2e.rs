//! `keel-bench e2e`: a Deployment end to end on `keel up`.
//!
//! Starts `keel up --agents N` (one control replica and N exec-runtime
//! node agents in one process) in a temp dir on loopback ports, waits for
//! N Ready nodes, then creates a `--replicas` Deployment of `keel/pause`
//! (or `--image keel/echo --readiness-probe`) through the API and times,
//! from just before the create is sent:
//!
//! - when the Deployment reports `status.readyReplicas` = replicas (the
//!   target: < 10 s);
//! - when the first, 50 %, 90 % and all pods turned Ready (first
//!   Ready=True condition of each pod, from a pod watch);
//! - for the breakdown, when all pods existed, were bound and were Running.
//!
//! Watch events are timestamped as their line is read. Afterwards `keel
//! up` is killed, and with it every process whose command line names the
//! temp dir (the pods' supervisors outlive a killed agent by design).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use serde_json::{json, Value};

use crate::cluster::{free_ports, log_tail};
use crate::scheduler::{connect, cpu_ticks, follow, get_json, post, Procs};
use crate::READY_TIMEOUT;

const NS: &str = "default";
const NAME: &str = "keel-bench-e2e";
/// How long the agents may take to register Ready nodes.
const NODES_TIMEOUT: Duration = Duration::from_secs(120);
/// The target.
const TARGET_S: f64 = 10.0;

#[derive(clap::Args, Debug)]
pub struct E2eArgs {
    /// Node agents `keel up` runs.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Replicas of the Deployment.
    #[arg(long, default_value_t = 100)]
    replicas: usize,
    /// Container image (built-in: keel/pause, keel/echo).
    #[arg(long, default_value = "keel/pause")]
    image: String,
    /// Add an HTTP readiness probe on port 8080 (for keel/echo).
    #[arg(long)]
    readiness_probe: bool,
    /// Give up this long after the create.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// keel binary [default: `keel` next to this executable].
    #[arg(long)]
    keel_bin: Option<PathBuf>,
}

pub async fn main(args: E2eArgs) -> Result<()> {
    ensure!(
        args.agents > 0 && args.replicas > 0,
        "--agents and --replicas must be positive"
    );
    let bin = match &args.keel_bin {
        Some(p) => p.clone(),
        None => crate::default_keel_bin()?,
    };
    ensure!(bin.is_file(), "keel binary not found at {}", bin.display());
    let mut procs = Procs::new("keel-bench-e2e-")?;
    let data_dir = procs.path().join("keel-data");
    let ports = free_ports(2)?;
    let mut cmd = Command::new(&bin);
    cmd.arg("up")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--agents", &args.agents.to_string()])
        .args(["--listen-client", &format!("127.0.0.1:{}", ports[0])])
        .args(["--listen-peer", &format!("127.0.0.1:{}", ports[1])])
        .args(["--listen-api", "127.0.0.1:0"]);
    eprintln!(
        "keel: starting `keel up --agents {}` in {} ({})",
        args.agents,
        procs.path().display(),
        bin.display()
    );
    let started = Instant::now();
    procs.spawn("up", cmd)?;

    let report = tokio::select! {
        r = run(&args, &mut procs, data_dir.join("kubeconfig"), started) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let log = procs.path().join("up.log");
            bail!("{e:#}\n--- {} ---\n{}", log.display(), log_tail(&log, 40));
        }
    };
    drop(procs);

    println!(
        "\nkeel up --agents {}; Deployment of {} x {}{} (no resource requests)\n",
        args.agents,
        args.replicas,
        args.image,
        if args.readiness_probe {
            " with an HTTP readiness probe"
        } else {
            ""
        }
    );
    print!("{}", report.markdown(&args));
    Ok(())
}

/// First times each pod reached a stage.
#[derive(Default, Clone)]
struct PodTimes {
    added: Option<Instant>,
    bound: Option<Instant>,
    running: Option<Instant>,
    ready: Option<Instant>,
}

struct Report {
    nodes_ready_after: Duration,
    t0: Instant,
    deployment_ready: Option<Instant>,
    pods: HashMap<String, PodTimes>,
    /// Pods Ready at the end.
    ready_now: usize,
    up_cpu_s: Option<f64>,
    /// `keel up`'s (VmRSS, VmHWM) in KiB once every pod is Ready.
    up_rss_kib: Option<(u64, u64)>,
}

impl Report {
    fn markdown(&self, args: &E2eArgs) -> String {
        let n = args.replicas;
        let met = |ok: bool| if ok { "met" } else { "not met" };
        let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(self.t0));
        let fmt =
            |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.2}", d.as_secs_f64()));
        let stage = |f: fn(&PodTimes) -> Option<Instant>| {
            let mut v: Vec<Instant> = self.pods.values().filter_map(f).collect();
            v.sort();
            v
        };
        // When the k-th of n pods (k = ceil(n * frac)) reached the stage.
        let kth = |v: &[Instant], frac: f64| {
            let k = ((n as f64 * frac).ceil() as usize).clamp(1, n);
            since(v.get(k - 1).copied())
        };
        let added = stage(|p| p.added);
        let bound = stage(|p| p.bound);
        let running = stage(|p| p.running);
        let ready = stage(|p| p.ready);
        let dep = since(self.deployment_ready);

        let mut out = String::new();
        out.push_str("| metric (from the Deployment create) | seconds | target | |\n");
        out.push_str("|---|---:|---|---|\n");
        let mut row = |name: String, value: String, target: &str, verdict: &str| {
            out.push_str(&format!("| {name} | {value} | {target} | {verdict} |\n"));
        };
        row(
            format!("Deployment readyReplicas = {n}"),
            fmt(dep),
            "< 10 s",
            met(dep.is_some_and(|d| d.as_secs_f64() < TARGET_S)),
        );
        row("first pod Ready".into(), fmt(kth(&ready, 0.0)), "", "");
        row("50% pods Ready".into(), fmt(kth(&ready, 0.5)), "", "");
        row("90% pods Ready".into(), fmt(kth(&ready, 0.9)), "", "");
        row(
            format!("100% pods Ready ({n})"),
            fmt(kth(&ready, 1.0)),
            "< 10 s",
            met(kth(&ready, 1.0).is_some_and(|d| d.as_secs_f64() < TARGET_S)),
        );
        row(
            format!("breakdown: all {n} pods created"),
            fmt(kth(&added, 1.0)),
            "",
            "",
        );
        row(
            format!("breakdown: all {n} pods bound"),
            fmt(kth(&bound, 1.0)),
            "",
            "",
        );
        row(
            format!("breakdown: all {n} pods Running"),
            fmt(kth(&running, 1.0)),
            "",
            "",
        );
        out.push_str(&format!(
            "\n`keel up` to {} Ready nodes: {:.2} s; pods seen: {}, Ready at the end: {}{}\n",
            args.agents,
            self.nodes_ready_after.as_secs_f64(),
            self.pods.len(),
            self.ready_now,
            self.up_cpu_s.map_or(String::new(), |c| format!(
                "; `keel up` CPU from create to all Ready: {c:.1} s"
            )),
        ));
        if let Some((rss, hwm)) = self.up_rss_kib {
            out.push_str(&format!(
                "`keel up` resident memory with {n} pods Ready: {:.1} MiB (peak {:.1} MiB)\n",
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0
            ));
        }
        out
    }
}

fn deployment(args: &E2eArgs) -> Value {
    let mut container = json!({"name": "app", "image": args.image});
    if args.readiness_probe {
        container["readinessProbe"] = json!({
            "httpGet": {"path": "/", "port": 8080},
            "periodSeconds": 1,
        });
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "replicas": args.replicas,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {"terminationGracePeriodSeconds": 0, "containers": [container]},
            },
        },
    })
}

fn condition_true(obj: &Value, kind: &str) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

async fn run(
    args: &E2eArgs,
    procs: &mut Procs,
    kubeconfig: PathBuf,
    started: Instant,
) -> Result<Report> {
    let client = connect(procs, &kubeconfig, READY_TIMEOUT).await?;
    eprintln!(
        "keel: API up after {:.2} s; waiting for {} Ready nodes ...",
        started.elapsed().as_secs_f64(),
        args.agents
    );
    loop {
        procs.check_alive()?;
        let nodes = get_json(&client, "/api/v1/nodes").await?;
        let ready = nodes["items"].as_array().map_or(0, |v| {
            v.iter().filter(|n| condition_true(n, "Ready")).count()
        });
        if ready >= args.agents {
            break;
        }
        ensure!(
            started.elapsed() < NODES_TIMEOUT,
            "only {ready} of {} nodes Ready after {NODES_TIMEOUT:?}",
            args.agents
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let nodes_ready_after = started.elapsed();
    eprintln!(
        "keel: {} nodes Ready after {:.2} s",
        args.agents,
        nodes_ready_after.as_secs_f64()
    );

    let list = get_json(&client, &format!("/api/v1/namespaces/{NS}/pods?limit=1")).await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let n = args.replicas;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);

    let c = client.clone();
    let pod_rv = rv.clone();
    let pod_watch = tokio::spawn(async move {
        let mut pods: HashMap<String, PodTimes> = HashMap::new();
        let mut ready_now: HashMap<String, bool> = HashMap::new();
        let path = format!("/api/v1/namespaces/{NS}/pods?labelSelector=app%3D{NAME}");
        follow(&c, &path, pod_rv, deadline, |kind, obj, at| {
            if obj["metadata"]["labels"]["app"] != NAME {
                return false;
            }
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if kind == "DELETED" {
                ready_now.remove(&name);
                return false;
            }
            let p = pods.entry(name.clone()).or_default();
            p.added.get_or_insert(at);
            if obj["spec"]["nodeName"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
            {
                p.bound.get_or_insert(at);
            }
            if obj["status"]["phase"] == "Running" {
                p.running.get_or_insert(at);
            }
            let ready = condition_true(obj, "Ready");
            if ready {
                p.ready.get_or_insert(at);
            }
            ready_now.insert(name, ready);
            ready_now.values().filter(|r| **r).count() >= n
        })
        .await?;
        let ready = ready_now.values().filter(|r| **r).count();
        anyhow::Ok((pods, ready))
    });
    let c = client.clone();
    let dep_watch = tokio::spawn(async move {
        let mut at_ready = None;
        let path = format!("/apis/apps/v1/namespaces/{NS}/deployments");
        follow(&c, &path, rv, deadline, |_, obj, at| {
            let ok = obj["metadata"]["name"] == NAME
                && obj["status"]["readyReplicas"].as_u64() >= Some(n as u64)
                && obj["status"]["observedGeneration"].as_i64()
                    >= obj["metadata"]["generation"].as_i64();
            if ok {
                at_ready = Some(at);
            }
            ok
        })
        .await?;
        anyhow::Ok(at_ready)
    });
    // Let both watches register before the create.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let up_pid = procs.pids()[0];
    let cpu_before = cpu_ticks(&[up_pid]);
    eprintln!("keel: creating Deployment {NAME} with {n} replicas ...");
    let t0 = Instant::now();
    post(
        &client,
        &format!("/apis/apps/v1/namespaces/{NS}/deployments"),
        &deployment(args),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let deployment_ready = dep_watch.await??;
    let (pods, ready_now) = pod_watch.await??;
    let cpu_after = cpu_ticks(&[up_pid]);
    // Let the loops settle (status writes, events) before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let up_rss_kib = rss_kib(up_pid);
    procs.check_alive()?;
    eprintln!(
        "keel: Deployment ready: {}; {ready_now} of {n} pods Ready",
        deployment_ready.map_or("no (timed out)".to_string(), |t| format!(
            "after {:.2} s",
            (t - t0).as_secs_f64()
        ))
    );
    Ok(Report {
        nodes_ready_after,
        t0,
        deployment_ready,
        pods,
        ready_now,
        up_cpu_s: cpu_before
            .zip(cpu_after)
            .map(|(b, a)| (a - b) as f64 / 100.0),
        up_rss_kib,
    })
}

/// (VmRSS, VmHWM) of `pid` in KiB: resident memory now and at its peak.
pub(crate) fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
