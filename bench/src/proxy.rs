//! `keel-bench proxy`: the agents' Service proxy on loopback.
//!
//! Data path (in this process, through `keel_node::proxy::Listeners` fed a
//! hand-made routing table, so only the proxy is measured): each workload
//! runs once directly against the backend and once through the cluster IP
//! frontend, on 127.250.0.0/24:
//!
//! - throughput: `--streams` connections each send `--megabytes /
//!   streams` MiB to a sink that answers with the byte count (MB/s);
//! - connections/s: `--conn-clients` clients open a connection, send one
//!   byte, read its echo and close, for `--conn-seconds`; p50/p99 of that
//!   connect + round trip;
//! - round trip: one connection, `--round-trips` 64-byte request/response
//!   exchanges; p50/p99 µs (the proxy's added latency is the difference).
//!
//! Update latency (unless `--skip-updates`): `keel up --agents 1` on
//! 127.251.0.0/16 with a selector-less Service whose EndpointSlice the
//! benchmark flips between two backends of its own (`--updates` times);
//! timed from just before the PATCH is sent until a new connection to the
//! cluster IP reaches the new backend (polled every 2 ms), so it includes
//! the API write, the watch delivery to the agent and the table rebuild.
//!
//! netns mode (`--netns`, root and `nft`): two network namespaces the
//! benchmark creates ("node" and "pod", joined by a veth, 10.250.0.1/.2,
//! which exist only inside them); the pod runs the servers, the node the
//! clients, and the cluster IPs (10.96.0.0/16, routed via the pod) are
//! DNATed by the ruleset keel's netns-mode proxy generates
//! (`keel_node::proxy::nft`). Rule change, `--updates` times, with
//! `--rule-services` Services (each with an EndpointSlice) in the agent's
//! view: the EndpointSlice of Service 0 flips between two backends in the
//! pod namespace, and the agent's reaction is timed as its proxy does it
//! (`table::build` from the objects, the JSON batch, `nft -j -f -`) up to
//! the first new connection to the cluster IP answered by the new backend
//! (polled every 1 ms); the `nft -j -f -` part (table replace: JSON
//! encoding, nft's parse and evaluation, the kernel transaction
//! included) is also shown alone. The API write and the watch delivery
//! are not in it (see the loopback update latency for those).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use keel_node::proxy::{Backend, Frontend, Listeners, Protocol, Route, Table};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cluster::{free_ports, log_tail};
use crate::scheduler::{connect, get_json, merge_patch, post, Procs};
use crate::workload::{micros, new_hist};
use crate::READY_TIMEOUT;

const CHUNK: usize = 64 * 1024;
const RTT_BYTES: usize = 64;
/// How long a flipped EndpointSlice may take to be used before the run fails.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug, Clone)]
pub struct ProxyArgs {
    /// MiB sent in the throughput workload (over all streams).
    #[arg(long, default_value_t = 1024)]
    megabytes: usize,
    /// Concurrent connections of the throughput workload.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Request/response exchanges of the round-trip workload.
    #[arg(long, default_value_t = 20_000)]
    round_trips: usize,
    /// Concurrent clients of the connections/s workload.
    #[arg(long, default_value_t = 8)]
    conn_clients: usize,
    /// Duration of the connections/s workload, in seconds.
    #[arg(long, default_value_t = 5)]
    conn_seconds: u64,
    /// EndpointSlice flips timed in the update workload.
    #[arg(long, default_value_t = 50)]
    updates: usize,
    /// Measure the data path only (no `keel up`).
    #[arg(long)]
    skip_updates: bool,
    /// Also measure netns mode (nftables DNAT; needs root and `nft`).
    #[arg(long)]
    netns: bool,
    /// Services in the table replaced by the netns rule-change workload.
    #[arg(long, default_value_t = 1000)]
    rule_services: usize,
    /// keel binary [default: `keel` next to this executable].
    #[arg(long)]
    keel_bin: Option<PathBuf>,
}

/// One data-path workload, direct and proxied.
struct Pair {
    name: &'static str,
    direct: String,
    proxied: String,
}

