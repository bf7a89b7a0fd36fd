//! One seed: a simulated cluster, the workload, the fault schedule, then
//! healing, a liveness probe, a final read, and the checkers.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::time::Duration;

use keel_proto::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, RangeRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest,
};
use keel_store::Mutation;
use tokio::sync::mpsc;

use super::client::{execute, now, run_workload_client, Channels, Target, Workload};
use super::cluster::add_replicas;
use super::nemesis::{self, FaultKind};
use super::watcher::{run_watcher, Shared, Spec};
use crate::durability::FinalRead;
use crate::history::{Call, History, Time};
use crate::recorder::Recorder;
use crate::watch::{CommittedLog, Event, EventKind, KeyRange, WatcherLog};
use crate::{check_all, CheckConfig, CheckInput, Report, Verdict};

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub replicas: usize,
    pub faults: Vec<FaultKind>,
    pub workload: Workload,
    /// Liveness: after the last heal, a write must succeed within this.
    pub liveness_bound: Duration,
    /// A deliberately injected bug (mutation testing); `None` normally.
    pub mutation: Mutation,
    /// Stalls of the whole simulation in wall-clock time (not simulated
    /// time), one every 1.5 s simulated during the workload: for tests that
    /// a seed's history does not depend on how fast the machine runs it.
    /// 0 normally.
    pub wall_clock_stalls: u32,
}

impl SimConfig {
    pub fn new(seed: u64, replicas: usize, ops: usize) -> Self {
        let clients = 4;
        SimConfig {
            seed,
            replicas,
            faults: FaultKind::ALL.to_vec(),
            workload: Workload {
                clients,
                ops_per_client: ops.div_ceil(clients),
                keys: 6,
                op_timeout: Duration::from_secs(3),
            },
            liveness_bound: Duration::from_secs(15),
            mutation: Mutation::None,
            wall_clock_stalls: 0,
        }
    }
}

#[derive(Debug)]
pub struct SeedResult {
    pub seed: u64,
    pub ops: usize,
    pub faults: Vec<String>,
    pub history: History,
    pub report: Option<Report>,
    pub liveness: Verdict,
    /// Why the run itself failed (simulation error), if it did.
    pub error: Option<String>,
    /// Hash of the recorded history and watch logs: equal for equal seeds.
    pub trace_hash: u64,
    /// Events the watchers received, all together.
    pub watch_events: usize,
    /// When each injected fault was active, on the history's clock (for the
    /// HTML report's nemesis bands).
    pub fault_spans: Vec<FaultSpan>,
    /// What every watcher received (for the report's watch lanes and the
    /// watch checker's offending events).
    pub watchers: Vec<WatcherLog>,
    /// The ground truth the checkers used, if the final read-back succeeded.
    pub committed: Option<CommittedLog>,
    /// Who led, each time that changed (simulation only: sampled every
    /// step; empty for real processes).
    pub leader_changes: Vec<LeaderChange>,
}

/// From `at` on (history clock), `leader` (a replica name, `None`: no
/// running replica believed it led) was the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    pub at: Time,
    pub leader: Option<String>,
}

/// One injected fault and when it was active, in the history's time unit
/// (nanoseconds since the run's clock started). `end` is `None` if the run
/// ended before the fault was healed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpan {
    pub start: Time,
    pub end: Option<Time>,
    pub label: String,
}

impl SeedResult {
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.liveness.is_pass()
            && self.report.as_ref().is_some_and(|r| r.overall().is_pass())
    }
}

/// What the final client learns after healing.
#[derive(Default)]
pub(crate) struct Finale {
    live_after: Option<Duration>,
    final_read: Option<FinalRead>,
    committed: Option<Vec<Event>>,
}

/// Longer than anything in the stack that times itself by the wall clock
/// (h2 forgot reset streams after 1 s of it).
const WALL_CLOCK_STALL: Duration = Duration::from_millis(1100);
const STALL_EVERY: Duration = Duration::from_millis(1500);

