//! UDP frontends: datagrams are proxied per client address ("session"),
//! as kube-proxy's conntrack entries do.
//!
//! Guarantees:
//! - the first datagram of a client picks a backend (with the same
//!   [`Picker`] rules as TCP); later datagrams of that client go to the
//!   same backend while it stays a candidate of the current route, and
//!   the backend's replies go back to the client from the frontend
//!   address;
//! - a session ends after [`IDLE_TIMEOUT`] without traffic either way, when
//!   its backend leaves the route (the next datagram picks afresh), or when
//!   the backend answers with ICMP port unreachable (the backend is marked
//!   failed; the datagram that hit it is lost, as UDP allows);
//! - datagrams to a route without candidates are dropped;
//! - the frontend socket has `SO_REUSEADDR` and `SO_REUSEPORT`, so every
//!   agent of a host binds it; the kernel keeps a client on one of them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::picker::{candidates, Picker};
use super::table::Route;

/// A session without a datagram either way for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// A UDP socket on `addr` with address and port reuse.
pub fn bind_reusable(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

struct Session {
    backend: SocketAddr,
    upstream: Arc<UdpSocket>,
    /// Milliseconds since the frontend's epoch of the last datagram.
    last_ms: Arc<AtomicU64>,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

/// Serves the bound frontend `front` until aborted; the reply tasks run in
/// a set owned by this future, so aborting it ends every session.
pub async fn serve(front: UdpSocket, route: watch::Receiver<Arc<Route>>) {
    let front = Arc::new(front);
    let epoch = Instant::now();
    let sessions: Sessions = Arc::default();
    let picker = Arc::new(Mutex::new(Picker::default()));
    let mut replies = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            r = front.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "udp frontend receive failed");
                    continue;
                }
            },
            Some(_) = replies.join_next(), if !replies.is_empty() => continue,
        };
        let now_ms = epoch.elapsed().as_millis() as u64;
        let route = route.borrow().clone();
        let existing = sessions.lock().ok().and_then(|s| {
            let session = s.get(&client)?;
            let usable = candidates(&route.backends)
                .iter()
                .any(|b| b.addr == session.backend);
            usable.then(|| {
                session.last_ms.store(now_ms, Ordering::Relaxed);
                session.upstream.clone()
            })
        });
        let upstream = match existing {
            Some(u) => u,
            None => {
                let choice = picker
                    .lock()
                    .ok()
                    .and_then(|mut p| p.pick(&route, client.ip(), Instant::now(), &[]));
                let Some(backend) = choice else {
                    continue;
                };
                let Ok(upstream) = connect(backend).await else {
                    continue;
                };
                let upstream = Arc::new(upstream);
                let last_ms = Arc::new(AtomicU64::new(now_ms));
                let session = Session {
                    backend,
                    upstream: upstream.clone(),
                    last_ms: last_ms.clone(),
                };
                if let Ok(mut s) = sessions.lock() {
                    s.insert(client, session);
                }
                replies.spawn(relay_replies(
                    Relay {
                        front: front.clone(),
                        client,
                        backend,
                        upstream: upstream.clone(),
                        last_ms,
                        epoch,
                    },
                    sessions.clone(),
                    picker.clone(),
                ));
                upstream
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

/// A socket connected to `backend`, bound to the loopback address of its
/// family when the backend is local (traffic then stays on 127.0.0.0/8).
async fn connect(backend: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: IpAddr = match (backend.ip().is_loopback(), backend.is_ipv4()) {
        (true, true) => Ipv4Addr::LOCALHOST.into(),
        (true, false) => Ipv6Addr::LOCALHOST.into(),
        (false, true) => Ipv4Addr::UNSPECIFIED.into(),
        (false, false) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
    socket.connect(backend).await?;
    Ok(socket)
}

/// One session's reply path.
struct Relay {
    front: Arc<UdpSocket>,
    client: SocketAddr,
    backend: SocketAddr,
    upstream: Arc<UdpSocket>,
    last_ms: Arc<AtomicU64>,
    epoch: Instant,
}

/// Sends the backend's replies to `client` until the session idles out or
/// the backend refuses; then removes the session (if it is still this one).
async fn relay_replies(relay: Relay, sessions: Sessions, picker: Arc<Mutex<Picker>>) {
    let Relay {
        front,
        client,
        backend,
        upstream,
        last_ms,
        epoch,
    } = relay;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let idle_ms = epoch.elapsed().as_millis() as u64 - last_ms.load(Ordering::Relaxed);
        let left = IDLE_TIMEOUT.saturating_sub(Duration::from_millis(idle_ms));
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, upstream.recv(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(n)) => {
                last_ms.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                let _ = front.send_to(&buf[..n], client).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(%client, %backend, error = %e, "udp backend refused; session closed");
                if let Ok(mut p) = picker.lock() {
                    p.failed(backend);
                }
                break;
            }
        }
    }
    if let Ok(mut s) = sessions.lock() {
        if s.get(&client)
            .is_some_and(|x| Arc::ptr_eq(&x.upstream, &upstream))
        {
            s.remove(&client);
        }
    }
}