pub async fn main(args: ProxyArgs) -> Result<()> {
    ensure!(
        args.megabytes > 0 && args.streams > 0 && args.round_trips > 0 && args.conn_clients > 0,
        "--megabytes, --streams, --round-trips and --conn-clients must be positive"
    );
    let pairs = data_path(&args).await?;
    let netns = match args.netns {
        true => Some(netns_mode(&args)?),
        false => None,
    };
    let updates = match args.skip_updates {
        true => None,
        false => Some(update_latency(&args).await?),
    };
    println!(
        "\nService proxy, loopback; {} MiB over {} streams, {} clients for {} s, {} round trips of {RTT_BYTES} B\n",
        args.megabytes, args.streams, args.conn_clients, args.conn_seconds, args.round_trips
    );
    println!("| workload | direct to pod IP | through cluster IP |");
    println!("|---|---:|---:|");
    for p in &pairs {
        println!("| {} | {} | {} |", p.name, p.direct, p.proxied);
    }
    if let Some((pairs, rules)) = netns {
        println!("\nService proxy, netns mode (nftables DNAT, node namespace → pod namespace over a veth)\n");
        println!("| workload | direct to pod IP | through cluster IP |");
        println!("|---|---:|---:|");
        for p in &pairs {
            println!("| {} | {} | {} |", p.name, p.direct, p.proxied);
        }
        let build = match cfg!(debug_assertions) {
            true => "debug build",
            false => "release build",
        };
        println!(
            "\n| endpoint change in netns mode ({} Services, {} changes, {build}) | p50 ms | p99 ms | max ms |",
            args.rule_services,
            rules.live.len()
        );
        println!("|---|---:|---:|---:|");
        for (name, h) in [
            ("table `ip keel` replaced (nft -j -f)", &rules.replace),
            (
                "EndpointSlice in the agent's cache → new connections reach the new endpoint",
                &rules.live,
            ),
        ] {
            println!(
                "| {name} | {:.1} | {:.1} | {:.1} |",
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.max() as f64 / 1000.0
            );
        }
    }
    if let Some(h) = updates {
        println!(
            "\n| EndpointSlice change → used by the proxy ({} flips) | p50 ms | p99 ms | max ms |",
            h.len()
        );
        println!("|---|---:|---:|---:|");
        println!(
            "| keel up --agents 1 | {:.1} | {:.1} | {:.1} |",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}

// ---- data path ----

async fn data_path(args: &ProxyArgs) -> Result<Vec<Pair>> {
    let ip = |last: u8| IpAddr::V4(Ipv4Addr::new(127, 250, 0, last));
    let echo = spawn_server(ip(2), serve_echo).await?;
    let sink = spawn_server(ip(3), serve_sink).await?;
    let echo_fe = free_addr(ip(1))?;
    let sink_fe = free_addr(ip(1))?;
    let route = |backend: SocketAddr| {
        Arc::new(Route {
            service: "bench/proxy".into(),
            backends: vec![Backend::ready(backend)],
            affinity_timeout: None,
        })
    };
    let fe = |addr| Frontend {
        addr,
        protocol: Protocol::Tcp,
    };
    let table = Table {
        routes: [(fe(echo_fe), route(echo)), (fe(sink_fe), route(sink))].into(),
    };
    let mut listeners = Listeners::new();
    listeners.apply(&table);
    wait_listening(echo_fe).await?;
    wait_listening(sink_fe).await?;

    let mut pairs = Vec::new();
    eprintln!("proxy: throughput ...");
    let (d, p) = (
        throughput(sink, args).await?,
        throughput(sink_fe, args).await?,
    );
    pairs.push(Pair {
        name: "throughput MB/s",
        direct: format!("{d:.0}"),
        proxied: format!("{p:.0}"),
    });
    eprintln!("proxy: connections/s ...");
    let (d, p) = (conns(echo, args).await?, conns(echo_fe, args).await?);
    pairs.push(Pair {
        name: "connections/s",
        direct: format!("{:.0}", d.0),
        proxied: format!("{:.0}", p.0),
    });
    pairs.push(Pair {
        name: "connect + round trip p50 / p99 µs",
        direct: format!(
            "{} / {}",
            d.1.value_at_quantile(0.5),
            d.1.value_at_quantile(0.99)
        ),
        proxied: format!(
            "{} / {}",
            p.1.value_at_quantile(0.5),
            p.1.value_at_quantile(0.99)
        ),
    });
    eprintln!("proxy: round trips ...");
    let (d, p) = (
        round_trips(echo, args).await?,
        round_trips(echo_fe, args).await?,
    );
    pairs.push(Pair {
        name: "round trip p50 / p99 µs",
        direct: format!(
            "{} / {}",
            d.value_at_quantile(0.5),
            d.value_at_quantile(0.99)
        ),
        proxied: format!(
            "{} / {}",
            p.value_at_quantile(0.5),
            p.value_at_quantile(0.99)
        ),
    });
    drop(listeners);
    Ok(pairs)
}

// ---- netns mode ----

/// Runs `work` on a thread of its own inside the network namespace at
/// `/run/netns/<ns>`, with a current-thread runtime (so every socket its
/// tasks open is in that namespace).
fn in_netns<T, F, Fut>(ns: &str, work: F) -> std::thread::JoinHandle<Result<T>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: setns on a descriptor `f` owns; it moves this thread only.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        ensure!(rc == 0, "setns {path}: {}", std::io::Error::last_os_error());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(work())
    })
}

