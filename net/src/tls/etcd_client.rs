//! Dialling a replica's etcd client port as a client, with etcdctl's
//! `--cacert`, `--cert` and `--key`: for keel's own tools (`keel member`,
//! `keel snapshot save`) against a client port that requires TLS and
//! client certificates.
//!
//! The server's certificate is verified against `--cacert` and must name
//! the host dialled (DNS name or IP address), as etcdctl checks it.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tonic::transport::{Channel, Endpoint, Uri};

use super::files::{read_certs, read_key};
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
        for c in read_certs(ca, "--cacert")? {
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
                let chain = read_certs(cert, "--cert")?;
                let key_der = read_key(key, "--key")?;
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
    let dial = match (use_tls, &tls) {
        (true, Some(cfg)) => Dial::Tls {
            client_cert: cfg.client_auth_cert_resolver.has_certs(),
        },
        _ => Dial::Plaintext,
    };
    let r = match tls.filter(|_| use_tls) {
        None => ep.connect().await,
        Some(cfg) => ep.connect_with_connector(connector(cfg)).await,
    };
    r.map_err(|e| explain_failure(endpoint, &e, dial))
}

/// How a client dialled the etcd port, for [`explain_failure`]'s hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dial {
    Plaintext,
    /// TLS; `client_cert`: whether this client offered a certificate.
    Tls {
        client_cert: bool,
    },
}

impl Dial {
    /// From what the user passed: TLS once any TLS file was given.
    pub fn from_files(files: &ClientTlsFiles) -> Dial {
        match files.is_empty() {
            true => Dial::Plaintext,
            false => Dial::Tls {
                client_cert: files.cert.is_some(),
            },
        }
    }
}

