//! keel-chaos: recorded histories and the checkers that judge them.
//!
//! The simulations (turmoil clusters, fault schedules) drive clients against a
//! keel cluster and record what every client asked and was told in a
//! [`history::History`] (with [`recorder::Recorder`]), what every watcher
//! received in [`watch::WatcherLog`]s, and at the end a [`durability::FinalRead`]
//! and the store's [`watch::CommittedLog`]. The checkers here are pure functions
//! of those records, with no dependency on the rest of keel, so a failing run can
//! be saved and re-checked offline:
//!
//! * [`linearizability`]: WGL search per key, plus revision/real-time checks;
//! * [`watch`]: etcd robustness-suite watch guarantees, each named separately;
//! * [`durability`]: no acknowledged write lost;
//! * [`patch`]: resolve unknown write outcomes with the committed log first, so
//!   the linearizability search has less to guess.
//!
//! Every checker reports a [`Verdict`]. `Unknown` (the checker could not decide,
//! or was not given its inputs) is **not** a pass.

pub mod durability;
pub mod history;
pub mod linearizability;
pub mod patch;
pub mod recorder;
pub mod report;
pub mod sim;
pub mod watch;

use std::fmt;

use durability::{check_durability, FinalRead};
use history::{History, HistoryError};
use linearizability::{check_linearizability, LinearizabilityConfig};
use watch::{check_watchers, CommittedLog, WatcherLog};

/// The outcome of one checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// A guarantee is violated; the reason is a readable report.
    Fail(String),
    /// The checker could not decide (budget exhausted, input missing). Not a pass.
    Unknown(String),
}

impl Verdict {
    /// Pass when there are none, else a failure listing each one.
    pub fn from_violations<T: std::fmt::Display>(violations: &[T]) -> Verdict {
        if violations.is_empty() {
            Verdict::Pass
        } else {
            let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
            Verdict::Fail(lines.join("\n"))
        }
    }

    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }

    pub fn is_fail(&self) -> bool {
        matches!(self, Verdict::Fail(_))
    }

    /// Fail beats Unknown beats Pass.
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (f @ Verdict::Fail(_), _) | (_, f @ Verdict::Fail(_)) => f,
            (u @ Verdict::Unknown(_), _) | (_, u @ Verdict::Unknown(_)) => u,
            _ => Verdict::Pass,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => write!(f, "pass"),
            Verdict::Fail(why) => write!(f, "FAIL\n{why}"),
            Verdict::Unknown(why) => write!(f, "UNKNOWN (not a pass)\n{why}"),
        }
    }
}

/// Everything recorded in one run.
#[derive(Clone, Copy, Debug)]
pub struct CheckInput<'a> {
    pub history: &'a History,
    /// Required if there are watchers.
    pub committed: Option<&'a CommittedLog>,
    pub watchers: &'a [WatcherLog],
    /// Required for the durability check.
    pub final_read: Option<&'a FinalRead>,
}

#[derive(Clone, Debug)]
pub struct CheckConfig {
    pub linearizability: LinearizabilityConfig,
    /// Before the linearizability search, resolve `Info` writes with the
    /// committed log when one is given ([`patch::resolve_unknown_writes`]; sound
    /// only if the log is complete, which the watch checker assumes anyway).
    pub resolve_unknown_writes: bool,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            linearizability: LinearizabilityConfig::default(),
            resolve_unknown_writes: true,
        }
    }
}

/// One verdict per checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub linearizability: Verdict,
    pub watch: Verdict,
    pub durability: Verdict,
}

impl Report {
    /// Pass only if every checker passed.
    pub fn overall(&self) -> Verdict {
        self.linearizability
            .clone()
            .and(self.watch.clone())
            .and(self.durability.clone())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "linearizability: {}", self.linearizability)?;
        writeln!(f, "watch: {}", self.watch)?;
        write!(f, "durability: {}", self.durability)
    }
}

/// Runs every checker. All checkers run even if one fails, since several
/// reports of one bug help localize it (etcd only checks watches after
/// linearizability passed; read the linearizability verdict first).
/// A malformed history is an error, not a verdict: it is a recorder bug.
pub fn check_all(input: &CheckInput<'_>, config: &CheckConfig) -> Result<Report, HistoryError> {
    let patched;
    let history = match input.committed {
        Some(log) if config.resolve_unknown_writes => {
            patched = patch::resolve_unknown_writes(input.history, log).0;
            &patched
        }
        _ => input.history,
    };
    let linearizability = check_linearizability(history, &config.linearizability)?.verdict();
    let watch = match (input.committed, input.watchers.is_empty()) {
        (_, true) => Verdict::Pass,
        (Some(log), false) => check_watchers(log, input.watchers).verdict(),
        (None, false) => {
            Verdict::Unknown("watchers were recorded but no committed log was given".into())
        }
    };
    let durability = match input.final_read {
        Some(read) => check_durability(input.history, read)?.verdict(),
        None => Verdict::Unknown("no final read was given".into()),
    };
    Ok(Report {
        linearizability,
        watch,
        durability,
    })
}