fn ip_cmd(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    ensure!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The two namespaces, deleted on drop.
struct BenchNetns([String; 2]);

impl Drop for BenchNetns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn one_route(backend: SocketAddr) -> Arc<Route> {
    Arc::new(Route {
        service: "bench/proxy".into(),
        backends: vec![Backend::ready(backend)],
        affinity_timeout: None,
    })
}

/// Times of the netns rule-change workload: `nft -j -f -` alone, and from the
/// changed EndpointSlice to the new endpoint answering.
struct RuleChanges {
    replace: Histogram<u64>,
    live: Histogram<u64>,
}

/// `n` Services `bench/svc-<i>` with cluster IPs in 10.96.1.0+ and port
/// 80, and their EndpointSlices: Service 0's has `first`, the others a
/// fixed endpoint.
fn rule_objects(n: usize, first: SocketAddr) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::with_capacity(n);
    let mut slices = Vec::with_capacity(n);
    for s in 0..n {
        let ip = Ipv4Addr::new(10, 96, 1 + (s / 250) as u8, (s % 250) as u8 + 1);
        let ep = match s {
            0 => first,
            _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 250, 0, 3)), 8080),
        };
        svcs.push(
            serde_json::from_value(json!({
                "metadata": {"name": format!("svc-{s}"), "namespace": "bench"},
                "spec": {"clusterIP": ip.to_string(),
                         "ports": [{"name": "tcp", "port": 80, "targetPort": ep.port()}]}
            }))
            .expect("a valid Service"),
        );
        slices.push(slice_for(s, ep));
    }
    (svcs, slices)
}

fn slice_for(s: usize, ep: SocketAddr) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{s}-x"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{s}")}},
        "addressType": "IPv4",
        "ports": [{"name": "tcp", "port": ep.port(), "protocol": "TCP"}],
        "endpoints": slice_endpoints(ep.ip())
    }))
    .expect("a valid EndpointSlice")
}

