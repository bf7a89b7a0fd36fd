//! `keel-bench ingress`: what keel's Ingress router costs per request.
//!
//! Starts, in this process, an upstream hyper HTTP/1.1 server on 127.0.0.1
//! (a small fixed body, like keel/echo's) and keel's router
//! ([`keel_node::ingress::Router`]) on 127.0.0.1 with a hand-fed route
//! table (one Ingress host → one Service → one EndpointSlice endpoint: the
//! upstream). Then `--clients` closed-loop clients, each on its own
//! keep-alive HTTP/1.1 connection, send `--requests` GETs in total, first
//! straight to the upstream, then through the router (which reaches the
//! upstream over its own pooled keep-alive connections). Prints requests/s
//! and latency quantiles of both, and what the router adds.
//!
//! Client, router and upstream share this process's runtime and the
//! machine's cores, so the numbers are for comparing the two paths with
//! each other, not absolute capacity.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keel_node::ingress::{listen, Inputs, Router};
use serde_json::json;

use crate::workload::{micros, new_hist, Sample};

/// The Host the Ingress rule names.
const HOST: &str = "bench.test";
/// The upstream's answer (about keel/echo's size).
const BODY: &[u8] = b"pod=bench-0 namespace=default path=/ image=keel/echo\n";
/// Requests per client before measuring (connections, pools, caches).
const WARMUP_PER_CLIENT: usize = 50;

#[derive(clap::Args, Debug)]
pub struct IngressArgs {
    /// Concurrent clients, one keep-alive connection each.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Requests per path (direct, then through the router).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
}

pub async fn main(a: IngressArgs) -> Result<()> {
    ensure!(
        a.clients > 0 && a.requests >= a.clients,
        "need --clients > 0 and --requests >= --clients"
    );
    let upstream = start_upstream().await?;
    let router = Router::new()?;
    router.update(&inputs(upstream));
    let listener = listen::bind("127.0.0.1:0".parse()?).context("binding the router")?;
    let routed_addr = listener.local_addr()?;
    tokio::spawn(listen::serve_http(router, listener));

    eprintln!("ingress: warming up ...");
    run(upstream, a.clients, a.clients * WARMUP_PER_CLIENT).await?;
    run(routed_addr, a.clients, a.clients * WARMUP_PER_CLIENT).await?;
    eprintln!("ingress: direct ...");
    let direct = run(upstream, a.clients, a.requests).await?;
    eprintln!("ingress: through the router ...");
    let routed = run(routed_addr, a.clients, a.requests).await?;

    println!(
        "\nIngress router, HTTP/1.1 keep-alive, {} clients, {} requests per path, {}-byte answers\n",
        a.clients,
        a.requests,
        BODY.len()
    );
    println!("| path | req/s | p50 ms | p90 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, s) in [
        ("direct to the pod", &direct),
        ("through the router", &routed),
    ] {
        println!(
            "| {name} | {:.0} | {:.3} | {:.3} | {:.3} | {} |",
            s.ops_per_sec(),
            s.quantile_ms(0.5),
            s.quantile_ms(0.9),
            s.quantile_ms(0.99),
            s.errors
        );
    }
    println!(
        "\nadded by the router: p50 {:+.3} ms, p99 {:+.3} ms; throughput x{:.2}",
        routed.quantile_ms(0.5) - direct.quantile_ms(0.5),
        routed.quantile_ms(0.99) - direct.quantile_ms(0.99),
        routed.ops_per_sec() / direct.ops_per_sec().max(1e-9)
    );
    Ok(())
}

/// The route table: `bench.test/` → Service `bench` port 80 → the upstream.
fn inputs(upstream: SocketAddr) -> Inputs {
    fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).expect("a valid object"))
    }
    Inputs {
        ingresses: vec![typed(json!({
            "metadata": {"name": "bench", "namespace": "default"},
            "spec": {"ingressClassName": "keel", "rules": [{"host": HOST, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "bench", "port": {"number": 80}}}}]}}]},
        }))],
        services: vec![typed(json!({
            "metadata": {"name": "bench", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        }))],
        slices: vec![typed(json!({
            "metadata": {"name": "bench-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "bench"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": upstream.port()}],
            "endpoints": [{"addresses": [upstream.ip().to_string()]}],
        }))],
        ..Inputs::default()
    }
}

/// An HTTP/1.1 server answering every request with [`BODY`].
async fn start_upstream() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(BODY),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// `total` GETs to `addr` from `clients` closed-loop clients, one
/// keep-alive connection each.
async fn run(addr: SocketAddr, clients: usize, total: usize) -> Result<Sample> {
    let left = Arc::new(AtomicUsize::new(total));
    let hist = Arc::new(Mutex::new(new_hist()));
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (left, hist, errors) = (left.clone(), hist.clone(), errors.clone());
        tasks.spawn(async move {
            let mut local = new_hist();
            let mut conn = None;
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let t = Instant::now();
                match request(addr, &mut conn).await {
                    Ok(()) => local.saturating_record(micros(t.elapsed())),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
            hist.lock().expect("histogram lock").add(&local).ok();
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let hist = Arc::try_unwrap(hist)
        .map_err(|_| anyhow::anyhow!("clients still hold the histogram"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
    Ok(Sample {
        hist,
        errors: errors.load(Ordering::Relaxed) as u64,
        elapsed,
    })
}

type Conn = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One GET on the client's connection (opened on first use or after an
/// error); the body is read to the end.
async fn request(addr: SocketAddr, conn: &mut Option<Conn>) -> Result<()> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, driver) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(driver);
        *conn = Some(send);
    }
    let send = conn.as_mut().expect("connection just opened");
    send.ready().await?;
    let req = hyper::Request::get("/")
        .header(hyper::header::HOST, HOST)
        .body(Empty::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), send.send_request(req)).await??;
    ensure!(resp.status() == 200, "status {}", resp.status());
    let body = resp.into_body().collect().await?.to_bytes();
    ensure!(body.len() == BODY.len(), "short body");
    Ok(())
}
