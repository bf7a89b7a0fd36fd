//! Dialling node agents (logs, exec, attach, port-forward, stats) as the
//! API server: kube-apiserver's `--kubelet-client-certificate` and
//! `--kubelet-certificate-authority`.
//!
//! Each replica issues itself, from the cluster CA at start, a client
//! certificate for `CN=kube-apiserver-kubelet-client, O=system:masters`
//! (kept in memory, re-issued when a fifth of its validity is left, and
//! copied to `<data-dir>/pki/apiserver-kubelet-client.{crt,key}` for
//! operators, as kubeadm keeps it), presents it to the agent and verifies
//! the agent's serving certificate against the cluster CA and the Node's
//! InternalIP it dials. Agents accept no other client (see the agent's
//! `serving` module).
//!
//! A server on plain HTTP (`--insecure-http`, loopback only) has no
//! [`AgentTls`] and dials agents in plaintext, as such agents serve.
//!
//! Errors: the agent unreachable, or its certificate not from the cluster
//! CA or not naming the address dialled, as the dial's message.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::pki::Bootstrap;
use crate::private_file;

/// The user agents accept calls from.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// Its group.
pub const KUBELET_CLIENT_GROUP: &str = "system:masters";
/// How long an issued client certificate is valid.
const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long dialling an agent (TCP and TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The API server's side of agent TLS on one replica.
pub struct AgentTls {
    boot: Bootstrap,
    pki_dir: Option<PathBuf>,
    current: Mutex<(Arc<rustls::ClientConfig>, Instant)>,
}

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentTls { .. }") // never log keys
    }
}

impl AgentTls {
    /// Issues the client certificate from `boot`'s CA; with `data_dir`,
    /// also writes it under `<data_dir>/pki/`. Errors: the CA unusable,
    /// the files unwritable.
    pub fn new(boot: &Bootstrap, data_dir: Option<&Path>) -> anyhow::Result<AgentTls> {
        let pki_dir = data_dir.map(|d| d.join("pki"));
        let config = issue(boot, pki_dir.as_deref())?;
        Ok(AgentTls {
            boot: boot.clone(),
            pki_dir,
            current: Mutex::new((config, Instant::now() + VALIDITY * 4 / 5)),
        })
    }

    /// The client configuration, re-issued when it nears expiry (a failed
    /// re-issue keeps the current one and is logged).
    fn config(&self) -> Arc<rustls::ClientConfig> {
        let mut cur = match self.current.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if Instant::now() >= cur.1 {
            match issue(&self.boot, self.pki_dir.as_deref()) {
                Ok(c) => *cur = (c, Instant::now() + VALIDITY * 4 / 5),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "re-issuing the agent client certificate failed")
                }
            }
        }
        cur.0.clone()
    }
}

/// A client configuration presenting a fresh kubelet-client certificate
/// and trusting only the cluster CA.
fn issue(boot: &Bootstrap, pki_dir: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let (cert_pem, key_pem) = boot.client_cert(
        KUBELET_CLIENT_USER,
        &[KUBELET_CLIENT_GROUP.to_string()],
        VALIDITY,
    )?;
    if let Some(dir) = pki_dir {
        std::fs::create_dir_all(dir)?;
        private_file::write(&dir.join("apiserver-kubelet-client.crt"), &cert_pem)?;
        private_file::write(&dir.join("apiserver-kubelet-client.key"), &key_pem)?;
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(crate::pki::pem_to_der(
        &boot.ca_cert_pem,
    )?))?;
    let chain =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// A gRPC channel to the agent at `url` (`http://<InternalIP>:<port>`,
/// see [`crate::podlogs::agent_url`]): over TLS as the API server when
/// `tls` is set, else plaintext. The error is the dial's message.
pub async fn connect(tls: Option<&AgentTls>, url: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT);
    let Some(tls) = tls else {
        return endpoint.connect().await.map_err(|e| format!("{url}: {e}"));
    };
    let cfg = tls.config();
    let connector = tower::service_fn(move |uri: Uri| dial(uri, cfg.clone()));
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("{url} (TLS): {}", error_chain(&e)))
}

/// TCP to the URI's host and port, then a TLS handshake verifying the
/// agent's certificate names that host (the Node's InternalIP).
async fn dial(
    uri: Uri,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri
        .port_u16()
        .ok_or_else(|| invalid(format!("agent URL {uri} has no port")))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host).map_err(|e| invalid(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?;
    Ok(TokioIo::new(tls))
}

/// The error and its causes, `: `-joined (tonic's transport error alone
/// says only "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}
