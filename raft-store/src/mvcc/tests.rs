use std::collections::BTreeMap;

use keel_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    response_op::Response,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use proptest::prelude::*;

use super::*;

fn put(m: &mut Mvcc, k: &str, v: &str) -> i64 {
    let req = TxnRequest {
        success: vec![op_put(k, v)],
        ..Default::default()
    };
    m.txn(&req, TxnLimits::default()).unwrap();
    m.current_revision()
}

fn del(m: &mut Mvcc, k: &str, end: &str) -> i64 {
    let req = TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    m.txn(&req, TxnLimits::default()).unwrap();
    m.current_revision()
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    }
}

fn get(m: &Mvcc, k: &str, rev: i64) -> Result<Option<String>, StoreError> {
    let r = m.range(&RangeRequest {
        key: k.into(),
        revision: rev,
        ..Default::default()
    })?;
    Ok(r.kvs
        .first()
        .map(|kv| String::from_utf8(kv.value.clone()).unwrap()))
}

#[test]
fn revisions_versions_and_past_reads() {
    let mut m = Mvcc::new();
    assert_eq!(m.current_revision(), 1);
    let r2 = put(&mut m, "a", "1");
    let r3 = put(&mut m, "a", "2");
    assert_eq!((r2, r3), (2, 3));
    let kv = m.get_at(b"a", 3).unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(get(&m, "a", 2).unwrap().as_deref(), Some("1"));
    let r4 = del(&mut m, "a", "");
    assert_eq!(get(&m, "a", r4).unwrap(), None);
    assert_eq!(get(&m, "a", 3).unwrap().as_deref(), Some("2"));
    // Recreated key starts a new generation.
    put(&mut m, "a", "3");
    let kv = m.get_at(b"a", 5).unwrap();
    assert_eq!((kv.create_revision, kv.version), (5, 1));
    assert_eq!(get(&m, "a", 9), Err(StoreError::FutureRevision));
}

#[test]
fn compaction_keeps_readable_revision_and_rejects_older() {
    let mut m = Mvcc::new();
    put(&mut m, "a", "1"); // 2
    put(&mut m, "b", "1"); // 3
    put(&mut m, "a", "2"); // 4
    del(&mut m, "b", ""); // 5
    put(&mut m, "c", "1"); // 6
    m.compact(5).unwrap();
    assert_eq!(get(&m, "a", 5).unwrap().as_deref(), Some("2"));
    assert_eq!(get(&m, "b", 5).unwrap(), None);
    assert_eq!(
        get(&m, "a", 4),
        Err(StoreError::Compacted {
            compact_revision: 5
        })
    );
    assert!(matches!(m.compact(5), Err(StoreError::Compacted { .. })));
    assert!(matches!(m.compact(99), Err(StoreError::FutureRevision)));
    // The tombstone at 5 is kept for watchers starting at 5.
    let evs = m.events_between(5, 6).unwrap();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].event.r#type, EventType::Delete as i32);
    assert!(m.events_between(4, 6).is_err());
    m.compact(6).unwrap();
    assert!(
        !m.keys.contains_key(b"b".as_slice()),
        "old tombstone removed"
    );
}

#[test]
fn range_prefix_limit_sort_and_count() {
    let mut m = Mvcc::new();
    for (k, v) in [("p/a", "3"), ("p/b", "1"), ("p/c", "2"), ("q", "0")] {
        put(&mut m, k, v);
    }
    let mut req = RangeRequest {
        key: "p/".into(),
        range_end: "p0".into(),
        limit: 2,
        ..Default::default()
    };
    let r = m.range(&req).unwrap();
    assert_eq!((r.count, r.more, r.kvs.len()), (3, true, 2));
    assert_eq!(r.kvs[0].key, b"p/a");
    req.limit = 0;
    req.sort_target = 4; // VALUE
    req.sort_order = 2; // DESCEND
    let r = m.range(&req).unwrap();
    let vals: Vec<_> = r.kvs.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(vals, vec![b"3".to_vec(), b"2".to_vec(), b"1".to_vec()]);
    let all = m
        .range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            count_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((all.count, all.kvs.len()), (4, 0));
    assert_eq!(
        m.range(&RangeRequest {
            key: "b".into(),
            range_end: "a".into(),
            ..Default::default()
        }),
        Err(StoreError::RangeEndBeforeKey)
    );
    assert_eq!(m.range(&RangeRequest::default()), Err(StoreError::EmptyKey));
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, v: TargetUnion) -> Compare {
    Compare {
        key: key.into(),
        target: target as i32,
        result: result as i32,
        target_union: Some(v),
        range_end: vec![],
    }
}

