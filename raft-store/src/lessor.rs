//! Lease expiry, decided by the leader alone.
//!
//! The replicated state holds which leases exist and their TTLs; when each
//! expires is the leader's in-memory clock. A replica that becomes leader
//! starts every existing lease afresh at `now + TTL` (as etcd's lessor
//! does on promotion), so a leader change never expires leases in bulk.
//! An expired lease is revoked by proposing `LeaseRevoke` through raft, so
//! every replica deletes the same keys at the same revision.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long to wait before proposing the revoke of one lease again.
const REVOKE_RETRY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Lessor {
    deadlines: Mutex<HashMap<i64, Instant>>,
}

impl Lessor {
    /// Forgets all deadlines (this replica is not the leader).
    pub fn demote(&self) {
        self.deadlines.lock().expect("lessor lock").clear();
    }

    /// Syncs with the leases that exist (`(id, ttl_s)`) and returns those
    /// that expired. Each returned lease is given a retry deadline, so a
    /// revoke in flight is not proposed on every tick.
    pub fn expired(&self, leases: &[(i64, i64)], now: Instant) -> Vec<i64> {
        let mut d = self.deadlines.lock().expect("lessor lock");
        d.retain(|id, _| leases.iter().any(|(l, _)| l == id));
        let mut out = Vec::new();
        for (id, ttl_s) in leases {
            let deadline = d.entry(*id).or_insert(now + secs(*ttl_s));
            if *deadline <= now {
                out.push(*id);
                *deadline = now + REVOKE_RETRY;
            }
        }
        out
    }

    /// Renews a lease that exists with `ttl_s`.
    pub fn keep_alive(&self, id: i64, ttl_s: i64, now: Instant) {
        self.deadlines
            .lock()
            .expect("lessor lock")
            .insert(id, now + secs(ttl_s));
    }

    /// Seconds left (rounded up); a lease not yet tracked has its full TTL.
    pub fn remaining_s(&self, id: i64, ttl_s: i64, now: Instant) -> i64 {
        match self.deadlines.lock().expect("lessor lock").get(&id) {
            Some(d) => {
                let left = d.saturating_duration_since(now);
                (left.as_millis() as i64 + 999) / 1000
            }
            None => ttl_s,
        }
    }
}

fn secs(ttl_s: i64) -> Duration {
    Duration::from_secs(ttl_s.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_keepalive_and_fresh_start_on_promotion() {
        let l = Lessor::default();
        let t0 = Instant::now();
        let leases = [(1, 5), (2, 10)];
        assert!(l.expired(&leases, t0).is_empty());
        assert_eq!(l.expired(&leases, t0 + Duration::from_secs(6)), vec![1]);
        // Not proposed again until the retry deadline.
        assert!(l
            .expired(&leases, t0 + Duration::from_millis(6500))
            .is_empty());
        l.keep_alive(2, 10, t0 + Duration::from_secs(8));
        assert!(l
            .expired(&[(2, 10)], t0 + Duration::from_secs(12))
            .is_empty());
        assert_eq!(l.remaining_s(2, 10, t0 + Duration::from_secs(12)), 6);
        // A new leader starts leases afresh.
        l.demote();
        let t1 = t0 + Duration::from_secs(100);
        assert!(l.expired(&[(2, 10)], t1).is_empty());
        assert_eq!(l.remaining_s(2, 10, t1), 10);
        assert_eq!(l.expired(&[(2, 10)], t1 + Duration::from_secs(10)), vec![2]);
    }
}