/// The netns rule-change workload (see the module docs); `backends` are
/// named `A` and `B` by [`named_backend`], Service 0 flips between them.
async fn rule_changes(args: &ProxyArgs, backends: [SocketAddr; 2]) -> Result<RuleChanges> {
    let node = keel_node::proxy::NodeInfo {
        name: "bench".into(),
        ip: IpAddr::V4(Ipv4Addr::new(10, 250, 0, 1)),
    };
    let (svcs, mut slices) = rule_objects(args.rule_services.max(1), backends[0]);
    let frontend = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 1, 1)), 80);
    let mut out = RuleChanges {
        replace: new_hist(),
        live: new_hist(),
    };
    for i in 0..=args.updates {
        let (ep, want) = match i % 2 {
            0 => (backends[0], b'A'),
            _ => (backends[1], b'B'),
        };
        slices[0] = slice_for(0, ep);
        let t0 = Instant::now();
        let table = keel_node::proxy::table::build(&svcs, &slices, &node);
        let batch = keel_node::proxy::nft::ruleset(&table, None);
        let t1 = Instant::now();
        keel_node::podnet::nft::apply(&batch)?;
        let replace = t1.elapsed();
        while ask(frontend).await != Some(want) {
            ensure!(
                t0.elapsed() < UPDATE_TIMEOUT,
                "flip {i}: {frontend} did not reach backend {} in {UPDATE_TIMEOUT:?}",
                want as char
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Round 0 only installs the first table.
        if i > 0 {
            out.replace.record(micros(replace))?;
            out.live.record(micros(t0.elapsed()))?;
        }
    }
    Ok(out)
}

fn netns_mode(args: &ProxyArgs) -> Result<(Vec<Pair>, RuleChanges)> {
    ensure!(
        keel_node::podnet::nft::available(),
        "--netns needs the nft tool (nftables)"
    );
    let pid = std::process::id();
    let names = [
        format!("keelbench-node-{pid}"),
        format!("keelbench-pod-{pid}"),
    ];
    for n in &names {
        ip_cmd(&["netns", "add", n])?;
    }
    let guard = BenchNetns(names.clone());
    let [node, pod] = &guard.0;
    for n in [node, pod] {
        ip_cmd(&["-n", n, "link", "set", "lo", "up"])?;
    }
    ip_cmd(&[
        "-n", node, "link", "add", "kbn0", "type", "veth", "peer", "name", "kbp0", "netns", pod,
    ])?;
    ip_cmd(&["-n", node, "addr", "add", "10.250.0.1/24", "dev", "kbn0"])?;
    ip_cmd(&["-n", pod, "addr", "add", "10.250.0.2/24", "dev", "kbp0"])?;
    ip_cmd(&["-n", pod, "addr", "add", "10.250.0.4/24", "dev", "kbp0"])?;
    ip_cmd(&["-n", node, "link", "set", "kbn0", "up"])?;
    ip_cmd(&["-n", pod, "link", "set", "kbp0", "up"])?;
    ip_cmd(&[
        "-n",
        node,
        "route",
        "add",
        "10.96.0.0/16",
        "via",
        "10.250.0.2",
    ])?;

    let pod_ip = IpAddr::V4(Ipv4Addr::new(10, 250, 0, 2));
    let (addrs_tx, addrs_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let servers = in_netns(pod, move || async move {
        let echo = spawn_server(pod_ip, serve_echo).await?;
        let sink = spawn_server(pod_ip, serve_sink).await?;
        let port = free_addr(pod_ip)?.port();
        let flip_a = SocketAddr::new(pod_ip, port);
        let flip_b = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 250, 0, 4)), port);
        named_backend(flip_a, b'A').await?;
        named_backend(flip_b, b'B').await?;
        let _ = addrs_tx.send((echo, sink, flip_a, flip_b));
        let _ = stop_rx.await;
        Ok(())
    });
    let (echo, sink, flip_a, flip_b) = addrs_rx
        .recv_timeout(Duration::from_secs(10))
        .context("servers in the pod namespace did not start")?;
    let echo_fe = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 5)), 80);
    let sink_fe = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 6)), 80);
    let fe = |addr| Frontend {
        addr,
        protocol: Protocol::Tcp,
    };
    let table = Table {
        routes: [
            (fe(echo_fe), one_route(echo)),
            (fe(sink_fe), one_route(sink)),
        ]
        .into(),
    };
    let batch = keel_node::proxy::nft::ruleset(&table, None);
    let args = ProxyArgs { ..args.clone() };
    let clients = in_netns(node, move || async move {
        keel_node::podnet::nft::apply(&batch)?;
        let mut pairs = Vec::new();
        eprintln!("proxy netns: throughput ...");
        let (d, p) = (
            throughput(sink, &args).await?,
            throughput(sink_fe, &args).await?,
        );
        pairs.push(Pair {
            name: "throughput MB/s",
            direct: format!("{d:.0}"),
            proxied: format!("{p:.0}"),
        });
        eprintln!("proxy netns: connections/s ...");
        let (d, p) = (conns(echo, &args).await?, conns(echo_fe, &args).await?);
        pairs.push(Pair {
            name: "connections/s",
            direct: format!("{:.0}", d.0),
            proxied: format!("{:.0}", p.0),
        });
        let q = |h: &Histogram<u64>| {
            format!(
                "{} / {}",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99)
            )
        };
        pairs.push(Pair {
            name: "connect + round trip p50 / p99 µs",
            direct: q(&d.1),
            proxied: q(&p.1),
        });
        eprintln!("proxy netns: round trips ...");
        let (d, p) = (
            round_trips(echo, &args).await?,
            round_trips(echo_fe, &args).await?,
        );
        pairs.push(Pair {
            name: "round trip p50 / p99 µs",
            direct: q(&d),
            proxied: q(&p),
        });
        eprintln!("proxy netns: rule changes ...");
        let flips = rule_changes(&args, [flip_a, flip_b]).await?;
        Ok((pairs, flips))
    });
    let result = clients
        .join()
        .map_err(|_| anyhow::anyhow!("netns client thread panicked"))?;
    let _ = stop_tx.send(());
    let _ = servers.join();
    drop(guard);
    result
}