/// A readable message for a failed dial or RPC to `endpoint`, as etcdctl
/// gives: a TLS failure anywhere in `err`'s source chain is named (unknown
/// CA, a certificate for another host, a client certificate the server
/// refused) with the flags to fix it; other errors show their whole chain
/// instead of tonic's bare "transport error". Only the TLS message names
/// `endpoint` (it starts with "TLS handshake with"; callers prefix the
/// others). `dial`: how this client dialled (a plaintext dial of a TLS port
/// gets a hint; so does a TLS dial without a client certificate that the
/// server closed).
pub fn explain_failure(
    endpoint: &str,
    err: &(dyn std::error::Error + 'static),
    dial: Dial,
) -> String {
    let chain = error_chain(err);
    let host_port = endpoint.split_once("://").map_or(endpoint, |(_, hp)| hp);
    if let Some(why) = describe_tls(&chain) {
        return format!("TLS handshake with {host_port} failed: {why} ({chain})");
    }
    match dial {
        Dial::Plaintext => format!(
            "{chain} (if this port serves TLS, use an https:// endpoint and pass --cacert/--cert/--key)"
        ),
        // TLS 1.3: the client's handshake completes before the server checks
        // the client's certificate, so a refusal may arrive as a closed
        // connection instead of the alert naming it.
        Dial::Tls { client_cert: false } if closed(&chain) => format!(
            "TLS handshake with {host_port} failed: the server closed the connection after the handshake; it probably requires a client certificate — pass --cert/--key issued by the cluster's CA ({chain})"
        ),
        Dial::Tls { .. } => chain,
    }
}

/// An RPC failure as a user reads it: etcd's own error message as the
/// server sent it (`etcdserver: ...`, as etcdctl prints it), or for a
/// transport failure (no server answer) the readable cause from
/// [`explain_failure`], naming `endpoint`.
pub fn explain_status(endpoint: &str, status: &tonic::Status, dial: Dial) -> String {
    if std::error::Error::source(status).is_none() {
        return status.message().to_string();
    }
    name_endpoint(endpoint, explain_failure(endpoint, status, dial))
}

/// `msg` prefixed with `endpoint`, unless it names the endpoint already
/// (a TLS failure does: "TLS handshake with host:port failed").
pub fn name_endpoint(endpoint: &str, msg: String) -> String {
    let host_port = endpoint.split_once("://").map_or(endpoint, |(_, hp)| hp);
    match msg.contains(host_port) {
        true => msg,
        false => format!("{endpoint}: {msg}"),
    }
}

/// Whether `chain` says the server closed the connection.
fn closed(chain: &str) -> bool {
    [
        "connection closed",
        "connection reset",
        "broken pipe",
        "unexpected EOF",
    ]
    .iter()
    .any(|w| chain.contains(w))
}

/// `err` and its sources, joined by ": ", repeated messages dropped. A
/// gRPC status contributes its message, not its verbose Display.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = match e.downcast_ref::<tonic::Status>() {
            Some(st) => st.message().to_string(),
            None => e.to_string(),
        };
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// What a TLS failure in `chain` (rustls's messages: the variant names
/// of its certificate errors and alerts) means for the user, with the flag
/// to fix it; `None` when the chain shows no TLS failure. Matched on text
/// because the layers between rustls and tonic (tokio-rustls, hyper)
/// keep only the message of rustls's error.
fn describe_tls(chain: &str) -> Option<&'static str> {
    let any = |words: &[&str]| words.iter().any(|w| chain.contains(w));
    if any(&["UnknownIssuer", "BadSignature"]) {
        Some("certificate signed by unknown authority — pass --cacert with the CA that signed the replicas' certificates")
    } else if any(&["NotValidForName"]) {
        Some("the server's certificate is not valid for the host dialled — use an endpoint its certificate names")
    } else if any(&["Expired", "NotValidYet"]) {
        Some("the server's certificate is expired or not yet valid")
    } else if chain.contains("received fatal alert")
        && any(&[
            "CertificateRequired",
            "BadCertificate",
            "UnknownCA",
            "UnsupportedCertificate",
            "CertificateUnknown",
            "HandshakeFailure",
        ])
    {
        Some("the server refused this client's certificate (none given, or not signed by a CA it trusts) — pass --cert/--key issued by the cluster's CA")
    } else if any(&["InvalidContentType", "corrupt message"]) {
        Some("the server did not answer with TLS — is the endpoint plaintext (http://)?")
    } else if chain.contains("invalid peer certificate") {
        Some("the server's certificate does not verify — check --cacert")
    } else {
        None
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const TLS: Dial = Dial::Tls { client_cert: true };

    #[test]
    fn tls_failures_are_named_with_the_flag_to_fix() {
        let io = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let refused = io("received fatal alert: CertificateRequired");
        let msg = explain_failure("127.0.0.2:2379", &refused, TLS);
        assert!(
            msg.starts_with("TLS handshake with 127.0.0.2:2379 failed: the server refused")
                && msg.contains("--cert/--key"),
            "{msg}"
        );
        let unknown = io("invalid peer certificate: UnknownIssuer");
        let msg = explain_failure("a:1", &unknown, TLS);
        assert!(
            msg.contains("unknown authority") && msg.contains("--cacert"),
            "{msg}"
        );
        let status = tonic::Status::unavailable("etcdserver: no leader");
        assert_eq!(
            explain_failure("a:1", &status, TLS),
            "etcdserver: no leader"
        );
        let plain = io("connection reset");
        let msg = explain_failure("a:1", &plain, Dial::Plaintext);
        assert!(
            msg.starts_with("connection reset (if this port serves TLS"),
            "{msg}"
        );
        // A closed connection is named as a refusal only when no client
        // certificate was offered.
        let closed = io("transport error: connection closed");
        let msg = explain_failure("a:1", &closed, Dial::Tls { client_cert: false });
        assert!(
            msg.starts_with("TLS handshake with a:1 failed: the server closed")
                && msg.contains("--cert/--key"),
            "{msg}"
        );
        assert_eq!(
            explain_failure("a:1", &closed, TLS),
            "transport error: connection closed"
        );
    }
}
