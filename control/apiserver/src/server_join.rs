//! `POST /keel/v1/members`: a new control-plane replica joins.
//!
//! `keel server --join` calls this on any replica, authenticated by a
//! bootstrap token in [`SERVER_JOIN_GROUP`] (anyone else gets 403), after
//! it has checked the cluster CA against its join token's fingerprint. The
//! replica adds the joiner as a member through the store's Cluster API:
//! as a learner that the leader promotes to voter once it has caught up,
//! one membership change at a time, refused when it would cost quorum
//! (etcd's rules, see `keel_store::membership`). The answer carries what
//! the joiner needs to start with `--initial-cluster-state existing`: the
//! member list, the cluster CA, and a peer and an API serving certificate
//! signed from the joiner's own CSRs (its private keys never travel).
//!
//! Retrying is safe: a peer URL that belongs to a member that never started
//! gets that member back. A peer URL of a member that has started is
//! refused (409): a replica whose data dir was lost must be removed first
//! and rejoins as a new member, as etcd requires.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, Response};
use keel_store::{MemberError, Store};
use serde::{Deserialize, Serialize};

use crate::auth::bootstrap_token::SERVER_JOIN_GROUP;
use crate::auth::UserInfo;
use crate::pki::{Bootstrap, CertUse};
use crate::status::{ApiError, ApiResult};

/// The path this is served on.
pub const PATH: &str = "/keel/v1/members";

/// How long the certificates issued to a joining replica are valid.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The joiner's request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    /// The joiner's `--name`.
    pub name: String,
    /// The raft peer URL others reach it at (`http://host:port`).
    pub peer_url: String,
    /// PEM CSR for its peer certificate (SANs: names the peer URL uses).
    pub peer_csr: String,
    /// PEM CSR for its API serving certificate.
    pub serving_csr: String,
}

/// One member of the cluster, as `--initial-cluster` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinedMember {
    pub name: String,
    pub peer_url: String,
}

/// What the joiner starts with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    /// The joiner's member id (hex).
    pub member_id: String,
    /// The cluster id (hex).
    pub cluster_id: String,
    /// Every member, the joiner included (its `--initial-cluster`).
    pub members: Vec<JoinedMember>,
    /// The cluster CA certificate (PEM).
    pub ca_cert: String,
    /// The joiner's peer certificate (PEM), for server and client auth.
    pub peer_cert: String,
    /// The joiner's API serving certificate (PEM).
    pub serving_cert: String,
}

/// Answers a request on [`PATH`] from `user`.
pub async fn respond(
    store: &Store,
    ca: &Bootstrap,
    user: &UserInfo,
    req: Request<Body>,
    max_body_bytes: usize,
) -> Response<Body> {
    let result = async {
        if req.method() != Method::POST {
            return Err(ApiError::method_not_allowed(&format!(
                "{} {PATH} (only POST joins a server)",
                req.method()
            )));
        }
        if user.name == crate::auth::ANONYMOUS {
            return Err(ApiError::unauthorized());
        }
        if !user.in_group(SERVER_JOIN_GROUP) {
            return Err(ApiError::forbidden(format!(
                "user {:?} may not join a server: only server join tokens (group {SERVER_JOIN_GROUP}) may",
                user.name
            )));
        }
        let body = axum::body::to_bytes(req.into_body(), max_body_bytes)
            .await
            .map_err(|_| ApiError::too_large(max_body_bytes))?;
        let join: JoinRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the join request does not decode: {e}")))?;
        tracing::info!(name = %join.name, peer = %join.peer_url, by = %user.name, "a server joins");
        join_member(store, ca, &join).await
    }
    .await;
    match result {
        Ok(r) => crate::api::into_response(crate::api::Reply::json(
            201,
            serde_json::to_value(r).expect("serializable"),
        )),
        Err(e) => crate::api::error_response(&e),
    }
}

/// Checks the request, adds (or finds) the member, signs its certificates.
pub async fn join_member(
    store: &Store,
    ca: &Bootstrap,
    join: &JoinRequest,
) -> ApiResult<JoinResponse> {
    check_name(&join.name)?;
    let peer_addr = keel_store::membership::check_peer_addr(&join.peer_url).map_err(|_| {
        ApiError::bad_request(format!(
            "peerURL {:?} is not http://host:port",
            join.peer_url
        ))
    })?;
    // Sign first: a bad CSR must not leave a member behind.
    let sign = |csr: &str, usage: CertUse, field: &str| {
        ca.sign_csr(csr, &join.name, usage, CERT_VALIDITY)
            .map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
    };
    let peer_cert = sign(&join.peer_csr, CertUse::Peer, "peerCSR")?;
    let serving_cert = sign(&join.serving_csr, CertUse::Serving, "servingCSR")?;
    if let Some(m) = store
        .members()
        .into_iter()
        .find(|m| m.peer_addr == peer_addr)
    {
        if m.client_addr.is_some() || !m.name.is_empty() {
            let name = if m.name.is_empty() { "?" } else { &m.name };
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!(
                    "peer URL {peer_addr} belongs to member {name} ({:x}), which has started before; \
                     a replica whose data dir was lost rejoins as a new member: remove the old one \
                     first (`keel member remove {name}`)",
                    m.id
                ),
            ));
        }
    }
    let id = match store.member_add(&peer_addr, false).await {
        Ok(id) => id,
        Err(MemberError::PeerUrlExists) => store
            .members()
            .into_iter()
            .find(|m| m.peer_addr == peer_addr)
            .map(|m| m.id)
            .ok_or_else(|| member_error(MemberError::PeerUrlExists))?,
        Err(e) => return Err(member_error(e)),
    };
    let mut members: Vec<JoinedMember> = store
        .members()
        .into_iter()
        .map(|m| JoinedMember {
            name: if m.id == id {
                join.name.clone()
            } else {
                m.name
            },
            peer_url: format!("http://{}", m.peer_addr),
        })
        .collect();
    // A follower serving this may not have applied the add yet.
    if !members.iter().any(|m| m.name == join.name) {
        members.push(JoinedMember {
            name: join.name.clone(),
            peer_url: format!("http://{peer_addr}"),
        });
    }
    Ok(JoinResponse {
        member_id: format!("{id:x}"),
        cluster_id: format!("{:x}", store.cluster_id()),
        members,
        ca_cert: ca.ca_cert_pem.clone(),
        peer_cert,
        serving_cert,
    })
}

/// A member name: what `--initial-cluster` can carry.
fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "name {name:?} must be 1-63 characters of [A-Za-z0-9._-]"
        )))
    }
}

/// etcd's membership refusals as Kubernetes Statuses.
fn member_error(e: MemberError) -> ApiError {
    match e {
        MemberError::BadUrls => ApiError::bad_request(e.to_string()),
        MemberError::Store(s) => s.into(),
        other => ApiError::new(409, "Conflict", other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("s1").is_ok());
        assert!(check_name("keel-server.2").is_ok());
        for bad in ["", "a,b", "a=b", "with space"] {
            assert_eq!(check_name(bad).unwrap_err().code, 400, "{bad}");
        }
    }

    #[test]
    fn membership_refusals_are_conflicts() {
        assert_eq!(member_error(MemberError::NotEnoughStarted).code, 409);
        assert!(member_error(MemberError::NotEnoughStarted)
            .message
            .contains("not enough started"));
        assert_eq!(member_error(MemberError::BadUrls).code, 400);
    }
}
