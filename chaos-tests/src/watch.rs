//! Watch checker: what each watcher received, judged against the committed write log.
//!
//! Modeled on etcd's robustness suite: the ground truth is the log of committed
//! events (every revision the store created, e.g. read back after the run from
//! the store's full history, merged with the acknowledged writes of the
//! history), and every watcher's delivery stream is checked for separately named
//! guarantees ([`Guarantee`]). The log must be *complete* over the revisions the
//! watchers observed; events from writes whose outcome was unknown are only
//! known through it.
//!
//! Conventions (etcd's):
//! * A watch's start revision is inclusive: it delivers events with
//!   `revision >= start_revision`. A watch created with start revision 0 must be
//!   recorded with the actual start, i.e. the creation response's header
//!   revision + 1.
//! * Key ranges: see [`KeyRange`].
//! * A client that loses its stream resumes with a new start revision (normally
//!   last seen revision + 1); the resumption is recorded in the stream as
//!   [`WatchItem::Resume`].
//!
//! Only the first violation of each guarantee per watcher is reported, with
//! the stream position and neighbouring items as context.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{Call, History, OkResult, Revision, Time};
use crate::Verdict;

/// What a committed revision did to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Put,
    Delete,
}

/// A change to one key at one revision. `value` is `Some` for puts, `None` for deletes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    pub revision: Revision,
    pub key: String,
    pub kind: EventKind,
    pub value: Option<String>,
}

impl Event {
    pub fn put(revision: Revision, key: &str, value: &str) -> Self {
        Event {
            revision,
            key: key.into(),
            kind: EventKind::Put,
            value: Some(value.into()),
        }
    }

    pub fn delete(revision: Revision, key: &str) -> Self {
        Event {
            revision,
            key: key.into(),
            kind: EventKind::Delete,
            value: None,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.value) {
            (EventKind::Put, Some(v)) => {
                write!(f, "rev {} put {:?} = {v:?}", self.revision, self.key)
            }
            (EventKind::Put, None) => {
                write!(f, "rev {} put {:?} (no value)", self.revision, self.key)
            }
            (EventKind::Delete, _) => write!(f, "rev {} delete {:?}", self.revision, self.key),
        }
    }
}

/// Inconsistent ground truth.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommittedLogError {
    #[error("two different events for key {key:?} at revision {revision}")]
    Conflict { revision: Revision, key: String },
    #[error("malformed event (put without value or delete with value): {0}")]
    Malformed(String),
}

/// The committed events, sorted by (revision, key), at most one per (revision, key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedLog {
    events: Vec<Event>,
}

impl CommittedLog {
    /// Sorts and deduplicates `events`; identical duplicates are merged, different
    /// events for the same (revision, key) are an error.
    pub fn new(mut events: Vec<Event>) -> Result<Self, CommittedLogError> {
        for e in &events {
            if (e.kind == EventKind::Put) != e.value.is_some() {
                return Err(CommittedLogError::Malformed(e.to_string()));
            }
        }
        events.sort_by(|a, b| (a.revision, &a.key).cmp(&(b.revision, &b.key)));
        let mut out: Vec<Event> = Vec::with_capacity(events.len());
        for e in events {
            match out.last() {
                Some(last) if last.revision == e.revision && last.key == e.key => {
                    if *last != e {
                        return Err(CommittedLogError::Conflict {
                            revision: e.revision,
                            key: e.key,
                        });
                    }
                }
                _ => out.push(e),
            }
        }
        Ok(CommittedLog { events: out })
    }

    /// The events implied by the acknowledged writes of `history`: ok puts, ok
    /// deletes that deleted, ok CAS that succeeded. Incomplete on its own when the
    /// history has `Info` writes; [`CommittedLog::merge`] it with the store's log.
    pub fn from_history(history: &History) -> Result<Self, CommittedLogError> {
        let mut events = Vec::new();
        for op in &history.ops {
            let Some(revision) = op.written_revision() else {
                continue;
            };
            events.push(match (&op.call, op.ok()) {
                (Call::Put { key, value }, _) => Event::put(revision, key, value),
                (Call::Cas { key, new, .. }, Some(OkResult::Cas { .. })) => {
                    Event::put(revision, key, new)
                }
                (call, _) => Event::delete(revision, call.key()),
            });
        }
        CommittedLog::new(events)
    }

