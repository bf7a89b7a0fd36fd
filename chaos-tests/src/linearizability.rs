//! Linearizability of the KV history: a WGL search per key, plus global revision checks.
//!
//! # The search
//!
//! Wing & Gong's algorithm with Lowe's memoization, as in Knossos and Porcupine:
//! the history of one key becomes a doubly linked list of call and return
//! entries ordered by time (a call sorts before a return at the same instant, so
//! touching intervals count as concurrent). The search repeatedly tries to
//! linearize a call that appears before the first remaining return, applying it
//! to the model; it removes ("lifts") the call and its return from the list, and
//! on reaching a return whose call was not linearized it backtracks. Every
//! configuration (set of linearized ops, model state) is remembered and never
//! explored twice, which is what makes the search practical.
//!
//! *P-compositionality*: a KV history is linearizable iff each key's sub-history
//! is linearizable against a single-register model, because every call touches
//! exactly one key. Each key is searched separately, which is exponentially
//! cheaper than searching the whole history.
//!
//! The model per key is a register holding `Option<String>` (`None` = absent),
//! initially absent: the checker assumes an empty store, so any seeding must be
//! recorded as operations.
//!
//! # What enters the search
//!
//! * `Fail` operations are dropped: they certainly did not happen.
//! * Reads whose outcome is `Info` are dropped: a read changes nothing.
//! * **Serializable reads are dropped.** They are served by a local replica
//!   without a read index and may legitimately be stale, so they carry no
//!   linearizability obligation (they are also excluded from the revision checks).
//! * Writes whose outcome is `Info` stay in, with return time infinity: they may
//!   take effect at any point after their invocation, or never (linearizing them
//!   after every other operation is indistinguishable from "never").
//!
//! # Verdicts
//!
//! Each key gets [`KeyVerdict::Linearizable`], [`KeyVerdict::NotLinearizable`]
//! with a [`FailureWindow`] (the deepest partial linearization found and the ops
//! that could not extend it), or [`KeyVerdict::Unknown`] when the step budget
//! ran out. **Unknown is not a pass.** Keep per-key histories small (rotate keys
//! over time, keep concurrency and the number of `Info` writes per key low): the
//! search is exponential in the worst case.
//!
//! # Revisions
//!
//! [`check_revisions`] checks, across *all* keys, that the revisions in response
//! headers agree with real time (see [`RevisionViolationKind`]). These checks
//! are cheap (`O(n log n)`) and catch bugs the per-key search cannot see, such as
//! a revision reused after a crash.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::history::{Call, History, HistoryError, OkResult, Operation, Outcome, Time};
use crate::Verdict;

/// Tuning for [`check_linearizability`].
#[derive(Clone, Debug)]
pub struct LinearizabilityConfig {
    /// Search steps allowed per key before giving up with [`KeyVerdict::Unknown`].
    pub max_steps_per_key: u64,
}

impl Default for LinearizabilityConfig {
    fn default() -> Self {
        LinearizabilityConfig {
            max_steps_per_key: 5_000_000,
        }
    }
}

/// The result for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    Linearizable,
    NotLinearizable {
        key: String,
        window: Box<FailureWindow>,
    },
    /// The search budget ran out after `steps` steps. Not a pass.
    Unknown {
        key: String,
        steps: u64,
    },
}

/// Where the search for one key got stuck: the smallest useful context to debug a
/// non-linearizable history.
///
/// The search got furthest with `linearized` of `total` ops placed; `recent` are
/// the last of those in linearization order and `state` the register value after
/// them. Then `stuck` returned (completed) while neither it nor any other
/// `candidates` op (invoked before `stuck` returned, not yet linearized) could be
/// placed next without leading to a dead end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureWindow {
    pub key: String,
    pub linearized: usize,
    pub total: usize,
    pub recent: Vec<Operation>,
    pub state: Option<String>,
    pub stuck: Operation,
    /// Each candidate with why it could not go next.
    pub candidates: Vec<(Operation, String)>,
    /// Candidates left out of `candidates` to keep the report short.
    pub more_candidates: usize,
}

const RECENT: usize = 6;
const MAX_CANDIDATES: usize = 16;

