//! The router's listeners: plain HTTP (HTTP/1.1, and HTTP/2 with prior
//! knowledge, h2c) and HTTPS (rustls, SNI certificates, ALPN `h2` and
//! `http/1.1`).
//!
//! Sockets are bound with SO_REUSEADDR and SO_REUSEPORT, so several agents
//! of one `keel up` (or an agent restarting) can share an address; the
//! kernel spreads connections between them, and every router holds the
//! same routes. Dropping a serve future closes its listener and every
//! connection it accepted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::proxy::{Router, Scheme};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listener on `addr` with SO_REUSEADDR and SO_REUSEPORT set.
/// Errors: the address cannot be bound (in use without SO_REUSEPORT by
/// another process, not local, or a port below 1024 without privilege).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves plain HTTP on `listener` until dropped.
pub async fn serve_http(router: Arc<Router>, listener: TcpListener) {
    accept_loop(listener, move |stream, peer, conns| {
        conns.spawn(serve_connection(router.clone(), stream, peer, Scheme::Http));
    })
    .await
}

/// Serves HTTPS on `listener` until dropped, with the router's SNI
/// certificates. Errors: rustls refused the protocol configuration.
pub async fn serve_https(router: Arc<Router>, listener: TcpListener) -> anyhow::Result<()> {
    let mut config = rustls::ServerConfig::builder_with_provider(router.crypto_provider().clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(router.cert_resolver().clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    accept_loop(listener, move |stream, peer, conns| {
        let acceptor = acceptor.clone();
        let router = router.clone();
        conns.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(router, tls, peer, Scheme::Https).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "ingress TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "ingress TLS handshake timed out"),
            }
        });
    })
    .await;
    Ok(())
}

/// Accepts forever, handing each connection to `on_conn` with the set that
/// owns the connection tasks (aborted when this future is dropped).
async fn accept_loop<F>(listener: TcpListener, mut on_conn: F)
where
    F: FnMut(tokio::net::TcpStream, SocketAddr, &mut JoinSet<()>),
{
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, peer)) => on_conn(stream, peer, &mut conns),
            Err(e) => {
                tracing::debug!(error = %e, "ingress accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves one connection, HTTP/1.1 or HTTP/2 as the client speaks.
async fn serve_connection<S>(router: Arc<Router>, stream: S, peer: SocketAddr, scheme: Scheme)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let router = router.clone();
        async move { Ok::<_, std::convert::Infallible>(router.handle(req, peer, scheme).await) }
    });
    if let Err(e) = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "ingress connection ended with an error");
    }
}