#[test]
fn txn_compares_choose_branch_atomically() {
    let mut m = Mvcc::new();
    put(&mut m, "a", "x"); // rev 2
    let cases = [
        (
            cmp(
                "a",
                CompareTarget::Value,
                CompareResult::Equal,
                TargetUnion::Value("x".into()),
            ),
            true,
        ),
        (
            cmp(
                "a",
                CompareTarget::Value,
                CompareResult::Equal,
                TargetUnion::Value("y".into()),
            ),
            false,
        ),
        (
            cmp(
                "a",
                CompareTarget::Version,
                CompareResult::Equal,
                TargetUnion::Version(1),
            ),
            true,
        ),
        (
            cmp(
                "a",
                CompareTarget::Create,
                CompareResult::Less,
                TargetUnion::CreateRevision(3),
            ),
            true,
        ),
        (
            cmp(
                "a",
                CompareTarget::Mod,
                CompareResult::Greater,
                TargetUnion::ModRevision(2),
            ),
            false,
        ),
        (
            cmp(
                "a",
                CompareTarget::Lease,
                CompareResult::Equal,
                TargetUnion::Lease(0),
            ),
            true,
        ),
        (
            cmp(
                "zz",
                CompareTarget::Version,
                CompareResult::Equal,
                TargetUnion::Version(0),
            ),
            true,
        ),
        (
            cmp(
                "zz",
                CompareTarget::Mod,
                CompareResult::NotEqual,
                TargetUnion::ModRevision(0),
            ),
            false,
        ),
    ];
    for (c, expect) in cases {
        let before = m.current_revision();
        let req = TxnRequest {
            compare: vec![c.clone()],
            success: vec![op_put("s", "1")],
            failure: vec![op_put("f", "1")],
        };
        let (resp, _, _) = m.txn(&req, TxnLimits::default()).unwrap();
        assert_eq!(resp.succeeded, expect, "{c:?}");
        assert_eq!(m.current_revision(), before + 1);
    }
}