impl fmt::Display for FailureWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "key {:?} is not linearizable.", self.key)?;
        writeln!(
            f,
            "  longest linearizable prefix: {} of {} ops; its last ops, in linearization order:",
            self.linearized, self.total
        )?;
        if self.recent.is_empty() {
            writeln!(f, "    (none)")?;
        }
        for op in &self.recent {
            writeln!(f, "    {op}")?;
        }
        writeln!(f, "  register after that prefix: {}", show(&self.state))?;
        writeln!(
            f,
            "  then this op returned without any way to linearize it:"
        )?;
        writeln!(f, "    {}", self.stuck)?;
        writeln!(f, "  ops that could have gone next, and why none could:")?;
        for (op, why) in &self.candidates {
            writeln!(f, "    {op}\n        -> {why}")?;
        }
        if self.more_candidates > 0 {
            writeln!(f, "    ... and {} more", self.more_candidates)?;
        }
        Ok(())
    }
}

fn show(v: &Option<String>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => "<absent>".into(),
    }
}

/// A disagreement between revisions and real time. `earlier` and `later` are the
/// two operations involved (see each kind for their roles).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionViolation {
    pub kind: RevisionViolationKind,
    pub earlier: Operation,
    pub later: Operation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevisionViolationKind {
    /// Two acknowledged writes created the same revision. (Every call writes one
    /// key, so distinct writes need distinct revisions.)
    DuplicateRevision,
    /// `earlier` completed before `later` was invoked, yet `later`'s revision is
    /// lower; or equal while `later` is a write that created a revision. This
    /// covers "write A completed before write B started implies rev(A) < rev(B)"
    /// and "a linearizable read's header revision is at least the revision of
    /// every write completed before the read started", and also catches reads
    /// going back in time across keys.
    NotMonotonic,
    /// A linearizable read returned the value written by `earlier` (the only
    /// write of that value to that key) but reported a header revision below
    /// the revision of that write.
    ReadBelowObservedWrite,
}

impl fmt::Display for RevisionViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (e, l) = (&self.earlier, &self.later);
        match self.kind {
            RevisionViolationKind::DuplicateRevision => write!(
                f,
                "two acknowledged writes share a revision:\n    {e}\n    {l}"
            ),
            RevisionViolationKind::NotMonotonic => write!(
                f,
                "revision went backwards: this op completed first\n    {e}\n  \
                 but this op, invoked after it, has a {} revision\n    {l}",
                if l.written_revision().is_some() {
                    "lower or equal"
                } else {
                    "lower"
                }
            ),
            RevisionViolationKind::ReadBelowObservedWrite => write!(
                f,
                "read saw a write from its future: this write\n    {e}\n  \
                 was read by an op whose header revision is lower\n    {l}"
            ),
        }
    }
}

/// Results for the whole history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinearizabilityReport {
    /// One verdict per key that had operations in the search.
    pub keys: BTreeMap<String, KeyVerdict>,
    pub revisions: Vec<RevisionViolation>,
}

impl LinearizabilityReport {
    /// Pass only if every key is linearizable and there is no revision violation.
    pub fn verdict(&self) -> Verdict {
        let mut fails = Vec::new();
        let mut unknown = Vec::new();
        for v in self.keys.values() {
            match v {
                KeyVerdict::Linearizable => {}
                KeyVerdict::NotLinearizable { window, .. } => fails.push(window.to_string()),
                KeyVerdict::Unknown { key, steps } => unknown.push(format!(
                    "key {key:?}: search budget exhausted after {steps} steps"
                )),
            }
        }
        for r in self.revisions.iter().take(10) {
            fails.push(r.to_string());
        }
        if self.revisions.len() > 10 {
            fails.push(format!(
                "... and {} more revision violations",
                self.revisions.len() - 10
            ));
        }
        if !fails.is_empty() {
            Verdict::Fail(fails.join("\n"))
        } else if !unknown.is_empty() {
            Verdict::Unknown(unknown.join("\n"))
        } else {
            Verdict::Pass
        }
    }
}

/// Checks the whole history: the per-key search on every key, then
/// [`check_revisions`]. Refuses a malformed history.
pub fn check_linearizability(
    history: &History,
    config: &LinearizabilityConfig,
) -> Result<LinearizabilityReport, HistoryError> {
    history.validate()?;
    let mut per_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in &history.ops {
        if enters_search(op) {
            per_key.entry(op.key()).or_default().push(op);
        }
    }
    let keys = per_key
        .into_iter()
        .map(|(key, ops)| (key.to_string(), check_key(key, &ops, config)))
        .collect();
    Ok(LinearizabilityReport {
        keys,
        revisions: check_revisions(history),
    })
}

