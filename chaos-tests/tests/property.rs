//! Property tests: histories produced by really executing operations against an
//! in-memory store (each op takes effect at a random instant inside its
//! interval) are linearizable by construction, so every checker must pass them;
//! corrupting one read must make the linearizability checker fail.

use std::collections::BTreeMap;

use keel_chaos::durability::FinalRead;
use keel_chaos::history::{Call, History, OkResult, Operation, Outcome, Revision, Time};
use keel_chaos::linearizability::{check_linearizability, KeyVerdict, LinearizabilityConfig};
use keel_chaos::watch::{CommittedLog, Event, KeyRange, ProgressNotify, WatchItem, WatcherLog};
use keel_chaos::{check_all, CheckConfig, CheckInput, Verdict};
use proptest::prelude::*;

/// SplitMix64: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

#[derive(Clone, Copy, Debug)]
struct Params {
    seed: u64,
    clients: usize,
    keys: usize,
    ops: usize,
    /// Percent of ops (writes only) whose outcome is unknown.
    info_pct: u64,
    /// Percent of ops that certainly fail.
    fail_pct: u64,
}

#[derive(Clone, Copy)]
enum Fate {
    Ok,
    Fail,
    /// Unknown outcome; `true` if it did take effect.
    Info(bool),
}

struct Planned {
    process: u64,
    invoke: Time,
    lin: Time,
    complete: Time,
    call: Call,
    fate: Fate,
}

struct Generated {
    history: History,
    committed: CommittedLog,
    final_read: FinalRead,
    watcher: WatcherLog,
}

