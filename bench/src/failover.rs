//! `keel-bench failover`: how long writes fail when the leader dies.
//!
//! A 3-replica cluster (keel, then etcd 3.4, one after the other; both with
//! a 1000 ms election timeout and 100 ms heartbeats) serves a client that
//! issues a `put` every 20 ms, round-robin over all three endpoints, each
//! with a 5 s deadline, as `etcdctl put` in a retry loop would. The leader is
//! SIGKILLed; the failure window is the time from the kill to the first
//! successful put issued after it. The killed replica is restarted, the
//! cluster settles, and the next leader is killed, `--kills` times.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::{PutRequest, StatusRequest};
use tonic::transport::{Channel, Endpoint};

use crate::cluster::{Cluster, System};
use crate::{system_bin, Only, READY_TIMEOUT, REPLICAS};

#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// Leader SIGKILLs per system.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Which systems to measure.
    #[arg(long, value_enum, default_value_t = Only::Both)]
    only: Only,
    /// Time between two puts of the client, in milliseconds.
    #[arg(long, default_value_t = 20)]
    put_interval_ms: u64,
    /// Election timeout of both systems, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    election_timeout_ms: u64,
    /// Heartbeat interval of both systems, in milliseconds.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// keel binary [default: `keel` next to this executable].
    #[arg(long)]
    keel_bin: Option<PathBuf>,
    /// etcd binary (3.4 from Debian's etcd-server).
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
}

/// Successful puts: (issued, completed).
type Log = Arc<Mutex<Vec<(Instant, Instant)>>>;

pub async fn main(a: FailoverArgs) -> Result<()> {
    if a.kills == 0 {
        bail!("--kills must be positive");
    }
    let mut results = Vec::new();
    for &system in a.only.systems() {
        let bin = system_bin(system, &a.etcd_bin, a.keel_bin.as_deref())?;
        let windows = measure(system, &bin, &a).await?;
        results.push((system, windows));
    }
    println!(
        "\nLeader SIGKILLed {} times per system, 3 replicas on loopback, election timeout \
         {} ms, heartbeat {} ms; a put every {} ms round-robin over all endpoints. \
         Window: kill → first successful put issued after it.\n",
        a.kills, a.election_timeout_ms, a.heartbeat_ms, a.put_interval_ms
    );
    println!("| system | kills | p50 | p99 | max | min |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (system, mut w) in results {
        w.sort();
        println!(
            "| {system} | {} | {} | {} | {} | {} |",
            w.len(),
            ms(percentile(&w, 50.0)),
            ms(percentile(&w, 99.0)),
            ms(*w.last().unwrap()),
            ms(w[0]),
        );
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn measure(system: System, bin: &std::path::Path, a: &FailoverArgs) -> Result<Vec<Duration>> {
    let et = a.election_timeout_ms.to_string();
    let hb = a.heartbeat_ms.to_string();
    let flags: Vec<&str> = match system {
        System::Etcd => vec!["--election-timeout", &et, "--heartbeat-interval", &hb],
        System::Keel => vec![
            "--election-timeout",
            &et,
            "--heartbeat-interval",
            &hb,
            "--disable-api",
        ],
    };
    eprintln!("{system}: starting {REPLICAS} replicas ({})", bin.display());
    let mut cluster = Cluster::start_with(system, bin, REPLICAS, &flags)?;
    cluster.wait_ready(READY_TIMEOUT).await?;
    let endpoints = cluster.endpoints();
    let channels: Vec<Channel> = endpoints
        .iter()
        .map(|e| {
            Ok(Endpoint::from_shared(e.clone())?
                .connect_timeout(Duration::from_millis(500))
                .connect_lazy())
        })
        .collect::<Result<_>>()?;

    let log: Log = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(writer(
        channels.clone(),
        log.clone(),
        stop.clone(),
        Duration::from_millis(a.put_interval_ms),
    ));

    let mut windows = Vec::with_capacity(a.kills);
    let result = async {
        for k in 0..a.kills {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let leader = find_leader(&channels).await?;
            cluster.kill(leader)?;
            let killed_at = Instant::now();
            let window = loop {
                let first = log
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(issued, _)| *issued > killed_at)
                    .map(|(_, done)| *done)
                    .min();
                if let Some(done) = first {
                    break done - killed_at;
                }
                if killed_at.elapsed() > Duration::from_secs(60) {
                    bail!("{system}: no write succeeded within 60 s of killing the leader");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            eprintln!(
                "{system}: kill {}/{}: member {leader}: writes failed for {} ms",
                k + 1,
                a.kills,
                window.as_millis()
            );
            windows.push(window);
            cluster.restart(leader, bin)?;
            cluster.wait_ready(READY_TIMEOUT).await?;
        }
        anyhow::Ok(())
    }
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = writer.await;
    result?;
    Ok(windows)
}

/// A put every `interval`, round-robin over `channels`, each in its own
/// task with a 5 s deadline; successes are logged.
async fn writer(
    channels: Vec<Channel>,
    log: Log,
    stop: Arc<std::sync::atomic::AtomicBool>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    let mut n = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        let mut kv = KvClient::new(channels[n % channels.len()].clone());
        let log = log.clone();
        let key = format!("failover/{}", n % 64).into_bytes();
        n += 1;
        tokio::spawn(async move {
            let issued = Instant::now();
            let put = kv.put(PutRequest {
                key,
                value: b"v".to_vec(),
                ..Default::default()
            });
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), put).await {
                log.lock().unwrap().push((issued, Instant::now()));
            }
        });
    }
}

/// The index of the member every live member's status names as leader.
async fn find_leader(channels: &[Channel]) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ids = Vec::new();
        let mut leader = None;
        for ch in channels {
            let mut m = MaintenanceClient::new(ch.clone());
            match tokio::time::timeout(Duration::from_secs(1), m.status(StatusRequest {})).await {
                Ok(Ok(s)) => {
                    let s = s.into_inner();
                    ids.push(s.header.map(|h| h.member_id));
                    leader = leader.or((s.leader != 0).then_some(s.leader));
                }
                _ => ids.push(None),
            }
        }
        if let Some(l) = leader {
            if let Some(i) = ids.iter().position(|id| *id == Some(l)) {
                return Ok(i);
            }
        }
        if Instant::now() > deadline {
            return Err(anyhow::anyhow!("no leader within 30 s")).context("finding the leader");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