fn enters_search(op: &Operation) -> bool {
    match (&op.call, &op.outcome) {
        (_, Outcome::Fail) => false,
        (Call::Get { linearizable, .. }, Outcome::Ok(_)) => *linearizable,
        (Call::Get { .. }, Outcome::Info) => false,
        _ => true,
    }
}

/// A call with its (possibly unknown) output, values interned: 0 = absent, `i`
/// = `values[i - 1]`.
#[derive(Clone, Copy, Debug)]
enum Input {
    Put(u32),
    Get(u32),
    /// `Some(deleted)` if the outcome is known.
    Delete(Option<bool>),
    Cas {
        expected: u32,
        new: u32,
        succeeded: Option<bool>,
    },
}

/// The register model: the next state, or `None` if the output is impossible.
fn step(state: u32, input: Input) -> Option<u32> {
    match input {
        Input::Put(v) => Some(v),
        Input::Get(v) => (state == v).then_some(state),
        Input::Delete(None) => Some(0),
        Input::Delete(Some(deleted)) => ((state != 0) == deleted).then_some(0),
        Input::Cas {
            expected,
            new,
            succeeded,
        } => {
            let matches = state == expected;
            match succeeded {
                Some(s) if s != matches => None,
                _ => Some(if matches { new } else { state }),
            }
        }
    }
}

struct Interner<'h> {
    ids: HashMap<&'h str, u32>,
    values: Vec<&'h str>,
}

impl<'h> Interner<'h> {
    fn id(&mut self, v: &'h str) -> u32 {
        if let Some(id) = self.ids.get(v) {
            return *id;
        }
        self.values.push(v);
        let id = self.values.len() as u32;
        self.ids.insert(v, id);
        id
    }

    fn opt(&mut self, v: &'h Option<String>) -> u32 {
        v.as_deref().map_or(0, |v| self.id(v))
    }

    fn value(&self, id: u32) -> Option<String> {
        (id != 0).then(|| self.values[id as usize - 1].to_string())
    }
}

fn input<'h>(op: &'h Operation, interner: &mut Interner<'h>) -> Input {
    match (&op.call, &op.outcome) {
        (Call::Put { value, .. }, _) => Input::Put(interner.id(value)),
        (Call::Get { .. }, Outcome::Ok(OkResult::Get { value, .. })) => {
            Input::Get(interner.opt(value))
        }
        (Call::Delete { .. }, Outcome::Ok(OkResult::Delete { deleted, .. })) => {
            Input::Delete(Some(*deleted))
        }
        (Call::Delete { .. }, _) => Input::Delete(None),
        (Call::Cas { expected, new, .. }, outcome) => Input::Cas {
            expected: interner.opt(expected),
            new: interner.id(new),
            succeeded: match outcome {
                Outcome::Ok(OkResult::Cas { succeeded, .. }) => Some(*succeeded),
                _ => None,
            },
        },
        // Validated histories never get here: reads that enter the search are ok
        // reads with a read result.
        (Call::Get { .. }, _) => unreachable!("unexpected read in the search: {op}"),
    }
}

fn explain(state: u32, input: Input, interner: &Interner) -> String {
    let s = show(&interner.value(state));
    match input {
        Input::Get(v) => format!(
            "it read {} but the register holds {s}",
            show(&interner.value(v))
        ),
        Input::Delete(Some(d)) => format!("it reported deleted={d} but the register holds {s}"),
        Input::Cas {
            expected,
            succeeded: Some(ok),
            ..
        } => format!(
            "its compare against {} {} but the register holds {s}",
            show(&interner.value(expected)),
            if ok { "succeeded" } else { "failed" }
        ),
        _ => "it fits here, but every continuation from here dead-ends".into(),
    }
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// The call/return list with O(1) lift and unlift (dancing links).
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per node (1-based; 0 is the head): the op and whether it is the call.
    op: Vec<usize>,
    is_call: Vec<bool>,
    call_node: Vec<usize>,
    ret_node: Vec<usize>,
}

