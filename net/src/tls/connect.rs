//! Dialling peers over TLS, with the client configuration current at
//! connect time.

use std::io;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tonic::transport::Uri;

use super::TlsConfig;

/// A tonic connector: TCP, then a TLS handshake presenting this replica's
/// peer certificate. The server name only selects SNI; the member check
/// in the verifier decides.
pub(crate) fn tls_connector(
    tls: Arc<TlsConfig>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = io::Error,
    Future = impl Send,
> + Clone
       + Send {
    tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        async move {
            let cfg = tls.client_config().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "TLS config has no client side")
            })?;
            dial(&uri, cfg, 443, Some("keel-peer")).await
        }
    })
}

/// TCP to `uri`'s host and port (`default_port` when it names none), then
/// a TLS handshake with `cfg` naming the host for SNI and verification, or
/// `fallback_name` where the host is no valid server name (None: refuse).
/// Shared by the peer connector and the etcd client connector.
pub(crate) async fn dial(
    uri: &Uri,
    cfg: Arc<ClientConfig>,
    default_port: u16,
    fallback_name: Option<&str>,
) -> io::Result<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
    let host = uri
        .host()
        .unwrap_or("localhost")
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(default_port);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let _ = tcp.set_nodelay(true);
    let name = match (ServerName::try_from(host), fallback_name) {
        (Ok(n), _) => n,
        (Err(_), Some(f)) => ServerName::try_from(f.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        (Err(e), None) => return Err(io::Error::new(io::ErrorKind::InvalidInput, e)),
    };
    let s = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?;
    Ok(TokioIo::new(s))
}
