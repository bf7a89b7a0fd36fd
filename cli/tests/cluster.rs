//! A 3-replica keel cluster of real processes on loopback: writes through
//! any replica, leader SIGKILL and re-election, restart and catch-up by
//! snapshot after the log was purged, no quorum answers Unavailable.

mod util;

use std::time::{Duration, Instant};

use keel_proto::etcdserverpb::{PutRequest, RangeRequest};
use util::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_reelection_and_catch_up_by_snapshot() {
    // Snapshot every 50 entries so the survivors purge their logs and the
    // restarted replica can only catch up by snapshot.
    let mut c = Cluster::start(3, &["--snapshot-count", "50", "--disable-api"]);
    c.wait_ready().await;
    for i in 0..3 {
        c.put_retry(i, &format!("via/{i}"), "x").await;
    }
    let leader = c.leader().await;
    c.kill(leader);
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // Writes continue once a new leader is elected, through either survivor.
    for n in 0..200 {
        let i = others[n % 2];
        c.put_retry(i, &format!("after/{n:03}"), &format!("v{n}"))
            .await;
    }
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);

    c.spawn(leader);
    // The restarted replica converges to the same data and revisions.
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = c.local_dump(others[0]).await.expect("survivor answers");
    loop {
        let got = tokio::time::timeout(Duration::from_secs(2), c.local_dump(leader)).await;
        if let Ok(Some(got)) = got {
            if got == want {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "restarted replica did not catch up:\n{}",
            c.log(leader)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(want.1.len(), 3 + 200 + 1);
    assert!(
        c.log(leader).contains("installed snapshot from leader"),
        "the restarted replica should have caught up by snapshot:\n{}",
        c.log(leader)
    );
    // And it serves linearizable reads and takes writes again.
    let rev = c.put_retry(leader, "back", "1").await;
    let mut kv = c.kv(leader).await;
    let r = kv
        .range(RangeRequest {
            key: "back".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.kvs[0].mod_revision, rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_quorum_answers_unavailable_in_bounded_time() {
    let mut c = Cluster::start(3, &["--request-timeout-ms", "1500", "--disable-api"]);
    c.wait_ready().await;
    c.kill(1);
    c.kill(2);
    let mut kv = c.kv(0).await;
    let put = kv.put(PutRequest {
        key: "k".into(),
        value: "v".into(),
        ..Default::default()
    });
    let err = tokio::time::timeout(Duration::from_secs(20), put)
        .await
        .expect("a write without quorum must fail, not hang")
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let get = kv.range(RangeRequest {
        key: "k".into(),
        ..Default::default()
    });
    let err = tokio::time::timeout(Duration::from_secs(20), get)
        .await
        .expect("a linearizable read without quorum must fail, not hang")
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    // A serializable read still answers from local state.
    let r = kv
        .range(RangeRequest {
            key: "__ready".into(),
            serializable: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.kvs.len(), 1);
}

/// Acknowledged writes survive SIGKILL of any replica at any moment,
/// repeatedly, the leader included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_repeated_kills() {
    let mut c = Cluster::start(
        3,
        &[
            "--snapshot-count",
            "100",
            "--request-timeout-ms",
            "2000",
            "--disable-api",
        ],
    );
    c.wait_ready().await;
    let mut acked = Vec::new();
    for round in 0..4 {
        let victim = if round % 2 == 0 {
            c.leader().await
        } else {
            round % 3
        };
        // Write concurrently with the kill: some writes are in flight when it lands.
        let eps: Vec<String> = (0..3).map(|i| c.endpoint(i)).collect();
        let writer = tokio::spawn(async move {
            let mut ok = Vec::new();
            for n in 0..60 {
                let key = format!("w/{round}/{n:03}");
                let mut kv = keel_proto::etcdserverpb::kv_client::KvClient::new(
                    util::channel(&eps[n % 3]).await,
                );
                let req = PutRequest {
                    key: key.clone().into(),
                    value: "v".into(),
                    ..Default::default()
                };
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), kv.put(req)).await {
                    ok.push(key);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ok
        });
        tokio::time::sleep(Duration::from_millis(100 + 37 * round as u64)).await;
        c.kill(victim);
        let ok = writer.await.unwrap();
        acked.extend(ok);
        c.spawn(victim);
        c.wait_ready().await;
    }
    assert!(
        acked.len() >= 40,
        "too few writes acknowledged: {}",
        acked.len()
    );
    let mut kv = c.kv(0).await;
    let r = kv
        .range(RangeRequest {
            key: "w/".into(),
            range_end: "w0".into(),
            keys_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let present: std::collections::BTreeSet<Vec<u8>> = r.kvs.into_iter().map(|kv| kv.key).collect();
    for k in &acked {
        assert!(
            present.contains(k.as_bytes()),
            "acknowledged write {k} lost"
        );
    }
}

/// `--auto-compaction-mode revision --auto-compaction-retention N` keeps the
/// last N revisions: older ones answer "compacted" once the leader compacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_compaction_by_revision_retention() {
    let c = Cluster::start(
        1,
        &[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "10",
            "--disable-api",
        ],
    );
    c.wait_ready().await;
    let mut last = 0;
    for i in 0..30 {
        last = c.put_retry(0, "k", &i.to_string()).await;
    }
    let mut kv = c.kv(0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let old = kv
            .range(RangeRequest {
                key: "k".into(),
                revision: 3,
                ..Default::default()
            })
            .await;
        match old {
            Err(e) if e.message().contains("compacted") => break,
            _ => assert!(Instant::now() < deadline, "revision 3 never compacted"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The retained window still reads.
    let r = kv
        .range(RangeRequest {
            key: "k".into(),
            revision: last - 5,
            ..Default::default()
        })
        .await
        .expect("revisions inside the retention window stay readable")
        .into_inner();
    assert_eq!(r.kvs.len(), 1);
}