pub fn run_seed(cfg: &SimConfig) -> SeedResult {
    keel_store::runtime::seed_thread_rng(cfg.seed);
    super::cluster::clear_probes();
    super::client::reset_clock();
    let dir = tempfile::tempdir().expect("temp dir");
    let base_latency = Duration::from_millis(2);
    let mut sim = turmoil::Builder::new()
        .rng_seed(cfg.seed)
        .simulation_duration(Duration::from_secs(600))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(base_latency)
        .tcp_capacity(1 << 20)
        .build();
    add_replicas(&mut sim, cfg.replicas, dir.path(), cfg.mutation);

    let rec = Rc::new(RefCell::new(Recorder::new()));
    let shared = Rc::new(Shared::default());
    let mut watcher_logs = Vec::new();
    for (i, spec) in watcher_specs().into_iter().enumerate() {
        let log = spec.new_log();
        watcher_logs.push(log.clone());
        let (shared, target) = (shared.clone(), Target::sim(cfg.replicas));
        sim.client(format!("w{i}"), async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            run_watcher(spec, i, target, shared, log).await
        });
    }
    let finished = Rc::new(Cell::new(0usize));
    let healed = Rc::new(Cell::new(false));
    let finale = Rc::new(RefCell::new(Finale::default()));
    for c in 0..cfg.workload.clients {
        let (rec, finished, w, shared) = (
            rec.clone(),
            finished.clone(),
            cfg.workload.clone(),
            shared.clone(),
        );
        let (seed, target) = (cfg.seed, Target::sim(cfg.replicas));
        sim.client(format!("c{c}"), async move {
            // Let the cluster elect before the first request.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let r = run_workload_client(c as u64, seed, target, w, rec, shared).await;
            finished.set(finished.get() + 1);
            r
        });
    }
    {
        let give_up = cfg.liveness_bound * 2;
        let (healed, finale, n, keys) = (
            healed.clone(),
            finale.clone(),
            Target::sim(cfg.replicas),
            cfg.workload.keys,
        );
        sim.client("final", async move {
            while !healed.get() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            run_finale(n, keys, give_up, &finale).await;
            Ok(())
        });
    }

    let horizon = Duration::from_millis((cfg.workload.ops_per_client as u64) * 60 + 2000);
    let mut windows = nemesis::schedule(cfg.seed, &cfg.faults, cfg.replicas, horizon)
        .into_iter()
        .peekable();
    let mut active: Option<nemesis::Window> = None;
    let mut injected = Vec::new();
    let mut spans: Vec<FaultSpan> = Vec::new();
    let mut leaders: Vec<LeaderChange> = Vec::new();
    let mut error = None;
    let mut stalls = (1..=cfg.wall_clock_stalls)
        .map(|i| STALL_EVERY * i)
        .peekable();
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
        let t = sim.elapsed();
        // Reading the probes does not touch the replicas' state, so the
        // history stays a function of the seed.
        let leader = super::cluster::leader(&mut sim);
        if leaders.last().map(|l| &l.leader) != Some(&leader) {
            leaders.push(LeaderChange {
                at: t.as_nanos() as Time,
                leader,
            });
        }
        let workload_done = finished.get() == cfg.workload.clients;
        if stalls.next_if(|s| t >= *s && !workload_done).is_some() {
            // Between steps, outside every host: wall-clock time passes,
            // simulated time does not.
            std::thread::sleep(WALL_CLOCK_STALL);
        }
        if let Some(w) = &active {
            if t >= w.end || workload_done {
                nemesis::heal(&mut sim, &w.fault, base_latency);
                if let Some(s) = spans.last_mut() {
                    s.end = Some(t.as_nanos() as Time);
                }
                active = None;
            }
        }
        if active.is_none() && !workload_done {
            if let Some(w) = windows.next_if(|w| t >= w.start) {
                let applied = nemesis::apply(&mut sim, &w.fault, cfg.replicas);
                injected.push(applied.to_string());
                spans.push(FaultSpan {
                    start: t.as_nanos() as Time,
                    end: None,
                    label: applied.to_string(),
                });
                active = Some(nemesis::Window {
                    fault: applied,
                    ..w
                });
            }
        }
        if workload_done && active.is_none() && !healed.get() {
            healed.set(true);
            shared.healed.set(true);
        }
    }

    let history = std::mem::take(&mut *rec.borrow_mut()).finish();
    let watchers: Vec<WatcherLog> = watcher_logs.iter().map(|l| l.borrow().clone()).collect();
    evaluate(Evaluate {
        seed: cfg.seed,
        faults: injected,
        fault_spans: spans,
        leader_changes: leaders,
        history,
        watchers,
        finale: finale.take(),
        liveness_bound: cfg.liveness_bound,
        error,
    })
}

/// Everything a run recorded, to be checked.
pub(crate) struct Evaluate {
    pub seed: u64,
    pub faults: Vec<String>,
    pub fault_spans: Vec<FaultSpan>,
    pub leader_changes: Vec<LeaderChange>,
    pub history: History,
    pub watchers: Vec<WatcherLog>,
    pub finale: Finale,
    pub liveness_bound: Duration,
    pub error: Option<String>,
}

