//! raft-store: keel's state store. A Raft-replicated (openraft) MVCC
//! key-value store persisted in RocksDB, with etcd v3 semantics: global
//! revisions, transactions, leases, watches and compaction.
//!
//! Layering (etcd's): [`mvcc`] is pure state and knows nothing of raft or
//! disks; the state machine persists what it changes; the gRPC services
//! call the [`Store`] API and never touch storage directly.

pub mod db;
pub mod error;
mod forwarder;
pub mod grpc;
mod lessor;
mod log_store;
pub mod membership;
pub mod mvcc;
mod network;
pub mod progress;
pub mod restore;
pub mod runtime;
pub mod snapshot_file;
pub mod state_machine;
pub mod stats;
mod store;
pub mod types;
pub mod watch;

pub use error::StoreError;
pub use keel_net::{tls, TlsConfig, TlsFiles, Transport};
pub use membership::{InitialClusterState, MemberError};
pub use store::{
    AutoCompaction, Durability, LeaseInfo, MemberInfo, Mutation, OpenStoreError, Store,
    StoreConfig, StoreStatus,
};
