//! `keel agent --join`: a new node's TLS bootstrap. The agent
//!
//! 1. fetches the cluster CA from `<server>/cacerts` over a connection it
//!    does not verify yet, and accepts it only if its SHA-256 is the
//!    fingerprint in the join token (so a machine in the middle cannot
//!    make it trust another CA, nor learn the token: the token is sent
//!    only after);
//! 2. generates a key and submits a CSR for `system:node:<name>`,
//!    authenticated with the join token's bootstrap token, over a
//!    connection verified against that CA;
//! 3. waits for the control plane to approve and sign it and writes
//!    `<root-dir>/kubeconfig` with the node certificate, which the agent
//!    then runs with (and rotates).
//!
//! An agent restarted with a kubeconfig whose certificate is still valid
//! for the same node does not join again.
//!
//! Errors: the server unreachable or serving no CA, a CA whose fingerprint
//! differs (both named), the token refused (the API's message: unknown,
//! wrong secret, expired), the CSR denied or not signed in time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest as _;

use super::node_cert::{self, NodeCert};

/// Everything a join needs.
#[derive(Clone)]
pub struct Join {
    /// `https://<replica>:6443`.
    pub server: String,
    /// Lower-case hex SHA-256 of the CA certificate's DER (from the join
    /// token).
    pub ca_hash: String,
    /// The bootstrap token, `<id>.<secret>`.
    pub token: String,
    pub node: String,
    /// Where the node kubeconfig is written.
    pub kubeconfig: PathBuf,
    /// How long to wait for the certificate.
    pub timeout: Duration,
}

impl std::fmt::Debug for Join {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Join")
            .field("server", &self.server)
            .field("node", &self.node)
            .finish_non_exhaustive() // never log the token
    }
}

/// Why an existing kubeconfig at `path` cannot be reused for `node`, or
/// None when it holds an unexpired certificate for that node (one past its
/// renewal point is renewed right after start, with its own identity).
pub fn existing_identity_problem(path: &Path, node: &str) -> Option<String> {
    let auth = match super::kubeconfig::read_kubeconfig(path) {
        Ok(a) => a,
        Err(e) => return Some(format!("{e:#}")),
    };
    let Some(cert) = auth.client_cert_pem else {
        return Some("it holds no client certificate".into());
    };
    let v = match node_cert::validity(&String::from_utf8_lossy(&cert)) {
        Ok(v) => v,
        Err(e) => return Some(format!("{e:#}")),
    };
    if v.common_name != node_cert::node_user(node) {
        return Some(format!("its certificate is for {:?}", v.common_name));
    }
    if v.not_after_s <= node_cert::now_unix_s() {
        return Some("its certificate has expired".into());
    }
    None
}

/// Joins (see the module docs) unless `j.kubeconfig` already holds a
/// valid identity for the node; returns the kubeconfig's path.
pub async fn ensure_joined(j: &Join) -> anyhow::Result<PathBuf> {
    match existing_identity_problem(&j.kubeconfig, &j.node) {
        None => {
            tracing::info!(kubeconfig = %j.kubeconfig.display(), "using the node's existing credentials");
            return Ok(j.kubeconfig.clone());
        }
        Some(why) if j.kubeconfig.exists() => {
            tracing::info!(kubeconfig = %j.kubeconfig.display(), %why, "joining again");
        }
        Some(_) => {}
    }
    let ca_pem = fetch_ca(&j.server).await?;
    check_fingerprint(&ca_pem, &j.ca_hash, &j.server)?;
    let client = bootstrap_client(&j.server, ca_pem.as_bytes(), &j.token)?;
    let cert: NodeCert = node_cert::request(client, &j.node, j.timeout)
        .await
        .context("joining with the bootstrap token")?;
    if let Some(dir) = j.kubeconfig.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    keel_apimachinery::private_file::write(
        &j.kubeconfig,
        node_cert::kubeconfig(&j.server, &ca_pem, &j.node, &cert),
    )?;
    tracing::info!(node = %j.node, kubeconfig = %j.kubeconfig.display(), "joined the cluster");
    Ok(j.kubeconfig.clone())
}

/// Refuses a CA whose DER does not hash to `want` (hex).
pub fn check_fingerprint(ca_pem: &str, want: &str, server: &str) -> anyhow::Result<()> {
    let der = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .next()
        .with_context(|| format!("{server}/cacerts served no certificate"))?
        .with_context(|| format!("{server}/cacerts served no PEM certificate"))?;
    let got = hex::encode(sha2::Sha256::digest(der.as_ref()));
    if !got.eq_ignore_ascii_case(want) {
        bail!(
            "the cluster CA served by {server} has fingerprint sha256:{got}, but the join token expects sha256:{want}: refusing to trust it (wrong token, or not the cluster you meant)"
        );
    }
    Ok(())
}

fn bootstrap_client(server: &str, ca_pem: &[u8], token: &str) -> anyhow::Result<kube::Client> {
    let url = server
        .parse()
        .with_context(|| format!("--join {server:?} is not a URL"))?;
    let mut config = kube::Config::new(url);
    let roots = CertificateDer::pem_slice_iter(ca_pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .context("cluster CA is not PEM")?;
    config.root_cert = Some(roots);
    config.auth_info.token = Some(token.to_string().into());
    Ok(kube::Client::try_from(config)?)
}

/// GET `<server>/cacerts`, trusting whatever certificate the server shows
/// (the caller checks what it got against the token's fingerprint).
pub async fn fetch_ca(server: &str) -> anyhow::Result<String> {
    let uri: http::Uri = server
        .parse()
        .with_context(|| format!("--join {server:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        bail!("--join {server:?}: joining needs an https:// server URL");
    }
    let host = uri.host().context("--join URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
        .with_no_client_auth();
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::get("/cacerts")
            .header(http::header::HOST, format!("{host}:{port}"))
            .body(Empty::<Bytes>::new())?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| anyhow::anyhow!("{server}/cacerts: no answer within 10s"))?
        .with_context(|| format!("fetching the cluster CA from {server}/cacerts"))?;
    if !status.is_success() {
        bail!("{server}/cacerts answered {status}: is it a keel server?");
    }
    String::from_utf8(body.to_vec()).with_context(|| format!("{server}/cacerts is not PEM text"))
}

/// Accepts any server certificate (but checks handshake signatures): only
/// for fetching the CA, whose fingerprint is checked afterwards.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_must_match() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let good = hex::encode(sha2::Sha256::digest(cert.der().as_ref()));
        check_fingerprint(&cert.pem(), &good, "https://x").unwrap();
        let e = check_fingerprint(&cert.pem(), &"0".repeat(64), "https://x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fingerprint") && e.contains(&good), "{e}");
        assert!(check_fingerprint("junk", &good, "https://x").is_err());
    }

    #[test]
    fn existing_identity_is_reused_only_for_the_same_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        assert!(existing_identity_problem(&path, "n1").is_some());
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let cert = NodeCert {
            cert_pem: p.self_signed(&key).unwrap().pem(),
            key_pem: key.serialize_pem(),
        };
        let text = node_cert::kubeconfig("https://127.0.0.1:1", "CA", "n1", &cert);
        std::fs::write(&path, text).unwrap();
        assert_eq!(existing_identity_problem(&path, "n1"), None);
        assert!(existing_identity_problem(&path, "n2")
            .unwrap()
            .contains("system:node:n1"));
    }
}
