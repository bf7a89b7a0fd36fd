//! Watch fan-out: many watchers on one prefix, keel and etcd side by side.
//!
//! `keel-bench watch` starts a 3-replica cluster of each system in turn and,
//! for every watcher count asked for (1,000 / 5,000 / 10,000 by default),
//! measures event delivery twice:
//!
//! 1. all watchers reading normally;
//! 2. the same, plus one *stalled* watcher: its client opens a watch on the
//!    prefix and then stops reading, as a hung or overloaded client would.
//!    The other watchers' rate and p99 must not change. After the run the
//!    stalled client resumes reading and must get every event exactly once
//!    and in order (etcd moves such a watcher to its unsynced set and
//!    catches it up later; keel re-reads history), or a compaction cancel.
//!
//! Watchers are spread over `--streams` Watch streams, each on its own
//! HTTP/2 connection, the way etcd clients (clientv3, client-go through the
//! API server) multiplex all the watchers of one client on one stream.
//! `--writers` concurrent clients put `--events` keys; every value holds its
//! send time, so each (event, watcher) pair yields one delivery latency.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::cluster::{Cluster, System};
use crate::report::{self, Row};
use crate::workload::{self, micros, new_hist, Sample};
use crate::{system_bin, Only, READY_TIMEOUT, REPLICAS};

/// Upper bound on one put; a slower put counts as failed.
const PUT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long watch streams may take to open and confirm all their watchers.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long after the last put the watchers may take to catch up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Watcher counts to measure, all watchers on one prefix per run.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    watchers: Vec<usize>,
    /// Watch streams (clients) the watchers are spread over; each stream
    /// has its own HTTP/2 connection, streams cycle through the endpoints.
    #[arg(long, default_value_t = 50)]
    streams: usize,
    /// Keys put per run; every watcher should see every one.
    #[arg(long, default_value_t = 300)]
    events: usize,
    /// Concurrent writers putting those keys.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Value size in bytes (the send time, padded with spaces).
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Watchers of the stalled client, all on its one stream. Enough that
    /// what the server owes it overflows HTTP/2 flow control windows.
    #[arg(long, default_value_t = 100)]
    stalled_watchers: usize,
    /// Skip the runs with a stalled watcher.
    #[arg(long)]
    no_stalled: bool,
    /// Which systems to benchmark.
    #[arg(long, value_enum, default_value_t = Only::Both)]
    only: Only,
    /// keel binary [default: `keel` next to this executable].
    #[arg(long)]
    keel_bin: Option<PathBuf>,
    /// etcd binary (3.4 from Debian's etcd-server).
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
}

/// Parameters of one fan-out measurement.
pub struct FanoutParams {
    /// Key prefix written and watched; `prefix` must end in `/`.
    pub prefix: String,
    /// Watchers, all on `prefix`, excluding the stalled client's.
    pub watchers: usize,
    /// Watch streams they are multiplexed over.
    pub streams: usize,
    /// Keys put; every watcher should see every one.
    pub events: usize,
    /// Concurrent writers.
    pub writers: usize,
    /// Value size in bytes.
    pub value_size: usize,
    /// Add one client, on its own connection, with this many watchers on
    /// one stream, that stops reading.
    pub stalled: Option<(Channel, usize)>,
}

/// What the stalled client's watchers got once it read again.
pub struct StalledResult {
    /// Watchers of the stalled client.
    pub watchers: usize,
    /// Distinct (watcher, event) pairs received, in revision order.
    pub received: usize,
    /// Events that came out of order or twice.
    pub disorder: usize,
    /// Set if the server cancelled the watch (compaction).
    pub compacted: Option<i64>,
    /// From resuming reads to the last event.
    pub catch_up: Duration,
}

/// The normal watchers' delivery, and the stalled watcher's if any.
pub struct FanoutResult {
    pub sample: Sample,
    pub stalled: Option<StalledResult>,
}

/// Entry point of `keel-bench watch`.
pub async fn main(args: WatchArgs) -> Result<()> {
    ensure!(
        args.streams > 0 && args.events > 0 && args.writers > 0,
        "--streams, --events and --writers must be positive"
    );
    ensure!(
        args.watchers.iter().all(|&w| w >= args.streams),
        "every --watchers count must be at least --streams"
    );
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    tokio::select! {
        res = run(&args, &mut rows, &mut notes) => res?,
        _ = tokio::signal::ctrl_c() => eprintln!("interrupted; printing what was measured"),
    }
    println!(
        "\n{REPLICAS} replicas each; watchers on one prefix over {} streams (one HTTP/2 \
         connection each), {} events put by {} writers per run\n",
        args.streams, args.events, args.writers
    );
    print!("{}", report::markdown(&rows));
    for n in notes {
        println!("{n}");
    }
    Ok(())
}

