//! The `KV` service.

use keel_proto::etcdserverpb::{
    kv_server::Kv, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::mvcc::txn::check_put_shape;
use crate::store::Store;
use crate::StoreError;

pub struct KvService {
    store: Store,
}

impl KvService {
    pub fn new(store: Store) -> Self {
        KvService { store }
    }

    fn check_size(&self, len: usize) -> Result<(), Status> {
        if len > self.store.config().max_request_bytes {
            return Err(StoreError::RequestTooLarge.into());
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(self.store.range(req.into_inner()).await?))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        self.check_size(req.encoded_len())?;
        check_put_shape(&req)?;
        Ok(Response::new(self.store.put(req).await?))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(
            self.store.delete_range(req.into_inner()).await?,
        ))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = req.into_inner();
        self.check_size(req.encoded_len())?;
        Ok(Response::new(self.store.txn(req).await?))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let revision = self.store.compact(req.into_inner().revision).await?;
        Ok(Response::new(CompactionResponse {
            header: Some(self.store.header(revision)),
        }))
    }
}
