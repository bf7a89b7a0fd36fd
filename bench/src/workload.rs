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

use anyhow::{ensure, Context, Result};
use hdrhistogram::Histogram;
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::{PutRequest, RangeRequest};
use tonic::transport::{Channel, Endpoint};

/// Upper bound on one unary request; a request slower than this counts as an
/// error rather than stalling the run.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
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
