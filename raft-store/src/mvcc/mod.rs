//! The multi-version key-value state: every key's retained versions, the
//! global revision, compaction, and the lease records keys are attached to.
//!
//! This module is pure and deterministic: it knows nothing of raft or
//! RocksDB. The state machine feeds it committed commands in log order and
//! persists the [`Change`]s it returns, so every replica that applies the
//! same log holds the same state, byte for byte.
//!
//! Guarantees: the revision only grows; a read at revision `r` sees exactly
//! the writes with main revision `<= r`; reads below the compacted revision
//! fail with [`StoreError::Compacted`].

mod range;
mod revision;
pub mod txn;

pub use revision::Revision;
pub use txn::TxnLimits;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use keel_proto::mvccpb::{event::EventType, Event, KeyValue};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// One version of a key: the value written at `rev`, or a tombstone.
#[derive(Debug, Clone)]
pub struct Version {
    pub rev: Revision,
    pub kv: Option<Arc<KeyValue>>,
}

/// A lease as the replicated state knows it. When it expires is decided by
/// the leader's lessor, not here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: i64,
    pub ttl_s: i64,
    #[serde(skip)]
    pub keys: BTreeSet<Vec<u8>>,
}

/// What an applied command changed, for the persistence layer to write in the
/// same atomic batch as the applied log id.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A version was written (`None`: tombstone) at `rev`.
    Put {
        rev: Revision,
        key: Vec<u8>,
        kv: Option<KeyValue>,
    },
    /// Versions dropped by compaction.
    Removed {
        rev: Revision,
    },
    LeasePut {
        id: i64,
        ttl_s: i64,
    },
    LeaseDelete {
        id: i64,
    },
    Compacted {
        revision: i64,
    },
}

/// A watch event with its revision, produced in revision order.
#[derive(Debug, Clone, PartialEq)]
pub struct RevEvent {
    pub rev: Revision,
    pub event: Event,
}

#[derive(Debug, Clone)]
pub struct Mvcc {
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
    by_rev: BTreeMap<Revision, Vec<u8>>,
    leases: BTreeMap<i64, LeaseRecord>,
    current_rev: i64,
    compact_rev: i64,
}

impl Default for Mvcc {
    fn default() -> Self {
        Self::new()
    }
}

impl Mvcc {
    /// An empty store is at revision 1, as etcd's is.
    pub fn new() -> Self {
        Mvcc {
            keys: BTreeMap::new(),
            by_rev: BTreeMap::new(),
            leases: BTreeMap::new(),
            current_rev: 1,
            compact_rev: 0,
        }
    }

    pub fn current_revision(&self) -> i64 {
        self.current_rev
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_rev
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub fn lease(&self, id: i64) -> Option<&LeaseRecord> {
        self.leases.get(&id)
    }

    pub fn leases(&self) -> impl Iterator<Item = &LeaseRecord> {
        self.leases.values()
    }

    /// The live version of `key` at revision `at` (main), if any.
    pub fn get_at(&self, key: &[u8], at: i64) -> Option<&Arc<KeyValue>> {
        let versions = self.keys.get(key)?;
        latest_at(versions, at).and_then(|v| v.kv.as_ref())
    }

    /// Checks that `at` is readable: not compacted away, not in the future.
    pub fn check_readable(&self, at: i64) -> Result<i64, StoreError> {
        let at = if at <= 0 { self.current_rev } else { at };
        if at > self.current_rev {
            return Err(StoreError::FutureRevision);
        }
        if at < self.compact_rev {
            return Err(StoreError::Compacted {
                compact_revision: self.compact_rev,
            });
        }
        Ok(at)
    }

    /// Live key-values in `[key, range_end)` (etcd's range conventions) at `at`.
    pub fn live_in_range<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
        at: i64,
    ) -> impl Iterator<Item = &'a Arc<KeyValue>> + 'a {
        self.keys_in_range(key, range_end)
            .filter_map(move |(_, versions)| latest_at(versions, at).and_then(|v| v.kv.as_ref()))
    }

