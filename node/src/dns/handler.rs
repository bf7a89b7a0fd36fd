//! The hickory [`RequestHandler`]: questions about the cluster zone are
//! answered from the current [`ZoneIndex`] (authoritatively); everything
//! else goes to the forwarding catalog, or is REFUSED when there is no
//! upstream.
//!
//! Answers in the zone: records → NOERROR with the records (SRV answers
//! carry their in-zone targets' addresses as additional records; an
//! in-zone CNAME is followed, up to 8 hops); a name
//! without that type → NOERROR, no answer, SOA in authority; unknown
//! name → NXDOMAIN with the SOA in authority (as CoreDNS).

use std::sync::{Arc, RwLock};

use hickory_net::runtime::Time;
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};

use super::records::{Answer, ZoneIndex};

/// The index every query reads; replaced wholesale when the cluster
/// changes (readers keep the `Arc` they took, so a query sees one version).
pub type SharedIndex = Arc<RwLock<Arc<ZoneIndex>>>;

/// Wraps an index for sharing between the watcher and the servers.
pub fn shared(index: ZoneIndex) -> SharedIndex {
    Arc::new(RwLock::new(Arc::new(index)))
}

/// The current index (a poisoned lock still holds a complete index: the
/// writer only swaps an `Arc`).
pub fn current(index: &SharedIndex) -> Arc<ZoneIndex> {
    match index.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Replaces the index.
pub fn publish(index: &SharedIndex, new: ZoneIndex) {
    let new = Arc::new(new);
    match index.write() {
        Ok(mut g) => *g = new,
        Err(p) => *p.into_inner() = new,
    }
}

/// The cluster DNS request handler.
pub struct ClusterDns {
    index: SharedIndex,
    upstream: Option<Catalog>,
}

impl ClusterDns {
    /// `upstream`: the forwarding catalog ([`super::forward::catalog`]);
    /// `None` refuses names outside the zone.
    pub fn new(index: SharedIndex, upstream: Option<Catalog>) -> Self {
        ClusterDns { index, upstream }
    }
}

fn failed(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// The in-zone records answering one question, the authority section and
/// the additional section.
struct Reply {
    code: ResponseCode,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additionals: Vec<Record>,
}

/// Most CNAME hops followed inside the zone.
const MAX_CNAME_HOPS: usize = 8;

/// Appends what an in-zone CNAME target answers (an ExternalName aliasing
/// another Service, `externalName: db.data.svc.cluster.local`), as CoreDNS
/// does; a target outside the zone is left to the client's resolver.
fn follow_cnames(index: &ZoneIndex, qtype: RecordType, answers: &mut Vec<Record>) {
    if matches!(qtype, RecordType::CNAME | RecordType::ANY) {
        return;
    }
    for _ in 0..MAX_CNAME_HOPS {
        let Some(RData::CNAME(target)) = answers.last().map(|r| r.data.clone()) else {
            return;
        };
        if !index.in_zone(&target.0) {
            return;
        }
        match index.lookup(&target.0, qtype) {
            Answer::Records(more) => answers.extend(more),
            _ => return,
        }
    }
}

fn answer(index: &ZoneIndex, name: &Name, qtype: RecordType) -> Reply {
    match index.lookup(name, qtype) {
        Answer::Records(mut answers) => {
            follow_cnames(index, qtype, &mut answers);
            let additionals = answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) if index.in_zone(&srv.target) => Some(srv.target.clone()),
                    _ => None,
                })
                .flat_map(|t| {
                    [RecordType::A, RecordType::AAAA]
                        .into_iter()
                        .flat_map(move |ty| match index.lookup(&t, ty) {
                            Answer::Records(r) => r,
                            _ => vec![],
                        })
                })
                .collect();
            Reply {
                code: ResponseCode::NoError,
                answers,
                authority: vec![],
                additionals,
            }
        }
        Answer::NoData => Reply {
            code: ResponseCode::NoError,
            answers: vec![],
            authority: vec![index.soa().clone()],
            additionals: vec![],
        },
        Answer::NxDomain => Reply {
            code: ResponseCode::NXDomain,
            answers: vec![],
            authority: vec![index.soa().clone()],
            additionals: vec![],
        },
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let in_zone = match request.request_info() {
            Ok(info) => {
                let name = Name::from(info.query.name().clone());
                let index = current(&self.index);
                match index.in_zone(&name) {
                    true => Some((index, name, info.query.query_type())),
                    false => None,
                }
            }
            Err(_) => None,
        };
        let is_query = request.metadata.message_type == MessageType::Query
            && request.metadata.op_code == OpCode::Query;
        let Some((index, name, qtype)) = in_zone.filter(|_| is_query) else {
            return match &self.upstream {
                Some(c) => c.handle_request::<R, T>(request, response).await,
                None => {
                    let msg = MessageResponseBuilder::from_message_request(request)
                        .error_msg(&request.metadata, ResponseCode::Refused);
                    match response.send_response(msg).await {
                        Ok(info) => info,
                        Err(e) => {
                            tracing::debug!(error = %e, "could not send a DNS response");
                            failed(request, ResponseCode::Refused)
                        }
                    }
                }
            };
        };
        let reply = answer(&index, &name, qtype);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = self.upstream.is_some();
        metadata.response_code = reply.code;
        let edns = request.edns.as_ref().map(|e| {
            let mut out = Edns::new();
            out.set_max_payload(e.max_payload().max(512));
            out.set_version(0);
            out
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let msg = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authority.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response.send_response(msg).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "could not send a DNS response");
                failed(request, ResponseCode::ServFail)
            }
        }
    }
}
