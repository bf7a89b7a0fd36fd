//! Failover after the leader's process dies: the followers find its peer
//! port refusing connections and elect a new leader at once, instead of
//! honouring the dead leader's lease (openraft rejects votes for
//! `election_timeout_max` after the last heartbeat).

mod util;

use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::StatusRequest;
use util::{channel, Cluster};

async fn term(c: &Cluster, i: usize) -> u64 {
    let mut m = MaintenanceClient::new(channel(&c.endpoint(i)).await);
    m.status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .raft_term
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leaders_followers_campaign_at_once() {
    let mut c = Cluster::start(3, &["--disable-api"]);
    c.wait_ready().await;
    for round in 0..2 {
        let leader = c.leader().await;
        let term_before = term(&c, leader).await;
        let logs_before: Vec<usize> = (0..3).map(|i| c.log(i).len()).collect();
        c.kill(leader);
        let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        for (n, i) in others.iter().enumerate() {
            c.put_retry(*i, &format!("round{round}/{n}"), "v").await;
        }
        let new_leader = c.leader().await;
        assert_ne!(new_leader, leader);
        assert!(term(&c, new_leader).await > term_before);
        let campaigned = others
            .iter()
            .any(|i| c.log(*i)[logs_before[*i]..].contains("refuses connections: campaigning now"));
        assert!(
            campaigned,
            "no follower noticed the dead leader:\n{}\n{}",
            c.log(others[0]),
            c.log(others[1])
        );
        c.spawn(leader);
        c.wait_ready().await;
    }
}

/// PreVote: a follower frozen for several election timeouts (SIGSTOP)
/// wakes up with its election timer long expired. Without PreVote it would
/// bump the term and depose a healthy leader; with it, the others (who
/// still hear from the leader) refuse the pre-vote and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_back_from_a_freeze_does_not_depose_the_leader() {
    let c = Cluster::start(3, &["--disable-api"]);
    c.wait_ready().await;
    let leader = c.leader().await;
    let term_before = term(&c, leader).await;
    let f = (leader + 1) % 3;
    let pid = c.replicas[f].child.as_ref().unwrap().id() as i32;
    // SAFETY: signals to a child process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    unsafe { libc::kill(pid, libc::SIGCONT) };
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    c.put_retry(f, "after-freeze", "v").await;
    assert_eq!(c.leader().await, leader, "{}", c.log(f));
    assert_eq!(term(&c, leader).await, term_before, "{}", c.log(f));
}
