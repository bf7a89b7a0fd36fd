//! The Service proxy's listener manager on a hand-fed routing table,
//! against TCP servers on loopback addresses (127.240.0.0/16, which no
//! other test uses; ports are picked free per test): routing, spreading,
//! ClientIP affinity, the terminating fallback, refused backends, table
//! updates, several managers on one frontend, and bind retries.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use keel_node::proxy::{Backend, Frontend, Listeners, Protocol, Route, Table};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The generous bound for anything eventual (a loaded 2-core machine).
const PATIENCE: Duration = Duration::from_secs(30);

fn ip(third: u8, fourth: u8) -> IpAddr {
    IpAddr::from([127, 240, third, fourth])
}

/// A backend answering each connection with `<name>\n`, then echoing.
async fn backend(addr_ip: IpAddr, name: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(SocketAddr::new(addr_ip, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let name = name.to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, task)
}

/// An address on `addr_ip` whose port nothing listens on now.
async fn free_addr(addr_ip: IpAddr) -> SocketAddr {
    let l = std::net::TcpListener::bind(SocketAddr::new(addr_ip, 0)).unwrap();
    l.local_addr().unwrap()
}

fn table(frontend: SocketAddr, backends: Vec<Backend>, affinity: Option<Duration>) -> Table {
    let fe = Frontend {
        addr: frontend,
        protocol: Protocol::Tcp,
    };
    let route = Route {
        service: "test/web:http".into(),
        backends,
        affinity_timeout: affinity,
    };
    Table {
        routes: BTreeMap::from([(fe, Arc::new(route))]),
    }
}

/// Connects from `from` (any port) to `to` and reads the greeting line.
async fn ask_from(from: IpAddr, to: SocketAddr) -> std::io::Result<String> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(to).await?;
    let mut line = String::new();
    let n = tokio::time::timeout(PATIENCE, BufReader::new(stream).read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("no answer"))??;
    match n {
        0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(line.trim_end().to_string()),
    }
}

async fn ask(to: SocketAddr) -> std::io::Result<String> {
    ask_from(ip(0, 1), to).await
}