/// A listener on `ip` (free port) serving each connection with `serve`.
async fn spawn_server<F, Fut>(ip: IpAddr, serve: F) -> Result<SocketAddr>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .with_context(|| format!("binding a backend on {ip}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(serve(s));
        }
    });
    Ok(addr)
}

async fn serve_echo(mut s: TcpStream) {
    let mut buf = [0u8; RTT_BYTES];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn serve_sink(mut s: TcpStream) {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            let _ = s.write_all(&total.to_be_bytes()).await;
            return;
        }
        total += n as u64;
    }
}

fn free_addr(ip: IpAddr) -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .with_context(|| format!("finding a free port on {ip}"))?;
    Ok(l.local_addr()?)
}

async fn wait_listening(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        ensure!(
            Instant::now() < deadline,
            "the proxy never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// MB/s (10^6 bytes) sent through `to` by `streams` connections.
async fn throughput(to: SocketAddr, args: &ProxyArgs) -> Result<f64> {
    let per_stream = (args.megabytes << 20) / args.streams;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.streams {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(to).await?;
            let chunk = vec![7u8; CHUNK];
            let mut left = per_stream;
            while left > 0 {
                let n = left.min(CHUNK);
                s.write_all(&chunk[..n]).await?;
                left -= n;
            }
            s.shutdown().await?;
            let got = s.read_u64().await?;
            anyhow::ensure!(
                got == per_stream as u64,
                "sink got {got} of {per_stream} bytes"
            );
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let bytes = (per_stream * args.streams) as f64;
    Ok(bytes / 1e6 / started.elapsed().as_secs_f64())
}

/// Connections per second, and the connect + 1-byte round trip latency (µs).
async fn conns(to: SocketAddr, args: &ProxyArgs) -> Result<(f64, Histogram<u64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.conn_clients {
        let (stop, count) = (stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut s = TcpStream::connect(to).await?;
                s.write_all(b"x").await?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await?;
                hist.record(micros(t.elapsed()))?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(hist)
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.conn_seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut hist = new_hist();
    for t in tasks {
        hist.add(t.await??)?;
    }
    let rate = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Ok((rate, hist))
}

/// Round-trip latency (µs) of `--round-trips` exchanges on one connection.
async fn round_trips(to: SocketAddr, args: &ProxyArgs) -> Result<Histogram<u64>> {
    let mut s = TcpStream::connect(to).await?;
    s.set_nodelay(true)?;
    let request = [1u8; RTT_BYTES];
    let mut reply = [0u8; RTT_BYTES];
    let mut hist = new_hist();
    for i in 0..args.round_trips + 1000 {
        let t = Instant::now();
        s.write_all(&request).await?;
        s.read_exact(&mut reply).await?;
        // The first thousand warm up caches and the scheduler.
        if i >= 1000 {
            hist.record(micros(t.elapsed()))?;
        }
    }
    Ok(hist)
}

// ---- update latency ----

async fn update_latency(args: &ProxyArgs) -> Result<Histogram<u64>> {
    let bin = match &args.keel_bin {
        Some(p) => p.clone(),
        None => crate::default_keel_bin()?,
    };
    ensure!(bin.is_file(), "keel binary not found at {}", bin.display());
    let mut procs = Procs::new("keel-bench-proxy-")?;
    let data_dir = procs.path().join("keel-data");
    let ports = free_ports(2)?;
    let mut cmd = Command::new(&bin);
    cmd.arg("up")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--agents", "1"])
        .args(["--listen-client", &format!("127.0.0.1:{}", ports[0])])
        .args(["--listen-peer", &format!("127.0.0.1:{}", ports[1])])
        .args(["--listen-api", "127.0.0.1:0"])
        .args(["--cluster-cidr", "127.251.0.0/17"])
        .args(["--service-cluster-ip-range", "127.251.128.0/17"])
        .args(["--node-ip", "127.251.127.1"]);
    eprintln!("proxy: starting `keel up --agents 1` ({})", bin.display());
    procs.spawn("up", cmd)?;
    let result = flips(args, &mut procs, data_dir.join("kubeconfig")).await;
    if result.is_err() {
        let log = procs.path().join("up.log");
        eprintln!("--- {} ---\n{}", log.display(), log_tail(&log, 40));
    }
    result
}

/// A backend that writes `name` to every connection and closes it.
async fn named_backend(addr: SocketAddr, name: u8) -> Result<()> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(&[name]).await;
            });
        }
    });
    Ok(())
}

