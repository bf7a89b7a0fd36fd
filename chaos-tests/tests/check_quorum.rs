//! Check-quorum in a simulated 3-replica cluster: a leader cut off from
//! both followers stops reporting itself leader within a few election
//! timeouts, refuses linearizable reads and writes instead of answering
//! from its stale state, and once the partition heals it follows the new
//! leader without deposing it (PreVote).

use std::time::Duration;

use keel_chaos::sim::client::{Channels, Target};
use keel_chaos::sim::cluster::{add_replicas, clear_probes, replica_name};
use keel_chaos::sim::Mutation;
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest, StatusResponse};
use tonic::transport::Channel;

/// The simulated replicas' election timeout (`cluster::config`).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(300);

async fn status(ch: Channel) -> Option<StatusResponse> {
    let mut client = MaintenanceClient::new(ch);
    let r = tokio::time::timeout(Duration::from_secs(1), client.status(StatusRequest {})).await;
    r.ok()?.ok().map(|r| r.into_inner())
}

async fn put(ch: Channel, value: &str) -> Result<(), tonic::Status> {
    KvClient::new(ch)
        .put(PutRequest {
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn get(ch: Channel, serializable: bool) -> Result<String, tonic::Status> {
    let r = KvClient::new(ch)
        .range(RangeRequest {
            key: b"k".to_vec(),
            serializable,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(r.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .unwrap_or_default())
}

/// Polls `f` every 20 ms (simulated) until it yields, or panics after
/// `within` naming `what`.
async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn partitioned_leader_steps_down_and_returns_without_disruption() {
    let seed = 15;
    keel_store::runtime::seed_thread_rng(seed);
    clear_probes();
    let dir = tempfile::tempdir().unwrap();
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(120))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(Duration::from_millis(2))
        .tcp_capacity(1 << 20)
        .build();
    add_replicas(&mut sim, 3, dir.path(), Mutation::None);
    sim.client("probe", async move {
        let mut chans = Channels::new(Target::sim(3));
        let ch: Vec<Channel> = (0..3).map(|i| chans.channel(i)).collect();

        // A leader all three agree on, and a write through it.
        let (old, ids) = wait_for("an elected leader", Duration::from_secs(20), || {
            let ch = ch.clone();
            async move {
                let mut ids = Vec::new();
                let mut leaders = Vec::new();
                for c in ch {
                    let s = status(c).await?;
                    ids.push(s.header?.member_id);
                    leaders.push(s.leader);
                }
                let l = leaders[0];
                let agreed = l != 0 && leaders.iter().all(|x| *x == l);
                let i = ids.iter().position(|id| *id == l)?;
                agreed.then_some((i, ids))
            }
        })
        .await;
        wait_for("a first write", Duration::from_secs(10), || {
            let c = ch[old].clone();
            async move { put(c, "v1").await.ok() }
        })
        .await;

        // Cut the leader off from both followers (the client still
        // reaches every replica).
        let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
        for j in &others {
            turmoil::partition(replica_name(old), replica_name(*j));
        }
        let cut_at = tokio::time::Instant::now();

        // It stops reporting itself leader within a few election timeouts.
        wait_for(
            "the cut-off leader to step down",
            ELECTION_TIMEOUT * 6,
            || {
                let c = ch[old].clone();
                async move { status(c).await.filter(|s| s.leader == 0).map(|_| ()) }
            },
        )
        .await;
        let stepped_down_after = cut_at.elapsed();

        // The majority elects another leader and takes a write.
        let new = wait_for("a new leader", Duration::from_secs(10), || {
            let ch = ch.clone();
            let (others, ids) = (others.clone(), ids.clone());
            async move {
                let s = status(ch[others[0]].clone()).await?;
                (s.leader != 0 && s.leader != ids[old]).then_some(s.leader)
            }
        })
        .await;
        let new_idx = ids.iter().position(|id| *id == new).unwrap();
        wait_for(
            "a write on the majority side",
            Duration::from_secs(10),
            || {
                let c = ch[new_idx].clone();
                async move { put(c, "v2").await.ok() }
            },
        )
        .await;
        let term = status(ch[new_idx].clone()).await.unwrap().raft_term;

        // The old leader still holds v1 locally, but will not serve it as a
        // linearizable read, nor take a write.
        assert_eq!(get(ch[old].clone(), true).await.unwrap(), "v1");
        let read = get(ch[old].clone(), false).await;
        assert!(
            matches!(&read, Err(e) if e.code() == tonic::Code::Unavailable),
            "a linearizable read on the cut-off leader must fail, got {read:?}"
        );
        let write = put(ch[old].clone(), "v3").await;
        assert!(
            matches!(&write, Err(e) if e.code() == tonic::Code::Unavailable),
            "a write on the cut-off leader must fail, got {write:?}"
        );

        // Heal: the old leader follows the new one and catches up.
        for j in &others {
            turmoil::repair(replica_name(old), replica_name(*j));
        }
        wait_for("the old leader to follow", Duration::from_secs(10), || {
            let c = ch[old].clone();
            async move { status(c).await.filter(|s| s.leader == new).map(|_| ()) }
        })
        .await;
        assert_eq!(get(ch[old].clone(), false).await.unwrap(), "v2");

        // No disruption: for several election timeouts after the return,
        // the new leader keeps leading in the same term.
        tokio::time::sleep(ELECTION_TIMEOUT * 10).await;
        for c in &ch {
            let s = status(c.clone()).await.unwrap();
            assert_eq!(s.leader, new, "leader changed after the heal");
            assert_eq!(s.raft_term, term, "the term moved after the heal");
        }
        println!(
            "check-quorum: leader stepped down {:?} after the cut (election timeout {:?})",
            stepped_down_after, ELECTION_TIMEOUT
        );
        Ok(())
    });
    sim.run().unwrap();
}
