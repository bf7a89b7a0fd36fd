//! Each replica's membership loop: promotes added voters, publishes its
//! name, and notices its own removal; and the transfer-leader message.

use std::collections::BTreeSet;
use std::time::Duration;

use keel_net::{PeerClient, PeerMethod};
use openraft::async_runtime::WatchReceiver;
use openraft::raft::{TransferLeaderRequest, TransferLeaderResponse};
use openraft::ChangeMembers;
use tokio::time::Instant;

use super::*;
use crate::db::CF_META;
use crate::log_store::{decode, encode};
use crate::store::{ForwardRequest, ForwardResponse};
use crate::types::TypeConfig;
use crate::Store;

// ---- background: promotions, names, removal ----

/// Starts this replica's membership loop. Not in simulations: they keep a
/// static membership, and the loop's periodic peer calls made a seed's
/// replays differ (the `same_seed_same_history*` tests caught it).
pub(crate) fn spawn(store: &Store) {
    if !matches!(store.config().transport, keel_net::Transport::Tcp) {
        return;
    }
    let s = store.clone();
    tokio::spawn(async move { s.membership_loop().await });
}

impl Store {
    async fn membership_loop(&self) {
        let me = self.member_id();
        let mut seen_self = false;
        let mut last_poll = Instant::now();
        let mut leaderless_since: Option<Instant> = None;
        let election = Duration::from_millis(self.config().election_timeout_ms);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let m = self.raft().metrics().borrow_watched().clone();
            if m.running_state.is_err() {
                return;
            }
            let effective = m.membership_config.membership().get_node(&me).cloned();
            let committed_has_me = m
                .committed_membership_config
                .membership()
                .get_node(&me)
                .is_some();
            if committed_has_me {
                seen_self = true;
            }
            if seen_self && !committed_has_me && m.committed_membership_config.log_id().is_some() {
                return self.stop_removed().await;
            }
            leaderless_since = match m.current_leader {
                Some(_) => None,
                None => leaderless_since.or(Some(Instant::now())),
            };
            let doubtful =
                effective.is_none() || leaderless_since.is_some_and(|t| t.elapsed() > election * 2);
            // A member removed while it was down may still see its old
            // leader after a restart (its committed vote survives) and,
            // with PreVote, never campaign: so a follower asks now and
            // then even when nothing looks wrong.
            let overdue = !m.state.is_leader() && last_poll.elapsed() > election * 10;
            if (doubtful && last_poll.elapsed() > election) || overdue {
                last_poll = Instant::now();
                if self.poll_removed().await {
                    return self.stop_removed().await;
                }
            }
            if m.state.is_leader() {
                self.promote_caught_up().await;
            }
            if let Some(n) = effective {
                if n.name != self.config().name {
                    let req = MembershipRequest::SetName {
                        id: me,
                        name: self.config().name.clone(),
                    };
                    if let Err(e) = self.member_request(req).await {
                        tracing::debug!("publishing member name: {e}");
                    }
                }
            }
        }
    }

    /// Asks every other replica known here whether this member is still in
    /// the cluster; only the leader answers. True: it was removed.
    async fn poll_removed(&self) -> bool {
        let me = self.member_id();
        let m = self
            .raft()
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        let mut addrs: Vec<String> = m
            .membership()
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(_, n)| n.peer_addr.clone())
            .collect();
        for (name, a) in &self.config().initial_cluster {
            if *name != self.config().name && !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        let req = ForwardRequest::Membership(MembershipRequest::IsMember {
            id: me,
            cluster_id: self.cluster_id(),
        });
        let Ok(data) = encode(&req) else { return false };
        for a in &addrs {
            let r = self
                .peer_client()
                .call(a, PeerMethod::Forward, data.clone(), Duration::from_secs(1))
                .await;
            if let Ok(Ok(ForwardResponse::Membership(Ok(MembershipReply::IsMember(is))))) =
                r.map(|b| decode::<ForwardResponse>(&b))
            {
                return !is;
            }
        }
        false
    }

    async fn stop_removed(&self) {
        let me = self.member_id();
        tracing::error!(
            member_id = format!("{me:x}"),
            "this member was removed from the cluster; stopping"
        );
        // A removed leader first lets openraft hand leadership over.
        let deadline = Instant::now() + Duration::from_millis(self.config().election_timeout_ms);
        while self.raft().is_leader() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let st = self.membership_state();
        let mut b = rocksdb::WriteBatch::default();
        b.put_cf(st.db.cf(CF_META), KEY_MEMBER_ID, me.to_be_bytes());
        b.put_cf(st.db.cf(CF_META), KEY_REMOVED, b"1");
        if let Err(e) = st.db.write_synced(b) {
            tracing::error!("recording the removal in the data dir: {e}");
        }
        let _ = self.raft().shutdown().await;
        st.removed_tx.send_replace(true);
    }

    /// Promotes the voters `MemberAdd` added once they have caught up.
    async fn promote_caught_up(&self) {
        let st = self.membership_state();
        for id in st.pending() {
            let m = self
                .raft()
                .metrics()
                .borrow_watched()
                .membership_config
                .clone();
            if m.membership().get_node(&id).is_none() || m.membership().voter_ids().any(|v| v == id)
            {
                st.pending_voters.lock().expect("poisoned").remove(&id);
                continue;
            }
            if !self.learner_in_sync(id) {
                continue;
            }
            let _one_at_a_time = st.ops.lock().await;
            match self
                .change(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                .await
            {
                Ok(()) => {
                    tracing::info!(member_id = format!("{id:x}"), "promoted the added voter");
                    st.pending_voters.lock().expect("poisoned").remove(&id);
                }
                Err(e) => tracing::debug!("promoting {id:x}: {e}"),
            }
        }
    }
}

