//! The replicated state machine: applies committed commands to the MVCC
//! state, persists each entry's changes together with the applied log id in
//! one RocksDB batch, publishes watch events, and builds and installs
//! snapshots.
//!
//! Guarantee: the in-memory state and RocksDB move together per entry; after
//! a crash the state is rebuilt from RocksDB and openraft re-applies the
//! committed entries after the persisted applied id.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use futures::{FutureExt, Stream, TryStreamExt};
use keel_proto::etcdserverpb::TxnRequest;
use keel_proto::mvccpb::KeyValue;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot};
use prost::Message;
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::db::{Db, CF_KV, CF_LEASE, CF_META};
use crate::error::StoreError;
use crate::log_store::{decode, encode};
use crate::mvcc::{Change, Mvcc, RevEvent, Revision, TxnLimits};
use crate::types::{Command, CommandOutput, CommandResponse, TypeConfig};
use crate::watch::WatchHub;

const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_REVISION: &[u8] = b"revision";
const KEY_COMPACT: &[u8] = b"compact";
const KEY_CLIENT_ADDRS: &[u8] = b"client_addrs";

/// Everything the state machine holds in memory.
pub struct SmState {
    pub mvcc: Mvcc,
    pub last_applied: Option<LogIdOf<TypeConfig>>,
    pub membership: StoredMembershipOf<TypeConfig>,
    /// Client addresses replicas published, by member id.
    pub client_addrs: BTreeMap<u64, String>,
}

/// Shared between the raft core (which applies) and readers.
pub struct SmShared {
    db: Db,
    state: RwLock<SmState>,
    pub hub: WatchHub,
    limits: TxnLimits,
    current_snapshot: Mutex<Option<(SnapshotMetaOf<TypeConfig>, Vec<u8>)>>,
}

impl SmShared {
    pub fn read(&self) -> RwLockReadGuard<'_, SmState> {
        self.state.read().expect("state lock poisoned")
    }
}

#[derive(Clone)]
pub struct StateMachine {
    pub shared: Arc<SmShared>,
}

/// Snapshot contents: every retained version, so history (and watches from
/// retained revisions) survive on a replica that catches up by snapshot.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotBody {
    pub(crate) current_rev: i64,
    pub(crate) compact_rev: i64,
    pub(crate) leases: Vec<(i64, i64)>,
    pub(crate) versions: Vec<(Revision, Vec<u8>, Option<Vec<u8>>)>,
    pub(crate) client_addrs: Vec<(u64, String)>,
}

/// Runs `f`, which may take long, without holding up the other tasks of a
/// multi-threaded runtime. On a current-thread runtime (the deterministic
/// simulation) it runs in place, so the simulated schedule stays the same.
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn rocks(e: rocksdb::Error) -> io::Error {
    io::Error::other(e)
}

impl StateMachine {
    /// Loads the state persisted in `db`.
    pub fn open(db: Db, limits: TxnLimits) -> io::Result<Self> {
        let get = |k: &[u8]| db.raw().get_cf(db.cf(CF_META), k).map_err(rocks);
        let last_applied = match get(KEY_APPLIED)? {
            Some(b) => decode(&b)?,
            None => None,
        };
        let membership = match get(KEY_MEMBERSHIP)? {
            Some(b) => decode(&b)?,
            None => StoredMembershipOf::<TypeConfig>::default(),
        };
        let current_rev: i64 = get(KEY_REVISION)?
            .map(|b| decode(&b))
            .transpose()?
            .unwrap_or(1);
        let compact_rev: i64 = get(KEY_COMPACT)?
            .map(|b| decode(&b))
            .transpose()?
            .unwrap_or(0);
        let client_addrs = get(KEY_CLIENT_ADDRS)?
            .map(|b| decode(&b))
            .transpose()?
            .unwrap_or_default();
        let mut mvcc = Mvcc::new();
        for r in db.raw().iterator_cf(db.cf(CF_LEASE), IteratorMode::Start) {
            let (_, v) = r.map_err(rocks)?;
            let (id, ttl_s): (i64, i64) = decode(&v)?;
            mvcc.restore_lease(id, ttl_s);
        }
        for r in db.raw().iterator_cf(db.cf(CF_KV), IteratorMode::Start) {
            let (k, v) = r.map_err(rocks)?;
            let rev = Revision::from_bytes(&k)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad revision key"))?;
            let (key, kv): (Vec<u8>, Option<Vec<u8>>) = decode(&v)?;
            let kv = kv
                .map(|b| KeyValue::decode(b.as_slice()))
                .transpose()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            mvcc.restore_version(rev, key, kv);
        }
        mvcc.restore_meta(current_rev, compact_rev);
        let hub = WatchHub::default();
        Ok(StateMachine {
            shared: Arc::new(SmShared {
                db,
                state: RwLock::new(SmState {
                    mvcc,
                    last_applied,
                    membership,
                    client_addrs,
                }),
                hub,
                limits,
                current_snapshot: Mutex::new(None),
            }),
        })
    }
}

