//! The `Lease` service. Keep-alives and time-to-live are answered by the
//! leader, whose clock decides expiry; followers forward them.

use std::pin::Pin;

use futures::Stream;
use keel_proto::etcdserverpb::{
    lease_server::Lease, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::store::Store;
use crate::StoreError;

pub struct LeaseService {
    store: Store,
}

impl LeaseService {
    pub fn new(store: Store) -> Self {
        LeaseService { store }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = req.into_inner();
        let (id, ttl, rev) = self.store.lease_grant(req.id, req.ttl).await?;
        Ok(Response::new(LeaseGrantResponse {
            header: Some(self.store.header(rev)),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let rev = self.store.lease_revoke(req.into_inner().id).await?;
        Ok(Response::new(LeaseRevokeResponse {
            header: Some(self.store.header(rev)),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut input = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = input.message().await {
                // etcd answers a renewal of an unknown lease with TTL 0.
                let ttl = match store.lease_keep_alive(r.id).await {
                    Ok(ttl) => ttl,
                    Err(StoreError::LeaseNotFound) => 0,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let resp = LeaseKeepAliveResponse {
                    header: Some(store.header(store.current_revision())),
                    id: r.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        let header = Some(self.store.header(self.store.current_revision()));
        match self.store.lease_time_to_live(req.id, req.keys).await {
            Ok(info) => Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id: info.id,
                ttl: info.ttl_s,
                granted_ttl: info.granted_ttl_s,
                keys: info.keys,
            })),
            // etcd reports an unknown lease as TTL -1, not as an error.
            Err(StoreError::LeaseNotFound) => Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: vec![],
            })),
            Err(e) => Err(e.into()),
        }
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = self
            .store
            .lease_ids()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.store.header(self.store.current_revision())),
            leases,
        }))
    }
}
