//! The `Maintenance` service: status, snapshot, hashes, and the operations
//! that are no-ops for keel's storage.

use std::pin::Pin;

use futures::Stream;
use keel_proto::etcdserverpb::{
    maintenance_server::Maintenance, AlarmRequest, AlarmResponse, DefragmentRequest,
    DefragmentResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use tonic::{Request, Response, Status};

use crate::store::Store;

/// The etcd API version keel implements, reported by `Status`.
pub const ETCD_API_VERSION: &str = "3.5.0";
const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;

pub struct MaintenanceService {
    store: Store,
}

impl MaintenanceService {
    pub fn new(store: Store) -> Self {
        MaintenanceService { store }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, _: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        // keel raises no alarms (no space quota yet): the list is empty.
        Ok(Response::new(AlarmResponse {
            header: Some(self.store.header(self.store.current_revision())),
            alarms: vec![],
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let s = self.store.status();
        Ok(Response::new(StatusResponse {
            header: Some(self.store.header(s.revision)),
            version: ETCD_API_VERSION.into(),
            db_size: s.db_size_bytes,
            leader: s.leader,
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            raft_applied_index: s.raft_applied_index,
            errors: vec![],
            db_size_in_use: s.db_size_bytes,
            is_learner: false,
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        // RocksDB compacts in the background; there is nothing to do.
        Ok(Response::new(DefragmentResponse {
            header: Some(self.store.header(self.store.current_revision())),
        }))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let (hash, rev, _) = self.store.hash_kv(0)?;
        Ok(Response::new(HashResponse {
            header: Some(self.store.header(rev)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let (hash, rev, compact) = self.store.hash_kv(req.into_inner().revision)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.store.header(rev)),
            hash,
            compact_revision: compact,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// Streams a consistent snapshot in keel's snapshot file format, which
    /// (like etcd's) ends in the SHA-256 of the preceding, page-aligned
    /// bytes, so etcd clients can check its integrity.
    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let blob = self.store.snapshot_bytes().await?;
        let header = self.store.header(self.store.current_revision());
        let total = blob.len();
        let chunks: Vec<Result<SnapshotResponse, Status>> = blob
            .chunks(SNAPSHOT_CHUNK_BYTES)
            .scan(0usize, |sent, c| {
                *sent += c.len();
                Some(Ok(SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: (total - *sent) as u64,
                    blob: c.to_vec(),
                }))
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    /// etcd's MoveLeader: hands leadership to the voter `target_id` and
    /// answers once it leads. Any replica takes it (a follower forwards).
    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.store.move_leader(req.into_inner().target_id).await?;
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.store.header(self.store.current_revision())),
        }))
    }
}