    fn keys_in_range<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
    ) -> Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Vec<Version>)> + 'a> {
        match KeyRange::new(key, range_end) {
            KeyRange::Single(k) => Box::new(self.keys.get_key_value(k).into_iter()),
            KeyRange::From(k) => Box::new(
                self.keys
                    .range::<[u8], _>((Bound::Included(k), Bound::Unbounded)),
            ),
            KeyRange::Between(a, b) => {
                if a >= b {
                    return Box::new(std::iter::empty());
                }
                Box::new(
                    self.keys
                        .range::<[u8], _>((Bound::Included(a), Bound::Excluded(b))),
                )
            }
        }
    }

    /// Events with main revision in `[from, to]`, in revision order, with the
    /// previous live version attached. Fails if `from` was compacted.
    pub fn events_between(&self, from: i64, to: i64) -> Result<Vec<RevEvent>, StoreError> {
        if from < self.compact_rev {
            return Err(StoreError::Compacted {
                compact_revision: self.compact_rev,
            });
        }
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        let lo = Revision::new(from, 0);
        let hi = Revision::new(to, i64::MAX);
        for (rev, key) in self.by_rev.range(lo..=hi) {
            out.push(self.event_at(*rev, key));
        }
        Ok(out)
    }

    fn event_at(&self, rev: Revision, key: &[u8]) -> RevEvent {
        let versions = &self.keys[key];
        let pos = versions
            .binary_search_by(|v| v.rev.cmp(&rev))
            .expect("by_rev and keys agree");
        let prev = versions[..pos]
            .last()
            .and_then(|v| v.kv.as_deref().cloned());
        make_event(rev, key, versions[pos].kv.as_deref(), prev)
    }

    /// Removes versions no reader at `>= revision` can see. Reads at
    /// `revision` itself still work; earlier ones get `Compacted`.
    pub fn compact(&mut self, revision: i64) -> Result<Vec<Change>, StoreError> {
        if revision <= self.compact_rev {
            return Err(StoreError::Compacted {
                compact_revision: self.compact_rev,
            });
        }
        if revision > self.current_rev {
            return Err(StoreError::FutureRevision);
        }
        let mut changes = Vec::new();
        let mut emptied = Vec::new();
        for (key, versions) in self.keys.iter_mut() {
            let Some(keep_from) = versions.iter().rposition(|v| v.rev.main <= revision) else {
                continue;
            };
            let mut cut = keep_from;
            if versions[keep_from].kv.is_none() && versions[keep_from].rev.main < revision {
                cut += 1;
            }
            for v in versions.drain(..cut) {
                self.by_rev.remove(&v.rev);
                changes.push(Change::Removed { rev: v.rev });
            }
            if versions.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.keys.remove(&key);
        }
        self.compact_rev = revision;
        changes.push(Change::Compacted { revision });
        Ok(changes)
    }

    /// Registers a lease. `id` was chosen by the proposer (never 0).
    pub fn lease_grant(&mut self, id: i64, ttl_s: i64) -> Result<Vec<Change>, StoreError> {
        if id <= 0 {
            return Err(StoreError::Invalid("lease id must be positive".into()));
        }
        if self.leases.contains_key(&id) {
            return Err(StoreError::LeaseExists);
        }
        self.leases.insert(
            id,
            LeaseRecord {
                id,
                ttl_s,
                keys: BTreeSet::new(),
            },
        );
        Ok(vec![Change::LeasePut { id, ttl_s }])
    }

    /// Deletes the lease and every key attached to it, under one revision.
    pub fn lease_revoke(&mut self, id: i64) -> Result<(Vec<Change>, Vec<RevEvent>), StoreError> {
        let lease = self.leases.get(&id).ok_or(StoreError::LeaseNotFound)?;
        let keys: Vec<Vec<u8>> = lease.keys.iter().cloned().collect();
        let mut w = txn::Writer::new(self);
        for key in &keys {
            w.delete_key(key);
        }
        let (mut changes, events) = w.finish();
        self.leases.remove(&id);
        changes.push(Change::LeaseDelete { id });
        Ok((changes, events))
    }

    /// Rebuilds one version during recovery (in revision order).
    pub fn restore_version(&mut self, rev: Revision, key: Vec<u8>, kv: Option<KeyValue>) {
        let versions = self.keys.entry(key.clone()).or_default();
        debug_assert!(versions.last().is_none_or(|v| v.rev < rev));
        if let Some(prev) = versions.last().and_then(|v| v.kv.clone()) {
            if prev.lease != 0 {
                if let Some(l) = self.leases.get_mut(&prev.lease) {
                    l.keys.remove(&key);
                }
            }
        }
        if let Some(kv) = &kv {
            if kv.lease != 0 {
                if let Some(l) = self.leases.get_mut(&kv.lease) {
                    l.keys.insert(key.clone());
                }
            }
        }
        versions.push(Version {
            rev,
            kv: kv.map(Arc::new),
        });
        self.by_rev.insert(rev, key);
        self.current_rev = self.current_rev.max(rev.main);
    }

    /// Sets the scalar parts of recovered state. Leases must be restored
    /// before versions so keys attach to them.
    pub fn restore_meta(&mut self, current_rev: i64, compact_rev: i64) {
        self.current_rev = self.current_rev.max(current_rev);
        self.compact_rev = compact_rev;
    }

    pub fn restore_lease(&mut self, id: i64, ttl_s: i64) {
        self.leases.insert(
            id,
            LeaseRecord {
                id,
                ttl_s,
                keys: BTreeSet::new(),
            },
        );
    }

    /// Every retained version in revision order (for snapshots).
    pub fn all_versions(&self) -> impl Iterator<Item = (Revision, &[u8], Option<&Arc<KeyValue>>)> {
        self.by_rev.iter().map(|(rev, key)| {
            let versions = &self.keys[key];
            let pos = versions
                .binary_search_by(|v| v.rev.cmp(rev))
                .expect("by_rev and keys agree");
            (*rev, key.as_slice(), versions[pos].kv.as_ref())
        })
    }
}

