//! The `Cluster` service: etcd's membership API over
//! [`crate::membership`]. Changes run on the leader, one at a time; a
//! follower forwards them. Each answer lists the members as the replica
//! that answers sees them after the change (read barrier first).

use keel_proto::etcdserverpb::{
    cluster_server::Cluster, Member, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use tonic::{Request, Response, Status};

use crate::membership::MemberError;
use crate::store::Store;

pub struct ClusterService {
    store: Store,
}

impl ClusterService {
    pub fn new(store: Store) -> Self {
        ClusterService { store }
    }

    fn members(&self) -> Vec<Member> {
        let mut list: Vec<Member> = self
            .store
            .members()
            .into_iter()
            .map(|m| Member {
                id: m.id,
                name: m.name,
                peer_ur_ls: vec![match self.store.config().peer_tls {
                    Some(_) if !m.peer_addr.contains("://") => format!("https://{}", m.peer_addr),
                    _ => url(&m.peer_addr),
                }],
                client_ur_ls: m.client_addr.iter().map(|a| url(a)).collect(),
                is_learner: self.store.is_learner(m.id),
            })
            .collect();
        list.sort_by_key(|m| m.id);
        list
    }

    /// Header and members once this replica has applied the change.
    async fn after_change(&self) -> Result<(ResponseHeader, Vec<Member>), Status> {
        self.store.read_barrier().await?;
        Ok((
            self.store.header(self.store.current_revision()),
            self.members(),
        ))
    }
}

fn url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// keel members have exactly one peer URL.
fn one_peer_url(urls: &[String]) -> Result<&str, Status> {
    match urls {
        [u] => Ok(u),
        _ => Err(MemberError::BadUrls.to_status()),
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let req = req.into_inner();
        let peer = one_peer_url(&req.peer_ur_ls)?;
        let id = self.store.member_add(peer, req.is_learner).await?;
        let (header, members) = self.after_change().await?;
        let member = members.iter().find(|m| m.id == id).cloned().or_else(|| {
            Some(Member {
                id,
                name: String::new(),
                peer_ur_ls: req.peer_ur_ls.clone(),
                client_ur_ls: vec![],
                is_learner: req.is_learner,
            })
        });
        Ok(Response::new(MemberAddResponse {
            header: Some(header),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.store.member_remove(req.into_inner().id).await?;
        let (header, members) = self.after_change().await?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(header),
            members,
        }))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let req = req.into_inner();
        let peer = one_peer_url(&req.peer_ur_ls)?;
        self.store.member_update(req.id, peer).await?;
        let (header, members) = self.after_change().await?;
        Ok(Response::new(MemberUpdateResponse {
            header: Some(header),
            members,
        }))
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if req.into_inner().linearizable {
            self.store.read_barrier().await?;
        }
        Ok(Response::new(MemberListResponse {
            header: Some(self.store.header(self.store.current_revision())),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.store.member_promote(req.into_inner().id).await?;
        let (header, members) = self.after_change().await?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(header),
            members,
        }))
    }
}
