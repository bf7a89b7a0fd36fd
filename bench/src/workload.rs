//! The workloads, written once against etcd's v3 gRPC API so that etcd and
//! keel are driven by byte-for-byte the same client code.
//!
//! Put and get workloads are closed loops: `clients` tasks each issue one
//! request at a time, pulling operation numbers from a shared counter until
//! `ops` have been issued, so throughput is what the cluster sustains at that
//! concurrency and latency is per request (client-observed, in microseconds).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use hdrhistogram::Histogram;
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{PutRequest, RangeRequest, WatchCreateRequest, WatchRequest};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Upper bound on one unary request; a request slower than this counts as an
/// error rather than stalling the run.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long watch streams may take to open and confirm all their watchers.
const WATCH_SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after the last watched put the watchers may take to catch up.
const WATCH_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Key prefix the watch workload writes under and every watcher watches.
const WATCH_PREFIX: &[u8] = b"w/";
/// End of the `w/` range: `/` + 1 = `0`.
const WATCH_RANGE_END: &[u8] = b"w0";

/// What one workload measured.
pub struct Sample {
    /// Latencies of successful operations, in microseconds.
    pub hist: Histogram<u64>,
    /// Failed or missing operations.
    pub errors: u64,
    /// Wall time the operations took.
    pub elapsed: Duration,
}

impl Sample {
    /// Successful operations per second of wall time.
    pub fn ops_per_sec(&self) -> f64 {
        self.hist.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at `q` (0..=1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Microsecond histogram from 1 µs to 10 min at 3 significant digits, so a
/// 0.1 ms read and a multi-second stall are both recorded precisely.
pub(crate) fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Opens `conns` HTTP/2 connections to each endpoint, ordered so that
/// `channels[i % len]` cycles through the endpoints: client `i` of a workload
/// then lands on endpoint `i % endpoints`, spreading load evenly (followers
/// included, as a real client pool would).
pub async fn connect(endpoints: &[String], conns: usize) -> Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(endpoints.len() * conns);
    for _ in 0..conns {
        for url in endpoints {
            let channel = Endpoint::from_shared(url.clone())?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to {url}"))?;
            channels.push(channel);
        }
    }
    Ok(channels)
}

/// Key written by put number `i`; zero-padded so keys sort like numbers.
fn put_key(i: usize) -> Vec<u8> {
    format!("bench/put/{i:010}").into_bytes()
}

/// Maps read number `i` onto one of `keyspace` existing keys in a scattered
/// order (multiplicative hashing), so reads do not walk the keys in the
/// order they were written.
fn scatter(i: usize, keyspace: usize) -> usize {
    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize % keyspace
}

/// Runs `op(client, i)` for `i` in `0..ops` from `clients` concurrent tasks.
async fn closed_loop<F, Fut>(
    channels: &[Channel],
    clients: usize,
    ops: usize,
    op: F,
) -> Result<Sample>
where
    F: Fn(KvClient<Channel>, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let kv = KvClient::new(channels[c % channels.len()].clone());
        let op = Arc::clone(&op);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let mut errors = 0u64;
            let mut first_error: Option<String> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    break;
                }
                let t = Instant::now();
                match tokio::time::timeout(OP_TIMEOUT, op(kv.clone(), i)).await {
                    Ok(Ok(())) => hist.saturating_record(micros(t.elapsed())),
                    Ok(Err(e)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                    Err(_) => {
                        errors += 1;
                        first_error
                            .get_or_insert_with(|| format!("timed out after {OP_TIMEOUT:?}"));
                    }
                }
            }
            (hist, errors, first_error)
        }));
    }
    let mut hist = new_hist();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (h, e, fe) = task.await.context("client task panicked")?;
        hist.add(&h).expect("same histogram bounds");
        errors += e;
        first_error = first_error.or(fe);
    }
    let elapsed = start.elapsed();
    if let Some(e) = first_error {
        eprintln!("  warning: {errors} of {ops} operations failed; first error: {e}");
    }
    ensure!(!hist.is_empty(), "every operation failed");
    Ok(Sample {
        hist,
        errors,
        elapsed,
    })
}