/// Runs every checker over a recorded run (simulated or real).
pub(crate) fn evaluate(e: Evaluate) -> SeedResult {
    let Evaluate {
        seed,
        faults,
        fault_spans,
        leader_changes,
        history,
        watchers,
        finale,
        liveness_bound,
        mut error,
    } = e;
    let trace_hash = hash_trace(&history, &watchers);
    let liveness = match finale.live_after {
        Some(d) if d <= liveness_bound => Verdict::Pass,
        Some(d) => Verdict::Fail(format!(
            "first write after healing took {} ms",
            d.as_millis()
        )),
        None => Verdict::Fail("no write succeeded after healing".into()),
    };
    // Ground truth: the store's history read back after the run, merged
    // with every acknowledged write. If they disagree, an acknowledged write
    // is not what the store committed: a durability failure.
    let mut disagreement = None;
    let committed = finale.committed.and_then(|events| {
        let store_log = CommittedLog::new(events).ok()?;
        match CommittedLog::from_history(&history).and_then(|acked| store_log.clone().merge(acked))
        {
            Ok(log) => Some(log),
            Err(e) => {
                disagreement = Some(format!(
                    "acknowledged writes disagree with the committed history: {e}"
                ));
                Some(store_log)
            }
        }
    });
    let report = if error.is_none() {
        let input = CheckInput {
            history: &history,
            committed: committed.as_ref(),
            watchers: &watchers,
            final_read: finale.final_read.as_ref(),
        };
        match check_all(&input, &CheckConfig::default()) {
            Ok(mut r) => {
                if let Some(why) = disagreement {
                    r.durability = r.durability.and(Verdict::Fail(why));
                }
                Some(r)
            }
            Err(e) => {
                error = Some(format!("history: {e}"));
                None
            }
        }
    } else {
        None
    };
    let watch_events = watchers
        .iter()
        .map(|w| {
            w.items
                .iter()
                .filter(|i| matches!(i, crate::watch::WatchItem::Event(_)))
                .count()
        })
        .sum();
    SeedResult {
        seed,
        ops: history.ops.len(),
        faults,
        history,
        report,
        liveness,
        error,
        trace_hash,
        watch_events,
        fault_spans,
        watchers,
        committed,
        leader_changes,
    }
}

/// Two watchers on overlapping ranges: every workload key, and one key.
pub(crate) fn watcher_specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "all-keys".into(),
            range: KeyRange::prefix("k").expect("valid prefix"),
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
        },
        Spec {
            name: "k0".into(),
            range: KeyRange::single("k0"),
            key: b"k0".to_vec(),
            range_end: vec![],
        },
    ]
}

fn hash_trace(h: &History, watchers: &[WatcherLog]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for op in &h.ops {
        op.hash(&mut hasher);
    }
    for w in watchers {
        serde_json::to_string(w)
            .expect("serializable")
            .hash(&mut hasher);
    }
    hasher.finish()
}

/// After healing: time to the first successful write (liveness), a final
/// linearizable read of every key, and the full committed history read
/// back through a watch from revision 1 (the ground truth for checkers).
/// Gives up on liveness after `give_up` (the verdict then fails).
pub(crate) async fn run_finale(
    target: Target,
    keys: usize,
    give_up: Duration,
    out: &Rc<RefCell<Finale>>,
) {
    let start = now();
    let mut chans = Channels::new(target);
    let mut i = 0;
    loop {
        let call = Call::Put {
            key: "liveness".into(),
            value: "1".into(),
        };
        let mut kv = chans.kv(i);
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(2), execute(&mut kv, &call)).await
        {
            break;
        }
        i += 1;
        if Duration::from_nanos(now() - start) > give_up {
            return;
        }
    }
    out.borrow_mut().live_after = Some(Duration::from_nanos(now() - start));
    for attempt in 0.. {
        let mut kv = chans.kv(attempt);
        let req = RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..Default::default()
        };
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), kv.range(req)).await {
            let r = r.into_inner();
            let mut values: BTreeMap<String, Option<String>> =
                (0..keys).map(|k| (format!("k{k}"), None)).collect();
            for kv in r.kvs {
                values.insert(
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    Some(String::from_utf8_lossy(&kv.value).into_owned()),
                );
            }
            let revision = r.header.map_or(0, |h| h.revision);
            out.borrow_mut().final_read = Some(FinalRead { revision, values });
            let committed = read_history(chans.channel(attempt), revision).await;
            out.borrow_mut().committed = committed;
            return;
        }
        if attempt > 50 {
            return;
        }
    }
}

/// Every event on keys `k*` from revision 1 to `upto`, via a watch and a
/// progress request (answered only once every event up to it was sent).
async fn read_history(ch: tonic::transport::Channel, upto: i64) -> Option<Vec<Event>> {
    let mut client = WatchClient::new(ch);
    let (tx, rx) = mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            start_revision: 1,
            ..Default::default()
        })),
    })
    .await
    .ok()?;
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    })
    .await
    .ok()?;
    let mut stream = client
        .watch(tokio_stream_adapter(rx))
        .await
        .ok()?
        .into_inner();
    let mut events = Vec::new();
    loop {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .ok()?
            .ok()??;
        if resp.canceled {
            return None;
        }
        for e in resp.events {
            let kv = e.kv?;
            events.push(Event {
                revision: kv.mod_revision,
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                kind: if e.r#type == 0 {
                    EventKind::Put
                } else {
                    EventKind::Delete
                },
                value: (e.r#type == 0).then(|| String::from_utf8_lossy(&kv.value).into_owned()),
            });
        }
        if resp.watch_id == -1 && resp.header.is_some_and(|h| h.revision >= upto) {
            return Some(events);
        }
    }
}

fn tokio_stream_adapter(
    rx: mpsc::Receiver<WatchRequest>,
) -> impl tokio_stream::Stream<Item = WatchRequest> + Send + 'static {
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