    /// Union of two logs; fails if they disagree about any (revision, key).
    pub fn merge(self, other: CommittedLog) -> Result<Self, CommittedLogError> {
        let mut events = self.events;
        events.extend(other.events);
        CommittedLog::new(events)
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The event for `key` at `revision`, if committed.
    pub fn get(&self, revision: Revision, key: &str) -> Option<&Event> {
        let i = self
            .events
            .partition_point(|e| (e.revision, e.key.as_str()) < (revision, key));
        self.events
            .get(i)
            .filter(|e| e.revision == revision && e.key == key)
    }

    /// Events in `range` with `from <= revision <= to`, in revision order.
    pub fn matching<'a>(
        &'a self,
        range: &'a KeyRange,
        from: Revision,
        to: Revision,
    ) -> impl Iterator<Item = &'a Event> + 'a {
        let start = self.events.partition_point(|e| e.revision < from);
        self.events[start..]
            .iter()
            .take_while(move |e| e.revision <= to)
            .filter(move |e| range.contains(&e.key))
    }
}

/// A watched key range, with etcd's conventions: empty `range_end` = the single
/// key `key`; `range_end == "\0"` = every key `>= key`; otherwise the half-open
/// interval `[key, range_end)`. Keys compare bytewise.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    pub key: String,
    pub range_end: String,
}

impl KeyRange {
    pub fn single(key: &str) -> Self {
        KeyRange {
            key: key.into(),
            range_end: String::new(),
        }
    }

    /// Every key `>= key`; `from_key("\0")` is every key.
    pub fn from_key(key: &str) -> Self {
        KeyRange {
            key: key.into(),
            range_end: "\0".into(),
        }
    }

    /// Every key starting with `prefix` (etcd's `--prefix`), for prefixes whose
    /// last byte is ASCII below 0x7f; `None` otherwise (the range end would not be
    /// a valid string).
    pub fn prefix(prefix: &str) -> Option<Self> {
        let mut end = prefix.as_bytes().to_vec();
        let last = end.last_mut()?;
        if *last >= 0x7f {
            return None;
        }
        *last += 1;
        Some(KeyRange {
            key: prefix.into(),
            range_end: String::from_utf8(end).ok()?,
        })
    }

    pub fn contains(&self, k: &str) -> bool {
        match self.range_end.as_str() {
            "" => k == self.key,
            "\0" => k >= self.key.as_str(),
            end => self.key.as_str() <= k && k < end,
        }
    }
}

/// A progress notification as the watcher received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressNotify {
    /// The revision the notification reports.
    pub revision: Revision,
    /// When the progress request was invoked, if it was requested (informational).
    pub requested_at: Option<Time>,
    /// The highest revision of any write acknowledged before the progress request
    /// was invoked: a lower bound on the request's linearization point. `None` if
    /// unknown (unrequested notifications).
    pub min_revision: Option<Revision>,
}

/// One thing a watcher saw, in delivery order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchItem {
    Event(Event),
    Progress(ProgressNotify),
    /// The stream broke and the watcher re-created it starting at `from_revision`
    /// (inclusive).
    Resume {
        from_revision: Revision,
    },
}

/// Everything one watcher did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherLog {
    pub name: String,
    pub range: KeyRange,
    /// Inclusive start revision of the original watch.
    pub start_revision: Revision,
    /// Events, progress notifications and resumptions in delivery order.
    pub items: Vec<WatchItem>,
}