/// Workload 1: `ops` puts of `value_size`-byte values to distinct keys.
pub async fn puts(
    channels: &[Channel],
    clients: usize,
    ops: usize,
    value_size: usize,
) -> Result<Sample> {
    let value: Arc<[u8]> = vec![b'v'; value_size].into();
    closed_loop(channels, clients, ops, move |mut kv, i| {
        let value = Arc::clone(&value);
        async move {
            kv.put(PutRequest {
                key: put_key(i),
                value: value.to_vec(),
                ..Default::default()
            })
            .await?;
            Ok(())
        }
    })
    .await
}

/// Workloads 2 and 3: `ops` point reads of keys written by [`puts`]
/// (`keyspace` of them). `serializable = false` is etcd's default
/// linearizable read (a ReadIndex round through the leader);
/// `serializable = true` is answered from the member's local state.
/// Each read must find its key, so a store that drops data cannot look fast.
pub async fn gets(
    channels: &[Channel],
    clients: usize,
    ops: usize,
    keyspace: usize,
    serializable: bool,
) -> Result<Sample> {
    ensure!(keyspace > 0, "no keys to read");
    closed_loop(channels, clients, ops, move |mut kv, i| async move {
        let key = put_key(scatter(i, keyspace));
        let resp = kv
            .range(RangeRequest {
                key: key.clone(),
                serializable,
                ..Default::default()
            })
            .await?
            .into_inner();
        ensure!(
            resp.kvs.len() == 1,
            "range {} returned {} kvs",
            String::from_utf8_lossy(&key),
            resp.kvs.len()
        );
        Ok(())
    })
    .await
}

/// Parameters of the watch workload.
pub struct WatchParams {
    /// Total watchers, all on the `w/` prefix.
    pub watchers: usize,
    /// gRPC Watch streams they are multiplexed over (as etcd clients do).
    pub streams: usize,
    /// Keys the writer puts; every watcher should see every one.
    pub events: usize,
}

/// What one watch stream saw.
struct StreamResult {
    hist: Histogram<u64>,
    delivered: u64,
    bad_values: u64,
    last_recv: Option<Instant>,
}