async fn run(args: &WatchArgs, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    for &system in args.only.systems() {
        let bin = system_bin(system, &args.etcd_bin, args.keel_bin.as_deref())?;
        eprintln!("{system}: starting {REPLICAS} replicas ({})", bin.display());
        let mut cluster = Cluster::start(system, &bin, REPLICAS)?;
        cluster.wait_ready(READY_TIMEOUT).await?;
        let endpoints = cluster.endpoints();
        let conns = args.streams.div_ceil(endpoints.len());
        let channels = workload::connect(&endpoints, conns).await?;
        for (run, &watchers) in args.watchers.iter().enumerate() {
            let stalled_runs: &[bool] = if args.no_stalled {
                &[false]
            } else {
                &[false, true]
            };
            for &with_stalled in stalled_runs {
                let stalled = match with_stalled {
                    true => Some((
                        workload::connect(&endpoints[..1], 1).await?.remove(0),
                        args.stalled_watchers,
                    )),
                    false => None,
                };
                let params = FanoutParams {
                    prefix: format!("wf/{run}{}/", if with_stalled { "s" } else { "" }),
                    watchers,
                    streams: args.streams,
                    events: args.events,
                    writers: args.writers,
                    value_size: args.value_size,
                    stalled,
                };
                let name = match with_stalled {
                    true => format!("watch {watchers} + 1 stalled client"),
                    false => format!("watch {watchers}"),
                };
                eprintln!("{system}: {name} ...");
                let res = fanout(&channels[..args.streams.min(channels.len())], params).await?;
                let row = Row::new(name.clone(), system, &res.sample);
                eprintln!("{system}: {name}: {}", row.summary());
                rows.push(row);
                if let Some(s) = res.stalled {
                    let note = stalled_note(system, &name, &s, args.events);
                    eprintln!("{note}");
                    notes.push(note);
                }
            }
        }
        drop(channels);
        drop(cluster);
    }
    Ok(())
}

fn stalled_note(system: System, name: &str, s: &StalledResult, events: usize) -> String {
    let outcome = match s.compacted {
        Some(rev) => format!("cancelled, compacted at revision {rev}"),
        None => format!(
            "{} of {} (watcher, event) pairs",
            s.received,
            s.watchers * events
        ),
    };
    format!(
        "{system} / {name}: the stalled client's {} watchers, once reading again: {outcome}, \
         {} out of order or repeated, caught up in {:.1} ms",
        s.watchers,
        s.disorder,
        s.catch_up.as_secs_f64() * 1000.0
    )
}