impl StateMachine {
    /// Applies committed log entries outside raft and makes them durable:
    /// for `--force-new-cluster`, which keeps what a lone survivor had
    /// committed but not yet applied before it rewrites the membership.
    pub(crate) fn apply_committed_offline(
        &self,
        entries: &[openraft::alias::EntryOf<TypeConfig>],
    ) -> io::Result<()> {
        let sh = &self.shared;
        let mut b = WriteBatch::default();
        let mut st = sh.state.write().expect("state lock poisoned");
        for entry in entries {
            st.last_applied = Some(entry.log_id);
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(cmd) => {
                    let (_, changes, _) = apply_command(&mut st, cmd, sh.limits);
                    persist_changes(&sh.db, &mut b, &changes)?;
                }
                EntryPayload::Membership(m) => {
                    st.membership =
                        StoredMembershipOf::<TypeConfig>::new(Some(entry.log_id), m.clone());
                }
            }
        }
        persist_meta(&sh.db, &mut b, &st, true)?;
        sh.db.write_synced(b).map_err(rocks)
    }
}

#[cfg(test)]
impl SmShared {
    /// Applies a command outside raft, as `apply` would (tests only).
    pub(crate) fn apply_for_test(&self, cmd: &Command) -> CommandResponse {
        let (resp, events) = {
            let mut st = self.state.write().expect("state lock poisoned");
            let (resp, changes, events) = apply_command(&mut st, cmd, self.limits);
            let mut b = WriteBatch::default();
            persist_changes(&self.db, &mut b, &changes).unwrap();
            self.db.write_unsynced(b).unwrap();
            (resp, events)
        };
        self.hub.publish(events);
        resp
    }
}

/// Applies one command to the state; returns the response, changes, events.
fn apply_command(
    state: &mut SmState,
    cmd: &Command,
    limits: TxnLimits,
) -> (CommandResponse, Vec<Change>, Vec<RevEvent>) {
    let (result, changes, events) = match cmd {
        Command::Txn(bytes) => match TxnRequest::decode(bytes.as_slice()) {
            Ok(req) => match state.mvcc.txn(&req, limits) {
                Ok((resp, c, e)) => (Ok(CommandOutput::Txn(resp.encode_to_vec())), c, e),
                Err(err) => (Err(err), vec![], vec![]),
            },
            Err(e) => (
                Err(StoreError::Invalid(format!("undecodable txn: {e}"))),
                vec![],
                vec![],
            ),
        },
        Command::Compact { revision } => match state.mvcc.compact(*revision) {
            Ok(c) => (Ok(CommandOutput::Done), c, vec![]),
            Err(err) => (Err(err), vec![], vec![]),
        },
        Command::LeaseGrant { id, ttl_s } => match state.mvcc.lease_grant(*id, *ttl_s) {
            Ok(c) => (
                Ok(CommandOutput::LeaseGranted {
                    id: *id,
                    ttl_s: *ttl_s,
                }),
                c,
                vec![],
            ),
            Err(err) => (Err(err), vec![], vec![]),
        },
        Command::LeaseRevoke { id } => match state.mvcc.lease_revoke(*id) {
            Ok((c, e)) => (Ok(CommandOutput::Done), c, e),
            Err(err) => (Err(err), vec![], vec![]),
        },
        Command::Publish {
            member_id,
            client_addr,
        } => {
            state.client_addrs.insert(*member_id, client_addr.clone());
            (Ok(CommandOutput::Done), vec![], vec![])
        }
    };
    let resp = CommandResponse {
        revision: state.mvcc.current_revision(),
        result,
    };
    (resp, changes, events)
}

