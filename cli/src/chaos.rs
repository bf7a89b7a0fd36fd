//! `keel chaos`: runs deterministic simulation seeds and prints a table of
//! verdicts; failing histories go to a JSON-lines file, and with `--report DIR`
//! every seed goes into one self-contained HTML report.
//! `keel chaos report FILE --out DIR` renders a report from a saved history.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use keel_chaos::report::{self, SeedPage};
use keel_chaos::sim::{
    run_real, run_seed, FaultKind, Mutation, ProcessFault, RealConfig, SimConfig,
};
use keel_chaos::Verdict;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ChaosArgs {
    #[command(subcommand)]
    command: Option<ChaosCommand>,
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
    /// Inject a known bug into the simulated store, to see the checkers and
    /// the report catch it: stale-reads, ack-uncommitted-puts,
    /// drop-watch-events, wedge-after-elections. Simulation only.
    #[arg(long, value_name = "BUG", value_parser = parse_mutation, conflicts_with = "real")]
    inject_bug: Option<Mutation>,
    /// Also write a self-contained HTML report of every seed (timelines,
    /// faults, failing windows, latency) to DIR/index.html.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ChaosCommand {
    /// Render the HTML report of a saved history: a failures file written by
    /// `keel chaos` (`# seed N` lines, each followed by its history) or one
    /// plain history in JSON lines.
    Report {
        /// The history file.
        history: PathBuf,
        /// The directory to write index.html to.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `keel chaos report FILE --out DIR`.
fn report_from_file(history: &Path, out: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(history)
        .with_context(|| format!("opening history file {}", history.display()))?;
    let seeds = report::load_failures(std::io::BufReader::new(file))
        .with_context(|| format!("history file {}", history.display()))?;
    let results: Vec<_> = seeds
        .into_iter()
        .map(|(seed, h)| report::result_from_history(seed, h))
        .collect();
    let pages: Vec<SeedPage<'_>> = results
        .iter()
        .map(|r| SeedPage {
            result: r,
            replay: format!(
                "keel chaos --seeds 1 --first-seed {} (with the options of the original run)",
                r.seed
            ),
        })
        .collect();
    let title = format!("keel chaos: {}", history.display());
    let path = report::write(out, &title, &pages)
        .with_context(|| format!("writing the report to {}", out.display()))?;
    println!("report: {}", path.display());
    Ok(())
}

fn parse_replicas(s: &str) -> Result<usize, String> {
    match s {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err(format!("--replicas must be 3 or 5, not {s:?}")),
    }
}

fn parse_mutation(s: &str) -> Result<Mutation, String> {
    Ok(match s {
        "stale-reads" => Mutation::StaleReads,
        "ack-uncommitted-puts" => Mutation::AckUncommittedPuts,
        "drop-watch-events" => Mutation::DropWatchEvents,
        "wedge-after-elections" => Mutation::WedgeAfterElections,
        _ => {
            return Err(format!(
                "unknown bug {s:?}: expected stale-reads, ack-uncommitted-puts, \
                 drop-watch-events or wedge-after-elections"
            ))
        }
    })
}

fn cell(v: &Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail(_) => "FAIL",
        Verdict::Unknown(_) => "unknown",
    }
}

pub fn run(a: ChaosArgs) -> anyhow::Result<()> {
    if let Some(ChaosCommand::Report { history, out }) = &a.command {
        return report_from_file(history, out);
    }
    let mut results = Vec::new();
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
            if let Some(m) = a.inject_bug {
                cfg.mutation = m;
            }
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
        if a.report.is_some() {
            results.push(r);
        }
    }
    if let Some(dir) = &a.report {
        let pages: Vec<SeedPage<'_>> = results
            .iter()
            .map(|r| SeedPage {
                result: r,
                replay: replay_command(&a, r.seed),
            })
            .collect();
        let title = format!(
            "keel chaos{}: seeds {} to {}",
            if a.real { " --real" } else { "" },
            a.first_seed,
            (a.first_seed + a.seeds).saturating_sub(1)
        );
        let path = report::write(dir, &title, &pages)
            .with_context(|| format!("writing the report to {}", dir.display()))?;
        println!("report: {}", path.display());
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
    if a.real {
        eprintln!("  (real processes are not deterministic: rerunning the seed repeats the schedule, not the history)");
    }
    eprintln!("  replay: {}", replay_command(a, r.seed));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.out)?;
    writeln!(f, "# seed {}", r.seed)?;
    r.history.write_jsonl(&mut f)?;
    Ok(())
}

/// The command line that reruns one seed with this run's options.
fn replay_command(a: &ChaosArgs, seed: u64) -> String {
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
    let bug = a
        .inject_bug
        .map(|m| format!(" --inject-bug {}", bug_name(m)))
        .unwrap_or_default();
    format!(
        "keel chaos --seeds 1 --first-seed {seed} --replicas {} --ops {}{faults}{bug}{}",
        a.replicas,
        a.ops,
        if a.real { " --real" } else { "" }
    )
}

fn bug_name(m: Mutation) -> &'static str {
    match m {
        Mutation::None => "none",
        Mutation::StaleReads => "stale-reads",
        Mutation::AckUncommittedPuts => "ack-uncommitted-puts",
        Mutation::DropWatchEvents => "drop-watch-events",
        Mutation::WedgeAfterElections => "wedge-after-elections",
    }
}
