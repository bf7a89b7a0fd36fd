//! `keel-bench pods`: what a pod costs on each container runtime.
//!
//! For each runtime (`keel`, the isolating one; `exec`; `docker` when a
//! daemon answers) it starts `keel up --agents 1 --runtime <rt>` in a temp
//! dir on loopback ports, then:
//!
//! - creates `--pods` bare pods of `keel/pause` through the API, one after
//!   the other, and times each from just before its create to the first
//!   watch event showing it `Running` (p50/p99, and until all ran);
//! - sums the resident memory of the pods' supervisors (`keel __supervise`
//!   processes naming the temp dir) and of their container processes, per
//!   pod; on docker the supervisor column is the containers'
//!   `containerd-shim` processes (the daemons themselves are not counted).
//!   Both as RSS (every page a process maps, so the keel binary's shared
//!   text counts in full in every supervisor and built-in container) and as
//!   PSS (`/proc/<pid>/smaps_rollup`: a shared page divided among the
//!   processes mapping it, so the sum over all processes is the memory
//!   they really occupy; the agent's and other processes' shares of the
//!   same binary pages are not counted);
//! - runs `kubectl exec <pod> -- true` (docker: `/keel --version`, see
//!   [`exec_command`]) `--execs` times and times each round trip (kubectl
//!   start, API server, agent, runtime, exit code back).
//!
//! Runtimes run one after the other, never together; each `keel up` and
//! everything under its temp dir is killed before the next starts.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::cluster::{free_ports, log_tail};
use crate::scheduler::{connect, follow, get_json, post, Procs};
use crate::READY_TIMEOUT;

const NS: &str = "default";
const LABEL: &str = "keel-bench-pods";
const NODES_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(clap::Args, Debug)]
pub struct PodsArgs {
    /// Pods created per runtime.
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// `kubectl exec -- true` round trips per runtime.
    #[arg(long, default_value_t = 50)]
    execs: usize,
    /// Runtimes to measure, in order (docker is skipped when no daemon answers).
    #[arg(long, value_delimiter = ',', default_value = "keel,exec,docker")]
    runtimes: Vec<String>,
    /// Give up on a runtime's pods this long after the first create.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// keel binary [default: `keel` next to this executable].
    #[arg(long)]
    keel_bin: Option<PathBuf>,
}

/// One runtime's figures.
struct Row {
    runtime: String,
    running: usize,
    start_ms: Vec<f64>,
    all_running_s: f64,
    supervisor_kib_per_pod: Option<f64>,
    container_kib_per_pod: Option<f64>,
    supervisor_pss_kib_per_pod: Option<f64>,
    container_pss_kib_per_pod: Option<f64>,
    exec_ms: Vec<f64>,
    exec_failures: usize,
}

pub async fn main(args: PodsArgs) -> Result<()> {
    ensure!(args.pods > 0, "--pods must be positive");
    let bin = match &args.keel_bin {
        Some(p) => p.clone(),
        None => crate::default_keel_bin()?,
    };
    ensure!(bin.is_file(), "keel binary not found at {}", bin.display());
    let mut rows = Vec::new();
    for rt in &args.runtimes {
        ensure!(
            ["keel", "exec", "docker"].contains(&rt.as_str()),
            "unknown runtime {rt:?} (keel, exec, docker)"
        );
        if rt == "docker" && !docker_answers() {
            eprintln!("docker: no daemon answers `docker info`; skipped");
            continue;
        }
        let row = tokio::select! {
            r = one_runtime(&args, &bin, rt) => r?,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        };
        rows.push(row);
    }
    println!(
        "\n{} pods of keel/pause per runtime on `keel up --agents 1`; {} `kubectl exec -- true` each\n",
        args.pods, args.execs
    );
    print!("{}", markdown(&rows));
    println!("\nMemory per pod as PSS (shared pages divided among the processes mapping them)\n");
    print!("{}", pss_markdown(&rows));
    Ok(())
}

