//! Which sockets gRPC runs over: the machine's TCP stack, or turmoil's
//! simulated network (feature `turmoil`), where every host, link, partition
//! and delay is controlled by the test and replayable from a seed.
//!
//! Everything above this module (peer RPC, the etcd services) is written
//! once against [`Transport`]: a channel to an address and a stream of
//! accepted connections.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

/// The socket layer to use. Copy it freely: it holds no state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    #[default]
    Tcp,
    /// turmoil's simulated TCP; only usable inside a turmoil simulation.
    #[cfg(feature = "turmoil")]
    Sim,
}

impl Transport {
    /// A lazily connecting channel to `addr` (`host:port` or a URL). With
    /// keepalives, so a channel wedged by a partition fails fast and
    /// reconnects once it heals.
    pub fn channel(self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let ep = endpoint(&uri)?;
        Ok(match self {
            Transport::Tcp => ep.connect_lazy(),
            // h2 remembers a locally reset stream (a call dropped at its
            // deadline) for `reset_stream_duration` of *wall-clock* time
            // (`std::time::Instant`, which turmoil does not simulate), up
            // to 50 at once: a late frame for a remembered stream is
            // ignored, one for a forgotten stream is answered with
            // RST_STREAM. Which happens depended on how fast the host ran,
            // so a seed with delays did not replay. Forget at once
            // instead (and do not count those answers as errors that close
            // the connection): the same frames on the wire for a seed.
            #[cfg(feature = "turmoil")]
            Transport::Sim => ep
                .http2_max_concurrent_reset_streams(0)
                .http2_max_local_error_reset_streams(None)
                .connect_with_connector_lazy(tower::service_fn(sim_connect)),
        })
    }

    /// Like [`Transport::channel`], over TLS with `tls`'s current client
    /// configuration at each (re)connect. Real TCP only: simulations never
    /// use TLS.
    pub fn tls_channel(
        self,
        addr: &str,
        tls: std::sync::Arc<crate::TlsConfig>,
    ) -> Result<Channel, tonic::transport::Error> {
        // The connector does TLS itself; tonic must not see `https`.
        let host_port = addr.split_once("://").map_or(addr, |(_, rest)| rest);
        Ok(endpoint(&format!("http://{host_port}"))?
            .connect_with_connector_lazy(crate::tls::tls_connector(tls)))
    }

    /// Accepts connections on `addr` as a stream tonic can serve.
    pub async fn incoming(self, addr: SocketAddr) -> io::Result<Incoming> {
        match self {
            Transport::Tcp => {
                let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                })?;
                Ok(Incoming::Tcp(l))
            }
            #[cfg(feature = "turmoil")]
            Transport::Sim => {
                let l = turmoil::net::TcpListener::bind(addr).await?;
                let local = l.local_addr()?;
                let accepts = futures::stream::unfold(l, |l| async move {
                    let r = l.accept().await.map(|(s, _)| Conn::Sim(s));
                    Some((r, l))
                });
                Ok(Incoming::Sim(local, Box::pin(accepts)))
            }
        }
    }
}

/// An endpoint with keepalives, so a channel wedged by a partition fails
/// fast and reconnects once it heals.
fn endpoint(uri: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri.to_string())?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_millis(500))
        .keep_alive_timeout(Duration::from_millis(1000))
        .keep_alive_while_idle(true))
}

#[cfg(feature = "turmoil")]
async fn sim_connect(uri: tonic::transport::Uri) -> io::Result<hyper_util::rt::TokioIo<Conn>> {
    let host = uri.host().unwrap_or("localhost");
    let port = uri.port_u16().unwrap_or(80);
    let s = turmoil::net::TcpStream::connect((host, port)).await?;
    Ok(hyper_util::rt::TokioIo::new(Conn::Sim(s)))
}

/// A bound listener; a [`Stream`] of accepted connections.
pub enum Incoming {
    Tcp(tokio::net::TcpListener),
    #[cfg(feature = "turmoil")]
    Sim(
        SocketAddr,
        Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>,
    ),
}

impl Incoming {
    /// Wraps an already bound TCP listener.
    pub fn from_tcp(l: tokio::net::TcpListener) -> Self {
        Incoming::Tcp(l)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Incoming::Tcp(l) => l.local_addr(),
            #[cfg(feature = "turmoil")]
            Incoming::Sim(a, _) => Ok(*a),
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Incoming::Tcp(l) => l.poll_accept(cx).map(|r| {
                Some(r.map(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    Conn::Tcp(s)
                }))
            }),
            #[cfg(feature = "turmoil")]
            Incoming::Sim(_, s) => s.as_mut().poll_next(cx),
        }
    }
}

/// One accepted or dialled connection.
pub enum Conn {
    Tcp(tokio::net::TcpStream),
    #[cfg(feature = "turmoil")]
    Sim(turmoil::net::TcpStream),
}

impl Connected for Conn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Tcp($s) => $e,
            #[cfg(feature = "turmoil")]
            Conn::Sim($s) => $e,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
