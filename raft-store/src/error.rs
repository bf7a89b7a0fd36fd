//! Errors of the store, mapped one to one onto etcd's gRPC errors.
//!
//! The messages and codes are etcd's (`api/v3rpc/rpctypes`), because clients
//! such as `etcdctl` and `clientv3` match on the message text to recognise
//! them (e.g. a compacted watch, a missing lease).

use serde::{Deserialize, Serialize};

/// An error a client can cause or observe. Every variant leaves the store
/// unchanged: validation happens before anything is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted { compact_revision: i64 },
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: range end is before key")]
    RangeEndBeforeKey,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: {0}")]
    Invalid(String),
    #[error("etcdserver: internal error: {0}")]
    Internal(String),
}

/// gRPC status codes as etcd assigns them to each error.
impl StoreError {
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            StoreError::EmptyKey
            | StoreError::KeyNotFound
            | StoreError::ValueProvided
            | StoreError::LeaseProvided
            | StoreError::TooManyOps
            | StoreError::DuplicateKey
            | StoreError::RequestTooLarge
            | StoreError::RangeEndBeforeKey
            | StoreError::Invalid(_) => Code::InvalidArgument,
            StoreError::Compacted { .. }
            | StoreError::FutureRevision
            | StoreError::LeaseTtlTooLarge => Code::OutOfRange,
            StoreError::LeaseNotFound => Code::NotFound,
            StoreError::LeaseExists => Code::FailedPrecondition,
            StoreError::NoLeader | StoreError::Timeout | StoreError::LeaderChanged => {
                Code::Unavailable
            }
            StoreError::Internal(_) => Code::Internal,
        }
    }

    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.grpc_code(), self.to_string())
    }
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        e.to_status()
    }
}