impl Mvcc {
    /// A hash of every retained version with main revision `<= at`, for
    /// comparing replicas (etcd's HashKV). Equal states hash equally.
    pub fn hash_at(&self, at: i64) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let mut feed = |b: &[u8]| {
            for x in b {
                h ^= *x as u32;
                h = h.wrapping_mul(0x0100_0193);
            }
        };
        for (rev, key) in self.by_rev.range(..=Revision::new(at, i64::MAX)) {
            feed(&rev.to_bytes());
            feed(key);
            if let Some(kv) = self.event_at(*rev, key).event.kv {
                feed(&kv.value);
            }
        }
        h
    }
}

fn latest_at(versions: &[Version], at: i64) -> Option<&Version> {
    let idx = versions.partition_point(|v| v.rev.main <= at);
    if idx == 0 {
        None
    } else {
        Some(&versions[idx - 1])
    }
}

pub(crate) fn make_event(
    rev: Revision,
    key: &[u8],
    kv: Option<&KeyValue>,
    prev: Option<KeyValue>,
) -> RevEvent {
    let event = match kv {
        Some(kv) => Event {
            r#type: EventType::Put as i32,
            kv: Some(kv.clone()),
            prev_kv: prev,
        },
        None => Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: key.to_vec(),
                mod_revision: rev.main,
                ..Default::default()
            }),
            prev_kv: prev,
        },
    };
    RevEvent { rev, event }
}

/// etcd's range conventions: empty `range_end` means one key; `"\0"` means
/// every key `>= key`; otherwise the half-open interval.
pub enum KeyRange<'a> {
    Single(&'a [u8]),
    From(&'a [u8]),
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        if range_end.is_empty() {
            KeyRange::Single(key)
        } else if range_end == [0] {
            KeyRange::From(key)
        } else {
            KeyRange::Between(key, range_end)
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(s) => k == *s,
            KeyRange::From(s) => k >= *s,
            KeyRange::Between(a, b) => k >= *a && k < *b,
        }
    }
}

/// Rejects an empty key and a `range_end` before `key`.
pub fn check_key_range(key: &[u8], range_end: &[u8]) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if let KeyRange::Between(a, b) = KeyRange::new(key, range_end) {
        if b < a {
            return Err(StoreError::RangeEndBeforeKey);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