fn docker_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn one_runtime(args: &PodsArgs, bin: &Path, runtime: &str) -> Result<Row> {
    let mut procs = Procs::new(&format!("keel-bench-pods-{runtime}-"))?;
    let data_dir = procs.path().join("keel-data");
    let ports = free_ports(2)?;
    let mut cmd = Command::new(bin);
    cmd.arg("up")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--agents", "1", "--runtime", runtime])
        .args(["--allowed-registries", "127.0.0.1,localhost"])
        .args(["--listen-client", &format!("127.0.0.1:{}", ports[0])])
        .args(["--listen-peer", &format!("127.0.0.1:{}", ports[1])])
        .args(["--listen-api", "127.0.0.1:0"]);
    eprintln!("{runtime}: starting keel up in {}", procs.path().display());
    procs.spawn("up", cmd)?;
    let measured = measure(args, &mut procs, &data_dir, runtime).await;
    if runtime == "docker" {
        // Docker containers outlive their agent by design: remove ours.
        remove_docker_containers(procs.path());
    }
    match measured {
        Ok(row) => Ok(row),
        Err(e) => {
            let log = procs.path().join("up.log");
            bail!(
                "{runtime}: {e:#}\n--- {} ---\n{}",
                log.display(),
                log_tail(&log, 40)
            );
        }
    }
}

