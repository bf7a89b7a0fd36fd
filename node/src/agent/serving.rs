//! The TLS of the agent port (`AgentService`: logs, exec, attach,
//! port-forward, stats; and `GET /metrics/resource`), as the kubelet
//! serves its port:
//!
//! - **Serving certificate.** The agent generates a key and asks for a
//!   certificate for `CN=system:node:<name>, O=system:nodes` naming the
//!   node's name and InternalIP, through a CertificateSigningRequest to
//!   signer `kubernetes.io/kubelet-serving` ([`node_cert::request_serving`]).
//!   The control plane's approver approves it when the requester is that
//!   node and the names are the Node's own; an agent running with an
//!   admin's credentials approves its request itself. It is renewed at 80%
//!   of its lifetime and swapped in for new handshakes ([`CertSlot`]).
//! - **Client authentication.** A handshake needs a client certificate
//!   chaining to the cluster CA; then every request must come from the API
//!   server's identity, `CN=kube-apiserver-kubelet-client` in
//!   `O=system:masters` (a certificate only the cluster CA's holder can
//!   issue: the CSR signers refuse `system:masters`). Other clients (a
//!   node's certificate, a user's) get gRPC `PermissionDenied`, or HTTP
//!   403, naming who they are and who is allowed.
//!
//! Without a cluster CA (a control plane on plain HTTP,
//! `--insecure-http`) there is no certificate to get: the port is served
//! in plaintext on a loopback address only, with a startup warning, as the
//! store allows plaintext on loopback; any other address is refused.

use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::response::IntoResponse as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use super::node_cert::{self, NodeCert};
use super::AgentConfig;

/// The user the API server calls agents as (kube-apiserver's
/// `--kubelet-client-certificate` convention).
pub const APISERVER_USER: &str = "kube-apiserver-kubelet-client";
/// The group the API server's agent-client certificate is in.
pub const MASTERS_GROUP: &str = "system:masters";
/// How long one CSR may wait for its certificate before it is asked again.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after a failed request.
const RETRY: Duration = Duration::from_secs(2);
/// Longest TLS handshake on the agent port.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The current serving certificate; new handshakes use the newest, open
/// connections keep theirs. Empty until the first one is issued (such
/// handshakes fail).
#[derive(Debug, Default)]
pub struct CertSlot(RwLock<Option<Arc<CertifiedKey>>>);

impl CertSlot {
    /// Swaps in `cert`. Errors: PEM that holds no certificate or key.
    pub fn set(&self, cert: &NodeCert) -> anyhow::Result<()> {
        let key = certified_key(cert)?;
        match self.0.write() {
            Ok(mut k) => *k = Some(key),
            Err(p) => *p.into_inner() = Some(key),
        }
        Ok(())
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.0.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

fn certified_key(cert: &NodeCert) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the serving certificate is not PEM")?;
    anyhow::ensure!(!chain.is_empty(), "the serving certificate PEM is empty");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .context("the serving key is not PEM")?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .context("the serving key")?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// The agent port's TLS configuration: certificates from `slot`, client
/// certificates required and verified against the cluster CA `ca_pem`.
pub fn server_config(
    ca_pem: &[u8],
    slot: Arc<CertSlot>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(c.context("the cluster CA is not PEM")?)
            .context("the cluster CA")?;
    }
    anyhow::ensure!(!roots.is_empty(), "the cluster CA PEM holds no certificate");
    let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("the client certificate verifier")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(clients)
        .with_cert_resolver(slot);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Whether the verified client certificate chain `certs` is the API
/// server's; the error names the subject found and the one required.
pub fn check_client(certs: Option<&[CertificateDer<'_>]>) -> Result<(), String> {
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return Err("the agent port needs a client certificate".into());
    };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("the client certificate does not parse: {e}"))?;
    let text = |a: &x509_parser::x509::AttributeTypeAndValue| a.as_str().ok().map(str::to_string);
    let cn = cert
        .subject()
        .iter_common_name()
        .find_map(text)
        .unwrap_or_default();
    let orgs: Vec<String> = cert
        .subject()
        .iter_organization()
        .filter_map(text)
        .collect();
    if cn == APISERVER_USER && orgs.iter().any(|o| o == MASTERS_GROUP) {
        return Ok(());
    }
    Err(format!(
        "client CN={cn:?} O={orgs:?} may not use the agent port: only the API server \
         (CN={APISERVER_USER}, O={MASTERS_GROUP}) may"
    ))
}

/// Middleware of the agent port: refuses requests whose connection's
/// client certificate is not the API server's ([`check_client`]) with
/// gRPC `PermissionDenied` (gRPC requests) or HTTP 403.
pub async fn authorize(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs());
    let Err(why) = check_client(certs.as_deref().map(Vec::as_slice)) else {
        return next.run(req).await;
    };
    tracing::info!(reason = %why, "refused a call to the agent port");
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    match grpc {
        true => tonic::Status::permission_denied(why).into_http::<axum::body::Body>(),
        false => (http::StatusCode::FORBIDDEN, why).into_response(),
    }
}