impl Entries {
    fn new(ops: &[&Operation]) -> Self {
        let n = ops.len();
        // Sort key: (time, infinite?, return after call, op index).
        let mut order: Vec<(bool, Time, bool, usize)> = Vec::with_capacity(2 * n);
        for (i, op) in ops.iter().enumerate() {
            order.push((false, op.invoke, false, i));
            match op.complete {
                Some(c) => order.push((false, c, true, i)),
                None => order.push((true, 0, true, i)),
            }
        }
        order.sort_unstable();
        let len = 2 * n + 1;
        let mut e = Entries {
            next: (1..=len).map(|i| if i == len { NIL } else { i }).collect(),
            prev: (0..len).map(|i| if i == 0 { NIL } else { i - 1 }).collect(),
            op: vec![NIL; len],
            is_call: vec![false; len],
            call_node: vec![NIL; n],
            ret_node: vec![NIL; n],
        };
        for (k, &(_, _, is_ret, i)) in order.iter().enumerate() {
            let node = k + 1;
            e.op[node] = i;
            e.is_call[node] = !is_ret;
            if is_ret {
                e.ret_node[i] = node;
            } else {
                e.call_node[i] = node;
            }
        }
        e
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        self.unlink(self.ret_node[op]);
    }

    fn unlift(&mut self, op: usize) {
        self.relink(self.ret_node[op]);
        self.relink(self.call_node[op]);
    }
}

struct Deepest {
    order: Vec<usize>,
    state: u32,
    stuck: usize,
}

