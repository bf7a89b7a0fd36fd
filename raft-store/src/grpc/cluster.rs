//! The `Cluster` service. Membership is static (`--initial-cluster`), so
//! only `MemberList` is served; changes answer `Unimplemented`, naming why.

use keel_proto::etcdserverpb::{
    cluster_server::Cluster, Member, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use crate::store::Store;

pub struct ClusterService {
    store: Store,
}

impl ClusterService {
    pub fn new(store: Store) -> Self {
        ClusterService { store }
    }
}

fn url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

fn static_membership() -> Status {
    Status::unimplemented("etcdserver: keel membership is static (set by --initial-cluster); runtime changes are not supported")
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(static_membership())
    }

    async fn member_remove(
        &self,
        _: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(static_membership())
    }

    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(static_membership())
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if req.into_inner().linearizable {
            self.store.read_barrier().await?;
        }
        let members = self
            .store
            .members()
            .into_iter()
            .map(|m| Member {
                id: m.id,
                name: m.name,
                peer_ur_ls: vec![url(&m.peer_addr)],
                client_ur_ls: m.client_addr.iter().map(|a| url(a)).collect(),
                is_learner: false,
            })
            .collect();
        Ok(Response::new(MemberListResponse {
            header: Some(self.store.header(self.store.current_revision())),
            members,
        }))
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(static_membership())
    }
}
