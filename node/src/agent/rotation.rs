//! Node certificate rotation: before the node's client certificate
//! expires (at 80% of its lifetime) the agent requests a new one with its
//! current identity (a renewal CSR the control plane auto-approves for the
//! same node), writes it to its kubeconfig, and swaps it into the running
//! agent: the node-service connection is re-established with the new
//! certificate, no restart.
//!
//! A failed renewal is retried every [`RETRY`] until the certificate
//! expires and after; nothing else stops.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use super::client::ControlClient;
use super::node_cert::{self, NodeCert};

const RETRY: Duration = Duration::from_secs(5);
const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);

/// The node's current credentials, shared by whoever connects with them,
/// and where they are kept.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub cert: Arc<RwLock<NodeCert>>,
    /// The kubeconfig rotation rewrites (None: rotation is not run).
    pub kubeconfig: Option<PathBuf>,
}

impl NodeIdentity {
    pub fn new(cert: NodeCert, kubeconfig: Option<PathBuf>) -> NodeIdentity {
        NodeIdentity {
            cert: Arc::new(RwLock::new(cert)),
            kubeconfig,
        }
    }

    /// The current certificate and key.
    pub fn current(&self) -> NodeCert {
        match self.cert.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Swaps in a renewed certificate; every client built by
    /// [`super::api::client`] presents it from its next request on.
    pub fn set(&self, cert: NodeCert) {
        match self.cert.write() {
            Ok(mut c) => *c = cert,
            Err(p) => *p.into_inner() = cert,
        }
    }
}

/// A `kube::Client` on `server` trusting `ca_pem`, authenticated by
/// `cert`.
pub fn api_client(server: &str, ca_pem: &[u8], cert: &NodeCert) -> anyhow::Result<kube::Client> {
    let url = server
        .parse()
        .with_context(|| format!("control-plane server {server:?} is not a URL"))?;
    let mut config = kube::Config::new(url);
    let roots = CertificateDer::pem_slice_iter(ca_pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .context("cluster CA is not PEM")?;
    config.root_cert = Some(roots);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    config.auth_info.client_certificate_data = Some(b64(&cert.cert_pem));
    config.auth_info.client_key_data = Some(b64(&cert.key_pem).into());
    Ok(kube::Client::try_from(config)?)
}

/// Renews `identity` before it expires, forever (see the module docs).
pub async fn run(
    identity: NodeIdentity,
    node: String,
    server: String,
    ca_pem: Vec<u8>,
    client: Arc<ControlClient>,
) {
    let Some(path) = identity.kubeconfig.clone() else {
        return;
    };
    loop {
        let cur = identity.current();
        let v = match node_cert::validity(&cur.cert_pem) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the node certificate; not rotating it");
                return;
            }
        };
        // At least a second between renewals, whatever the certificate.
        let wait_s = (v.renew_at_s() - node_cert::now_unix_s()).max(1);
        tokio::time::sleep(Duration::from_secs(wait_s as u64)).await;
        let renewed = async {
            let api = api_client(&server, &ca_pem, &cur)?;
            let new = node_cert::request(api, &node, ISSUE_TIMEOUT).await?;
            let ca = String::from_utf8_lossy(&ca_pem);
            keel_apimachinery::private_file::write(
                &path,
                node_cert::kubeconfig(&server, &ca, &node, &new),
            )?;
            anyhow::Ok(new)
        };
        match renewed.await {
            Ok(new) => {
                identity.set(new);
                client.reconnect();
                tracing::info!(node = %node, kubeconfig = %path.display(), "rotated the node's client certificate");
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "renewing the node certificate failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