/// The separately checked watch guarantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Guarantee {
    /// Event revisions never decrease; a progress notification never reports a
    /// revision below an event or notification delivered before it.
    Ordered,
    /// All matching events of one revision are delivered together (one
    /// uninterrupted run of events).
    Atomic,
    /// No (revision, key) is delivered twice.
    Unique,
    /// No gap: every committed matching event with `start_revision <= revision <=`
    /// the highest revision the watcher observed (last event or progress
    /// notification) was delivered.
    Reliable,
    /// After `Resume { from_revision: r }`, the stream continues exactly at `r`:
    /// nothing below `r`, and no committed matching event in `[r, first delivered)`
    /// skipped.
    Resumable,
    /// A progress notification with revision `p` comes after every committed
    /// matching event with revision `<= p` was delivered, and `p >= min_revision`.
    Bookmarkable,
    /// Every delivered event equals the committed event at its (revision, key):
    /// same key, type and value.
    MatchesLog,
    /// Every delivered event is inside the watched range and at or above the
    /// watch's start revision.
    Filter,
}

/// The first violation of one guarantee by one watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchViolation {
    pub watcher: String,
    pub guarantee: Guarantee,
    /// Index into the watcher's `items` where the violation shows, if it is one item.
    pub position: Option<usize>,
    pub message: String,
}

