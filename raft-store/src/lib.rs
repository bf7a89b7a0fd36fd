//! raft-store: keel's state store. A Raft-replicated (openraft) MVCC
//! key-value store persisted in RocksDB, with etcd v3 semantics: global
//! revisions, transactions, leases, watches and compaction.
//!
//! Layering (etcd's): [`mvcc`] is pure state and knows nothing of raft or
//! disks; the state machine persists what it changes; the gRPC services
//! call the [`Store`] API and never touch storage directly.

pub mod error;
pub mod mvcc;

pub use error::StoreError;
