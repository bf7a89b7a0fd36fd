//! `keel-bench runtime-steps`: where a container start's time goes inside
//! the container runtimes, step by step.
//!
//! Starts `--pods` containers one after the other through keel's runtimes
//! in this process (no API server, no agent: the `Runtime` trait the agent
//! calls), reads each container's recorded start steps (see
//! `keel_node::runtime::steps`: the runtime's, the supervisor's and, on the
//! isolating runtime, the container init's, on one monotonic clock) and
//! prints per step p50/p99/max in µs and its share of the mean start, then
//! the start totals of every runtime side by side. A `spawn` step lasts
//! until the spawned process's first step (fork, exec, dynamic loader,
//! `main`); gaps between processes (the entrypoint's `execve`, the report
//! pipes) are steps of their own.
//!
//! Containers run `keel/pause` (the built-in image `keel-bench pods` uses:
//! the keel binary on a tmpfs root with the host's `/usr`, `/bin`, `/lib*`
//! read-only). `--root overlay` gives the isolating runtime a busybox image
//! rootfs instead (overlayfs, as for pulled images; needs `/bin/busybox`);
//! the exec runtime cannot run image rootfs and keeps `keel/pause`.
//! Every container is stopped and removed at the end, also after a failure.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use keel_node::runtime::exec::{ExecConfig, ExecRuntime};
use keel_node::runtime::isolated::{missing_features, IsolatedConfig, IsolatedRuntime};
use keel_node::runtime::steps::ProcessSteps;
use keel_node::runtime::{ContainerId, ContainerSpec, ImageRoot, Runtime};

const BUSYBOX: &str = "/bin/busybox";
/// The cgroup (in every hierarchy) the bench's containers are put under.
const CGROUP_PARENT: &str = "keel-bench-steps";

#[derive(clap::Args, Debug)]
pub struct RuntimeStepsArgs {
    /// Containers started per runtime, one after the other.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Runtimes to measure, in order (`keel` needs root, overlayfs, cgroups).
    #[arg(long, value_delimiter = ',', default_value = "keel,exec")]
    runtimes: Vec<String>,
    /// The isolating runtime's root: `host` (keel/pause on a tmpfs root)
    /// or `overlay` (a busybox image rootfs on overlayfs).
    #[arg(long, default_value = "host")]
    root: String,
    /// keel binary: runs supervisors, inits and keel/pause [default: `keel`
    /// next to this executable].
    #[arg(long)]
    keel_bin: Option<PathBuf>,
}

/// One container start laid out as consecutive steps.
struct Sample {
    total_us: u64,
    steps: Vec<(String, u64)>,
}

/// One runtime's samples.
struct Measured {
    runtime: String,
    samples: Vec<Sample>,
}

pub async fn main(args: RuntimeStepsArgs) -> Result<()> {
    ensure!(args.pods > 0, "--pods must be positive");
    ensure!(
        ["host", "overlay"].contains(&args.root.as_str()),
        "--root must be host or overlay, not {:?}",
        args.root
    );
    let bin = match &args.keel_bin {
        Some(p) => p.clone(),
        None => crate::default_keel_bin()?,
    };
    ensure!(bin.is_file(), "keel binary not found at {}", bin.display());
    let mut all = Vec::new();
    for rt in &args.runtimes {
        let tmp = tempfile::Builder::new()
            .prefix("keel-bench-steps-")
            .tempdir()
            .context("create a temp dir")?;
        eprintln!("{rt}: starting {} containers ...", args.pods);
        let measured = match rt.as_str() {
            "keel" => measure_keel(&args, &bin, tmp.path()).await?,
            "exec" => measure_exec(&args, &bin, tmp.path()).await?,
            other => bail!("unknown runtime {other:?} (keel, exec)"),
        };
        all.push(measured);
    }
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "\n{} sequential container starts per runtime, in process through the Runtime trait; {build} build of keel-bench, keel binary {}\n",
        args.pods,
        bin.display()
    );
    for m in &all {
        let image = match (m.runtime.as_str(), args.root.as_str()) {
            ("keel", "overlay") => "busybox rootfs on overlayfs",
            _ => "keel/pause",
        };
        println!("### {} runtime ({image})\n", m.runtime);
        print!("{}", steps_table(&m.samples));
        println!();
    }
    print!("{}", totals_table(&all));
    Ok(())
}

