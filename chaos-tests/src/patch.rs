//! Resolving unknown write outcomes with the store's committed log.
//!
//! Why: every `Info` write stays pending until the end of the history in the
//! linearizability search, so a key with many of them (a partition makes many
//! writes time out) can exhaust the search budget, above all when the history is
//! *not* linearizable and the search has to exhaust every placement. etcd's
//! robustness suite patches its history with the requests it reads back from
//! the WAL after the run; this does the same with a [`CommittedLog`].
//!
//! Rules, per `Info` write `W` on key `k`:
//! * Put or CAS writing value `v`, where no other op in the history could write
//!   `v` to `k`: if the log has no put of `v` to `k`, `W` never took effect and
//!   becomes `Fail` (completion = invocation; its process stays retired).
//!   If the log has it at revision `r`, `W` happened at `r`. If some ok op
//!   (serializable reads excluded) reports a header revision `>= r`, the store
//!   had applied `W` before that op completed, so `W` becomes `Ok` with revision
//!   `r` and completion time = the earliest such completion (if not before
//!   `W`'s invocation). Otherwise it stays `Info`.
//! * Delete: delete events of `k` in the log not matched by an ok delete's
//!   revision were made by `Info` deletes. If there are none, every `Info` delete
//!   of `k` had no effect and becomes `Fail` (a delete of an absent key changes
//!   nothing, so this is equivalent). If there is exactly one such event and
//!   exactly one `Info` delete of `k`, that delete happened at its revision and is
//!   bounded as above.
//! * Anything else stays as it is.
//!
//! Guarantee: sound only if the log is **complete** (every revision the store
//! ever created) and was read when no in-flight request could still take
//! effect (clients stopped, faults healed). Then a correct store's history
//! stays linearizable after patching, and patching only removes possibilities,
//! so it never hides a violation. Using header revisions to bound completion
//! assumes revision order matches real-time order, which
//! [`crate::linearizability::check_revisions`] checks for the ok ops.

use std::collections::BTreeMap;

use crate::history::{Call, History, OkResult, Outcome, Revision, Time};
use crate::watch::{CommittedLog, EventKind};

/// What [`resolve_unknown_writes`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatchStats {
    /// `Info` writes found in the log that became `Ok` with a bounded completion.
    pub happened_bounded: usize,
    /// `Info` writes found in the log, left `Info` (no later op bounds them).
    pub happened: usize,
    /// `Info` writes shown to have had no effect, turned into `Fail`.
    pub never_happened: usize,
    /// `Info` writes left alone.
    pub unresolved: usize,
}

/// Returns the patched history; see the module docs for the rules.
pub fn resolve_unknown_writes(history: &History, log: &CommittedLog) -> (History, PatchStats) {
    let mut writers: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut info_deletes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ok_deletes: BTreeMap<&str, Vec<Revision>> = BTreeMap::new();
    for op in &history.ops {
        match (&op.call, &op.outcome) {
            (_, Outcome::Fail) => {}
            (Call::Put { key, value: v } | Call::Cas { key, new: v, .. }, _) => {
                *writers.entry((key, v)).or_default() += 1
            }
            (Call::Delete { key }, Outcome::Info) => *info_deletes.entry(key).or_default() += 1,
            (
                Call::Delete { key },
                Outcome::Ok(OkResult::Delete {
                    deleted: true,
                    revision,
                }),
            ) => ok_deletes.entry(key).or_default().push(*revision),
            _ => {}
        }
    }
    let mut put_rev: BTreeMap<(&str, &str), Revision> = BTreeMap::new();
    let mut unmatched_deletes: BTreeMap<&str, Vec<Revision>> = BTreeMap::new();
    for e in log.events() {
        match (e.kind, &e.value) {
            (EventKind::Put, Some(v)) => {
                put_rev.insert((&e.key, v), e.revision);
            }
            (EventKind::Delete, _)
                if !ok_deletes
                    .get(e.key.as_str())
                    .is_some_and(|r| r.contains(&e.revision)) =>
            {
                unmatched_deletes
                    .entry(&e.key)
                    .or_default()
                    .push(e.revision);
            }
            _ => {}
        }
    }

    // For a revision r: the earliest completion among ok ops whose header
    // revision is >= r (suffix minimum over ops sorted by revision).
    let mut by_rev: Vec<(Revision, Time)> = history
        .ops
        .iter()
        .filter(|op| {
            !matches!(
                op.call,
                Call::Get {
                    linearizable: false,
                    ..
                }
            )
        })
        .filter_map(|op| Some((op.ok()?.revision(), op.complete?)))
        .collect();
    by_rev.sort_unstable();
    for i in (0..by_rev.len().saturating_sub(1)).rev() {
        by_rev[i].1 = by_rev[i].1.min(by_rev[i + 1].1);
    }
    let bound = |r: Revision| -> Option<Time> {
        let i = by_rev.partition_point(|(rev, _)| *rev < r);
        by_rev.get(i).map(|(_, t)| *t)
    };

    let mut stats = PatchStats::default();
    let mut patched = history.clone();
    for op in &mut patched.ops {
        if op.outcome != Outcome::Info || !op.call.is_write() {
            continue;
        }
        let happened_at: Option<Revision> = match &op.call {
            Call::Put { key, value: v } | Call::Cas { key, new: v, .. } => {
                if writers.get(&(key.as_str(), v.as_str())) != Some(&1) {
                    stats.unresolved += 1;
                    continue;
                }
                put_rev.get(&(key.as_str(), v.as_str())).copied()
            }
            Call::Delete { key } => match unmatched_deletes.get(key.as_str()).map(Vec::as_slice) {
                None | Some([]) => None,
                Some([r]) if info_deletes.get(key.as_str()) == Some(&1) => Some(*r),
                Some(_) => {
                    stats.unresolved += 1;
                    continue;
                }
            },
            Call::Get { .. } => continue,
        };
        let Some(r) = happened_at else {
            stats.never_happened += 1;
            op.outcome = Outcome::Fail;
            op.complete = Some(op.invoke);
            continue;
        };
        match bound(r).filter(|&c| c >= op.invoke) {
            Some(c) => {
                stats.happened_bounded += 1;
                op.complete = Some(c);
                op.outcome = Outcome::Ok(match op.call {
                    Call::Put { .. } => OkResult::Put { revision: r },
                    Call::Cas { .. } => OkResult::Cas {
                        succeeded: true,
                        revision: r,
                    },
                    _ => OkResult::Delete {
                        deleted: true,
                        revision: r,
                    },
                });
            }
            None => stats.happened += 1,
        }
    }
    (patched, stats)
}
