//! Durability: no acknowledged write is lost, judged from a final read of every key.
//!
//! After the run (faults healed, cluster quiet), the harness does one
//! linearizable read of all keys: a [`FinalRead`]. Then, per key `k` with final
//! value `F(k)` (absent if the key is not in the read):
//!
//! * An **acknowledged write** on `k` is an ok put, an ok delete (whether or not
//!   it deleted something: either way it fixed the key to absent at its
//!   linearization point) or an ok CAS that succeeded.
//! * A **candidate** is a write on `k` that may have taken effect: an
//!   acknowledged write, or a put, delete or CAS whose outcome is `Info`. Its
//!   *effect* is the value it leaves: `Some(value)` for a put, `Some(new)` for a
//!   CAS, absent for a delete.
//! * A candidate `C` **may be last** unless some acknowledged write `W` on `k`
//!   was invoked after `C` completed (then `W` certainly took effect after `C`).
//!   `Info` candidates never complete, so they may always be last.
//! * The key is **durable** iff `F(k)` is the effect of some candidate that may be
//!   last, or `F(k)` is absent and `k` has no acknowledged write at all (the
//!   initial state survives).
//!
//! So an acknowledged write counts as preserved if its value is still there or if
//! it may have been superseded by a later write (ok or unknown, including a
//! delete) that explains the final value. Violations are reported as
//! [`DurabilityViolation::LostWrite`] (the key has acknowledged writes; the
//! report lists the last ones) or [`DurabilityViolation::PhantomValue`] (no
//! acknowledged write, and the final value was never possibly written).
//!
//! Also, the final read's revision must be at least the revision of every
//! acknowledged write ([`DurabilityViolation::RevisionRegressed`]): a lower one
//! means the store's revision went backwards, e.g. after a crash.
//!
//! Feeding the final read into the linearizability checker as one linearizable
//! read per key after all other ops is a stronger check; this one is cheap,
//! never gives up, and names the lost write directly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{Call, History, HistoryError, OkResult, Operation, Outcome, Revision, Time};
use crate::Verdict;

/// One linearizable read of every key at the end of the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalRead {
    /// The header revision of the read.
    pub revision: Revision,
    /// Keys not present here are absent; an explicit `None` means the same.
    pub values: BTreeMap<String, Option<String>>,
}

impl FinalRead {
    pub fn value(&self, key: &str) -> Option<&str> {
        self.values.get(key).and_then(|v| v.as_deref())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurabilityViolation {
    /// No candidate that may be last explains the final value of `key`.
    /// `last_acknowledged` are the acknowledged writes not followed by another
    /// acknowledged write: at least one of them, or something later, should show.
    LostWrite {
        key: String,
        final_value: Option<String>,
        last_acknowledged: Vec<Operation>,
        /// Writes with unknown outcome that might have superseded them.
        maybe_later: Vec<Operation>,
    },
    /// The key has no acknowledged write and nothing could have written its value.
    PhantomValue { key: String, final_value: String },
    /// An acknowledged write has a revision above the final read's revision.
    RevisionRegressed {
        final_revision: Revision,
        write: Operation,
    },
}

impl fmt::Display for DurabilityViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurabilityViolation::LostWrite {
                key,
                final_value,
                last_acknowledged,
                maybe_later,
            } => {
                let shown = final_value
                    .as_deref()
                    .map_or("<absent>".to_string(), |v| format!("{v:?}"));
                writeln!(
                    f,
                    "lost write on key {key:?}: the final read returned {shown}, which no write that may have come last produced. Last acknowledged writes:"
                )?;
                for op in last_acknowledged {
                    writeln!(f, "    {op}")?;
                }
                if !maybe_later.is_empty() {
                    writeln!(f, "  writes with unknown outcome that may have come later:")?;
                    for op in maybe_later {
                        writeln!(f, "    {op}")?;
                    }
                }
                Ok(())
            }
            DurabilityViolation::PhantomValue { key, final_value } => write!(
                f,
                "key {key:?} holds {final_value:?} at the end, but no write could have put it there"
            ),
            DurabilityViolation::RevisionRegressed {
                final_revision,
                write,
            } => write!(
                f,
                "final read at revision {final_revision} is below the revision of acknowledged write\n    {write}"
            ),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurabilityReport {
    pub violations: Vec<DurabilityViolation>,
}

impl DurabilityReport {
    pub fn verdict(&self) -> Verdict {
        Verdict::from_violations(&self.violations)
    }
}

/// The write's effect if it may have happened; `None` for reads, failures and
/// CAS known to have failed.
fn effect(op: &Operation) -> Option<Option<&str>> {
    let acknowledged_or_unknown = match &op.outcome {
        Outcome::Fail => false,
        Outcome::Info => true,
        Outcome::Ok(OkResult::Cas { succeeded, .. }) => *succeeded,
        Outcome::Ok(_) => true,
    };
    if !acknowledged_or_unknown {
        return None;
    }
    match &op.call {
        Call::Put { value, .. } => Some(Some(value)),
        Call::Cas { new, .. } => Some(Some(new)),
        Call::Delete { .. } => Some(None),
        Call::Get { .. } => None,
    }
}

fn acknowledged(op: &Operation) -> bool {
    op.ok().is_some() && effect(op).is_some()
}

/// Checks the definition in the module docs for every key written in `history`
/// or present in `final_read`.
pub fn check_durability(
    history: &History,
    final_read: &FinalRead,
) -> Result<DurabilityReport, HistoryError> {
    history.validate()?;
    let mut violations = Vec::new();
    let mut per_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in &history.ops {
        if effect(op).is_some() {
            per_key.entry(op.key()).or_default().push(op);
        }
    }
    let keys: BTreeSet<&str> = per_key
        .keys()
        .copied()
        .chain(final_read.values.keys().map(String::as_str))
        .collect();
    let none = Vec::new();
    for key in keys {
        let ops = per_key.get(key).unwrap_or(&none);
        let fin = final_read.value(key);
        let acked: Vec<&Operation> = ops.iter().copied().filter(|o| acknowledged(o)).collect();
        // A candidate may be last iff it completes no earlier than the latest
        // invocation of an acknowledged write (strict real-time order).
        let latest_acked_invoke: Option<Time> = acked.iter().map(|o| o.invoke).max();
        let may_be_last = |o: &Operation| match (o.complete, latest_acked_invoke) {
            (None, _) | (_, None) => true,
            (Some(c), Some(i)) => c >= i,
        };
        let explained = ops.iter().any(|o| may_be_last(o) && effect(o) == Some(fin))
            || (fin.is_none() && acked.is_empty());
        if !explained {
            if acked.is_empty() {
                violations.push(DurabilityViolation::PhantomValue {
                    key: key.to_string(),
                    final_value: fin.unwrap_or_default().to_string(),
                });
            } else {
                violations.push(DurabilityViolation::LostWrite {
                    key: key.to_string(),
                    final_value: fin.map(str::to_string),
                    last_acknowledged: acked
                        .iter()
                        .filter(|o| may_be_last(o))
                        .map(|o| (*o).clone())
                        .collect(),
                    maybe_later: ops
                        .iter()
                        .filter(|o| o.complete.is_none())
                        .map(|o| (*o).clone())
                        .collect(),
                });
            }
        }
    }
    for op in &history.ops {
        if let Some(rev) = op.written_revision() {
            if rev > final_read.revision {
                violations.push(DurabilityViolation::RevisionRegressed {
                    final_revision: final_read.revision,
                    write: op.clone(),
                });
            }
        }
    }
    Ok(DurabilityReport { violations })
}
