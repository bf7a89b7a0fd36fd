//! The recorded history of a chaos run: what every client asked and what it was told.
//!
//! The checkers never look at the system under test. They judge only this record,
//! so it has to say exactly what a client can know, following the Jepsen/Knossos
//! conventions:
//!
//! * Each [`Operation`] is one request: invoked at [`Operation::invoke`], answered
//!   at [`Operation::complete`].
//! * Its [`Outcome`] is [`Outcome::Ok`] (it happened and this is what it returned),
//!   [`Outcome::Fail`] (it **certainly** did not happen: the server rejected it
//!   before it could take effect), or [`Outcome::Info`] (unknown: timeout, lost
//!   connection, leader change mid-request). An operation that ran and gave a
//!   negative answer is *not* a failure: a compare-and-set whose compare did not
//!   match is `Ok` with `succeeded: false`, a delete of an absent key is `Ok` with
//!   `deleted: false`.
//! * An `Info` operation has no completion time: it may take effect at any moment
//!   after its invocation, or never, so its return time is infinity.
//! * Processes are sequential: a process never has two operations in flight. A
//!   process whose operation ended `Info` is treated as crashed and **never issues
//!   again**; the client that drove it continues under a fresh process id (the
//!   [`crate::recorder::Recorder`] does this). Otherwise the checker would wrongly
//!   assume the client's next operation started after the unknown one ended.
//!
//! Times are simulated nanoseconds (turmoil's clock). Revisions are the store's
//! global revision from the response header, as in etcd: a write's revision is
//! the revision it created (its mod revision); a read's revision is the store
//! revision at the time of the read.
//!
//! Histories serialize as JSON lines (one operation per line) so a failing history
//! can be written next to the seed that produced it and re-checked later.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// Unique id of an operation within a history.
pub type OpId = u64;
/// A sequential actor. See the module docs for the crash rule.
pub type ProcessId = u64;
/// Simulated time in nanoseconds.
pub type Time = u64;
/// The store's global revision (etcd uses int64).
pub type Revision = i64;

/// A request on the string key space.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Call {
    /// Unconditional write of `value` to `key`.
    Put { key: String, value: String },
    /// Read of one key. `linearizable: false` is a serializable read, served from
    /// the local replica without a read-index round; it may be stale.
    Get { key: String, linearizable: bool },
    /// Delete of one key.
    Delete { key: String },
    /// Compare-and-set as an etcd txn: if the value of `key` equals `expected`
    /// (`None` = the key must be absent), put `new`.
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
}

impl Call {
    /// The key the call touches.
    pub fn key(&self) -> &str {
        match self {
            Call::Put { key, .. }
            | Call::Get { key, .. }
            | Call::Delete { key }
            | Call::Cas { key, .. } => key,
        }
    }

    /// Whether the call may change the store.
    pub fn is_write(&self) -> bool {
        !matches!(self, Call::Get { .. })
    }
}

/// What an operation that happened returned. The variant must match the [`Call`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OkResult {
    /// `revision` is the mod revision the put created.
    Put { revision: Revision },
    /// `revision` is the header revision: the store revision at read time.
    Get {
        value: Option<String>,
        revision: Revision,
    },
    /// `deleted` says whether the key existed. If it did, `revision` is the revision
    /// of the delete; otherwise the header revision (the store did not change).
    Delete { deleted: bool, revision: Revision },
    /// If `succeeded`, `revision` is the revision of the put; otherwise the header
    /// revision at which the compare failed.
    Cas { succeeded: bool, revision: Revision },
}

impl OkResult {
    /// The revision in the response header.
    pub fn revision(&self) -> Revision {
        match self {
            OkResult::Put { revision }
            | OkResult::Get { revision, .. }
            | OkResult::Delete { revision, .. }
            | OkResult::Cas { revision, .. } => *revision,
        }
    }

    fn matches(&self, call: &Call) -> bool {
        matches!(
            (call, self),
            (Call::Put { .. }, OkResult::Put { .. })
                | (Call::Get { .. }, OkResult::Get { .. })
                | (Call::Delete { .. }, OkResult::Delete { .. })
                | (Call::Cas { .. }, OkResult::Cas { .. })
        )
    }
}

/// How an operation ended, from the client's point of view.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It happened; this is the response.
    Ok(OkResult),
    /// It certainly did not happen.
    Fail,
    /// Unknown: it may have happened, at any time after its invocation, or never.
    Info,
}

/// One request and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    pub id: OpId,
    pub process: ProcessId,
    /// When the client sent the request.
    pub invoke: Time,
    /// When the client got the answer; `None` (= infinity) exactly when the outcome
    /// is [`Outcome::Info`].
    pub complete: Option<Time>,
    pub call: Call,
    pub outcome: Outcome,
}

