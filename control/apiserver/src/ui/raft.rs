//! `GET /ui/api/raft`: the raft store's members, leader, term, applied
//! index and lag as JSON, read from this replica without waiting for the
//! cluster (so it answers during an election too).
//!
//! Lag is what the leader knows: its last log index minus the index each
//! member's log matches. A follower does not track the others, so when a
//! follower answers, only its own applied index is reported and
//! `lagKnown` is false; the page says so.

use keel_store::progress::Progress;
use keel_store::{MemberInfo, Store};
use serde_json::{json, Value};

/// The document for this replica's store.
pub fn status(store: &Store) -> Value {
    document(
        &store.progress(),
        &store.members(),
        store.current_revision(),
    )
}

fn hex(id: u64) -> String {
    format!("{id:x}")
}

/// Builds the JSON from the parts (kept pure so it is tested without a store).
pub fn document(p: &Progress, members: &[MemberInfo], revision: i64) -> Value {
    let leader_answers = p.leader == Some(p.member_id);
    let rows: Vec<Value> = members
        .iter()
        .map(|m| {
            let role = if p.leader == Some(m.id) {
                "leader"
            } else if p.learners.contains(&m.id) {
                "learner"
            } else {
                "follower"
            };
            // The leader's own log is its last index by definition; its
            // replication entry for itself can trail by the entry in flight.
            let matched = if leader_answers && m.id == p.member_id {
                Some(p.last_log_index)
            } else {
                p.matched
                    .as_ref()
                    .and_then(|r| r.get(&m.id).copied().flatten())
            };
            let lag = matched
                .filter(|_| leader_answers)
                .map(|i| p.last_log_index.saturating_sub(i));
            json!({
                "id": hex(m.id),
                "name": m.name,
                "peerURL": m.peer_addr,
                "clientURL": m.client_addr,
                "role": role,
                "self": m.id == p.member_id,
                "matchedIndex": matched,
                "lag": lag,
                "appliedIndex": (m.id == p.member_id).then_some(p.applied_index),
            })
        })
        .collect();
    json!({
        "kind": "RaftStatus",
        "answeredBy": hex(p.member_id),
        "leader": p.leader.map(hex),
        "term": p.term,
        "lastLogIndex": p.last_log_index,
        "appliedIndex": p.applied_index,
        "committedIndex": p.committed_index,
        "revision": revision,
        "lagKnown": leader_answers,
        "members": rows,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn member(id: u64) -> MemberInfo {
        MemberInfo {
            id,
            name: format!("m{id}"),
            peer_addr: format!("127.0.0.1:{id}"),
            client_addr: None,
        }
    }

    fn progress(me: u64, matched: Option<BTreeMap<u64, Option<u64>>>) -> Progress {
        Progress {
            member_id: me,
            leader: Some(1),
            term: 7,
            last_log_index: 100,
            applied_index: 98,
            committed_index: (me == 1).then_some(99),
            voters: vec![1, 2],
            learners: vec![3],
            matched,
        }
    }

    #[test]
    fn the_leader_reports_every_members_lag() {
        let matched = BTreeMap::from([(1, Some(99)), (2, Some(90)), (3, None)]);
        let d = document(
            &progress(1, Some(matched)),
            &[member(1), member(2), member(3)],
            5,
        );
        assert_eq!(d["leader"], "1");
        assert_eq!(d["term"], 7);
        assert_eq!(d["lagKnown"], true);
        let m = d["members"].as_array().unwrap();
        assert_eq!(m[0]["role"], "leader");
        assert_eq!(m[0]["lag"], 0);
        assert_eq!(m[0]["appliedIndex"], 98);
        assert_eq!(m[1]["role"], "follower");
        assert_eq!(m[1]["lag"], 10);
        assert_eq!(m[1]["appliedIndex"], Value::Null);
        assert_eq!(m[2]["role"], "learner");
        assert_eq!(m[2]["lag"], Value::Null, "nothing replicated yet");
    }

    #[test]
    fn a_follower_reports_only_itself() {
        let d = document(&progress(2, None), &[member(1), member(2)], 5);
        assert_eq!(d["lagKnown"], false);
        assert_eq!(d["answeredBy"], "2");
        let m = d["members"].as_array().unwrap();
        assert_eq!(m[1]["self"], true);
        assert_eq!(m[1]["appliedIndex"], 98);
        assert!(m.iter().all(|m| m["lag"].is_null()));
    }
}