fn generate(p: Params) -> Generated {
    let mut rng = Rng(p.seed);
    let mut plans: Vec<Planned> = Vec::with_capacity(p.ops);
    let mut written: Vec<Vec<String>> = vec![Vec::new(); p.keys];
    let mut next_process = p.clients as u64;
    let mut clock: Vec<(u64, Time)> = (0..p.clients as u64).map(|c| (c, rng.below(20))).collect();
    for i in 0..p.ops {
        // Ops are handed to clients round-robin; each client is sequential.
        let c = i % p.clients;
        let (process, t) = clock[c];
        let k = rng.below(p.keys as u64) as usize;
        let key = format!("k{k}");
        let value = format!("v{i}");
        let call = match rng.below(10) {
            0..=2 => Call::Put {
                key,
                value: value.clone(),
            },
            3..=5 => Call::Get {
                key,
                linearizable: !rng.percent(15),
            },
            6 => Call::Delete { key },
            _ => {
                let recent = &written[k];
                let expected = match rng.below(recent.len() as u64 + 1) as usize {
                    0 => None,
                    j => Some(recent[recent.len() - j].clone()),
                };
                Call::Cas {
                    key,
                    expected,
                    new: value.clone(),
                }
            }
        };
        if matches!(call, Call::Put { .. } | Call::Cas { .. }) {
            written[k].push(value);
            if written[k].len() > 3 {
                written[k].remove(0);
            }
        }
        let is_write = call.is_write();
        let fate = if is_write && rng.percent(p.info_pct) {
            Fate::Info(rng.percent(50))
        } else if rng.percent(p.fail_pct) {
            Fate::Fail
        } else {
            Fate::Ok
        };
        let invoke = t;
        let complete = invoke + 1 + rng.below(40);
        let lin = match fate {
            // An unknown write may land long after the client gave up.
            Fate::Info(_) => invoke + rng.below(200),
            _ => invoke + rng.below(complete - invoke + 1),
        };
        let mut process = process;
        plans.push(Planned {
            process,
            invoke,
            lin,
            complete,
            call,
            fate,
        });
        if matches!(fate, Fate::Info(_)) {
            process = next_process;
            next_process += 1;
        }
        clock[c] = (process, complete + 1 + rng.below(30));
    }

    // Execute in linearization order against a real store.
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by_key(|&i| (plans[i].lin, i));
    let mut store: BTreeMap<String, String> = BTreeMap::new();
    let mut past: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    let mut rev: Revision = 1;
    let mut events = Vec::new();
    let mut results: Vec<Option<OkResult>> = vec![None; plans.len()];
    for i in order {
        let plan = &plans[i];
        let happens = matches!(plan.fate, Fate::Ok | Fate::Info(true));
        if !happens {
            continue;
        }
        let key = plan.call.key().to_string();
        let result = match &plan.call {
            Call::Put { value, .. } => {
                rev += 1;
                store.insert(key.clone(), value.clone());
                events.push(Event::put(rev, &key, value));
                OkResult::Put { revision: rev }
            }
            Call::Get {
                linearizable: true, ..
            } => OkResult::Get {
                value: store.get(&key).cloned(),
                revision: rev,
            },
            Call::Get {
                linearizable: false,
                ..
            } => {
                // Serializable: any past value, possibly stale.
                let seen = past.get(&key).cloned().unwrap_or_default();
                let value = if seen.is_empty() {
                    None
                } else {
                    seen[rng.below(seen.len() as u64) as usize].clone()
                };
                OkResult::Get {
                    value,
                    revision: 1 + rng.below(rev as u64) as Revision,
                }
            }
            Call::Delete { .. } => {
                let deleted = store.remove(&key).is_some();
                if deleted {
                    rev += 1;
                    events.push(Event::delete(rev, &key));
                }
                OkResult::Delete {
                    deleted,
                    revision: rev,
                }
            }
            Call::Cas { expected, new, .. } => {
                let succeeded = store.get(&key) == expected.as_ref();
                if succeeded {
                    rev += 1;
                    store.insert(key.clone(), new.clone());
                    events.push(Event::put(rev, &key, new));
                }
                OkResult::Cas {
                    succeeded,
                    revision: rev,
                }
            }
        };
        past.entry(key.clone())
            .or_default()
            .push(store.get(&key).cloned());
        results[i] = Some(result);
    }

    let ops = plans
        .into_iter()
        .zip(results)
        .enumerate()
        .map(|(i, (plan, result))| {
            let (complete, outcome) = match plan.fate {
                Fate::Ok => (Some(plan.complete), Outcome::Ok(result.expect("executed"))),
                Fate::Fail => (Some(plan.complete), Outcome::Fail),
                Fate::Info(_) => (None, Outcome::Info),
            };
            Operation {
                id: i as u64,
                process: plan.process,
                invoke: plan.invoke,
                complete,
                call: plan.call,
                outcome,
            }
        })
        .collect();
    let history = History::new(ops);
    history
        .validate()
        .expect("generator keeps the history rules");

    // One watcher on everything from revision 2, with progress notifications and
    // stream breaks sprinkled in.
    let mut items = Vec::new();
    for e in &events {
        items.push(WatchItem::Event(e.clone()));
        if rng.percent(10) {
            items.push(WatchItem::Progress(ProgressNotify {
                revision: e.revision,
                requested_at: None,
                min_revision: Some(e.revision),
            }));
        }
        if rng.percent(10) {
            items.push(WatchItem::Resume {
                from_revision: e.revision + 1,
            });
        }
    }
    items.push(WatchItem::Progress(ProgressNotify {
        revision: rev,
        requested_at: None,
        min_revision: Some(rev),
    }));
    Generated {
        history,
        committed: CommittedLog::new(events).unwrap(),
        final_read: FinalRead {
            revision: rev,
            values: store.into_iter().map(|(k, v)| (k, Some(v))).collect(),
        },
        watcher: WatcherLog {
            name: "all".into(),
            range: KeyRange::from_key("\0"),
            start_revision: 2,
            items,
        },
    }
}