async fn ask(addr: SocketAddr) -> Option<u8> {
    let mut s = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let mut b = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut b))
        .await
        .ok()?
        .ok()?;
    Some(b[0])
}

fn slice_endpoints(ip: IpAddr) -> Value {
    json!([{"addresses": [ip.to_string()], "conditions": {"ready": true}}])
}

async fn flips(args: &ProxyArgs, procs: &mut Procs, kubeconfig: PathBuf) -> Result<Histogram<u64>> {
    // Two backends on one port (a slice has one port for all endpoints).
    let a_ip = IpAddr::V4(Ipv4Addr::new(127, 251, 127, 10));
    let b_ip = IpAddr::V4(Ipv4Addr::new(127, 251, 127, 11));
    let port = free_addr(a_ip)?.port();
    named_backend(SocketAddr::new(a_ip, port), b'A').await?;
    named_backend(SocketAddr::new(b_ip, port), b'B').await?;

    let client = connect(procs, &kubeconfig, READY_TIMEOUT).await?;
    let ns = "default";
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "bench-proxy"},
        "spec": {"ports": [{"name": "tcp", "port": 80, "targetPort": port}]}
    });
    post(&client, &format!("/api/v1/namespaces/{ns}/services"), &svc)
        .await
        .map_err(anyhow::Error::msg)?;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "bench-proxy-manual", "labels": {
            "kubernetes.io/service-name": "bench-proxy",
            "endpointslice.kubernetes.io/managed-by": "keel-bench"}},
        "addressType": "IPv4",
        "ports": [{"name": "tcp", "port": port, "protocol": "TCP"}],
        "endpoints": slice_endpoints(a_ip)
    });
    let slices = format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices");
    post(&client, &slices, &slice)
        .await
        .map_err(anyhow::Error::msg)?;
    let got = get_json(
        &client,
        &format!("/api/v1/namespaces/{ns}/services/bench-proxy"),
    )
    .await?;
    let cluster_ip: IpAddr = got["spec"]["clusterIP"]
        .as_str()
        .context("no cluster IP")?
        .parse()?;
    let frontend = SocketAddr::new(cluster_ip, 80);
    eprintln!("proxy: waiting for {frontend} (the agent registers and lists first) ...");
    let deadline = Instant::now() + READY_TIMEOUT;
    while ask(frontend).await != Some(b'A') {
        procs.check_alive()?;
        ensure!(
            Instant::now() < deadline,
            "{frontend} never reached backend A"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("proxy: timing {} EndpointSlice flips ...", args.updates);
    let mut hist = new_hist();
    let path = format!("{slices}/bench-proxy-manual");
    for i in 0..args.updates {
        let (ip, want) = match i % 2 {
            0 => (b_ip, b'B'),
            _ => (a_ip, b'A'),
        };
        let t0 = Instant::now();
        merge_patch(&client, &path, &json!({"endpoints": slice_endpoints(ip)}))
            .await
            .map_err(anyhow::Error::msg)?;
        loop {
            if ask(frontend).await == Some(want) {
                break;
            }
            if t0.elapsed() > UPDATE_TIMEOUT {
                bail!("flip {i}: {frontend} did not reach the new backend in {UPDATE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        hist.record(micros(t0.elapsed()))?;
    }
    Ok(hist)
}
