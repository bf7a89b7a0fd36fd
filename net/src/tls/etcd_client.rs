//! Dialling a replica's etcd client port as a client, with etcdctl's
//! `--cacert`, `--cert` and `--key`: for keel's own tools (`keel member`,
//! `keel snapshot save`) against a client port that requires TLS and
//! client certificates.
//!
//! The server's certificate is verified against `--cacert` and must name
//! the host dialled (DNS name or IP address), as etcdctl checks it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ClientConfig;
use tonic::transport::{Channel, Endpoint, Uri};

use super::TlsError;

/// etcdctl's client TLS flags. All empty: plaintext.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsFiles {
    /// `--cacert`: the CA that signed the replicas' serving certificates.
    pub cacert: Option<PathBuf>,
    /// `--cert` / `--key`: this client's certificate and key, for a client
    /// port with `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTlsFiles {
    pub fn is_empty(&self) -> bool {
        self.cacert.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// The rustls configuration, `None` without any flag. Errors name the
    /// flag to fix (unreadable or bad PEM, a key without its certificate).
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>, TlsError> {
        if self.is_empty() {
            return Ok(None);
        }
        let Some(ca) = &self.cacert else {
            return Err(TlsError(
                "--cert/--key need --cacert (the CA that signed the replicas' certificates)".into(),
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(ca, "--cacert")? {
            roots
                .add(c)
                .map_err(|e| TlsError(format!("--cacert {}: {e}", ca.display())))?;
        }
        let builder = ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_root_certificates(roots);
        let mut cfg = match (&self.cert, &self.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certs(cert, "--cert")?;
                let pem = read(key, "--key")?;
                let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                    TlsError(format!(
                        "--key {}: no usable PEM private key: {e}",
                        key.display()
                    ))
                })?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| TlsError(format!("--cert/--key: {e}")))?
            }
            (Some(_), None) => return Err(TlsError("--cert needs --key".into())),
            (None, Some(_)) => return Err(TlsError("--key needs --cert".into())),
        };
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(Arc::new(cfg)))
    }
}

fn read(p: &Path, flag: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(p).map_err(|e| TlsError(format!("{flag} {}: cannot read: {e}", p.display())))
}

fn certs(p: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(p, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{flag} {}: bad PEM: {e}", p.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{flag} {}: no PEM certificate in it",
            p.display()
        )));
    }
    Ok(certs)
}

/// Connects to the etcd client `endpoint` (`host:port`, `http://` or
/// `https://`). TLS is used for `https://`, and for a bare `host:port`
/// when `tls` is given; `https://` without `tls` is an error naming
/// `--cacert`. Each call is bounded by `timeout`.
pub async fn connect_etcd_client(
    endpoint: &str,
    tls: Option<Arc<ClientConfig>>,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Channel, String> {
    let (scheme, host_port) = match endpoint.split_once("://") {
        Some((s, rest)) => (Some(s), rest),
        None => (None, endpoint),
    };
    let use_tls = match (scheme, &tls) {
        (Some("https"), None) => {
            return Err(format!("{endpoint}: an https endpoint needs --cacert"))
        }
        (Some("https"), Some(_)) => true,
        (Some("http"), _) => false,
        (Some(other), _) => return Err(format!("{endpoint}: unknown scheme {other:?}")),
        (None, t) => t.is_some(),
    };
    let ep = Endpoint::from_shared(format!("http://{host_port}"))
        .map_err(|e| format!("bad endpoint {endpoint:?}: {e}"))?
        .connect_timeout(connect_timeout)
        .timeout(timeout);
    let r = match tls.filter(|_| use_tls) {
        None => ep.connect().await,
        Some(cfg) => ep.connect_with_connector(connector(cfg)).await,
    };
    r.map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        msg
    })
}

/// TCP, then a TLS handshake verifying the server against the CA.
fn connector(
    cfg: Arc<ClientConfig>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = io::Error,
    Future = impl Send,
> + Clone
       + Send {
    tower::service_fn(move |uri: Uri| {
        let cfg = cfg.clone();
        async move { super::connect::dial(&uri, cfg, 2379, None).await }
    })
}