async fn measure_keel(args: &RuntimeStepsArgs, bin: &Path, dir: &Path) -> Result<Measured> {
    let missing = missing_features(Path::new("/sys/fs/cgroup"));
    ensure!(
        missing.is_empty(),
        "the isolating runtime cannot run here: {}",
        missing.join(", ")
    );
    let mut config = IsolatedConfig::new(exec_config(bin, dir));
    config.cgroup_parent = CGROUP_PARENT.into();
    let rt = IsolatedRuntime::new(config)?;
    let rootfs = match args.root.as_str() {
        "overlay" => Some(busybox_rootfs(dir)?),
        _ => None,
    };
    let spec = |i: usize| pod_spec(dir, i, rootfs.as_deref());
    let samples = run_all(&rt, args.pods, spec, |id| Ok(rt.start_steps(id)?)).await;
    remove_cgroup_parent(Path::new("/sys/fs/cgroup"));
    Ok(Measured {
        runtime: "keel".into(),
        samples: samples?,
    })
}

async fn measure_exec(args: &RuntimeStepsArgs, bin: &Path, dir: &Path) -> Result<Measured> {
    let rt = ExecRuntime::new(exec_config(bin, dir))?;
    let spec = |i: usize| pod_spec(dir, i, None);
    let samples = run_all(&rt, args.pods, spec, |id| Ok(rt.start_steps(id)?)).await;
    Ok(Measured {
        runtime: "exec".into(),
        samples: samples?,
    })
}

/// Removes the bench's now empty parent cgroup from every hierarchy under
/// `mount` (the runtime removes only the containers' and pods' cgroups).
/// Best effort: a hierarchy without it, or one still in use, is skipped.
fn remove_cgroup_parent(mount: &Path) {
    let Ok(entries) = std::fs::read_dir(mount) else {
        return;
    };
    for hierarchy in entries.flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join(CGROUP_PARENT));
    }
    let _ = std::fs::remove_dir(mount.join(CGROUP_PARENT));
}

fn exec_config(bin: &Path, dir: &Path) -> ExecConfig {
    ExecConfig {
        state_dir: dir.join("state"),
        keel_binary: bin.to_path_buf(),
        image_dir: None,
    }
}

/// Starts `n` containers one after the other, then stops and removes
/// every container of `rt` (also when a start failed).
async fn run_all(
    rt: &dyn Runtime,
    n: usize,
    spec: impl Fn(usize) -> ContainerSpec,
    steps_of: impl Fn(&ContainerId) -> Result<Vec<ProcessSteps>>,
) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    let mut failure = None;
    for i in 0..n {
        let spec = spec(i);
        let t = Instant::now();
        let id = match rt.start(&spec).await {
            Ok(id) => id,
            Err(e) => {
                failure = Some(anyhow::Error::new(e).context(format!("start container {i}")));
                break;
            }
        };
        let total_us = t.elapsed().as_micros() as u64;
        let steps = steps_of(&id).map(|s| timeline(&s));
        match steps {
            Ok(steps) => samples.push(Sample { total_us, steps }),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    cleanup(rt).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(samples),
    }
}

/// Stops (SIGKILL at once: a PID-namespace init ignores an unhandled
/// SIGTERM) and removes every container; problems are printed.
async fn cleanup(rt: &dyn Runtime) {
    let containers = match rt.list().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: cannot list containers to clean up: {e}", rt.name());
            return;
        }
    };
    for c in containers {
        if let Err(e) = rt.stop(&c.id, 0).await {
            eprintln!("{}: stop {}: {e}", rt.name(), c.id);
        }
        if let Err(e) = rt.remove(&c.id).await {
            eprintln!("{}: remove {}: {e}", rt.name(), c.id);
        }
    }
}