/// Sends openraft's transfer-leader message to `addr` (the network's
/// `transfer_leader`).
pub(crate) async fn send_transfer_leader(
    client: &PeerClient,
    addr: &str,
    req: TransferLeaderRequest<TypeConfig>,
    timeout: Duration,
) -> Result<TransferLeaderResponse<TypeConfig>, openraft::errors::RPCError<TypeConfig>> {
    use openraft::errors::{NetworkError, RPCError, Unreachable};
    let data = encode(&ForwardRequest::Membership(
        MembershipRequest::TransferLeader(req),
    ))
    .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    let out = client
        .call(addr, PeerMethod::Forward, data, timeout)
        .await
        .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
    match decode::<ForwardResponse>(&out) {
        Ok(ForwardResponse::Membership(Ok(MembershipReply::Transfer(r)))) => Ok(r),
        other => Err(RPCError::Network(NetworkError::new(
            &std::io::Error::other(format!("unexpected transfer-leader answer {other:?}")),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::check_peer_addr;
    use crate::membership::leader::ready_to_add_voter;

    #[test]
    fn voter_add_readiness_is_etcds() {
        assert!(ready_to_add_voter(1, 1), "1 -> 2 is allowed");
        assert!(ready_to_add_voter(2, 2), "2 of 3");
        assert!(!ready_to_add_voter(1, 2), "1 of 3 started");
        assert!(ready_to_add_voter(3, 3), "3 of 4");
        assert!(!ready_to_add_voter(2, 3), "2 of 4 is no quorum");
    }

    #[test]
    fn peer_urls() {
        assert_eq!(
            check_peer_addr("http://127.0.0.1:2380").unwrap(),
            "127.0.0.1:2380"
        );
        assert_eq!(check_peer_addr("10.0.0.1:7").unwrap(), "10.0.0.1:7");
        for bad in [
            "",
            "http://",
            "127.0.0.1",
            "http://h:0",
            "http://h:x",
            "a/b:1",
        ] {
            assert_eq!(check_peer_addr(bad), Err(MemberError::BadUrls), "{bad}");
        }
    }

    #[test]
    fn codes_are_etcds() {
        assert_eq!(
            MemberError::NotFound.to_status().code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            MemberError::LearnerNotReady.to_status().message(),
            "etcdserver: can only promote a learner member which is in sync with leader"
        );
        assert_eq!(
            MemberError::NotEnoughStarted.to_status().code(),
            tonic::Code::FailedPrecondition
        );
    }
}