/// Polls `ask(to)` until it answers `want` (the listener binds in the
/// background, and updates apply to the next connection).
async fn wait_answer(to: SocketAddr, want: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = ask(to).await;
        if matches!(&got, Ok(a) if a == want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{to} never answered {want:?}; last {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_refused(to: SocketAddr) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while TcpStream::connect(to).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "{to} still accepts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_spreads_round_robin_over_ready_backends() {
    let (a, _ta) = backend(ip(1, 2), "a").await;
    let (b, _tb) = backend(ip(1, 3), "b").await;
    let fe = free_addr(ip(1, 1)).await;
    let mut listeners = Listeners::new();
    listeners.apply(&table(fe, vec![Backend::ready(a), Backend::ready(b)], None));
    wait_answer(fe, "a").await;
    let mut seen = BTreeMap::new();
    for _ in 0..20 {
        *seen.entry(ask(fe).await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");

    // Bytes flow both ways through the splice.
    let mut s = TcpStream::connect(fe).await.unwrap();
    let mut r = BufReader::new(&mut s);
    let mut greeting = String::new();
    r.read_line(&mut greeting).await.unwrap();
    s.write_all(b"ping\n").await.unwrap();
    let mut echoed = String::new();
    BufReader::new(&mut s).read_line(&mut echoed).await.unwrap();
    assert_eq!(echoed, "ping\n");
    assert_eq!(listeners.frontends().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_affinity_pins_each_client_to_one_backend() {
    let (a, _ta) = backend(ip(2, 2), "a").await;
    let (b, _tb) = backend(ip(2, 3), "b").await;
    let fe = free_addr(ip(2, 1)).await;
    let mut listeners = Listeners::new();
    let backends = vec![Backend::ready(a), Backend::ready(b)];
    listeners.apply(&table(fe, backends, Some(Duration::from_secs(600))));
    wait_answer(fe, "a").await;
    let mut firsts = Vec::new();
    for client in 10..14 {
        let from = ip(2, client);
        let first = ask_from(from, fe).await.unwrap();
        for _ in 0..5 {
            assert_eq!(ask_from(from, fe).await.unwrap(), first, "client {from}");
        }
        firsts.push(first);
    }
    // New clients are still spread over both backends.
    assert!(
        firsts.iter().any(|f| f == "a") && firsts.iter().any(|f| f == "b"),
        "{firsts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_backends_serve_only_when_no_backend_is_ready() {
    let (a, _ta) = backend(ip(3, 2), "ready").await;
    let (b, _tb) = backend(ip(3, 3), "draining").await;
    let fe = free_addr(ip(3, 1)).await;
    let draining = Backend {
        ready: false,
        serving: true,
        terminating: true,
        ..Backend::ready(b)
    };
    let mut listeners = Listeners::new();
    listeners.apply(&table(fe, vec![Backend::ready(a), draining.clone()], None));
    wait_answer(fe, "ready").await;
    for _ in 0..10 {
        assert_eq!(ask(fe).await.unwrap(), "ready");
    }
    listeners.apply(&table(fe, vec![draining], None));
    for _ in 0..10 {
        assert_eq!(ask(fe).await.unwrap(), "draining");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_backend_is_skipped_and_no_backend_means_a_closed_connection() {
    let (live, _t) = backend(ip(4, 2), "live").await;
    let dead = free_addr(ip(4, 3)).await;
    let fe = free_addr(ip(4, 1)).await;
    let mut listeners = Listeners::new();
    listeners.apply(&table(
        fe,
        vec![Backend::ready(dead), Backend::ready(live)],
        None,
    ));
    wait_answer(fe, "live").await;
    for _ in 0..10 {
        assert_eq!(ask(fe).await.unwrap(), "live");
    }
    // Only refusing backends: the client connection ends (reset) instead
    // of hanging; the same with no backend at all.
    let dead2 = free_addr(ip(4, 4)).await;
    listeners.apply(&table(
        fe,
        vec![Backend::ready(dead), Backend::ready(dead2)],
        None,
    ));
    for _ in 0..3 {
        let r = ask(fe).await;
        assert!(
            r.is_err() && r.as_ref().unwrap_err().to_string() != "no answer",
            "{r:?}"
        );
    }
    listeners.apply(&table(fe, vec![], None));
    let r = ask(fe).await;
    assert!(
        r.is_err() && r.as_ref().unwrap_err().to_string() != "no answer",
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_apply_to_the_next_connection_and_removed_frontends_close() {
    let (a, _ta) = backend(ip(5, 2), "old").await;
    let (b, _tb) = backend(ip(5, 3), "new").await;
    let fe = free_addr(ip(5, 1)).await;
    let mut listeners = Listeners::new();
    listeners.apply(&table(fe, vec![Backend::ready(a)], None));
    wait_answer(fe, "old").await;
    // An established connection keeps its backend across the update.
    let mut held = TcpStream::connect(fe).await.unwrap();
    let mut greeting = String::new();
    BufReader::new(&mut held)
        .read_line(&mut greeting)
        .await
        .unwrap();
    assert_eq!(greeting, "old\n");
    listeners.apply(&table(fe, vec![Backend::ready(b)], None));
    assert_eq!(ask(fe).await.unwrap(), "new");
    held.write_all(b"still here\n").await.unwrap();
    let mut echoed = String::new();
    BufReader::new(&mut held)
        .read_line(&mut echoed)
        .await
        .unwrap();
    assert_eq!(echoed, "still here\n");

    // A moved frontend (new ClusterIP): the old address closes, the new binds.
    let moved = free_addr(ip(5, 4)).await;
    listeners.apply(&table(moved, vec![Backend::ready(b)], None));
    wait_answer(moved, "new").await;
    wait_refused(fe).await;
    listeners.apply(&Table::default());
    wait_refused(moved).await;
    assert!(listeners.frontends().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_managers_share_a_frontend_and_the_rest_serve_when_one_stops() {
    let (a, _ta) = backend(ip(6, 2), "a").await;
    let fe = free_addr(ip(6, 1)).await;
    let t = table(fe, vec![Backend::ready(a)], None);
    let mut first = Listeners::new();
    first.apply(&t);
    wait_answer(fe, "a").await;
    let mut second = Listeners::new();
    second.apply(&t);
    // Give the second manager's socket time to bind (it cannot be observed
    // from outside: the kernel spreads connections over both).
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(first);
    for _ in 0..20 {
        wait_answer(fe, "a").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_retried_until_it_frees() {
    let (a, _ta) = backend(ip(7, 2), "a").await;
    // A plain socket (no SO_REUSEPORT) holds the frontend's port.
    let squatter = std::net::TcpListener::bind(SocketAddr::new(ip(7, 1), 0)).unwrap();
    let fe = squatter.local_addr().unwrap();
    let mut listeners = Listeners::new();
    listeners.apply(&table(fe, vec![Backend::ready(a)], None));
    assert_eq!(listeners.frontends().len(), 1, "kept while retrying");
    drop(squatter);
    wait_answer(fe, "a").await;
}

/// A UDP backend answering each datagram with `<name>:<payload>`.
async fn udp_backend(addr_ip: IpAddr, name: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(addr_ip, 0))
        .await
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let name = name.to_string();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let reply = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
            let _ = socket.send_to(reply.as_bytes(), from).await;
        }
    });
    (addr, task)
}

fn udp_table(frontend: SocketAddr, backends: Vec<Backend>) -> Table {
    let mut t = table(frontend, backends, None);
    let (mut fe, route) = t.routes.pop_first().unwrap();
    fe.protocol = Protocol::Udp;
    t.routes.insert(fe, route);
    t
}

/// Sends `payload` from `client` to `to` until a reply from `to` arrives
/// (datagrams sent before the frontend binds are lost); returns it.
async fn udp_ask(client: &tokio::net::UdpSocket, to: SocketAddr, payload: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut buf = [0u8; 1500];
    loop {
        client.send_to(payload.as_bytes(), to).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(1), client.recv_from(&mut buf)).await;
        if let Ok(Ok((n, from))) = got {
            assert_eq!(from, to, "the reply comes from the frontend address");
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no UDP reply from {to}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_follow_a_per_client_session_and_move_when_the_backend_goes() {
    let (a, _ta) = udp_backend(ip(8, 2), "a").await;
    let (b, _tb) = udp_backend(ip(8, 3), "b").await;
    let fe = std::net::UdpSocket::bind(SocketAddr::new(ip(8, 1), 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let mut listeners = Listeners::new();
    listeners.apply(&udp_table(fe, vec![Backend::ready(a), Backend::ready(b)]));
    let c1 = tokio::net::UdpSocket::bind(SocketAddr::new(ip(8, 10), 0))
        .await
        .unwrap();
    let c2 = tokio::net::UdpSocket::bind(SocketAddr::new(ip(8, 11), 0))
        .await
        .unwrap();
    let first = udp_ask(&c1, fe, "hello").await;
    let name1 = first.split(':').next().unwrap().to_string();
    assert_eq!(first, format!("{name1}:hello"));
    for i in 0..10 {
        let reply = udp_ask(&c1, fe, &format!("m{i}")).await;
        assert_eq!(reply, format!("{name1}:m{i}"), "one client, one backend");
    }
    // A second client's session goes round-robin to the other backend.
    let reply2 = udp_ask(&c2, fe, "hi").await;
    assert_ne!(reply2.split(':').next().unwrap(), name1, "{reply2}");

    // The first client's backend leaves the route: its next datagram moves.
    let rest = match name1.as_str() {
        "a" => b,
        _ => a,
    };
    listeners.apply(&udp_table(fe, vec![Backend::ready(rest)]));
    let moved = udp_ask(&c1, fe, "again").await;
    assert_ne!(moved.split(':').next().unwrap(), name1, "{moved}");
}