fn pod_spec(dir: &Path, i: usize, rootfs: Option<&Path>) -> ContainerSpec {
    let (image, command, image_root) = match rootfs {
        Some(root) => (
            "busybox",
            vec!["sleep".to_string(), "3600".to_string()],
            Some(ImageRoot {
                digest: "sha256:bench".into(),
                rootfs: root.to_path_buf(),
                entrypoint: vec![],
                cmd: vec![],
                env: vec![],
                working_dir: None,
                user: None,
            }),
        ),
        None => ("keel/pause", vec![], None),
    };
    ContainerSpec {
        pod_uid: format!("steps-{i}"),
        pod_name: format!("steps-{i}"),
        pod_namespace: "default".into(),
        container_name: "main".into(),
        image: image.into(),
        command,
        args: vec![],
        env: vec![],
        working_dir: None,
        log_path: dir.join("logs").join(format!("steps-{i}.log")),
        image_root,
        resources: Default::default(),
        mounts: vec![],
        security: Default::default(),
    }
}

/// A rootfs holding busybox and its `sleep` applet.
fn busybox_rootfs(dir: &Path) -> Result<PathBuf> {
    ensure!(
        Path::new(BUSYBOX).is_file(),
        "--root overlay needs {BUSYBOX} (apt-get install -y busybox-static)"
    );
    let root = dir.join("busybox-rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).context("create the busybox rootfs")?;
    std::fs::copy(BUSYBOX, bin.join("busybox")).context("copy busybox")?;
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).context("link an applet")?;
    }
    Ok(root)
}

/// Lays the processes' steps on one timeline (consecutive, no overlap) from
/// the runtime's first step to its last. Steps that only wait for another
/// process (`await ...`) are left out: the other process's steps, and the
/// gaps between them, show where that time went. A `spawn <process>` step
/// of a recorded process ends where that process's first step begins (its
/// fork, exec, dynamic loader and `main`; the parent's return from the
/// spawn overlaps the child's first steps and is not counted twice). A
/// step that overlaps an earlier one keeps only its part after it; a gap
/// becomes a step of its own, named by what it holds (see [`gap_name`]).
fn timeline(processes: &[ProcessSteps]) -> Vec<(String, u64)> {
    let mut intervals: Vec<(u64, u64, String, bool)> = Vec::new();
    for p in processes {
        let mut at = p.start_mono_us;
        for (i, (name, us)) in p.steps.iter().enumerate() {
            let child = name
                .strip_prefix("spawn ")
                .and_then(|c| processes.iter().find(|q| q.process == c));
            let (end, label) = match child {
                Some(c) => (
                    c.start_mono_us.max(at),
                    format!("{}: {name} (fork, exec, loader, until its main)", p.process),
                ),
                None => (at + us, format!("{}: {name}", p.process)),
            };
            if !name.starts_with("await ") {
                intervals.push((at, end, label, i == 0));
            }
            at += us;
        }
    }
    intervals.sort_by_key(|(start, ..)| *start);
    let Some(runtime) = processes.iter().find(|p| p.process == "runtime") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut cursor = runtime.start_mono_us;
    for (start, end, label, first) in intervals {
        if start > cursor {
            out.push((gap_name(&label, first), start - cursor));
            cursor = start;
        }
        // `>=`: a step too short for the clock still counts as a sample.
        if end >= cursor {
            out.push((label, end - cursor));
            cursor = end;
        }
    }
    let end = runtime.end_mono_us();
    if end > cursor {
        out.push((
            "(gap) supervisor report read by the runtime".into(),
            end - cursor,
        ));
    }
    out
}