impl Operation {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        self.call.key()
    }

    /// The response, if the operation is known to have happened.
    pub fn ok(&self) -> Option<&OkResult> {
        match &self.outcome {
            Outcome::Ok(r) => Some(r),
            _ => None,
        }
    }

    /// Completion time with `Info` mapped to infinity (`u64::MAX` is never a
    /// real completion time in a valid history: validation rejects it).
    pub fn return_time(&self) -> Time {
        self.complete.unwrap_or(Time::MAX)
    }

    /// True if `self` finished before `other` started (strictly), so every
    /// linearization must order `self` first. Equal times count as concurrent.
    pub fn precedes(&self, other: &Operation) -> bool {
        matches!(self.complete, Some(c) if c < other.invoke)
    }

    /// The revision this operation is known to have created: ok puts, ok deletes
    /// that deleted something, ok CAS that succeeded.
    pub fn written_revision(&self) -> Option<Revision> {
        match (&self.call, self.ok()?) {
            (Call::Put { .. }, OkResult::Put { revision }) => Some(*revision),
            (
                Call::Delete { .. },
                OkResult::Delete {
                    deleted: true,
                    revision,
                },
            ) => Some(*revision),
            (
                Call::Cas { .. },
                OkResult::Cas {
                    succeeded: true,
                    revision,
                },
            ) => Some(*revision),
            _ => None,
        }
    }
}

fn show_value(v: &Option<String>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => "<absent>".to_string(),
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Put { key, value } => write!(f, "put {key:?} = {value:?}"),
            Call::Get { key, linearizable } => {
                write!(f, "get {key:?}")?;
                if !linearizable {
                    write!(f, " (serializable)")?;
                }
                Ok(())
            }
            Call::Delete { key } => write!(f, "delete {key:?}"),
            Call::Cas { key, expected, new } => {
                write!(f, "cas {key:?} {} -> {new:?}", show_value(expected))
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Fail => write!(f, "fail"),
            Outcome::Info => write!(f, "info (unknown)"),
            Outcome::Ok(OkResult::Put { revision }) => write!(f, "ok rev={revision}"),
            Outcome::Ok(OkResult::Get { value, revision }) => {
                write!(f, "ok {} rev={revision}", show_value(value))
            }
            Outcome::Ok(OkResult::Delete { deleted, revision }) => {
                write!(f, "ok deleted={deleted} rev={revision}")
            }
            Outcome::Ok(OkResult::Cas {
                succeeded,
                revision,
            }) => {
                write!(f, "ok succeeded={succeeded} rev={revision}")
            }
        }
    }
}

impl fmt::Display for Operation {
    /// `#7 p2 [100..250] put "k" = "v" -> ok rev=5`; `..inf` for unknown outcomes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} p{} [{}..", self.id, self.process, self.invoke)?;
        match self.complete {
            Some(c) => write!(f, "{c}]")?,
            None => write!(f, "inf]")?,
        }
        write!(f, " {} -> {}", self.call, self.outcome)
    }
}

/// Why a history is malformed. A malformed history is a bug in the recorder, not
/// in the system under test, so checkers refuse it instead of judging it.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("operation id {0} appears twice")]
    DuplicateId(OpId),
    #[error("operation {0}: outcome ok/fail needs a completion time")]
    MissingCompletion(OpId),
    #[error("operation {0}: an info (unknown) outcome must have no completion time")]
    InfoWithCompletion(OpId),
    #[error("operation {0}: completes before it is invoked, or at u64::MAX")]
    BadTimes(OpId),
    #[error("operation {0}: ok result does not match the call")]
    ResultMismatch(OpId),
    #[error("process {process}: operations {first} and {second} overlap in time")]
    ProcessOverlap {
        process: ProcessId,
        first: OpId,
        second: OpId,
    },
    #[error("process {process}: operation {after} issued after operation {info} ended info; a crashed process must not issue again")]
    ProcessReused {
        process: ProcessId,
        info: OpId,
        after: OpId,
    },
    #[error("line {line}: {source}")]
    Json {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A whole recorded history. Order of `ops` does not matter to the checkers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Operation>,
}

impl History {
    pub fn new(ops: Vec<Operation>) -> Self {
        History { ops }
    }