async fn measure(args: &PodsArgs, procs: &mut Procs, data_dir: &Path, rt: &str) -> Result<Row> {
    let kubeconfig = data_dir.join("kubeconfig");
    let client = connect(procs, &kubeconfig, READY_TIMEOUT).await?;
    let started = Instant::now();
    loop {
        procs.check_alive()?;
        let nodes = get_json(&client, "/api/v1/nodes").await?;
        let ready = nodes["items"].as_array().is_some_and(|v| {
            v.iter().any(|n| {
                n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
        });
        if ready {
            break;
        }
        ensure!(
            started.elapsed() < NODES_TIMEOUT,
            "no Ready node after {NODES_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let list = get_json(&client, &format!("/api/v1/namespaces/{NS}/pods?limit=1")).await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let n = args.pods;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let c = client.clone();
    let watch = tokio::spawn(async move {
        let mut running: HashMap<String, Instant> = HashMap::new();
        let path = format!("/api/v1/namespaces/{NS}/pods?labelSelector=app%3D{LABEL}");
        follow(&c, &path, rv, deadline, |_, obj, at| {
            if obj["status"]["phase"] == "Running" {
                let name = obj["metadata"]["name"].as_str().unwrap_or_default();
                running.entry(name.to_string()).or_insert(at);
            }
            running.len() >= n
        })
        .await?;
        anyhow::Ok(running)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!("{rt}: creating {n} pods ...");
    let mut created = HashMap::new();
    let t0 = Instant::now();
    for i in 0..n {
        let name = format!("{LABEL}-{i}");
        created.insert(name.clone(), Instant::now());
        post(
            &client,
            &format!("/api/v1/namespaces/{NS}/pods"),
            &pod(&name),
        )
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("create pod {name}"))?;
    }
    let running = watch.await??;
    let mut start_ms: Vec<f64> = running
        .iter()
        .filter_map(|(name, at)| Some((*at - *created.get(name)?).as_secs_f64() * 1e3))
        .collect();
    start_ms.sort_by(f64::total_cmp);
    let all_running_s = running
        .values()
        .max()
        .map_or(f64::NAN, |last| (*last - t0).as_secs_f64());
    eprintln!(
        "{rt}: {} of {n} pods Running after {all_running_s:.2} s",
        running.len()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mem = match rt {
        "docker" => docker_memory()?,
        _ => supervisor_memory(procs.path()),
    };
    let per = |kib: u64| (mem.count > 0).then(|| kib as f64 / mem.count as f64);
    let (supervisor_kib_per_pod, container_kib_per_pod) = (per(mem.sup.rss), per(mem.cont.rss));
    let (supervisor_pss_kib_per_pod, container_pss_kib_per_pod) =
        (per(mem.sup.pss), per(mem.cont.pss));
    let mut exec_ms = Vec::new();
    let mut exec_failures = 0;
    let cache = procs.path().join("kube-cache");
    for i in 0..args.execs {
        let pod = format!("{LABEL}-{}", i % n);
        let t = Instant::now();
        let status = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["exec", &pod, "--"])
            .args(exec_command(rt))
            .env("KUBECACHEDIR", &cache)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("run kubectl")?;
        if status.success() {
            exec_ms.push(t.elapsed().as_secs_f64() * 1e3);
        } else {
            exec_failures += 1;
        }
    }
    exec_ms.sort_by(f64::total_cmp);
    procs.check_alive()?;
    Ok(Row {
        runtime: rt.to_string(),
        running: running.len(),
        start_ms,
        all_running_s,
        supervisor_kib_per_pod,
        container_kib_per_pod,
        supervisor_pss_kib_per_pod,
        container_pss_kib_per_pod,
        exec_ms,
        exec_failures,
    })
}

/// What `kubectl exec` runs: `true`, except on docker, whose `keel/pause`
/// image holds only the keel binary and its libraries (the other runtimes
/// run built-ins on the host's userland), so there it is `/keel --version`.
fn exec_command(runtime: &str) -> &'static [&'static str] {
    match runtime {
        "docker" => &["/keel", "--version"],
        _ => &["true"],
    }
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": LABEL}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "pause", "image": "keel/pause"}]
        }
    })
}

/// Resident memory of a group of processes, KiB.
#[derive(Debug, Default, Clone, Copy)]
struct Kib {
    rss: u64,
    pss: u64,
}

impl Kib {
    /// `pid`'s RSS and PSS; zero for a process that is gone.
    fn of(pid: u32) -> Kib {
        Kib {
            rss: rss_kib(pid).unwrap_or(0),
            pss: pss_kib(pid).unwrap_or(0),
        }
    }

    fn add(self, other: Kib) -> Kib {
        Kib {
            rss: self.rss + other.rss,
            pss: self.pss + other.pss,
        }
    }
}

/// Memory of the pods' per-pod processes: supervisors (docker: shims),
/// container processes, and how many pods they serve.
#[derive(Debug, Default)]
struct PodMemory {
    sup: Kib,
    cont: Kib,
    count: usize,
}

/// The `__supervise` processes whose command line names `dir`, and their
/// children.
fn supervisor_memory(dir: &Path) -> PodMemory {
    let needle = dir.to_string_lossy().to_string();
    let mut parent_of = Vec::new();
    let mut supervisors = HashSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return PodMemory::default();
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("__supervise") && cmdline.contains(&needle) {
            supervisors.insert(pid);
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid));
        }
    }
    let sup = supervisors
        .iter()
        .map(|p| Kib::of(*p))
        .fold(Kib::default(), Kib::add);
    let cont = parent_of
        .iter()
        .filter(|(_, ppid)| supervisors.contains(ppid))
        .map(|(pid, _)| Kib::of(*pid))
        .fold(Kib::default(), Kib::add);
    PodMemory {
        sup,
        cont,
        count: supervisors.len(),
    }
}

/// Memory of containerd shims, container processes, and containers, for
/// the running containers of the bench's pods: Docker's per-container
/// cost outside the daemons is its `containerd-shim` (one per container on
/// Docker 20.10's runc v2 shim), found by the container id in its command
/// line.
fn docker_memory() -> Result<PodMemory> {
    let out = Command::new("docker")
        .args(["ps", "-q", "--no-trunc", "--filter"])
        .arg(format!("label=io.keel.pod-namespace={NS}"))
        .args(["--filter", &format!("name=_{LABEL}-")])
        .output()
        .context("run docker ps")?;
    ensure!(out.status.success(), "docker ps failed");
    let ids: HashSet<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut shims = 0;
    let mut shim_kib = Kib::default();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_shim = args.first().is_some_and(|a| a.contains("containerd-shim"));
            let ours = args
                .windows(2)
                .any(|w| w[0] == "-id" && ids.contains(&w[1]));
            if is_shim && ours {
                shims += 1;
                shim_kib = shim_kib.add(Kib::of(pid));
            }
        }
    }
    let mut container_kib = Kib::default();
    for id in &ids {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Pid}}", id])
            .output()
            .context("run docker inspect")?;
        let pid = String::from_utf8_lossy(&out.stdout).trim().parse::<u32>();
        if let Ok(pid) = pid {
            container_kib = container_kib.add(Kib::of(pid));
        }
    }
    ensure!(
        ids.is_empty() || shims > 0,
        "no containerd-shim process names the bench's containers"
    );
    Ok(PodMemory {
        sup: shim_kib,
        cont: container_kib,
        count: ids.len(),
    })
}