fn params() -> impl Strategy<Value = Params> {
    (
        any::<u64>(),
        1usize..6,
        1usize..4,
        1usize..60,
        0u64..20,
        0u64..10,
    )
        .prop_map(|(seed, clients, keys, ops, info_pct, fail_pct)| Params {
            seed,
            clients,
            keys,
            ops,
            info_pct,
            fail_pct,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn real_executions_pass_every_checker(p in params()) {
        let g = generate(p);
        let watchers = [g.watcher.clone()];
        let input = CheckInput {
            history: &g.history,
            committed: Some(&g.committed),
            watchers: &watchers,
            final_read: Some(&g.final_read),
        };
        // Both with and without resolving unknown writes from the log.
        for resolve in [false, true] {
            let config = CheckConfig { resolve_unknown_writes: resolve, ..CheckConfig::default() };
            let report = check_all(&input, &config).unwrap();
            prop_assert_eq!(report.overall(), Verdict::Pass, "{}", report);
        }
    }

    #[test]
    fn a_read_of_a_value_never_written_fails(p in params(), pick in any::<prop::sample::Index>()) {
        let mut g = generate(p);
        let reads: Vec<usize> = g
            .history
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| {
                matches!(op.call, Call::Get { linearizable: true, .. }) && op.ok().is_some()
            })
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!reads.is_empty());
        let i = reads[pick.index(reads.len())];
        let op = &mut g.history.ops[i];
        let key = op.key().to_string();
        if let Outcome::Ok(OkResult::Get { value, .. }) = &mut op.outcome {
            *value = Some("never-written".into());
        }
        let report = check_linearizability(&g.history, &LinearizabilityConfig::default()).unwrap();
        prop_assert!(
            matches!(report.keys[&key], KeyVerdict::NotLinearizable { .. }),
            "expected a failure on {:?}, got {:?}", key, report.keys[&key]
        );
        prop_assert!(report.verdict().is_fail());
    }
}

#[test]
fn two_thousand_ops_over_ten_keys_and_five_clients() {
    let g = generate(Params {
        seed: 7,
        clients: 5,
        keys: 10,
        ops: 2_000,
        info_pct: 2,
        fail_pct: 3,
    });
    // The history is not vacuous: it has every kind of interesting op.
    let count = |f: &dyn Fn(&Operation) -> bool| g.history.ops.iter().filter(|op| f(op)).count();
    assert!(count(&|op| op.outcome == Outcome::Info) > 5);
    assert!(count(&|op| op.outcome == Outcome::Fail) > 5);
    assert!(
        count(&|op| matches!(
            op.ok(),
            Some(OkResult::Cas {
                succeeded: true,
                ..
            })
        )) > 20
    );
    assert!(
        count(&|op| matches!(
            op.ok(),
            Some(OkResult::Cas {
                succeeded: false,
                ..
            })
        )) > 20
    );
    assert!(count(&|op| matches!(op.ok(), Some(OkResult::Get { value: Some(_), .. }))) > 100);
    assert!(count(&|op| matches!(op.ok(), Some(OkResult::Delete { deleted: true, .. }))) > 20);
    let report = check_linearizability(&g.history, &LinearizabilityConfig::default()).unwrap();
    assert_eq!(report.keys.len(), 10);
    assert_eq!(report.verdict(), Verdict::Pass, "{}", report.verdict());
}

#[test]
fn a_thousand_ops_on_one_key() {
    let g = generate(Params {
        seed: 11,
        clients: 5,
        keys: 1,
        ops: 1_000,
        info_pct: 1,
        fail_pct: 3,
    });
    let report = check_linearizability(&g.history, &LinearizabilityConfig::default()).unwrap();
    assert_eq!(report.verdict(), Verdict::Pass, "{}", report.verdict());
}

#[test]
fn failing_history_round_trips_through_a_file() {
    let g = generate(Params {
        seed: 3,
        clients: 3,
        keys: 2,
        ops: 200,
        info_pct: 5,
        fail_pct: 5,
    });
    let path =
        std::env::temp_dir().join(format!("keel-chaos-history-{}.jsonl", std::process::id()));
    g.history.save(&path).unwrap();
    let back = History::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(back, g.history);
}