/// What a gap before step `next` holds: the start of a new process, the
/// entrypoint's `execve` (the supervisor learns of it by the init's report
/// pipe closing), or something unexpected, named as such.
fn gap_name(next: &str, first_of_process: bool) -> String {
    if first_of_process {
        let process = next.split(':').next().unwrap_or(next);
        return format!("(gap) {process} process start: fork, exec, loader, main");
    }
    match next {
        "supervisor: write running.json" => {
            "(gap) execve of the entrypoint, report pipe EOF".into()
        }
        other => format!("(gap) before {other}"),
    }
}

/// The `q` quantile of sorted `v` (nearest rank); 0 when empty.
fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Per step (in first-seen order): samples, p50/p99/max µs and the step's
/// share of the summed start time; then the runtime's start total.
fn steps_table(samples: &[Sample]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for s in samples {
        for (name, _) in &s.steps {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    let grand: u64 = samples.iter().map(|s| s.total_us).sum();
    let mut out = String::from(
        "| step | n | p50 µs | p99 µs | max µs | share of start |\n|---|---|---|---|---|---|\n",
    );
    for name in names {
        let mut v: Vec<u64> = samples
            .iter()
            .flat_map(|s| s.steps.iter().filter(|(n, _)| n == name).map(|(_, us)| *us))
            .collect();
        v.sort_unstable();
        let share = 100.0 * v.iter().sum::<u64>() as f64 / grand.max(1) as f64;
        out.push_str(&row(name, &v, &format!("{share:.1} %")));
    }
    let mut totals: Vec<u64> = samples.iter().map(|s| s.total_us).collect();
    totals.sort_unstable();
    out.push_str(&row("**total: start() call to return**", &totals, "100 %"));
    out
}

fn row(name: &str, sorted: &[u64], share: &str) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {share} |\n",
        sorted.len(),
        quantile(sorted, 0.5),
        quantile(sorted, 0.99),
        sorted.last().copied().unwrap_or(0),
    )
}

fn totals_table(all: &[Measured]) -> String {
    let mut out = String::from(
        "| runtime | starts | start p50 ms | start p99 ms | start max ms |\n|---|---|---|---|---|\n",
    );
    for m in all {
        let mut v: Vec<u64> = m.samples.iter().map(|s| s.total_us).collect();
        v.sort_unstable();
        let ms = |us: u64| us as f64 / 1e3;
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} |\n",
            m.runtime,
            v.len(),
            ms(quantile(&v, 0.5)),
            ms(quantile(&v, 0.99)),
            ms(v.last().copied().unwrap_or(0)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(name: &str, start: u64, steps: &[(&str, u64)]) -> ProcessSteps {
        ProcessSteps {
            process: name.into(),
            start_mono_us: start,
            steps: steps.iter().map(|(n, us)| (n.to_string(), *us)).collect(),
        }
    }

    #[test]
    fn the_timeline_tiles_the_runtime_span_with_named_gaps() {
        let runtime = proc(
            "runtime",
            1000,
            &[
                ("write spec.json", 100),
                ("spawn supervisor", 300),
                ("await supervisor report", 600),
            ],
        );
        // Starts inside the runtime's spawn step, which ends there.
        let supervisor = proc(
            "supervisor",
            1350,
            &[
                ("read spec.json", 100),
                ("spawn init", 50),
                ("await init report", 300),
                ("write running.json", 50),
            ],
        );
        // Starts after the supervisor's spawn step, which is extended to it.
        let init = proc("init", 1600, &[("pivot_root", 100)]);
        let t = timeline(&[runtime, supervisor, init]);
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "runtime: write spec.json",
                "runtime: spawn supervisor (fork, exec, loader, until its main)",
                "supervisor: read spec.json",
                "supervisor: spawn init (fork, exec, loader, until its main)",
                "init: pivot_root",
                "(gap) execve of the entrypoint, report pipe EOF",
                "supervisor: write running.json",
                "(gap) supervisor report read by the runtime",
            ]
        );
        assert_eq!((t[1].1, t[2].1, t[3].1), (250, 100, 150), "{t:?}");
        assert_eq!(t.iter().map(|(_, us)| us).sum::<u64>(), 1000);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!((quantile(&v, 0.5), quantile(&v, 0.99)), (50, 99));
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
