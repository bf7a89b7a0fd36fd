//! `keel-bench dns`: queries per second of the agents' cluster DNS server.
//!
//! Runs the server the agents run (keel-node's `dns::listen::serve` with
//! the `ClusterDns` handler) in this process on a loopback address and a
//! free port, over a zone of `--services` ClusterIP Services, and drives it
//! over UDP from N concurrent clients, each a socket sending one query and
//! waiting for its answer before the next. Two query mixes: existing
//! Service names (A, NOERROR) and unknown names in the zone (NXDOMAIN with
//! SOA). No upstream: nothing leaves 127.0.0.0/8. A reply with the wrong
//! response code, or none within 2 s, counts as an error.
//!
//! ```text
//! target/release/keel-bench dns --clients 1,8,64 --seconds 3
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use hdrhistogram::Histogram;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use keel_node::dns::{handler, listen, ClusterDns, ZoneIndex};
use serde_json::json;

/// How long one query may wait for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub struct DnsArgs {
    /// Concurrent clients, comma-separated: one table row per value.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    clients: Vec<usize>,
    /// Seconds each (mix, clients) run lasts.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// ClusterIP Services in the zone.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Loopback address the server binds (port: a free one).
    #[arg(long, default_value = "127.0.53.53")]
    listen: Ipv4Addr,
}

#[derive(Clone, Copy)]
enum Mix {
    Hit,
    NxDomain,
}

impl Mix {
    fn label(self) -> &'static str {
        match self {
            Mix::Hit => "A <svc>.<ns>.svc (NOERROR)",
            Mix::NxDomain => "A unknown.<ns>.svc (NXDOMAIN)",
        }
    }

    fn expect(self) -> ResponseCode {
        match self {
            Mix::Hit => ResponseCode::NoError,
            Mix::NxDomain => ResponseCode::NXDomain,
        }
    }

    fn name(self, i: usize) -> String {
        match self {
            Mix::Hit => format!("svc-{i}.bench.svc.cluster.local."),
            Mix::NxDomain => format!("missing-{i}.bench.svc.cluster.local."),
        }
    }
}

struct Result1 {
    ok: u64,
    errors: u64,
    hist: Histogram<u64>,
    elapsed: Duration,
}

fn zone(services: usize) -> Result<ZoneIndex> {
    let objs: Vec<Arc<Service>> = (0..services)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 43, 0, 0)) + 20 + i as u32);
            serde_json::from_value(json!({
                "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
                "spec": {"clusterIP": ip.to_string(), "ports": [{"name": "http", "port": 80}]}
            }))
            .map(Arc::new)
        })
        .collect::<Result<_, _>>()?;
    ZoneIndex::build("cluster.local", &objs, &[])
}

fn query_bytes(name: &str, id: u16) -> Result<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    Ok(m.to_vec()?)
}

/// One client: queries names `mix.name(k)` for k in its share until `end`.
async fn client(
    server: SocketAddr,
    mix: Mix,
    services: usize,
    seed: usize,
    end: Instant,
) -> Result<(u64, u64, Histogram<u64>)> {
    let sock = tokio::net::UdpSocket::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await?;
    sock.connect(server).await?;
    let mut hist = Histogram::<u64>::new(3)?;
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut buf = vec![0u8; 4096];
    let mut k = seed;
    while Instant::now() < end {
        let id = (k & 0xffff) as u16;
        let q = query_bytes(&mix.name(k % services.max(1)), id)?;
        k = k.wrapping_add(7919);
        let t0 = Instant::now();
        sock.send(&q).await?;
        let reply = async {
            loop {
                let n = sock.recv(&mut buf).await?;
                match Message::from_vec(&buf[..n]) {
                    // A late reply to an earlier timed-out query: skip.
                    Ok(m) if m.metadata.id != id => continue,
                    Ok(m) => return Ok::<_, std::io::Error>(Some(m)),
                    Err(_) => return Ok(None),
                }
            }
        };
        match tokio::time::timeout(REPLY_TIMEOUT, reply).await {
            Ok(Ok(Some(m))) if m.metadata.response_code == mix.expect() => {
                ok += 1;
                hist.record(t0.elapsed().as_micros() as u64)?;
            }
            _ => errors += 1,
        }
    }
    Ok((ok, errors, hist))
}

async fn run_one(server: SocketAddr, mix: Mix, clients: usize, args: &DnsArgs) -> Result<Result1> {
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|c| tokio::spawn(client(server, mix, args.services, c * 104_729, end)))
        .collect();
    let mut total = Result1 {
        ok: 0,
        errors: 0,
        hist: Histogram::new(3)?,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (ok, errors, hist) = t.await??;
        total.ok += ok;
        total.errors += errors;
        total.hist.add(hist)?;
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

pub async fn main(args: DnsArgs) -> Result<()> {
    ensure!(
        !args.clients.is_empty() && args.clients.iter().all(|c| *c > 0),
        "--clients must be positive numbers"
    );
    ensure!(args.seconds > 0, "--seconds must be positive");
    ensure!(
        args.listen.is_loopback(),
        "--listen must be a 127.x address"
    );
    let index = handler::shared(zone(args.services)?);
    let server = listen::serve(
        SocketAddr::new(args.listen.into(), 0),
        ClusterDns::new(index, None),
    )
    .with_context(|| format!("binding {}", args.listen))?;
    eprintln!(
        "dns: serving {} services on {} (UDP)",
        args.services, server.addr
    );
    let mut rows = Vec::new();
    for mix in [Mix::Hit, Mix::NxDomain] {
        for &clients in &args.clients {
            let r = run_one(server.addr, mix, clients, &args).await?;
            let qps = r.ok as f64 / r.elapsed.as_secs_f64();
            let q = |p: f64| r.hist.value_at_quantile(p) as f64 / 1000.0;
            eprintln!("dns: {} x{clients}: {qps:.0} q/s", mix.label());
            rows.push(format!(
                "| {} | {clients} | {qps:.0} | {:.3} | {:.3} | {} |",
                mix.label(),
                q(0.50),
                q(0.99),
                r.errors
            ));
        }
    }
    server.stop().await;
    println!(
        "\ncluster DNS, UDP, {} services, {} s per row, one in-flight query per client\n",
        args.services, args.seconds
    );
    println!("| query | clients | queries/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
