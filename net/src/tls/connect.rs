//! Dialling peers over TLS, with the client configuration current at
//! connect time.

use std::io;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
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
            let host = uri
                .host()
                .unwrap_or("localhost")
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let cfg = tls.client_config().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "TLS config has no client side")
            })?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host.clone())
                .or_else(|_| ServerName::try_from("keel-peer".to_string()))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let s = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(s))
        }
    })
}