/// Runs the WGL search for the operations of one key (already filtered by
/// [`check_linearizability`]'s rules).
fn check_key(key: &str, ops: &[&Operation], config: &LinearizabilityConfig) -> KeyVerdict {
    let n = ops.len();
    let mut interner = Interner {
        ids: HashMap::new(),
        values: Vec::new(),
    };
    let inputs: Vec<Input> = ops.iter().map(|op| input(op, &mut interner)).collect();
    let mut list = Entries::new(ops);

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, u32)> = HashSet::new();
    let mut calls: Vec<(usize, u32)> = Vec::new();
    let mut state = 0u32;
    let mut entry = list.next[HEAD];
    let mut steps = 0u64;
    let mut deepest: Option<Deepest> = None;

    while list.next[HEAD] != NIL {
        steps += 1;
        if steps > config.max_steps_per_key {
            return KeyVerdict::Unknown {
                key: key.to_string(),
                steps: steps - 1,
            };
        }
        let i = list.op[entry];
        if list.is_call[entry] {
            if let Some(next_state) = step(state, inputs[i]) {
                linearized[i / 64] |= 1 << (i % 64);
                if seen.insert((linearized.clone(), next_state)) {
                    calls.push((i, state));
                    state = next_state;
                    list.lift(i);
                    entry = list.next[HEAD];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = list.next[entry];
        } else {
            if deepest.as_ref().is_none_or(|d| calls.len() > d.order.len()) {
                deepest = Some(Deepest {
                    order: calls.iter().map(|c| c.0).collect(),
                    state,
                    stuck: i,
                });
            }
            let Some((j, prev)) = calls.pop() else {
                let deepest = deepest.expect("recorded before giving up");
                return KeyVerdict::NotLinearizable {
                    key: key.to_string(),
                    window: Box::new(window(key, ops, &inputs, &interner, &list, deepest)),
                };
            };
            state = prev;
            linearized[j / 64] &= !(1 << (j % 64));
            list.unlift(j);
            entry = list.next[list.call_node[j]];
        }
    }
    KeyVerdict::Linearizable
}

fn window(
    key: &str,
    ops: &[&Operation],
    inputs: &[Input],
    interner: &Interner,
    list: &Entries,
    d: Deepest,
) -> FailureWindow {
    let mut done = vec![false; ops.len()];
    for &i in &d.order {
        done[i] = true;
    }
    // Node numbers follow time order, so "invoked before `stuck` returned" is a
    // comparison of node numbers.
    let stuck_ret = list.ret_node[d.stuck];
    let mut candidates: Vec<usize> = (0..ops.len())
        .filter(|&i| !done[i] && list.call_node[i] < stuck_ret)
        .collect();
    candidates.sort_by_key(|&i| (ops[i].invoke, ops[i].id));
    let more_candidates = candidates.len().saturating_sub(MAX_CANDIDATES);
    candidates.truncate(MAX_CANDIDATES);
    FailureWindow {
        key: key.to_string(),
        linearized: d.order.len(),
        total: ops.len(),
        recent: d.order[d.order.len().saturating_sub(RECENT)..]
            .iter()
            .map(|&i| ops[i].clone())
            .collect(),
        state: interner.value(d.state),
        stuck: ops[d.stuck].clone(),
        candidates: candidates
            .into_iter()
            .map(|i| {
                let why = match step(d.state, inputs[i]) {
                    None => explain(d.state, inputs[i], interner),
                    Some(_) => "it fits here, but every continuation from here dead-ends".into(),
                };
                (ops[i].clone(), why)
            })
            .collect(),
        more_candidates,
    }
}

/// The global revision checks described in [`RevisionViolationKind`], over all
/// ok operations except serializable reads. Returns every violation found, in a
/// deterministic order.
pub fn check_revisions(history: &History) -> Vec<RevisionViolation> {
    let mut out = Vec::new();
    let ops: Vec<&Operation> = history
        .ops
        .iter()
        .filter(|op| {
            op.ok().is_some()
                && !matches!(
                    op.call,
                    Call::Get {
                        linearizable: false,
                        ..
                    }
                )
        })
        .collect();
    let rev = |op: &Operation| op.ok().map(OkResult::revision).unwrap_or_default();

    // Distinct revisions for writes that created one.
    let mut writes: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|op| op.written_revision().is_some())
        .collect();
    writes.sort_by_key(|op| (op.written_revision(), op.id));
    for pair in writes.windows(2) {
        if pair[0].written_revision() == pair[1].written_revision() {
            out.push(RevisionViolation {
                kind: RevisionViolationKind::DuplicateRevision,
                earlier: pair[0].clone(),
                later: pair[1].clone(),
            });
        }
    }

    // Real-time order implies revision order: sweep ops by invocation, keeping the
    // highest revision among ops that completed strictly before.
    let mut by_complete = ops.clone();
    by_complete.sort_by_key(|op| (op.complete, op.id));
    let mut by_invoke = ops.clone();
    by_invoke.sort_by_key(|op| (op.invoke, op.id));
    let mut done = 0;
    let mut highest: Option<&Operation> = None;
    for later in by_invoke {
        while done < by_complete.len() && by_complete[done].precedes(later) {
            let cand = by_complete[done];
            if highest.is_none_or(|h| rev(cand) > rev(h)) {
                highest = Some(cand);
            }
            done += 1;
        }
        if let Some(earlier) = highest {
            let bad = if later.written_revision().is_some() {
                rev(later) <= rev(earlier)
            } else {
                rev(later) < rev(earlier)
            };
            if bad {
                out.push(RevisionViolation {
                    kind: RevisionViolationKind::NotMonotonic,
                    earlier: earlier.clone(),
                    later: later.clone(),
                });
            }
        }
    }

    // A read cannot observe a write from above its own revision. Only values with
    // a single possible writer are attributable.
    let mut writers: HashMap<(&str, &str), Vec<&Operation>> = HashMap::new();
    for op in &history.ops {
        let value = match &op.call {
            Call::Put { value, .. } => value,
            Call::Cas { new, .. } => new,
            _ => continue,
        };
        let may_have_written = match &op.outcome {
            Outcome::Fail => false,
            Outcome::Info => true,
            Outcome::Ok(_) => op.written_revision().is_some(),
        };
        if may_have_written {
            writers.entry((op.key(), value)).or_default().push(op);
        }
    }
    for read in &ops {
        if let (
            Call::Get { key, .. },
            Some(OkResult::Get {
                value: Some(v),
                revision,
            }),
        ) = (&read.call, read.ok())
        {
            if let Some([w]) = writers.get(&(key.as_str(), v.as_str())).map(Vec::as_slice) {
                if w.written_revision().is_some_and(|wr| wr > *revision) {
                    out.push(RevisionViolation {
                        kind: RevisionViolationKind::ReadBelowObservedWrite,
                        earlier: (*w).clone(),
                        later: (*read).clone(),
                    });
                }
            }
        }
    }
    out
}
