//! UDP and TCP listeners of one DNS server.
//!
//! Both sockets set SO_REUSEADDR and SO_REUSEPORT, so the several agents
//! of one `keel up` (or an agent restarting) bind the same
//! `<cluster DNS IP>:53` side by side; the kernel spreads queries among
//! them, and each serves the same cluster from its own caches.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::Server;
use socket2::{Domain, Protocol, Socket, Type};

use super::handler::ClusterDns;

/// An idle TCP connection is closed after this long.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// `share`: set the reuse options. Not for port 0: the kernel could then
/// pick a port another sharing socket already holds.
fn socket(addr: SocketAddr, ty: Type, proto: Protocol, share: bool) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if share {
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// A running server; dropping it stops it (in the background).
pub struct Listening {
    /// The bound address (UDP and TCP share the port).
    pub addr: SocketAddr,
    server: Server<ClusterDns>,
}

impl Listening {
    /// Stops accepting queries and waits for the server's tasks to end.
    pub async fn stop(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::debug!(error = %e, "DNS server stopped with an error");
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}

/// Serves `handler` on `addr` over UDP and TCP, shared with other
/// sockets of this user. Port 0 picks a free port (the same one for both
/// protocols) that is not shared.
///
/// Errors: the address cannot be bound (in use without SO_REUSEPORT,
/// or port 53 without root/CAP_NET_BIND_SERVICE); must run inside tokio.
pub fn serve(addr: SocketAddr, handler: ClusterDns) -> io::Result<Listening> {
    let share = addr.port() != 0;
    let udp = socket(addr, Type::DGRAM, Protocol::UDP, share)?;
    let bound = udp
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("UDP socket has no IP address"))?;
    let tcp = socket(bound, Type::STREAM, Protocol::TCP, share)?;
    tcp.listen(1024)?;
    let udp = tokio::net::UdpSocket::from_std(udp.into())?;
    let tcp = tokio::net::TcpListener::from_std(tcp.into())?;
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    Ok(Listening {
        addr: bound,
        server,
    })
}