impl fmt::Display for WatchViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "watcher {:?}: {:?} violated",
            self.watcher, self.guarantee
        )?;
        if let Some(p) = self.position {
            write!(f, " at item {p}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All watchers' violations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchReport {
    pub violations: Vec<WatchViolation>,
}

impl WatchReport {
    pub fn verdict(&self) -> Verdict {
        Verdict::from_violations(&self.violations)
    }

    /// The guarantees violated by `watcher`.
    pub fn violated(&self, watcher: &str) -> BTreeSet<Guarantee> {
        self.violations
            .iter()
            .filter(|v| v.watcher == watcher)
            .map(|v| v.guarantee)
            .collect()
    }
}

/// Checks every watcher against `committed`.
pub fn check_watchers(committed: &CommittedLog, watchers: &[WatcherLog]) -> WatchReport {
    WatchReport {
        violations: watchers
            .iter()
            .flat_map(|w| check_watcher(committed, w))
            .collect(),
    }
}

fn describe(item: &WatchItem) -> String {
    match item {
        WatchItem::Event(e) => format!("event {e}"),
        WatchItem::Progress(p) => format!("progress rev {}", p.revision),
        WatchItem::Resume { from_revision } => format!("resume from rev {from_revision}"),
    }
}

/// Renders items `[at-2, at+2]` of the stream, marking `at`.
fn context(items: &[WatchItem], at: usize) -> String {
    let lo = at.saturating_sub(2);
    let hi = (at + 3).min(items.len());
    let lines: Vec<String> = (lo..hi)
        .map(|i| {
            format!(
                "\n      {} [{i}] {}",
                if i == at { ">" } else { " " },
                describe(&items[i])
            )
        })
        .collect();
    format!("\n    stream around it:{}", lines.concat())
}

struct Found {
    first: BTreeMap<Guarantee, WatchViolation>,
    name: String,
}

impl Found {
    fn report(&mut self, g: Guarantee, position: Option<usize>, message: String) {
        self.first.entry(g).or_insert_with(|| WatchViolation {
            watcher: self.name.clone(),
            guarantee: g,
            position,
            message,
        });
    }
}

/// Checks one watcher; returns at most one violation per guarantee, ordered by
/// guarantee.
pub fn check_watcher(committed: &CommittedLog, w: &WatcherLog) -> Vec<WatchViolation> {
    let mut found = Found {
        first: BTreeMap::new(),
        name: w.name.clone(),
    };
    let items = &w.items;
    // Everything the watch was obliged to deliver, in order, up to any revision.
    let expected: Vec<&Event> = committed
        .matching(&w.range, w.start_revision, Revision::MAX)
        .collect();
    let mut delivered: BTreeMap<(Revision, &str), usize> = BTreeMap::new();
    let mut last_observed: Option<(usize, Revision)> = None;
    let mut resumed: Option<(usize, Revision)> = None;
    // Index into `expected` of the first event not yet known delivered.
    let mut cursor = 0;

    for (pos, item) in items.iter().enumerate() {
        match item {
            WatchItem::Event(e) => {
                if !w.range.contains(&e.key) {
                    found.report(
                        Guarantee::Filter,
                        Some(pos),
                        format!(
                            "event {e} is outside the watched range {:?}..{:?}{}",
                            w.range.key,
                            w.range.range_end,
                            context(items, pos)
                        ),
                    );
                }
                if e.revision < w.start_revision {
                    found.report(
                        Guarantee::Filter,
                        Some(pos),
                        format!(
                            "event {e} is below the start revision {}{}",
                            w.start_revision,
                            context(items, pos)
                        ),
                    );
                }
                match committed.get(e.revision, &e.key) {
                    None => found.report(
                        Guarantee::MatchesLog,
                        Some(pos),
                        format!(
                            "event {e} was never committed (no event for that key at that revision){}",
                            context(items, pos)
                        ),
                    ),
                    Some(c) if c != e => found.report(
                        Guarantee::MatchesLog,
                        Some(pos),
                        format!("delivered {e} but committed was {c}{}", context(items, pos)),
                    ),
                    Some(_) => {}
                }
                if let Some(&first) = delivered.get(&(e.revision, e.key.as_str())) {
                    found.report(
                        Guarantee::Unique,
                        Some(pos),
                        format!(
                            "event {e} delivered again (first at item {first}){}",
                            context(items, pos)
                        ),
                    );
                } else {
                    delivered.insert((e.revision, e.key.as_str()), pos);
                }
                if let Some((at, prev)) = last_observed {
                    if e.revision < prev {
                        found.report(
                            Guarantee::Ordered,
                            Some(pos),
                            format!(
                                "event {e} comes after item {at} with revision {prev}{}",
                                context(items, pos)
                            ),
                        );
                    }
                }
                if let Some((rpos, r)) = resumed.take() {
                    if e.revision < r {
                        found.report(
                            Guarantee::Resumable,
                            Some(pos),
                            format!(
                                "first event after resuming from rev {r} (item {rpos}) is {e}, below the resume revision{}",
                                context(items, pos)
                            ),
                        );
                    } else if let Some(skipped) = expected.iter().find(|x| {
                        x.revision >= r
                            && x.revision < e.revision
                            && !delivered.contains_key(&(x.revision, x.key.as_str()))
                    }) {
                        found.report(
                            Guarantee::Resumable,
                            Some(pos),
                            format!(
                                "after resuming from rev {r} (item {rpos}) the stream continued at {e}, skipping committed {skipped}{}",
                                context(items, pos)
                            ),
                        );
                    }
                }
                last_observed = max_observed(last_observed, pos, e.revision);
            }
            WatchItem::Progress(p) => {
                if let Some((at, prev)) = last_observed {
                    if p.revision < prev {
                        found.report(
                            Guarantee::Ordered,
                            Some(pos),
                            format!(
                                "progress notification rev {} is below item {at} with revision {prev}: the watch went back in time{}",
                                p.revision,
                                context(items, pos)
                            ),
                        );
                    }
                }
                if let Some(min) = p.min_revision {
                    if p.revision < min {
                        found.report(
                            Guarantee::Bookmarkable,
                            Some(pos),
                            format!(
                                "progress notification rev {} is below {min}, a revision acknowledged before the progress request{}",
                                p.revision,
                                context(items, pos)
                            ),
                        );
                    }
                }
                while cursor < expected.len()
                    && delivered
                        .contains_key(&(expected[cursor].revision, expected[cursor].key.as_str()))
                {
                    cursor += 1;
                }
                if let Some(missing) = expected.get(cursor).filter(|x| x.revision <= p.revision) {
                    found.report(
                        Guarantee::Bookmarkable,
                        Some(pos),
                        format!(
                            "progress notification rev {} arrived before committed {missing} was delivered{}",
                            p.revision,
                            context(items, pos)
                        ),
                    );
                }
                last_observed = max_observed(last_observed, pos, p.revision);
            }
            WatchItem::Resume { from_revision } => {
                resumed = Some((pos, *from_revision));
            }
        }
    }

    // Reliable: no committed matching event missing up to the highest observed revision.
    if let Some((_, limit)) = last_observed {
        if let Some(missing) = expected
            .iter()
            .take_while(|x| x.revision <= limit)
            .find(|x| !delivered.contains_key(&(x.revision, x.key.as_str())))
        {
            let before = delivered
                .range(..(missing.revision, missing.key.as_str()))
                .next_back()
                .map(|(_, &p)| p);
            let after = delivered
                .range((missing.revision, missing.key.as_str())..)
                .next()
                .map(|(_, &p)| p);
            let mut msg = format!(
                "committed {missing} was never delivered, though the watcher observed revision {limit}"
            );
            if let Some(p) = before {
                msg.push_str(&format!(
                    "\n    delivered just before it: [{p}] {}",
                    describe(&items[p])
                ));
            }
            if let Some(p) = after {
                msg.push_str(&format!(
                    "\n    delivered just after it: [{p}] {}",
                    describe(&items[p])
                ));
            }
            found.report(Guarantee::Reliable, None, msg);
        }
    }

    // Atomic: each maximal run of events with one revision holds every matching
    // committed event of that revision.
    let mut pos = 0;
    while pos < items.len() {
        let WatchItem::Event(first) = &items[pos] else {
            pos += 1;
            continue;
        };
        let rev = first.revision;
        let mut keys = BTreeSet::new();
        let start = pos;
        while let Some(WatchItem::Event(e)) = items.get(pos) {
            if e.revision != rev {
                break;
            }
            keys.insert(e.key.as_str());
            pos += 1;
        }
        let want: BTreeSet<&str> = committed
            .matching(&w.range, rev, rev)
            .map(|e| e.key.as_str())
            .collect();
        let missing: Vec<&&str> = want.difference(&keys).collect();
        if !missing.is_empty() {
            found.report(
                Guarantee::Atomic,
                Some(start),
                format!(
                    "revision {rev} delivered partially: got keys {keys:?}, missing {missing:?} in the same run{}",
                    context(items, start)
                ),
            );
        }
    }

    found.first.into_values().collect()
}

fn max_observed(
    prev: Option<(usize, Revision)>,
    pos: usize,
    rev: Revision,
) -> Option<(usize, Revision)> {
    match prev {
        Some((_, r)) if r >= rev => prev,
        _ => Some((pos, rev)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ranges_follow_etcd() {
        let single = KeyRange::single("a");
        assert!(single.contains("a") && !single.contains("ab"));
        let all = KeyRange::from_key("\0");
        assert!(all.contains("") || all.contains("a"));
        assert!(all.contains("zzz"));
        let from_b = KeyRange::from_key("b");
        assert!(!from_b.contains("a") && from_b.contains("b") && from_b.contains("c"));
        let prefix = KeyRange::prefix("/registry/").unwrap();
        assert_eq!(prefix.range_end, "/registry0");
        assert!(prefix.contains("/registry/pods/x") && !prefix.contains("/registry0"));
        assert!(!prefix.contains("/regis"));
    }

    #[test]
    fn committed_log_detects_conflicts() {
        let a = CommittedLog::new(vec![Event::put(2, "a", "1")]).unwrap();
        let same =
            CommittedLog::new(vec![Event::put(2, "a", "1"), Event::put(3, "b", "x")]).unwrap();
        let merged = a.clone().merge(same).unwrap();
        assert_eq!(merged.events().len(), 2);
        assert_eq!(merged.get(3, "b"), Some(&Event::put(3, "b", "x")));
        let other = CommittedLog::new(vec![Event::put(2, "a", "2")]).unwrap();
        assert!(matches!(
            a.merge(other),
            Err(CommittedLogError::Conflict { .. })
        ));
    }
}
