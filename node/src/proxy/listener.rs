//! The listener manager: one listening socket per frontend of the
//! [`Table`], reconciled on every table change.
//!
//! Guarantees:
//! - after [`Listeners::apply`] returns, every new connection accepted on a
//!   frontend uses the applied route (the route is read per connection);
//!   established connections keep their backend;
//! - frontends missing from the table are closed (their listener and its
//!   connections end); a moved ClusterIP or port is a new frontend, so it
//!   is bound afresh and the old address closed;
//! - sockets are bound with `SO_REUSEADDR` and `SO_REUSEPORT`, so several
//!   agents on one host all listen on the same frontends and the kernel
//!   spreads connections over them; when one agent stops, the others serve;
//! - a bind failure (address not assignable, port taken by a non-reusing
//!   socket) is logged once per frontend and retried every second, never
//!   fatal;
//! - a connection whose backend refuses or does not answer within
//!   [`CONNECT_TIMEOUT`] is retried on another backend, at most
//!   [`MAX_ATTEMPTS`] backends in all; then (or at once, when the route has
//!   no usable backend) the client connection is reset.
//!
//! TCP frontends are spliced here; UDP ones are proxied per client by
//! [`super::udp`]; SCTP ones are logged once and skipped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::picker::Picker;
use super::table::{Frontend, Protocol, Route, Table};

/// Per backend connection attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Backends tried per client connection before it is reset.
pub const MAX_ATTEMPTS: usize = 3;
/// Copy buffer per direction of a spliced connection: 64 KiB moves bulk
/// data in a quarter of the system calls of tokio's 8 KiB default.
const SPLICE_BUFFER_BYTES: usize = 64 * 1024;
/// Pause between bind attempts of a frontend that failed to bind.
const BIND_RETRY: Duration = Duration::from_secs(1);

/// The live listeners; dropping it closes them all.
#[derive(Default)]
pub struct Listeners {
    active: HashMap<Frontend, Listener>,
    /// Frontends already reported as unsupported (logged once).
    unsupported: std::collections::HashSet<Frontend>,
}

struct Listener {
    route: watch::Sender<Arc<Route>>,
    task: JoinHandle<()>,
}

impl Listeners {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reconciles the listeners to `table`; must run inside a tokio runtime.
    pub fn apply(&mut self, table: &Table) {
        self.active.retain(|fe, l| {
            let keep = table.routes.contains_key(fe);
            if !keep {
                tracing::info!(frontend = %fe.addr, "service port removed; closing");
                l.task.abort();
            }
            keep
        });
        for (fe, route) in &table.routes {
            if fe.protocol == Protocol::Sctp {
                if self.unsupported.insert(*fe) {
                    tracing::warn!(frontend = %fe.addr, service = %route.service,
                        "the proxy serves TCP and UDP only; SCTP port skipped");
                }
                continue;
            }
            match self.active.get(fe) {
                Some(l) => {
                    l.route.send_if_modified(|r| {
                        let changed = **r != **route;
                        if changed {
                            *r = route.clone();
                        }
                        changed
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(route.clone());
                    let task = match fe.protocol {
                        Protocol::Udp => tokio::spawn(serve_udp(fe.addr, rx)),
                        _ => tokio::spawn(serve(fe.addr, rx)),
                    };
                    self.active.insert(*fe, Listener { route: tx, task });
                }
            }
        }
        self.unsupported.retain(|fe| table.routes.contains_key(fe));
    }

    /// The frontends with a listener (bound or still retrying).
    pub fn frontends(&self) -> Vec<Frontend> {
        let mut v: Vec<Frontend> = self.active.keys().copied().collect();
        v.sort();
        v
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for l in self.active.values() {
            l.task.abort();
        }
    }
}

/// A TCP listener on `addr` with address and port reuse.
pub fn bind_reusable(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Binds (retrying), then proxies datagrams until aborted.
async fn serve_udp(addr: SocketAddr, route: watch::Receiver<Arc<Route>>) {
    let socket = bind_until_ok(addr, &route, super::udp::bind_reusable).await;
    super::udp::serve(socket, route).await
}

/// Binds (retrying), then accepts until aborted; connections run in a set
/// owned by this task, so aborting it ends them too.
async fn serve(addr: SocketAddr, route: watch::Receiver<Arc<Route>>) {
    let listener = bind_until_ok(addr, &route, bind_reusable).await;
    let picker = Arc::new(Mutex::new(Picker::default()));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    let route = route.borrow().clone();
                    conns.spawn(forward(client, peer, route, picker.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off briefly.
                    tracing::warn!(frontend = %addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn bind_until_ok<S>(
    addr: SocketAddr,
    route: &watch::Receiver<Arc<Route>>,
    bind: impl Fn(SocketAddr) -> std::io::Result<S>,
) -> S {
    let mut logged = false;
    loop {
        match bind(addr) {
            Ok(l) => {
                if logged {
                    tracing::info!(frontend = %addr, "service port bound after retrying");
                }
                return l;
            }
            Err(e) => {
                if !logged {
                    let service = route.borrow().service.clone();
                    tracing::warn!(frontend = %addr, %service, error = %e,
                        "cannot listen on service port; retrying every second");
                    logged = true;
                }
                tokio::time::sleep(BIND_RETRY).await;
            }
        }
    }
}

/// Connects `client` to a backend of `route` and splices the two; resets
/// the client when no backend can be reached.
async fn forward(
    mut client: TcpStream,
    peer: SocketAddr,
    route: Arc<Route>,
    picker: Arc<Mutex<Picker>>,
) {
    let mut tried = Vec::new();
    while tried.len() < MAX_ATTEMPTS {
        let choice = match picker.lock() {
            Ok(mut p) => p.pick(&route, peer.ip(), Instant::now(), &tried),
            Err(_) => None,
        };
        let Some(backend) = choice else {
            break;
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
            Ok(Ok(mut upstream)) => {
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut upstream,
                    SPLICE_BUFFER_BYTES,
                    SPLICE_BUFFER_BYTES,
                )
                .await;
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(service = %route.service, %backend, error = %e, "backend refused")
            }
            Err(_) => {
                tracing::debug!(service = %route.service, %backend, "backend connect timed out")
            }
        }
        if let Ok(mut p) = picker.lock() {
            p.failed(backend);
        }
        tried.push(backend);
    }
    tracing::debug!(service = %route.service, client = %peer, tried = tried.len(), "no backend reachable; resetting");
    // An RST, so the client sees "connection reset" at once instead of an
    // orderly end of a stream it never got.
    let _ = client.set_zero_linger();
}
