//! The client side: requests are routed to the leader; the public
//! `Store` membership API, and the leadership hand-off on shutdown.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::time::Instant;

use super::*;
use crate::store::{ForwardRequest, ForwardResponse};
use crate::{Store, StoreError};

// ---- the client side: route to the leader ----

impl Store {
    /// Runs a membership request on the leader (forwarding to it), within
    /// the request timeout. A forward whose outcome is unknown is reported,
    /// not retried.
    pub(crate) async fn member_request(&self, req: MembershipRequest) -> MembershipResult {
        let deadline = Instant::now() + self.config().request_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(if self.current_leader().is_none() {
                    StoreError::NoLeader.into()
                } else {
                    StoreError::Timeout.into()
                });
            }
            match self.leader_member() {
                None => {}
                Some((leader, _)) if leader == self.member_id() => {
                    match self.serve_membership(req.clone()).await {
                        Ok(MembershipReply::NotLeader) => {}
                        r => return r,
                    }
                }
                Some((_, node)) => {
                    match self
                        .forward(&node, ForwardRequest::Membership(req.clone()), left)
                        .await
                    {
                        Ok(ForwardResponse::Membership(Ok(MembershipReply::NotLeader))) => {}
                        Ok(ForwardResponse::NotLeader) => {}
                        Ok(ForwardResponse::Membership(r)) => return r,
                        Ok(_) => {
                            return Err(StoreError::Internal("bad forward answer".into()).into())
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20).min(left)).await;
        }
    }

    pub async fn member_add(&self, peer_addr: &str, learner: bool) -> Result<u64, MemberError> {
        let peer_addr = check_peer_addr(peer_addr)?;
        match self
            .member_request(MembershipRequest::Add { peer_addr, learner })
            .await?
        {
            MembershipReply::Added { id } => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    pub async fn member_promote(&self, id: u64) -> Result<(), MemberError> {
        self.member_request(MembershipRequest::Promote { id })
            .await
            .map(|_| ())
    }

    pub async fn member_remove(&self, id: u64) -> Result<(), MemberError> {
        self.member_request(MembershipRequest::Remove { id })
            .await
            .map(|_| ())
    }

    pub async fn member_update(&self, id: u64, peer_addr: &str) -> Result<(), MemberError> {
        let peer_addr = check_peer_addr(peer_addr)?;
        self.member_request(MembershipRequest::Update { id, peer_addr })
            .await
            .map(|_| ())
    }

    /// etcd's MoveLeader: hands leadership to voter `to` and waits until
    /// it leads.
    pub async fn move_leader(&self, to: u64) -> Result<(), MemberError> {
        self.member_request(MembershipRequest::MoveLeader { to })
            .await
            .map(|_| ())
    }

    /// Whether member `id` is a learner (a voter awaiting its automatic
    /// promotion counts as a voter, as etcd lists it).
    pub fn is_learner(&self, id: u64) -> bool {
        let m = self
            .raft()
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        let voter = m.membership().voter_ids().any(|v| v == id);
        !voter && !self.membership_state().pending().contains(&id)
    }

    /// Resolves when this member learns it was removed from the cluster
    /// (it has then stopped its raft node).
    pub async fn wait_removed(&self) {
        let mut rx = self.membership_state().removed_tx.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// On a clean shutdown: a leader hands leadership to the most
    /// up-to-date voter first, so the cluster has no election gap. Waits at
    /// most one election timeout; returns at once on a follower.
    pub async fn hand_off_leadership(&self) {
        let m = self.raft().metrics().borrow_watched().clone();
        if !m.state.is_leader() {
            return;
        }
        let me = self.member_id();
        let target = m
            .replication
            .as_ref()
            .and_then(|r| {
                m.membership_config
                    .membership()
                    .voter_ids()
                    .filter(|v| *v != me)
                    .max_by_key(|v| r.get(v).cloned().flatten().map(|l| l.index))
            })
            .filter(|_| m.replication.is_some());
        let Some(to) = target else { return };
        tracing::info!(
            to = format!("{to:x}"),
            "handing leadership over before shutdown"
        );
        let wait = Duration::from_millis(self.config().election_timeout_ms.max(200));
        if let Err(e) = self.transfer_and_wait(to, wait).await {
            tracing::warn!("leadership hand-off: {e}");
        }
    }

    pub(super) async fn transfer_and_wait(
        &self,
        to: u64,
        wait: Duration,
    ) -> Result<(), MemberError> {
        self.raft()
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| MemberError::Store(StoreError::Internal(e.to_string())))?;
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.current_leader() == Some(to) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(MemberError::TransferTimeout)
    }
}

fn unexpected(r: MembershipReply) -> MemberError {
    MemberError::Store(StoreError::Internal(format!(
        "unexpected membership answer {r:?}"
    )))
}

/// `http://host:port` or `host:port` → `host:port`.
pub fn check_peer_addr(url: &str) -> Result<String, MemberError> {
    let addr = url
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let ok = match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    };
    if ok {
        Ok(addr.to_string())
    } else {
        Err(MemberError::BadUrls)
    }
}
