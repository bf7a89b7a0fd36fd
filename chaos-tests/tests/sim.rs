//! Whole simulated clusters: every checker passes on fixed seeds over all
//! fault kinds with 3 and 5 replicas, and a seed replays identically.

use keel_chaos::sim::{run_seed, FaultKind, Mutation, SimConfig};

fn show(r: &keel_chaos::sim::SeedResult) -> String {
    format!(
        "seed {} ops {} faults {:?}\nerror: {:?}\nliveness: {:?}\nreport: {:?}",
        r.seed, r.ops, r.faults, r.error, r.liveness, r.report
    )
}

#[test]
fn smoke_no_faults() {
    let mut cfg = SimConfig::new(1, 3, 200);
    cfg.faults = vec![];
    let r = run_seed(&cfg);
    assert!(r.passed(), "{}", show(&r));
    assert!(
        r.watch_events > 50,
        "watchers saw only {} events",
        r.watch_events
    );
}

#[test]
fn all_faults_three_replicas() {
    for seed in 1..=3 {
        let cfg = SimConfig::new(seed, 3, 300);
        let r = run_seed(&cfg);
        assert!(r.passed(), "{}", show(&r));
        assert!(!r.faults.is_empty());
    }
}

fn each_fault_kind_alone(replicas: usize) {
    for (i, kind) in FaultKind::ALL.into_iter().enumerate() {
        let mut cfg = SimConfig::new(200 + i as u64, replicas, 240);
        cfg.faults = vec![kind];
        let r = run_seed(&cfg);
        assert!(r.passed(), "{kind} x{replicas}: {}", show(&r));
        assert!(
            !r.faults.is_empty(),
            "{kind} x{replicas}: no fault injected"
        );
    }
}

#[test]
fn each_fault_kind_alone_three_replicas() {
    each_fault_kind_alone(3);
}

#[test]
fn each_fault_kind_alone_five_replicas() {
    each_fault_kind_alone(5);
}

#[test]
fn all_faults_five_replicas() {
    let mut cfg = SimConfig::new(11, 5, 300);
    cfg.faults = FaultKind::ALL.to_vec();
    let r = run_seed(&cfg);
    assert!(r.passed(), "{}", show(&r));
}

/// Runs `cfg` twice, the second time with the simulation stalled in
/// wall-clock time now and then, and asserts both histories are the same: a
/// seed's history must depend on the seed alone, not on how fast (or how
/// many times in one process) it runs. Anything in the stack that reads the
/// real clock or an unseeded RNG shows up here.
fn replays_identically(mut cfg: SimConfig) {
    let a = run_seed(&cfg);
    cfg.wall_clock_stalls = 3;
    let b = run_seed(&cfg);
    assert!(!a.faults.is_empty(), "no fault injected: {}", show(&a));
    assert_eq!(a.faults, b.faults, "seed {}: another schedule", cfg.seed);
    if a.trace_hash != b.trace_hash {
        let diverged = a
            .history
            .ops
            .iter()
            .zip(&b.history.ops)
            .find(|(x, y)| x != y);
        panic!(
            "seed {} with {:?} did not replay identically; first different op:\n{diverged:#?}",
            cfg.seed, cfg.faults
        );
    }
}

#[test]
fn same_seed_same_history() {
    replays_identically(SimConfig::new(42, 3, 200));
}

/// Every fault kind alone, so a kind that breaks determinism is named.
macro_rules! replays_under {
    ($($name:ident: $kind:expr, $seed:expr;)*) => {$(
        #[test]
        fn $name() {
            let mut cfg = SimConfig::new($seed, 3, 200);
            cfg.faults = vec![$kind];
            replays_identically(cfg);
        }
    )*};
}

replays_under! {
    same_seed_same_history_partition: FaultKind::Partition, 42;
    same_seed_same_history_bridge: FaultKind::Bridge, 42;
    same_seed_same_history_isolate: FaultKind::Isolate, 42;
    same_seed_same_history_crash: FaultKind::Crash, 42;
    same_seed_same_history_delay: FaultKind::Delay, 42;
    same_seed_same_history_loss: FaultKind::Loss, 42;
    same_seed_same_history_isolate_leader: FaultKind::IsolateLeader, 42;
    same_seed_same_history_crash_leader: FaultKind::CrashLeader, 42;
}

/// Runs seeds with `mutation` until a checker fails; returns the failing
/// seed's report. A checker that never fails proves nothing.
fn caught_within(mutation: Mutation, seeds: u64) -> keel_chaos::sim::SeedResult {
    for seed in 100..100 + seeds {
        let mut cfg = SimConfig::new(seed, 3, 300);
        cfg.mutation = mutation;
        let r = run_seed(&cfg);
        assert!(r.error.is_none(), "{}", show(&r));
        if !r.passed() {
            return r;
        }
    }
    panic!("{mutation:?} was not caught within {seeds} seeds");
}

#[test]
fn mutation_stale_reads_is_caught_by_linearizability() {
    let r = caught_within(Mutation::StaleReads, 10);
    let report = r.report.expect("checked");
    assert!(report.linearizability.is_fail(), "{report:?}");
}

#[test]
fn mutation_acked_uncommitted_puts_is_caught_by_durability() {
    let r = caught_within(Mutation::AckUncommittedPuts, 5);
    let report = r.report.expect("checked");
    assert!(report.durability.is_fail(), "{report:?}");
}

#[test]
fn mutation_wedged_cluster_is_caught_by_liveness() {
    let r = caught_within(Mutation::WedgeAfterElections, 5);
    assert!(r.liveness.is_fail(), "{}", show(&r));
}

#[test]
fn mutation_dropped_watch_events_is_caught_by_watch_checker() {
    let r = caught_within(Mutation::DropWatchEvents, 3);
    let report = r.report.expect("checked");
    // Linearizability may fail too: unknown writes are settled against the
    // committed history, which the broken watch also under-reports.
    assert!(report.watch.is_fail(), "{report:?}");
}

/// Seeds from the first 500-seed soak: a progress response could report a
/// revision below an event already sent on the same stream (and, against
/// real processes, arrive before events it covered). Fixed in the watch
/// service; kept as regressions.
#[test]
fn regression_progress_response_in_sync_with_stream() {
    for seed in [129, 492] {
        let mut cfg = SimConfig::new(seed, 3, 1000);
        cfg.faults = FaultKind::UNTARGETED.to_vec();
        let r = run_seed(&cfg);
        assert!(r.passed(), "{}", show(&r));
    }
}