/// Workload 4: event delivery latency and throughput fan-out.
///
/// `watchers` watchers on prefix `w/` are spread over `streams` streams,
/// themselves spread over the endpoints. Once every watcher is confirmed
/// created, one writer puts `events` keys sequentially, each value holding
/// its send time (nanoseconds since a common `Instant`, so no wall-clock
/// skew: writer and watchers are this one process). Latency is receive time
/// minus send time for each (event, watcher) pair, so it includes the put's
/// own commit. Throughput is deliveries per second from the first send to
/// the last delivery. Deliveries still missing after
/// [`WATCH_DRAIN_TIMEOUT`] count as errors.
pub async fn watch_latency(channels: &[Channel], p: &WatchParams) -> Result<Sample> {
    ensure!(
        p.streams > 0 && p.watchers >= p.streams,
        "need at least one watcher per stream"
    );
    let base = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(p.streams);
    let mut readies = Vec::with_capacity(p.streams);
    for s in 0..p.streams {
        let n = p.watchers / p.streams + usize::from(s < p.watchers % p.streams);
        let (ready_tx, ready_rx) = oneshot::channel();
        readies.push(ready_rx);
        tasks.push(tokio::spawn(watch_stream(
            channels[s % channels.len()].clone(),
            n,
            n * p.events,
            base,
            ready_tx,
            stop_rx.clone(),
        )));
    }

    // All watchers must exist before the first put, or early events would
    // be missed rather than measured.
    let setup_deadline = tokio::time::Instant::now() + WATCH_SETUP_TIMEOUT;
    for (s, ready) in readies.into_iter().enumerate() {
        match tokio::time::timeout_at(setup_deadline, ready).await {
            Ok(Ok(())) => {}
            // The task dropped its sender: it failed; surface its error.
            Ok(Err(_)) => {
                let _ = stop_tx.send(true);
                let err = match (&mut tasks[s]).await {
                    Ok(Err(e)) => e,
                    Ok(Ok(_)) => anyhow!("stream ended during setup"),
                    Err(e) => anyhow!("stream task panicked: {e}"),
                };
                return Err(err.context(format!("watch stream {s} setup")));
            }
            Err(_) => {
                let _ = stop_tx.send(true);
                bail!("watch stream {s} not set up within {WATCH_SETUP_TIMEOUT:?}");
            }
        }
    }

    let mut kv = KvClient::new(channels[0].clone());
    let first_send = Instant::now();
    let mut put_errors = 0u64;
    for j in 0..p.events {
        let sent = base.elapsed().as_nanos().to_string();
        let put = kv.put(PutRequest {
            key: [WATCH_PREFIX, format!("{j:06}").as_bytes()].concat(),
            value: sent.into_bytes(),
            ..Default::default()
        });
        match tokio::time::timeout(OP_TIMEOUT, put).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                put_errors += 1;
                eprintln!("  warning: watched put {j} failed: {e}");
            }
            Err(_) => {
                put_errors += 1;
                eprintln!("  warning: watched put {j} timed out");
            }
        }
    }

    // Give the watchers a bounded time to drain, then stop the stragglers.
    let drain_deadline = tokio::time::Instant::now() + WATCH_DRAIN_TIMEOUT;
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
    let expected = (p.watchers * p.events) as u64;
    let missing = expected.saturating_sub(delivered);
    if missing > 0 || put_errors > 0 || bad_values > 0 {
        eprintln!(
            "  warning: {missing} of {expected} deliveries missing, {put_errors} puts failed, \
             {bad_values} events had unparsable values"
        );
    }
    ensure!(!hist.is_empty(), "no watch event was delivered");
    Ok(Sample {
        hist,
        // Unparsable events are not in `delivered`, so `missing` covers them.
        errors: missing,
        elapsed: last_recv.duration_since(first_send),
    })
}

/// One Watch stream carrying `watchers` watchers: creates them, reports
/// readiness, then records every event until `expected` have arrived or
/// `stop` fires.
async fn watch_stream(
    channel: Channel,
    watchers: usize,
    expected: usize,
    base: Instant,
    ready: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> Result<StreamResult> {
    // The request half stays open (we hold `tx`) for the stream's lifetime:
    // closing it would end the watch on some servers.
    let (tx, rx) = mpsc::channel(watchers + 1);
    for _ in 0..watchers {
        tx.send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: WATCH_PREFIX.to_vec(),
                range_end: WATCH_RANGE_END.to_vec(),
                ..Default::default()
            })),
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
            if resp.created {
                created += 1;
            }
        }
        anyhow::Ok(stream)
    };
    let mut stream = tokio::time::timeout(WATCH_SETUP_TIMEOUT, setup)
        .await
        .context("watch setup timed out")??;
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
                .and_then(|v| v.parse::<u128>().ok());
            match sent {
                Some(sent) => {
                    let lat_ns = now_ns.saturating_sub(sent);
                    res.hist
                        .saturating_record(u64::try_from(lat_ns / 1000).unwrap_or(u64::MAX).max(1));
                    res.delivered += 1;
                }
                None => res.bad_values += 1,
            }
        }
        res.last_recv = Some(now);
    }
    drop(tx);
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_stays_in_keyspace_and_covers_it() {
        let keyspace = 1000;
        let mut seen = vec![false; keyspace];
        for i in 0..20 * keyspace {
            seen[scatter(i, keyspace)] = true;
        }
        assert!(seen.iter().filter(|s| **s).count() > keyspace * 9 / 10);
    }

    #[test]
    fn put_keys_sort_numerically() {
        assert!(put_key(9) < put_key(10));
        assert!(put_key(10).starts_with(b"bench/put/"));
    }
}