    /// Checks the structural rules in the module docs: unique ids, completion time
    /// present exactly for ok/fail, `invoke <= complete < u64::MAX`, ok results that
    /// match their call, sequential processes, and no process reused after `Info`.
    pub fn validate(&self) -> Result<(), HistoryError> {
        let mut ids = BTreeSet::new();
        let mut by_process: BTreeMap<ProcessId, Vec<&Operation>> = BTreeMap::new();
        for op in &self.ops {
            if !ids.insert(op.id) {
                return Err(HistoryError::DuplicateId(op.id));
            }
            match (&op.outcome, op.complete) {
                (Outcome::Info, Some(_)) => return Err(HistoryError::InfoWithCompletion(op.id)),
                (Outcome::Ok(_) | Outcome::Fail, None) => {
                    return Err(HistoryError::MissingCompletion(op.id))
                }
                (_, Some(c)) if c < op.invoke || c == Time::MAX => {
                    return Err(HistoryError::BadTimes(op.id))
                }
                _ => {}
            }
            if let Outcome::Ok(r) = &op.outcome {
                if !r.matches(&op.call) {
                    return Err(HistoryError::ResultMismatch(op.id));
                }
            }
            by_process.entry(op.process).or_default().push(op);
        }
        for (process, mut ops) in by_process {
            ops.sort_by_key(|o| (o.invoke, o.id));
            for pair in ops.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                match a.complete {
                    None => {
                        return Err(HistoryError::ProcessReused {
                            process,
                            info: a.id,
                            after: b.id,
                        })
                    }
                    Some(c) if c >= b.invoke => {
                        return Err(HistoryError::ProcessOverlap {
                            process,
                            first: a.id,
                            second: b.id,
                        })
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Writes one JSON object per operation per line.
    pub fn write_jsonl<W: Write>(&self, mut out: W) -> Result<(), HistoryError> {
        for op in &self.ops {
            serde_json::to_writer(&mut out, op)
                .map_err(|source| HistoryError::Json { line: 0, source })?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }

    /// Reads what [`History::write_jsonl`] wrote. Blank lines are skipped. Does not
    /// validate; call [`History::validate`].
    pub fn read_jsonl<R: BufRead>(input: R) -> Result<History, HistoryError> {
        let mut ops = Vec::new();
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let op = serde_json::from_str(&line).map_err(|source| HistoryError::Json {
                line: i + 1,
                source,
            })?;
            ops.push(op);
        }
        Ok(History { ops })
    }

    /// Convenience: write the history to a file (e.g. `failing-seed-42.jsonl`).
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<(), HistoryError> {
        let file = std::fs::File::create(path)?;
        self.write_jsonl(std::io::BufWriter::new(file))
    }

    /// Convenience: read a history written by [`History::save`].
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<History, HistoryError> {
        let file = std::fs::File::open(path)?;
        History::read_jsonl(std::io::BufReader::new(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: OpId, process: ProcessId, invoke: Time, complete: Option<Time>) -> Operation {
        Operation {
            id,
            process,
            invoke,
            complete,
            call: Call::Put {
                key: "k".into(),
                value: format!("v{id}"),
            },
            outcome: match complete {
                Some(_) => Outcome::Ok(OkResult::Put {
                    revision: id as Revision + 1,
                }),
                None => Outcome::Info,
            },
        }
    }

    #[test]
    fn jsonl_round_trip() {
        let mut h = History::new(vec![op(1, 1, 0, Some(5)), op(2, 2, 1, None)]);
        h.ops.push(Operation {
            id: 3,
            process: 3,
            invoke: 2,
            complete: Some(9),
            call: Call::Cas {
                key: "k".into(),
                expected: None,
                new: "x".into(),
            },
            outcome: Outcome::Ok(OkResult::Cas {
                succeeded: false,
                revision: 2,
            }),
        });
        let mut buf = Vec::new();
        h.write_jsonl(&mut buf).unwrap();
        assert_eq!(String::from_utf8_lossy(&buf).lines().count(), 3);
        let back = History::read_jsonl(&buf[..]).unwrap();
        assert_eq!(back, h);
        back.validate().unwrap();
    }

    #[test]
    fn validation_rules() {
        let ok = History::new(vec![op(1, 1, 0, Some(5)), op(2, 1, 6, None)]);
        ok.validate().unwrap();
        let overlap = History::new(vec![op(1, 1, 0, Some(5)), op(2, 1, 5, Some(7))]);
        assert!(matches!(
            overlap.validate(),
            Err(HistoryError::ProcessOverlap { .. })
        ));
        let reused = History::new(vec![op(1, 1, 0, None), op(2, 1, 6, Some(7))]);
        assert!(matches!(
            reused.validate(),
            Err(HistoryError::ProcessReused { .. })
        ));
        let mut info_time = op(1, 1, 0, None);
        info_time.complete = Some(3);
        assert!(matches!(
            History::new(vec![info_time]).validate(),
            Err(HistoryError::InfoWithCompletion(1))
        ));
        let mut mismatch = op(1, 1, 0, Some(1));
        mismatch.outcome = Outcome::Ok(OkResult::Cas {
            succeeded: true,
            revision: 1,
        });
        assert!(matches!(
            History::new(vec![mismatch]).validate(),
            Err(HistoryError::ResultMismatch(1))
        ));
    }

    #[test]
    fn display_is_readable() {
        let s = op(7, 2, 100, Some(250)).to_string();
        assert_eq!(s, "#7 p2 [100..250] put \"k\" = \"v7\" -> ok rev=8");
        assert!(op(8, 2, 1, None).to_string().contains("..inf]"));
    }
}
