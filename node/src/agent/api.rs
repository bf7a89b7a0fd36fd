//! A `kube::Client` for the agent's API-watching loops (service proxy,
//! cluster DNS, ingress router), the way kube-proxy and CoreDNS reach the
//! API: typed list/watch over HTTPS with the agent's bearer token, trusting
//! the cluster CA.
//!
//! Pod assignments and status stay on the node service (gRPC); this client
//! is for reading cluster-wide objects (Services, EndpointSlices, Ingresses,
//! Secrets) into `kube-runtime` reflector caches.
//!
//! Errors: no server configured, a server URL kube cannot parse, or a CA
//! bundle without a certificate.

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use super::AgentConfig;

/// The client on the first configured server, sending `user_agent` (the
/// field manager of any status writes, e.g. `keel-ingress`).
pub fn client(cfg: &AgentConfig, user_agent: &str) -> anyhow::Result<kube::Client> {
    let server = cfg
        .servers
        .first()
        .context("no control-plane server configured")?;
    let url = server
        .parse()
        .with_context(|| format!("control-plane server {server:?} is not a URL"))?;
    let mut config = kube::Config::new(url);
    if let Some(pem) = &cfg.ca_pem {
        let roots = CertificateDer::pem_slice_iter(pem)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .context("cluster CA is not PEM")?;
        anyhow::ensure!(!roots.is_empty(), "cluster CA PEM holds no certificate");
        config.root_cert = Some(roots);
    }
    if let Some(token) = &cfg.token {
        config.auth_info.token = Some(token.clone().into());
    }
    if let Some(id) = &cfg.node_identity {
        use base64::Engine as _;
        let c = id.current();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        config.auth_info.client_certificate_data = Some(b64(&c.cert_pem));
        config.auth_info.client_key_data = Some(b64(&c.key_pem).into());
    }
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(user_agent).context("user agent is not header text")?,
    ));
    Ok(kube::Client::try_from(config)?)
}
