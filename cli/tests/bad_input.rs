//! Bad input gets etcd's gRPC error code and message, and changes nothing;
//! a data dir that is not ours is refused and left untouched.

mod util;

use std::process::Command;

use keel_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    lease_client::LeaseClient,
    request_op::Request,
    CompactionRequest, Compare, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use tonic::{transport::Channel, Code};
use util::Cluster;

fn put_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.into(),
            value: "v".into(),
            ..Default::default()
        })),
    }
}

async fn revision(kv: &mut KvClient<Channel>) -> i64 {
    let r = kv
        .range(RangeRequest {
            key: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    r.into_inner().header.unwrap().revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_etcd_errors_and_change_nothing() {
    let c = Cluster::start(1, &["--max-request-bytes", "4096", "--disable-api"]);
    c.wait_ready().await;
    let mut kv = c.kv(0).await;
    for i in 0..5 {
        c.put_retry(0, "k", &i.to_string()).await;
    }
    kv.compact(CompactionRequest {
        revision: 4,
        physical: false,
    })
    .await
    .unwrap();
    let before = revision(&mut kv).await;

    let put = |key: &str, value: Vec<u8>, lease: i64| PutRequest {
        key: key.into(),
        value,
        lease,
        ..Default::default()
    };
    let range = |key: &str, end: &str, rev: i64| RangeRequest {
        key: key.into(),
        range_end: end.into(),
        revision: rev,
        ..Default::default()
    };
    let cases: Vec<(&str, Result<(), tonic::Status>, Code, &str)> = vec![
        (
            "empty key",
            kv.put(put("", b"v".to_vec(), 0)).await.map(|_| ()),
            Code::InvalidArgument,
            "key is not provided",
        ),
        (
            "too large",
            kv.put(put("big", vec![b'x'; 8192], 0)).await.map(|_| ()),
            Code::InvalidArgument,
            "request is too large",
        ),
        (
            "range end before key",
            kv.range(range("b", "a", 0)).await.map(|_| ()),
            Code::InvalidArgument,
            "range end is before key",
        ),
        (
            "future revision",
            kv.range(range("k", "", 1000)).await.map(|_| ()),
            Code::OutOfRange,
            "future revision",
        ),
        (
            "compacted revision",
            kv.range(range("k", "", 2)).await.map(|_| ()),
            Code::OutOfRange,
            "has been compacted",
        ),
        (
            "unknown lease",
            kv.put(put("l", b"v".to_vec(), 12345)).await.map(|_| ()),
            Code::NotFound,
            "requested lease not found",
        ),
        (
            "too many ops",
            kv.txn(TxnRequest {
                success: (0..129).map(|i| put_op(&format!("t{i}"))).collect(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "too many operations",
        ),
        (
            "duplicate keys",
            kv.txn(TxnRequest {
                compare: vec![Compare {
                    key: "k".into(),
                    target: CompareTarget::Version as i32,
                    result: CompareResult::Greater as i32,
                    target_union: Some(TargetUnion::Version(0)),
                    range_end: vec![],
                }],
                success: vec![put_op("d"), put_op("d")],
                failure: vec![],
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "duplicate key",
        ),
        (
            "compact to the future",
            kv.compact(CompactionRequest {
                revision: 1000,
                physical: false,
            })
            .await
            .map(|_| ()),
            Code::OutOfRange,
            "future revision",
        ),
        (
            "compact below compacted",
            kv.compact(CompactionRequest {
                revision: 3,
                physical: false,
            })
            .await
            .map(|_| ()),
            Code::OutOfRange,
            "has been compacted",
        ),
    ];
    let mut lease = LeaseClient::new(util::channel(&c.endpoint(0)).await);
    let too_long = lease
        .lease_grant(LeaseGrantRequest {
            ttl: 10_000_000_000,
            id: 0,
        })
        .await
        .map(|_| ());
    let cases = cases.into_iter().chain([(
        "lease ttl too large",
        too_long,
        Code::OutOfRange,
        "too large lease TTL",
    )]);
    for (name, got, code, msg) in cases {
        let err = got.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert!(err.message().contains(msg), "{name}: {:?}", err.message());
    }
    assert_eq!(
        revision(&mut kv).await,
        before,
        "a rejected request changed the store"
    );
}

fn keel_server(data_dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let (client, peer) = (util::free_port(), util::free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
    cmd.args(["server", "--name", "a", "--data-dir"])
        .arg(data_dir)
        .args(["--listen-client", &format!("127.0.0.1:{client}")])
        .args(["--listen-peer", &format!("127.0.0.1:{peer}")])
        .arg("--disable-api")
        .args(extra);
    // Refusals exit at once; a server that starts is stopped by the timeout.
    let out = Command::new("timeout")
        .arg("5")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .output()
        .unwrap();
    out
}

#[test]
fn refuses_foreign_and_other_cluster_data_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("precious.txt"), "keep").unwrap();
    let out = keel_server(&foreign, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a keel data dir"), "{err}");
    assert_eq!(
        std::fs::read_dir(&foreign).unwrap().count(),
        1,
        "nothing written"
    );
    assert_eq!(
        std::fs::read_to_string(foreign.join("precious.txt")).unwrap(),
        "keep"
    );

    // A single-replica store, then the same dir under another cluster.
    let data = dir.path().join("data");
    let out = keel_server(&data, &[]);
    assert_eq!(
        out.status.code(),
        Some(124),
        "first start runs until stopped"
    );
    let out = keel_server(
        &data,
        &[
            "--initial-cluster",
            "a=http://127.0.0.1:1,b=http://127.0.0.1:2,c=http://127.0.0.1:3",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to cluster"), "{err}");
}
