//! Calling a node agent's port directly, as the API server does (mutual
//! TLS with the cluster CA) or as someone else: the identities `keel up`
//! leaves in its data dir, an HTTP/1.1 GET over TLS, and
//! `AgentService.Stats` over gRPC.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

/// A client certificate and key, PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// The API server's agent-client identity (`<data-dir>/pki/`).
pub fn apiserver(data_dir: &Path) -> Identity {
    let pki = data_dir.join("pki");
    Identity {
        cert_pem: std::fs::read(pki.join("apiserver-kubelet-client.crt")).unwrap(),
        key_pem: std::fs::read(pki.join("apiserver-kubelet-client.key")).unwrap(),
    }
}

/// Node `name`'s client identity, from the kubeconfig `keel up` wrote.
pub fn node(data_dir: &Path, name: &str) -> Identity {
    let path = data_dir.join("agents").join(format!("{name}.kubeconfig"));
    let text = std::fs::read_to_string(&path).unwrap();
    let field = |f: &str| {
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(f))
            .unwrap_or_else(|| panic!("{f} missing in {}", path.display()));
        base64::engine::general_purpose::STANDARD
            .decode(line.trim())
            .unwrap()
    };
    Identity {
        cert_pem: field("client-certificate-data:"),
        key_pem: field("client-key-data:"),
    }
}

/// The cluster CA certificate, PEM.
pub fn ca(data_dir: &Path) -> Vec<u8> {
    std::fs::read(data_dir.join("pki").join("ca.crt")).unwrap()
}

/// `(InternalIP, agent port)` of a Node object.
pub fn endpoint(node: &Value) -> (String, u16) {
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap();
    let ip = node["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    (ip, port as u16)
}

/// A client configuration trusting only `ca_pem`, presenting `id`.
pub fn client_config(
    ca_pem: &[u8],
    id: Option<&Identity>,
    alpn: &[u8],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match id {
        None => b.with_no_client_auth(),
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(&id.cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(&id.key_pem).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
    };
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(cfg)
}

/// `GET path` over TLS (HTTP/1.1) on the agent port, verifying the
/// agent's certificate against `ca_pem` and `ip`: the whole response, or
/// the error.
pub fn https_get(
    ca_pem: &[u8],
    id: Option<&Identity>,
    ip: &str,
    port: u16,
    path: &str,
) -> Result<String, String> {
    let cfg = client_config(ca_pem, id, b"http/1.1");
    let name = ServerName::try_from(ip.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect((ip, port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
        // Servers that close without close_notify still answered.
        Err(_) if !out.is_empty() => Ok(String::from_utf8_lossy(&out).into_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Dials the agent over TLS for tonic.
#[derive(Clone)]
struct TlsDial(Arc<rustls::ClientConfig>);

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tonic::codegen::Service<http::Uri> for TlsDial {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = futures::future::BoxFuture<'static, std::io::Result<TlsIo>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let cfg = self.0.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_string();
            let tcp = tokio::net::TcpStream::connect((host.as_str(), uri.port_u16().unwrap_or(0)))
                .await?;
            let name = ServerName::try_from(host).map_err(std::io::Error::other)?;
            let s = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(s))
        })
    }
}

/// Why a direct call failed: the gRPC status code when the call got one.
#[derive(Debug)]
pub struct CallError {
    pub code: Option<tonic::Code>,
    pub message: String,
}

/// `AgentService.Stats` on `ip:port`: over TLS trusting `ca_pem` and
/// presenting `id` when `ca_pem` is given, else plaintext h2c.
pub async fn stats(
    ca_pem: Option<&[u8]>,
    id: Option<&Identity>,
    ip: &str,
    port: u16,
) -> Result<keel_proto::keelnode::StatsResponse, CallError> {
    use keel_proto::keelnode::agent_service_client::AgentServiceClient;
    let transport = |e: tonic::transport::Error| CallError {
        code: None,
        message: format!("{e:?}"),
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}"))
        .map_err(transport)?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10));
    let channel = match ca_pem {
        Some(ca) => endpoint
            .connect_with_connector(TlsDial(client_config(ca, id, b"h2")))
            .await
            .map_err(transport)?,
        None => endpoint.connect().await.map_err(transport)?,
    };
    AgentServiceClient::new(channel)
        .stats(keel_proto::keelnode::StatsRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| CallError {
            code: Some(s.code()),
            message: s.message().to_string(),
        })
}
