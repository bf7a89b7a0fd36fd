//! Leader election on a Lease: one leader at a time, fast hand-over on a
//! clean stop, takeover after expiry when the holder vanishes.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::time::Duration;

use keel_controllers::leader::{self, ElectionConfig};
use support::TestServer;
use tokio::sync::watch;

fn cfg(id: &str) -> ElectionConfig {
    ElectionConfig {
        namespace: "kube-system".into(),
        name: "test-election".into(),
        identity: id.into(),
        lease_duration: Duration::from_millis(1500),
        retry_period: Duration::from_millis(100),
    }
}

async fn wait_for(rx: &mut watch::Receiver<bool>, want: bool, within: Duration) {
    tokio::time::timeout(within, rx.wait_for(|v| *v == want))
        .await
        .unwrap_or_else(|_| panic!("never became {want}"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_then_handover() {
    let s = TestServer::start().await;
    let mut a = leader::spawn(s.in_process("a"), cfg("a"));
    wait_for(&mut a, true, Duration::from_secs(5)).await;
    let mut b = leader::spawn(s.in_process("b"), cfg("b"));
    // b never leads while a renews.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!(*a.borrow() && *b.borrow()), "two leaders");
        assert!(!*b.borrow());
    }
    let lease = s
        .get("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/test-election")
        .await;
    assert_eq!(lease.body["spec"]["holderIdentity"], "a");
    // A clean stop releases the lease: b takes over well before expiry.
    drop(a);
    wait_for(&mut b, true, Duration::from_secs(1)).await;
    let lease = s
        .get("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/test-election")
        .await;
    assert_eq!(lease.body["spec"]["holderIdentity"], "b");
    assert_eq!(lease.body["spec"]["leaseTransitions"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_holder_is_replaced_after_the_lease_expires() {
    let s = TestServer::start().await;
    // A holder that stopped renewing without releasing (a crashed replica).
    let crashed = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "test-election", "namespace": "kube-system"},
        "spec": {"holderIdentity": "gone", "leaseDurationSeconds": 1,
                 "renewTime": "2026-01-01T00:00:00.000000Z"}
    });
    let r = s
        .post(
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
            &crashed,
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let started = tokio::time::Instant::now();
    let mut b = leader::spawn(s.in_process("b"), cfg("b"));
    wait_for(&mut b, true, Duration::from_secs(5)).await;
    let took = started.elapsed();
    // Judged by b's own clock from when it first saw the record.
    assert!(
        took >= Duration::from_millis(1500),
        "took over after {took:?}"
    );
}
