//! Fast failover when the leader's process is gone.
//!
//! Where the time went: openraft's followers honour the dead leader's lease
//! (`election_timeout_max`, 2 election timeouts) and reject every vote
//! before it expires, so the first candidate usually loses and campaigns
//! again a whole election timeout later, and a candidate rejected by a
//! longer log even waits 2 × `election_timeout_max` more. Meanwhile
//! followers forwarded writes to the dead leader and answered "leader
//! changed". Writes failed for ~3.5 s with a 1 s election timeout.
//!
//! What this does: each follower probes its leader's peer port every
//! heartbeat. A *refused* connection (the host answers, nobody listens:
//! the process died or is restarting) is positive evidence the leader is
//! gone; a timeout (partition, slow host) is not, and leaves raft's normal
//! timers in charge. On that evidence, after a random stagger so the two
//! followers do not split the vote, the follower acts as if the dead
//! leader had handed leadership to it (openraft's leadership transfer):
//! the lease is void and it campaigns at once. Raft's safety is untouched:
//! the candidate still needs a quorum of votes and an up-to-date log.
//!
//! A replica that merely can't reach the leader (partitioned) never
//! triggers this, and PreVote (enabled in the raft config) keeps it from
//! disrupting the cluster when it comes back.
//!
//! While the leader is known dead, writes are not forwarded to it: they
//! wait (within the request deadline) for the next leader. Such a write was
//! never sent, so retrying it cannot apply it twice.

use std::io::ErrorKind;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use openraft::async_runtime::WatchReceiver;
use openraft::raft::TransferLeaderRequest;
use rand::Rng;

use super::Store;
use crate::types::NodeId;

impl Store {
    /// Whether `leader` was found dead (its peer port refuses connections)
    /// and no other leader is known since.
    pub(super) fn leader_known_dead(&self, leader: NodeId) -> bool {
        self.inner.dead_leader.load(Ordering::Relaxed) == leader
    }

    pub(super) async fn leader_watch_loop(&self) {
        if !matches!(self.inner.cfg.transport, keel_net::Transport::Tcp) {
            return; // simulations have no real sockets to probe
        }
        let period = Duration::from_millis(self.inner.cfg.heartbeat_ms.max(10));
        // When this replica first and last campaigned because the leader died.
        let mut campaigned: Option<(Instant, Instant)> = None;
        while self.is_running() {
            tokio::time::sleep(period).await;
            let m = self.inner.raft.metrics().borrow_watched().clone();
            if m.current_leader.is_none() {
                // A split vote after the leader died (both followers
                // campaigned in the same term), or a campaign lost to a
                // longer log: try again after a random pause rather than a
                // whole election timeout. With PreVote, so a replica whose
                // log can't win never bumps the term. For a few seconds
                // only; then raft's own timers are in charge.
                if let Some((first, last)) = campaigned {
                    let pause = period * rand::thread_rng().gen_range(2..=6);
                    if first.elapsed() > Duration::from_secs(5) {
                        campaigned = None;
                    } else if last.elapsed() >= pause {
                        tracing::info!("no leader after campaigning: campaigning again");
                        let _ = self.inner.raft.trigger().elect(true).await;
                        campaigned = Some((first, Instant::now()));
                    }
                }
                continue;
            }
            campaigned = None;
            let Some(leader) = m.current_leader.filter(|l| *l != self.inner.id) else {
                self.inner.dead_leader.store(0, Ordering::Relaxed);
                continue;
            };
            let Some(node) = m.membership_config.membership().get_node(&leader) else {
                continue;
            };
            if !refused(&node.peer_addr, period).await {
                self.inner.dead_leader.store(0, Ordering::Relaxed);
                continue;
            }
            self.inner.dead_leader.store(leader, Ordering::Relaxed);
            if !m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == self.inner.id)
            {
                continue;
            }
            let stagger_ms = rand::thread_rng().gen_range(0..=2 * period.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(stagger_ms)).await;
            // Campaign only if nobody else has meanwhile (our vote would have
            // changed) and the leader is still gone.
            let now = self.inner.raft.metrics().borrow_watched().clone();
            if now.vote != m.vote || !refused(&node.peer_addr, period).await {
                continue;
            }
            tracing::info!(
                leader = format!("{leader:x}"),
                "the leader's peer port refuses connections: campaigning now"
            );
            let req = TransferLeaderRequest::new(now.vote, self.inner.id, None);
            if let Err(e) = self.inner.raft.handle_transfer_leader(req).await {
                tracing::debug!("campaign after the leader's death: {e}");
            }
            let now = Instant::now();
            campaigned = Some((now, now));
        }
    }
}

/// True only when `addr` actively refuses a TCP connection.
async fn refused(addr: &str, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Err(e)) => e.kind() == ErrorKind::ConnectionRefused,
        _ => false,
    }
}