/// Watch delivery latency and throughput of `p.watchers` watchers.
///
/// Once every watcher is confirmed created, `p.writers` writers put
/// `p.events` keys, each value holding its send time (nanoseconds since a
/// common `Instant`: writers and watchers are this one process, so no clock
/// skew). Latency is receive time minus send time for each (event, watcher)
/// pair, so it includes the put's own commit. Throughput is deliveries per
/// second from the first put to the last delivery. Deliveries still missing
/// after [`DRAIN_TIMEOUT`] count as errors.
pub async fn fanout(channels: &[Channel], p: FanoutParams) -> Result<FanoutResult> {
    ensure!(
        p.streams > 0 && p.watchers >= p.streams && !channels.is_empty(),
        "need at least one watcher per stream and one channel"
    );
    let base = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(p.streams);
    let mut readies = Vec::with_capacity(p.streams + 1);
    for s in 0..p.streams {
        let n = p.watchers / p.streams + usize::from(s < p.watchers % p.streams);
        let (ready_tx, ready_rx) = oneshot::channel();
        readies.push(ready_rx);
        let stream = open(channels[s % channels.len()].clone(), p.prefix.clone(), n);
        tasks.push(tokio::spawn(record_stream(
            stream,
            n * p.events,
            base,
            ready_tx,
            stop_rx.clone(),
        )));
    }
    let (resume_tx, resume_rx) = oneshot::channel();
    let stalled = p.stalled.clone().map(|(ch, n)| {
        let (ready_tx, ready_rx) = oneshot::channel();
        readies.push(ready_rx);
        let stream = open(ch, p.prefix.clone(), n);
        tokio::spawn(stalled_stream(stream, n, p.events, ready_tx, resume_rx))
    });

    // All watchers must exist before the first put, or early events would
    // be missed rather than measured.
    let setup_deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    for (s, ready) in readies.into_iter().enumerate() {
        match tokio::time::timeout_at(setup_deadline, ready).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                let _ = stop_tx.send(true);
                let err = match tasks.get_mut(s) {
                    Some(t) => match t.await {
                        Ok(Err(e)) => e,
                        Ok(Ok(_)) => anyhow!("stream ended during setup"),
                        Err(e) => anyhow!("stream task panicked: {e}"),
                    },
                    None => anyhow!("the stalled watcher's stream failed during setup"),
                };
                return Err(err.context(format!("watch stream {s} setup")));
            }
            Err(_) => {
                let _ = stop_tx.send(true);
                bail!("watch stream {s} not set up within {SETUP_TIMEOUT:?}");
            }
        }
    }

    let first_send = Instant::now();
    let put_errors = put_all(channels, &p, base).await;

    let drain_deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    let mut hist = new_hist();
    let mut delivered = 0u64;
    let mut bad_values = 0u64;
    let mut last_recv = first_send;
    for mut task in tasks {
        let res = match tokio::time::timeout_at(drain_deadline, &mut task).await {
            Ok(r) => r,
            Err(_) => {
                let _ = stop_tx.send(true);
                task.await
            }
        };
        let r = res.context("watch stream task panicked")??;
        hist.add(&r.hist).expect("same histogram bounds");
        delivered += r.delivered;
        bad_values += r.bad_values;
        if let Some(t) = r.last_recv {
            last_recv = last_recv.max(t);
        }
    }
    let elapsed = last_recv.duration_since(first_send);
    let _ = resume_tx.send(());
    let stalled = match stalled {
        Some(t) => Some(t.await.context("stalled watcher task panicked")??),
        None => None,
    };

    let expected = (p.watchers * p.events) as u64;
    let missing = expected.saturating_sub(delivered);
    if missing > 0 || put_errors > 0 || bad_values > 0 {
        eprintln!(
            "  warning: {missing} of {expected} deliveries missing, {put_errors} puts failed, \
             {bad_values} events had unparsable values"
        );
    }
    ensure!(!hist.is_empty(), "no watch event was delivered");
    Ok(FanoutResult {
        sample: Sample {
            hist,
            errors: missing,
            elapsed,
        },
        stalled,
    })
}

/// Puts `p.events` keys under `p.prefix` from `p.writers` concurrent
/// clients; returns how many puts failed.
async fn put_all(channels: &[Channel], p: &FanoutParams, base: Instant) -> u64 {
    let next = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::with_capacity(p.writers);
    for w in 0..p.writers {
        let mut kv = KvClient::new(channels[w % channels.len()].clone());
        let next = next.clone();
        let (prefix, events, size) = (p.prefix.clone(), p.events, p.value_size);
        writers.push(tokio::spawn(async move {
            let mut errors = 0u64;
            loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                if j >= events {
                    return errors;
                }
                let sent = format!("{:<size$}", base.elapsed().as_nanos());
                let put = kv.put(PutRequest {
                    key: format!("{prefix}{j:06}").into_bytes(),
                    value: sent.into_bytes(),
                    ..Default::default()
                });
                match tokio::time::timeout(PUT_TIMEOUT, put).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        errors += 1;
                        eprintln!("  warning: watched put {j} failed: {e}");
                    }
                    Err(_) => {
                        errors += 1;
                        eprintln!("  warning: watched put {j} timed out");
                    }
                }
            }
        }));
    }
    let mut errors = 0;
    for w in writers {
        errors += w.await.unwrap_or(1);
    }
    errors
}