#[test]
fn txn_rejects_bad_input_and_changes_nothing() {
    let mut m = Mvcc::new();
    put(&mut m, "a", "x");
    let rev = m.current_revision();
    let dup = TxnRequest {
        success: vec![op_put("k", "1"), op_put("k", "2")],
        ..Default::default()
    };
    assert_eq!(
        m.txn(&dup, TxnLimits::default()).unwrap_err(),
        StoreError::DuplicateKey
    );
    let overlap = TxnRequest {
        success: vec![
            op_put("k", "1"),
            RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: "a".into(),
                    range_end: "z".into(),
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        m.txn(&overlap, TxnLimits::default()).unwrap_err(),
        StoreError::DuplicateKey
    );
    let many = TxnRequest {
        success: (0..129).map(|i| op_put(&format!("k{i}"), "v")).collect(),
        ..Default::default()
    };
    assert_eq!(
        m.txn(&many, TxnLimits::default()).unwrap_err(),
        StoreError::TooManyOps
    );
    let no_lease = TxnRequest {
        success: vec![
            op_put("ok", "1"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: "l".into(),
                    lease: 42,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        m.txn(&no_lease, TxnLimits::default()).unwrap_err(),
        StoreError::LeaseNotFound
    );
    let empty_key = TxnRequest {
        success: vec![op_put("", "1")],
        ..Default::default()
    };
    assert_eq!(
        m.txn(&empty_key, TxnLimits::default()).unwrap_err(),
        StoreError::EmptyKey
    );
    assert_eq!(m.current_revision(), rev);
    assert!(m.get_at(b"ok", rev).is_none());
}

#[test]
fn txn_reads_see_earlier_writes_and_share_one_revision() {
    let mut m = Mvcc::new();
    let req = TxnRequest {
        success: vec![
            op_put("a", "1"),
            op_put("b", "2"),
            RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key: "a".into(),
                    range_end: "c".into(),
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    let (resp, changes, events) = m.txn(&req, TxnLimits::default()).unwrap();
    let Some(Response::ResponseRange(r)) = &resp.responses[2].response else {
        panic!("range response expected");
    };
    assert_eq!(r.kvs.len(), 2);
    assert_eq!(changes.len(), 2);
    assert!(events.iter().all(|e| e.rev.main == 2));
    assert_eq!(events[0].rev.sub, 0);
    assert_eq!(events[1].rev.sub, 1);
}

#[test]
fn lease_revoke_deletes_attached_keys_in_one_revision() {
    let mut m = Mvcc::new();
    m.lease_grant(7, 10).unwrap();
    assert_eq!(m.lease_grant(7, 10).unwrap_err(), StoreError::LeaseExists);
    for k in ["x", "y"] {
        let req = TxnRequest {
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: k.into(),
                    value: "v".into(),
                    lease: 7,
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        m.txn(&req, TxnLimits::default()).unwrap();
    }
    put(&mut m, "x", "detached"); // rewritten without lease: detaches
    assert_eq!(m.lease(7).unwrap().keys.len(), 1);
    let (_, events) = m.lease_revoke(7).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.kv.as_ref().unwrap().key, b"y");
    assert!(m.get_at(b"y", m.current_revision()).is_none());
    assert!(m.get_at(b"x", m.current_revision()).is_some());
    assert_eq!(m.lease_revoke(7).unwrap_err(), StoreError::LeaseNotFound);
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Del(u8, u8),
    Compact(u8),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..6, 0u8..3).prop_map(|(k, n)| Op::Del(k, n)),
        1 => any::<u8>().prop_map(Op::Compact),
    ]
}

fn key(k: u8) -> String {
    format!("k{k}")
}

proptest! {
    /// Against a model that keeps a full copy of the map at every revision:
    /// reads at any retained revision agree, and events replay to the state.
    #[test]
    fn matches_snapshot_model(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let mut m = Mvcc::new();
        let mut model: Vec<BTreeMap<String, u8>> = vec![BTreeMap::new(), BTreeMap::new()];
        for op in ops {
            let mut state = model.last().unwrap().clone();
            match op {
                Op::Put(k, v) => {
                    put(&mut m, &key(k), &v.to_string());
                    state.insert(key(k), v);
                    model.push(state);
                }
                Op::Del(k, n) => {
                    let end = key(k + n);
                    let before = m.current_revision();
                    let end_arg = if n == 0 { String::new() } else { end.clone() };
                    del(&mut m, &key(k), &end_arg);
                    let gone: Vec<String> = state
                        .keys()
                        .filter(|x| if n == 0 { **x == key(k) } else { **x >= key(k) && **x < end })
                        .cloned()
                        .collect();
                    if gone.is_empty() {
                        prop_assert_eq!(m.current_revision(), before);
                    } else {
                        for g in gone { state.remove(&g); }
                        model.push(state);
                    }
                }
                Op::Compact(r) => {
                    let rev = (r as i64) % (m.current_revision() + 1);
                    if rev > m.compact_revision() {
                        m.compact(rev).unwrap();
                    }
                }
            }
            prop_assert_eq!(m.current_revision() as usize, model.len() - 1);
        }
        for rev in 1..model.len() as i64 {
            for k in 0u8..6 {
                let got = get(&m, &key(k), rev);
                if rev < m.compact_revision() {
                    prop_assert!(got.is_err());
                } else {
                    let want = model[rev as usize].get(&key(k)).map(|v| v.to_string());
                    prop_assert_eq!(got.unwrap(), want);
                }
            }
        }
        // Replaying retained events from the compaction point reproduces the state.
        let from = m.compact_revision().max(1);
        let mut replay: BTreeMap<String, String> = model[from as usize]
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let events = m.events_between(from + 1, m.current_revision()).unwrap();
        let mut last = Revision::new(0, 0);
        for e in events {
            prop_assert!(e.rev > last);
            last = e.rev;
            let kv = e.event.kv.unwrap();
            let k = String::from_utf8(kv.key).unwrap();
            if e.event.r#type == EventType::Put as i32 {
                replay.insert(k, String::from_utf8(kv.value).unwrap());
            } else {
                prop_assert!(replay.remove(&k).is_some(), "delete of a live key");
            }
        }
        let want: BTreeMap<String, String> = model.last().unwrap().iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        prop_assert_eq!(replay, want);
    }
}
