//! `keel chaos`: runs deterministic simulation seeds and prints a table of
//! verdicts; failing histories go to a JSON-lines file.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use keel_chaos::sim::{run_real, run_seed, FaultKind, ProcessFault, RealConfig, SimConfig};
use keel_chaos::Verdict;

#[derive(Args, Debug)]
pub struct ChaosArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed (seeds run are first..first+seeds).
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Replicas per simulated cluster: 3 or 5.
    #[arg(long, default_value_t = 3, value_parser = parse_replicas)]
    replicas: usize,
    /// Fault kinds to inject, comma separated (default: all of them):
    /// partition, bridge, isolate, crash, delay, loss, and isolate-leader,
    /// crash-leader (aimed at whichever replica leads when they start).
    #[arg(long, value_delimiter = ',')]
    faults: Option<Vec<FaultKind>>,
    /// Operations per seed.
    #[arg(long, default_value_t = 1000)]
    ops: usize,
    /// Run against real `keel server` processes on loopback instead of the
    /// simulation (faults: SIGKILL + restart, SIGSTOP/SIGCONT, partitions
    /// through peer proxies).
    #[arg(long)]
    real: bool,
    /// Faults for --real, comma separated: kill (SIGKILL + restart), pause
    /// (SIGSTOP/SIGCONT), cut (every link to one replica, one way), and
    /// partitions both ways: isolate (one replica), isolate-leader,
    /// partition (random halves), bridge (two majorities sharing one).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,pause,cut,isolate,isolate-leader,partition,bridge"
    )]
    process_faults: Vec<ProcessFault>,
    /// Where failing histories are written (JSON lines, one op per line,
    /// preceded by a `# seed N` line).
    #[arg(long, default_value = "keel-chaos-failures.jsonl")]
    out: PathBuf,
}

fn parse_replicas(s: &str) -> Result<usize, String> {
    match s {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err(format!("--replicas must be 3 or 5, not {s:?}")),
    }
}

fn cell(v: &Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail(_) => "FAIL",
        Verdict::Unknown(_) => "unknown",
    }
}

pub fn run(a: ChaosArgs) -> anyhow::Result<()> {
    let kinds = a.faults.clone().unwrap_or_else(|| FaultKind::ALL.to_vec());
    println!("| seed | ops | faults | linearizable | watch | durable | live | wall ms |");
    println!("|---:|---:|---:|---|---|---|---|---:|");
    let (mut failed, mut total_ops, mut total_ms) = (Vec::new(), 0usize, 0u128);
    for seed in a.first_seed..a.first_seed + a.seeds {
        let t = Instant::now();
        let r = if a.real {
            let sim = SimConfig::new(seed, a.replicas, a.ops);
            run_real(&RealConfig {
                seed,
                replicas: a.replicas,
                workload: sim.workload,
                faults: a.process_faults.clone(),
                keel_bin: std::env::current_exe()?,
                liveness_bound: sim.liveness_bound,
            })
        } else {
            let mut cfg = SimConfig::new(seed, a.replicas, a.ops);
            cfg.faults = kinds.clone();
            run_seed(&cfg)
        };
        let ms = t.elapsed().as_millis();
        total_ops += r.ops;
        total_ms += ms;
        let (lin, watch, dur) = match &r.report {
            Some(rep) => (
                cell(&rep.linearizability),
                cell(&rep.watch),
                cell(&rep.durability),
            ),
            None => ("error", "error", "error"),
        };
        println!(
            "| {seed} | {} | {} | {lin} | {watch} | {dur} | {} | {ms} |",
            r.ops,
            r.faults.len(),
            cell(&r.liveness)
        );
        if !r.passed() {
            report_failure(&a, &r)?;
            failed.push(seed);
        }
    }
    let secs = (total_ms as f64 / 1000.0).max(1e-9);
    println!();
    println!(
        "{} seeds, {} failed; {} simulated ops in {:.1} s wall ({:.0} ops/s)",
        a.seeds,
        failed.len(),
        total_ops,
        secs,
        total_ops as f64 / secs
    );
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "failing seeds: {failed:?} (histories in {})",
            a.out.display()
        )
    }
}

fn report_failure(a: &ChaosArgs, r: &keel_chaos::sim::SeedResult) -> anyhow::Result<()> {
    eprintln!("seed {} failed:", r.seed);
    if let Some(e) = &r.error {
        eprintln!("  error: {e}");
    }
    if let Verdict::Fail(why) = &r.liveness {
        eprintln!("  liveness: {why}");
    }
    if let Some(rep) = &r.report {
        for (name, v) in [
            ("linearizability", &rep.linearizability),
            ("watch", &rep.watch),
            ("durability", &rep.durability),
        ] {
            if !v.is_pass() {
                eprintln!("  {name}: {v:?}");
            }
        }
    }
    let faults = a
        .faults
        .as_ref()
        .map(|f| {
            format!(
                " --faults {}",
                f.iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .unwrap_or_default();
    if a.real {
        eprintln!("  (real processes are not deterministic: rerunning the seed repeats the schedule, not the history)");
    }
    eprintln!(
        "  replay: keel chaos --seeds 1 --first-seed {} --replicas {} --ops {}{faults}{}",
        r.seed,
        a.replicas,
        a.ops,
        if a.real { " --real" } else { "" }
    );
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.out)?;
    writeln!(f, "# seed {}", r.seed)?;
    r.history.write_jsonl(&mut f)?;
    Ok(())
}