fn persist_changes(db: &Db, b: &mut WriteBatch, changes: &[Change]) -> io::Result<()> {
    for c in changes {
        match c {
            Change::Put { rev, key, kv } => {
                let value = encode(&(key, kv.as_ref().map(|kv| kv.encode_to_vec())))?;
                b.put_cf(db.cf(CF_KV), rev.to_bytes(), value);
            }
            Change::Removed { rev } => b.delete_cf(db.cf(CF_KV), rev.to_bytes()),
            Change::LeasePut { id, ttl_s } => {
                b.put_cf(db.cf(CF_LEASE), id.to_be_bytes(), encode(&(id, ttl_s))?)
            }
            Change::LeaseDelete { id } => b.delete_cf(db.cf(CF_LEASE), id.to_be_bytes()),
            Change::Compacted { revision } => {
                b.put_cf(db.cf(CF_META), KEY_COMPACT, encode(revision)?)
            }
        }
    }
    Ok(())
}

/// Writes the applied id and revision; membership and client addresses only
/// when `members_changed` (they rarely change and cost an encode each).
fn persist_meta(
    db: &Db,
    b: &mut WriteBatch,
    state: &SmState,
    members_changed: bool,
) -> io::Result<()> {
    let meta = db.cf(CF_META);
    b.put_cf(meta, KEY_APPLIED, encode(&state.last_applied)?);
    b.put_cf(meta, KEY_REVISION, encode(&state.mvcc.current_revision())?);
    if members_changed {
        b.put_cf(meta, KEY_MEMBERSHIP, encode(&state.membership)?);
        b.put_cf(meta, KEY_CLIENT_ADDRS, encode(&state.client_addrs)?);
    }
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let st = self.shared.read();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // Apply every entry that is ready in one batch: one lock, one
        // RocksDB write; then publish events and answer in log order.
        while let Some(first) = entries.try_next().await? {
            let mut ready = vec![first];
            while let Some(next) = entries.try_next().now_or_never() {
                match next? {
                    Some(e) => ready.push(e),
                    None => break,
                }
            }
            let sh = &self.shared;
            let mut b = WriteBatch::default();
            let mut outcomes = Vec::with_capacity(ready.len());
            {
                let mut st = sh.state.write().expect("state lock poisoned");
                let members_before = (st.membership.clone(), st.client_addrs.clone());
                for (entry, responder) in ready {
                    st.last_applied = Some(entry.log_id);
                    let (resp, events) = match &entry.payload {
                        EntryPayload::Blank => (None, vec![]),
                        EntryPayload::Normal(cmd) => {
                            let (r, changes, events) = apply_command(&mut st, cmd, sh.limits);
                            persist_changes(&sh.db, &mut b, &changes)?;
                            (Some(r), events)
                        }
                        EntryPayload::Membership(m) => {
                            st.membership = StoredMembershipOf::<TypeConfig>::new(
                                Some(entry.log_id),
                                m.clone(),
                            );
                            (None, vec![])
                        }
                    };
                    let resp = resp.unwrap_or(CommandResponse {
                        revision: st.mvcc.current_revision(),
                        result: Ok(CommandOutput::Done),
                    });
                    outcomes.push((resp, events, responder));
                }
                let members_changed =
                    members_before != (st.membership.clone(), st.client_addrs.clone());
                persist_meta(&sh.db, &mut b, &st, members_changed)?;
                sh.db.write_unsynced(b).map_err(rocks)?;
            }
            for (resp, events, responder) in outcomes {
                sh.hub.publish(events);
                if let Some(r) = responder {
                    r.send(resp);
                }
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let body: SnapshotBody = decode(&snapshot)?;
        let sh = &self.shared;
        let mut mvcc = Mvcc::new();
        for (id, ttl) in &body.leases {
            mvcc.restore_lease(*id, *ttl);
        }
        let db = &sh.db;
        let mut b = WriteBatch::default();
        b.delete_range_cf(db.cf(CF_KV), &[0u8; 16][..], &[0xffu8; 17][..]);
        b.delete_range_cf(db.cf(CF_LEASE), &[0u8; 8][..], &[0xffu8; 9][..]);
        for (id, ttl) in &body.leases {
            b.put_cf(db.cf(CF_LEASE), id.to_be_bytes(), encode(&(id, ttl))?);
        }
        for (rev, key, kv) in body.versions {
            b.put_cf(db.cf(CF_KV), rev.to_bytes(), encode(&(&key, &kv))?);
            let kv = kv
                .map(|k| KeyValue::decode(k.as_slice()))
                .transpose()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            mvcc.restore_version(rev, key, kv);
        }
        mvcc.restore_meta(body.current_rev, body.compact_rev);
        b.put_cf(db.cf(CF_META), KEY_COMPACT, encode(&body.compact_rev)?);
        {
            let mut st = sh.state.write().expect("state lock poisoned");
            st.mvcc = mvcc;
            st.last_applied = meta.last_log_id;
            st.membership = meta.last_membership.clone();
            st.client_addrs = body.client_addrs.into_iter().collect();
            persist_meta(db, &mut b, &st, true)?;
            db.write_synced(b).map_err(rocks)?;
            sh.hub.reset();
            tracing::info!(
                last_log_id = ?meta.last_log_id,
                revision = st.mvcc.current_revision(),
                "installed snapshot from leader"
            );
        }
        *sh.current_snapshot.lock().expect("snapshot lock") = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        let cur = self
            .shared
            .current_snapshot
            .lock()
            .expect("snapshot lock")
            .clone();
        Ok(cur.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;

    /// Copies what the snapshot holds under the state lock as shared
    /// references only (an `Arc` per version), so applying waits for a
    /// walk of the index, not for the encoding; then encodes it off the
    /// async workers. Encoding every version under the lock, on a runtime
    /// worker, stalled each replica for as long as the whole history took
    /// to encode, every `snapshot_logs` entries: long enough under load
    /// for the followers' AppendEntries answers to time out and a healthy
    /// leader to step down.
    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let (meta, head, versions) = {
            let st = self.shared.read();
            let head = SnapshotBody {
                current_rev: st.mvcc.current_revision(),
                compact_rev: st.mvcc.compact_revision(),
                leases: st.mvcc.leases().map(|l| (l.id, l.ttl_s)).collect(),
                versions: Vec::new(),
                client_addrs: st
                    .client_addrs
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect(),
            };
            let versions: Vec<(Revision, Vec<u8>, Option<Arc<KeyValue>>)> = st
                .mvcc
                .all_versions()
                .map(|(rev, key, kv)| (rev, key.to_vec(), kv.cloned()))
                .collect();
            let meta = SnapshotMetaOf::<TypeConfig> {
                last_log_id: st.last_applied,
                last_membership: st.membership.clone(),
            };
            (meta, head, versions)
        };
        let bytes = off_runtime(move || {
            let body = SnapshotBody {
                versions: versions
                    .into_iter()
                    .map(|(rev, key, kv)| (rev, key, kv.map(|kv| kv.encode_to_vec())))
                    .collect(),
                ..head
            };
            encode(&body)
        })?;
        // The snapshot replaces the log up to its last id: make everything it
        // covers durable before openraft may purge that log.
        self.shared
            .db
            .write_synced(WriteBatch::default())
            .map_err(rocks)?;
        *self.shared.current_snapshot.lock().expect("snapshot lock") =
            Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: bytes,
        })
    }
}