/// The end of the range of keys starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Opens one Watch stream with `watchers` watchers on `prefix` and waits
/// until all are confirmed created. The request sender is returned with
/// the stream: dropping it would end the watch on some servers.
async fn open(
    channel: Channel,
    prefix: String,
    watchers: usize,
) -> Result<(Streaming<WatchResponse>, mpsc::Sender<WatchRequest>)> {
    let (tx, rx) = mpsc::channel(watchers + 1);
    let create = WatchCreateRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix.as_bytes()),
        ..Default::default()
    };
    for _ in 0..watchers {
        tx.send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create.clone())),
        })
        .await
        .map_err(|_| anyhow!("watch request channel closed"))?;
    }
    let setup = async {
        let mut stream = WatchClient::new(channel)
            .watch(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut created = 0;
        while created < watchers {
            let resp = stream
                .message()
                .await?
                .context("watch stream closed during setup")?;
            ensure!(
                !resp.canceled,
                "watch canceled during setup: {}",
                resp.cancel_reason
            );
            created += usize::from(resp.created);
        }
        anyhow::Ok(stream)
    };
    let stream = tokio::time::timeout(SETUP_TIMEOUT, setup)
        .await
        .context("watch setup timed out")??;
    Ok((stream, tx))
}

/// What one watch stream saw.
struct StreamResult {
    hist: Histogram<u64>,
    delivered: u64,
    bad_values: u64,
    last_recv: Option<Instant>,
}

/// Records every event of one stream until `expected` have arrived or
/// `stop` fires.
async fn record_stream(
    open: impl std::future::Future<
        Output = Result<(Streaming<WatchResponse>, mpsc::Sender<WatchRequest>)>,
    >,
    expected: usize,
    base: Instant,
    ready: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> Result<StreamResult> {
    let (mut stream, _requests) = open.await?;
    let _ = ready.send(());
    let mut res = StreamResult {
        hist: new_hist(),
        delivered: 0,
        bad_values: 0,
        last_recv: None,
    };
    while (res.delivered as usize) < expected {
        let msg = tokio::select! {
            m = stream.message() => m?,
            _ = stop.changed() => break,
        };
        let Some(resp) = msg else { break };
        ensure!(!resp.canceled, "watch canceled: {}", resp.cancel_reason);
        let now = Instant::now();
        let now_ns = now.duration_since(base).as_nanos();
        for ev in &resp.events {
            let sent = ev
                .kv
                .as_ref()
                .and_then(|kv| std::str::from_utf8(&kv.value).ok())
                .and_then(|v| v.trim_end().parse::<u128>().ok());
            match sent {
                Some(sent) => {
                    let lat = Duration::from_nanos(
                        u64::try_from(now_ns.saturating_sub(sent)).unwrap_or(u64::MAX),
                    );
                    res.hist.saturating_record(micros(lat));
                    res.delivered += 1;
                }
                None => res.bad_values += 1,
            }
        }
        res.last_recv = Some(now);
    }
    Ok(res)
}

/// The stalled client: confirms its `watchers` watches, then reads
/// nothing until `resume`, then reads until each has all `events`
/// (checking each watcher's order and duplicates) or one is cancelled.
async fn stalled_stream(
    open: impl std::future::Future<
        Output = Result<(Streaming<WatchResponse>, mpsc::Sender<WatchRequest>)>,
    >,
    watchers: usize,
    events: usize,
    ready: oneshot::Sender<()>,
    resume: oneshot::Receiver<()>,
) -> Result<StalledResult> {
    let (mut stream, _requests) = open.await?;
    let _ = ready.send(());
    let _ = resume.await;
    let start = Instant::now();
    let mut res = StalledResult {
        watchers,
        received: 0,
        disorder: 0,
        compacted: None,
        catch_up: Duration::ZERO,
    };
    let mut last_rev = HashMap::new();
    let mut seen = HashSet::new();
    while res.received < watchers * events {
        let msg = tokio::time::timeout(DRAIN_TIMEOUT, stream.message())
            .await
            .context("stalled watcher did not catch up")??;
        let Some(resp) = msg else { break };
        if resp.canceled {
            res.compacted = Some(resp.compact_revision);
            break;
        }
        let last = last_rev.entry(resp.watch_id).or_insert(0);
        for ev in resp.events {
            let kv = ev.kv.unwrap_or_default();
            if kv.mod_revision <= *last || !seen.insert((resp.watch_id, kv.key)) {
                res.disorder += 1;
                continue;
            }
            *last = kv.mod_revision;
            res.received += 1;
        }
    }
    res.catch_up = start.elapsed();
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_covers_exactly_the_prefix() {
        assert_eq!(prefix_end(b"w/"), b"w0".to_vec());
        assert_eq!(prefix_end(b"wf/3s/"), b"wf/3s0".to_vec());
    }
}
