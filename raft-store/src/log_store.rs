//! openraft log storage on RocksDB: entries, vote, committed and purged ids.
//!
//! Guarantee: `append` reports completion only after the entries are fsynced
//! (a synced RocksDB write), and `save_vote` returns only once the vote is
//! durable, so an acknowledged write survives a crash of this replica.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::db::{Db, CF_LOG, CF_RAFT};
use crate::types::TypeConfig;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";

pub(crate) fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).map_err(io::Error::other)
}

pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn rocks(e: rocksdb::Error) -> io::Error {
    io::Error::other(e)
}

/// How appended entries are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A dedicated thread fsyncs the WAL for every append queued since its
    /// last fsync (group commit), so raft keeps replicating while the disk
    /// syncs and one fsync covers many appends.
    #[default]
    GroupCommit,
    /// fsync inside `append` (deterministic; for simulations).
    Inline,
}

/// Entries kept in memory for replication and apply, which read the tail of
/// the log right after it was appended.
const CACHE_ENTRIES: usize = 8192;

#[derive(Clone)]
pub struct LogStore {
    db: Db,
    flusher: Option<Arc<Flusher>>,
    /// The newest entries, contiguous, ending at the last appended one.
    /// Always agrees with RocksDB: updated by append, truncate and purge.
    cache: Arc<Mutex<BTreeMap<u64, EntryOf<TypeConfig>>>>,
}

impl LogStore {
    pub fn new(db: Db, durability: Durability) -> Self {
        let flusher = match durability {
            Durability::Inline => None,
            Durability::GroupCommit => Some(Arc::new(Flusher::spawn(db.clone()))),
        };
        LogStore {
            db,
            flusher,
            cache: Arc::default(),
        }
    }

    /// The entries of `range` if the cache holds all of them.
    fn cached<RB: RangeBounds<u64>>(
        &self,
        start: u64,
        range: &RB,
    ) -> Option<Vec<EntryOf<TypeConfig>>> {
        let cache = self.cache.lock().expect("log cache poisoned");
        let first = *cache.keys().next()?;
        if start < first {
            return None;
        }
        Some(
            cache
                .range(start..)
                .take_while(|(i, _)| range.contains(i))
                .map(|(_, e)| e.clone())
                .collect(),
        )
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self
            .db
            .raw()
            .get_cf(self.db.cf(CF_RAFT), key)
            .map_err(rocks)?
        {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    fn last_entry_log_id(&self) -> io::Result<Option<LogIdOf<TypeConfig>>> {
        let mut it = self
            .db
            .raw()
            .iterator_cf(self.db.cf(CF_LOG), IteratorMode::End);
        match it.next() {
            Some(r) => {
                let (_, v) = r.map_err(rocks)?;
                let e: EntryOf<TypeConfig> = decode(&v)?;
                Ok(Some(e.log_id()))
            }
            None => Ok(None),
        }
    }
}

/// Group commit: each fsync of the WAL completes every append queued before
/// it, on a dedicated thread.
///
/// Guarantee: when the last `LogStore` clone is dropped, the thread is
/// joined, so its handle on the database is gone too. Without the join the
/// thread could still be inside RocksDB while the process exits, and
/// RocksDB's static destructors then abort the process.
struct Flusher {
    tx: Option<std::sync::mpsc::Sender<IOFlushed<TypeConfig>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn spawn(db: Db) -> Flusher {
        let (tx, rx) = std::sync::mpsc::channel::<IOFlushed<TypeConfig>>();
        let thread = std::thread::Builder::new()
            .name("keel-log-fsync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let res = db.raw().flush_wal(true).map_err(|e| e.to_string());
                    for cb in batch {
                        cb.io_completed(res.clone().map_err(io::Error::other));
                    }
                }
            })
            .expect("spawn log fsync thread");
        Flusher {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn send(&self, cb: IOFlushed<TypeConfig>) -> io::Result<()> {
        self.tx
            .as_ref()
            .expect("the sender lives until drop")
            .send(cb)
            .map_err(|_| io::Error::other("log flusher thread is gone"))
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        if let Some(hit) = self.cached(start, &range) {
            return Ok(hit);
        }
        let mode = IteratorMode::From(&start.to_be_bytes(), Direction::Forward);
        let mut out = Vec::new();
        for r in self.db.raw().iterator_cf(self.db.cf(CF_LOG), mode) {
            let (k, v) = r.map_err(rocks)?;
            let idx = u64::from_be_bytes(k.as_ref().try_into().map_err(io::Error::other)?);
            if !range.contains(&idx) {
                break;
            }
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<TypeConfig>> = self.get_meta(KEY_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        let mut b = WriteBatch::default();
        b.put_cf(self.db.cf(CF_RAFT), KEY_VOTE, encode(vote)?);
        self.db.write_synced(b).map_err(rocks)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let mut b = WriteBatch::default();
        b.put_cf(self.db.cf(CF_RAFT), KEY_COMMITTED, encode(&committed)?);
        self.db.write_unsynced(b).map_err(rocks)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        Ok(self
            .get_meta::<Option<LogIdOf<TypeConfig>>>(KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut b = WriteBatch::default();
        let cf = self.db.cf(CF_LOG);
        let mut cache = self.cache.lock().expect("log cache poisoned");
        for e in entries {
            b.put_cf(cf, e.index().to_be_bytes(), encode(&e)?);
            if cache
                .keys()
                .next_back()
                .is_some_and(|last| last + 1 != e.index())
            {
                cache.clear(); // keep the cache contiguous
            }
            cache.insert(e.index(), e);
        }
        while cache.len() > CACHE_ENTRIES {
            cache.pop_first();
        }
        drop(cache);
        if let Some(flusher) = &self.flusher {
            // Readable now; durable (and reported) once the flusher synced.
            self.db.write_unsynced(b).map_err(rocks)?;
            return flusher.send(callback);
        }
        let res = self.db.write_synced(b).map_err(rocks);
        match &res {
            Ok(()) => callback.io_completed(Ok(())),
            Err(e) => callback.io_completed(Err(io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index() + 1);
        self.cache
            .lock()
            .expect("log cache poisoned")
            .split_off(&from);
        let mut b = WriteBatch::default();
        b.delete_range_cf(
            self.db.cf(CF_LOG),
            from.to_be_bytes(),
            u64::MAX.to_be_bytes(),
        );
        b.delete_cf(self.db.cf(CF_LOG), u64::MAX.to_be_bytes());
        self.db.write_synced(b).map_err(rocks)
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        {
            let mut cache = self.cache.lock().expect("log cache poisoned");
            *cache = cache.split_off(&(log_id.index() + 1));
        }
        let mut b = WriteBatch::default();
        b.put_cf(self.db.cf(CF_RAFT), KEY_PURGED, encode(&log_id)?);
        b.delete_range_cf(
            self.db.cf(CF_LOG),
            0u64.to_be_bytes(),
            (log_id.index() + 1).to_be_bytes(),
        );
        self.db.write_synced(b).map_err(rocks)
    }
}