/// Removes (forced) the containers whose `io.keel.log-path` label lies
/// under `dir`, i.e. those of this bench's `keel up`; errors are printed.
fn remove_docker_containers(dir: &Path) {
    let prefix = dir.to_string_lossy().to_string();
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.ID}} {{.Label \"io.keel.log-path\"}}",
        ])
        .args(["--filter", &format!("name=_{LABEL}-")])
        .output();
    let ids: Vec<String> = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, path)| path.starts_with(&prefix))
            .map(|(id, _)| id.to_string())
            .collect(),
        Err(e) => {
            eprintln!("docker: cannot list the bench's containers: {e}");
            return;
        }
    };
    if ids.is_empty() {
        return;
    }
    match Command::new("docker")
        .args(["rm", "-f"])
        .args(&ids)
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "docker: removing the bench's containers failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("docker: cannot run docker rm: {e}"),
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, "VmRSS:")
}

/// Proportional set size: each mapped page divided by the number of
/// processes mapping it (Linux 4.14+ `smaps_rollup`).
fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kib_field(&rollup, "Pss:")
}

/// The number of the `<key> <n> kB` line of a /proc file.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `q` quantile of sorted `v` (nearest rank); NaN when empty.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn markdown(rows: &[Row]) -> String {
    let kib = |v: Option<f64>| v.map_or("n/a".to_string(), |k| format!("{:.0}", k));
    let mut out = String::from(
        "| runtime | pods Running | start p50 ms | start p99 ms | all Running s | supervisor (docker: shim) RSS/pod KiB | container RSS/pod KiB | exec p50 ms | exec p99 ms | exec failures |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {} | {} | {:.0} | {:.0} | {} |\n",
            r.runtime,
            r.running,
            quantile(&r.start_ms, 0.5),
            quantile(&r.start_ms, 0.99),
            r.all_running_s,
            kib(r.supervisor_kib_per_pod),
            kib(r.container_kib_per_pod),
            quantile(&r.exec_ms, 0.5),
            quantile(&r.exec_ms, 0.99),
            r.exec_failures,
        ));
    }
    out
}

/// The PSS table: per pod, supervisor (docker: shim) and container PSS
/// and their sum, next to the RSS sum it replaces.
fn pss_markdown(rows: &[Row]) -> String {
    let kib = |v: Option<f64>| v.map_or("n/a".to_string(), |k| format!("{:.0}", k));
    let sum = |a: Option<f64>, b: Option<f64>| Some(a? + b?);
    let mut out = String::from(
        "| runtime | supervisor (docker: shim) PSS/pod KiB | container PSS/pod KiB | PSS/pod KiB | RSS/pod KiB |\n\
         |---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.runtime,
            kib(r.supervisor_pss_kib_per_pod),
            kib(r.container_pss_kib_per_pod),
            kib(sum(
                r.supervisor_pss_kib_per_pod,
                r.container_pss_kib_per_pod
            )),
            kib(sum(r.supervisor_kib_per_pod, r.container_kib_per_pod)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pss_of_this_process_is_positive_and_at_most_its_rss() {
        let pid = std::process::id();
        let (rss, pss) = (rss_kib(pid).unwrap(), pss_kib(pid).unwrap());
        assert!(pss > 0 && pss <= rss, "pss {pss} rss {rss}");
        assert_eq!(kib_field("Rss: 12 kB\nPss:  7 kB\n", "Pss:"), Some(7));
        assert_eq!(kib_field("Rss: 12 kB\n", "Pss:"), None);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