/// TLS connections accepted on `listener` with `cfg`, each handshake in
/// a task of its own (a slow or failing client holds up no other); failed
/// handshakes (no or untrusted client certificate) are logged and dropped.
pub fn tls_incoming(
    listener: TcpListener,
    cfg: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "agent port: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, conns) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => {
                        let _ = conns.send(Ok(s)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "agent port: TLS handshake refused")
                    }
                    Err(_) => tracing::info!(%peer, "agent port: TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The names the serving certificate is for: the node name and its
/// InternalIP (what the API server dials and checks).
pub fn serving_names(cfg: &AgentConfig) -> Vec<String> {
    vec![cfg.node_name.clone(), cfg.node_ip.to_string()]
}

/// Requests serving certificates until one is issued, then renews it
/// before it expires into `slot`, forever. `ready` is sent the first one
/// (so the port starts serving once it has a certificate).
pub async fn run(cfg: AgentConfig, slot: Arc<CertSlot>, ready: tokio::sync::oneshot::Sender<()>) {
    let mut ready = Some(ready);
    loop {
        let cert = obtain(&cfg).await;
        if let Err(e) = slot.set(&cert) {
            tracing::error!(error = %format!("{e:#}"), "unusable serving certificate; requesting another");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        tracing::info!(node = %cfg.node_name, "agent port serving certificate issued");
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        let wait_s = match node_cert::validity(&cert.cert_pem) {
            Ok(v) => (v.renew_at_s() - node_cert::now_unix_s()).max(1),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the serving certificate; not rotating it");
                return;
            }
        };
        tokio::time::sleep(Duration::from_secs(wait_s as u64)).await;
    }
}

/// One serving certificate, retrying every failure (see the module docs).
async fn obtain(cfg: &AgentConfig) -> NodeCert {
    let self_approve = cfg.node_identity.is_none();
    loop {
        let issued = async {
            let client = super::api::client(cfg, "keel-agent")?;
            node_cert::request_serving(
                client,
                &cfg.node_name,
                serving_names(cfg),
                self_approve,
                ISSUE_TIMEOUT,
            )
            .await
        };
        match issued.await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "agent port serving certificate: retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, org: &str) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        p.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn only_the_api_server_identity_may_call() {
        check_client(Some(&[cert(APISERVER_USER, MASTERS_GROUP)])).unwrap();
        let node = check_client(Some(&[cert("system:node:n1", "system:nodes")])).unwrap_err();
        assert!(
            node.contains("system:node:n1") && node.contains(APISERVER_USER),
            "{node}"
        );
        let not_masters = check_client(Some(&[cert(APISERVER_USER, "dev")])).unwrap_err();
        assert!(not_masters.contains("dev"), "{not_masters}");
        assert!(check_client(None)
            .unwrap_err()
            .contains("client certificate"));
    }
}
