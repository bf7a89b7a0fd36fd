//! Container probes: exec, httpGet, tcpSocket and grpc.
//!
//! The exec runtime has no container namespaces, so an exec probe runs its
//! command as a host process with the container's environment (not through
//! the runtime), killed after `timeoutSeconds`; on the keel runtime it runs
//! inside the container through `Runtime::exec`. httpGet connects to `host`
//! (default: the pod IP) and succeeds on a 2xx/3xx status; with `scheme:
//! HTTPS` it speaks TLS without verifying the certificate, as the kubelet
//! does (a probe checks health, not identity). A grpc probe calls the
//! standard `grpc.health.v1.Health/Check` (with `service`, default "") on
//! the pod IP and succeeds on SERVING, as the kubelet's.
//! Counting follows Kubernetes: `successThreshold` consecutive successes make
//! the result true, `failureThreshold` consecutive failures make it false;
//! the first run is `initialDelaySeconds` after the container started, then
//! every `periodSeconds`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, GRPCAction, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Which probe (for messages and event text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// Where and how to probe one container instance.
#[derive(Debug, Clone)]
pub struct Target {
    pub pod_ip: String,
    pub env: Vec<(String, String)>,
    pub container: Container,
    /// Run exec probes inside the container through its runtime (runtimes
    /// with namespaces: a host process would check the host's files).
    pub in_container: Option<InContainer>,
}

/// A running container instance an exec probe enters.
#[derive(Clone)]
pub struct InContainer {
    pub runtime: Arc<dyn crate::runtime::Runtime>,
    pub id: crate::runtime::ContainerId,
}

impl std::fmt::Debug for InContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} container {}", self.runtime.name(), self.id)
    }
}

/// One probe of one container instance.
#[derive(Debug, Clone)]
pub struct ProbeState {
    pub kind: Kind,
    probe: Probe,
    next_due: Instant,
    successes: u32,
    failures: u32,
    /// `None` until a threshold is reached.
    pub result: Option<bool>,
}

impl ProbeState {
    pub fn new(kind: Kind, probe: Probe, started: Instant) -> Self {
        let delay = secs(probe.initial_delay_seconds, 0);
        ProbeState {
            kind,
            probe,
            next_due: started + delay,
            successes: 0,
            failures: 0,
            result: None,
        }
    }

    /// Runs the probe if it is due. Returns the failure message of a failed
    /// run (for the `Unhealthy` event); `self.result` holds the verdict.
    pub async fn tick(&mut self, target: &Target) -> Option<String> {
        let now = Instant::now();
        if now < self.next_due {
            return None;
        }
        self.next_due = now + secs(self.probe.period_seconds, 10);
        match run(&self.probe, target).await {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= threshold(self.probe.success_threshold) {
                    self.result = Some(true);
                }
                None
            }
            Err(message) => {
                self.successes = 0;
                self.failures += 1;
                if self.failures >= threshold(self.probe.failure_threshold.or(Some(3))) {
                    self.result = Some(false);
                }
                Some(message)
            }
        }
    }

    /// After a verdict that triggered an action (a restart), count afresh.
    pub fn reset_counts(&mut self) {
        self.successes = 0;
        self.failures = 0;
    }
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.and_then(|s| u64::try_from(s).ok()).unwrap_or(default))
}

fn threshold(v: Option<i32>) -> u32 {
    v.and_then(|t| u32::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(1)
}

/// Runs one probe attempt.
pub async fn run(probe: &Probe, target: &Target) -> Result<(), String> {
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    let attempt = async {
        if let Some(e) = &probe.exec {
            exec(e.command.as_deref().unwrap_or_default(), target).await
        } else if let Some(h) = &probe.http_get {
            http_get(h, target).await
        } else if let Some(t) = &probe.tcp_socket {
            let port = port_number(&t.port, &target.container)?;
            let host = t.host.clone().unwrap_or_else(|| target.pod_ip.clone());
            tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        } else if let Some(g) = &probe.grpc {
            grpc(g, target).await
        } else {
            Err("the probe has no handler (exec, httpGet, tcpSocket or grpc)".to_string())
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("timeout after {}s", timeout.as_secs()))?
}

async fn exec(command: &[String], target: &Target) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("exec probe without a command".into());
    };
    if let Some(c) = &target.in_container {
        return exec_in_container(command, c).await;
    }
    let output = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("exec {program}: {e}"))?;
    match output.status.success() {
        true => Ok(()),
        false => {
            let out = String::from_utf8_lossy(&output.stdout);
            Err(format!(
                "command {command:?} exited with {}: {}",
                output.status,
                out.trim()
            ))
        }
    }
}

/// An exec probe through [`crate::runtime::Runtime::exec`]: succeeds on
/// exit code 0; the output is kept for the failure message. Dropping the
/// session (probe timeout) kills the command.
async fn exec_in_container(command: &[String], c: &InContainer) -> Result<(), String> {
    use crate::runtime::{ExecOutput, ExecRequest};
    let req = ExecRequest {
        command: command.to_vec(),
        stdin: false,
        tty: false,
        size: None,
    };
    let mut session = c
        .runtime
        .exec(&c.id, req)
        .await
        .map_err(|e| format!("exec {:?}: {e}", command[0]))?;
    let mut out = Vec::new();
    while let Some(msg) = session.output.recv().await {
        match msg {
            ExecOutput::Stdout(b) | ExecOutput::Stderr(b) => out.extend(b),
            ExecOutput::Exit(0) => return Ok(()),
            ExecOutput::Exit(code) => {
                return Err(format!(
                    "command {command:?} exited with exit status: {code}: {}",
                    String::from_utf8_lossy(&out).trim()
                ))
            }
        }
    }
    Err(format!(
        "command {command:?}: the exec ended without an exit code"
    ))
}

async fn http_get(h: &HTTPGetAction, target: &Target) -> Result<(), String> {
    let tls = h
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"));
    let port = port_number(&h.port, &target.container)?;
    let host = h
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| target.pod_ip.clone());
    let path = h
        .path
        .clone()
        .filter(|p| p.starts_with('/'))
        .unwrap_or_else(|| "/".into());
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{port}{path}");
    let fail = |e: &dyn std::fmt::Display| format!("Get {url:?}: {e}");
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| fail(&e))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n");
    for hdr in h.http_headers.iter().flatten() {
        req.push_str(&format!("{}: {}\r\n", hdr.name, hdr.value));
    }
    req.push_str("\r\n");
    let code = match tls {
        false => status_code(tcp, &req).await,
        true => {
            let name = ServerName::try_from(host.clone()).map_err(|e| fail(&e))?;
            let stream = tls_connector()
                .connect(name, tcp)
                .await
                .map_err(|e| fail(&e))?;
            status_code(stream, &req).await
        }
    }
    .map_err(|e| fail(&e))?;
    match (200..400).contains(&code) {
        true => Ok(()),
        false => Err(format!("HTTP probe failed with statuscode: {code}")),
    }
}

/// How much of a probe's answer is read.
const MAX_ANSWER_BYTES: usize = 10 * 1024;
/// How long the rest of an answer is waited for once its status line is in.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(200);

/// A gRPC health check of `pod IP:port` (plain HTTP/2, no TLS, as the kubelet's).
async fn grpc(g: &GRPCAction, target: &Target) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let port = u16::try_from(g.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {}", g.port))?;
    let addr = format!("http://{}:{port}", target.pod_ip);
    let service = g.service.clone().unwrap_or_default();
    let fail = |e: &dyn std::fmt::Display| format!("failed to connect service {addr:?}: {e}");
    let channel = tonic::transport::Endpoint::from_shared(addr.clone())
        .map_err(|e| fail(&e))?
        .connect()
        .await
        .map_err(|e| fail(&e))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.clone(),
        })
        .await
        .map_err(|e| {
            format!(
                "health rpc to {addr:?} (service {service:?}) failed: {}",
                e.message()
            )
        })?;
    let status = reply.into_inner().status;
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(s) => Err(format!(
            "service unhealthy (responded with {:?})",
            s.as_str_name()
        )),
        Err(_) => Err(format!(
            "service unhealthy (responded with status {status})"
        )),
    }
}

/// Sends `req` and reads the status code of the answer.
async fn status_code<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    req: &str,
) -> Result<u16, String> {
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = vec![0u8; 1024];
    let n = stream.read(&mut answer).await.map_err(|e| e.to_string())?;
    answer.truncate(n);
    // Drain the rest (up to 10 KiB, the kubelet's limit, and briefly, in
    // case the server keeps the connection open): closing with unread
    // bytes resets the connection, and servers log an error for that.
    let drain = async {
        let mut chunk = [0u8; 1024];
        let mut read = n;
        while read < MAX_ANSWER_BYTES {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(m) => read += m,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    let line = String::from_utf8_lossy(&answer[..answer.len().min(64)]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "malformed HTTP response".to_string())
}

/// TLS for HTTPS probes: any certificate is accepted (the kubelet's
/// `InsecureSkipVerify`), the handshake signatures are still checked.
fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A probe port: a number, or the name of one of the container's ports.
pub fn port_number(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("port {name:?} not found in the container's ports"))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .unwrap();
        Target {
            pod_ip: "127.0.0.1".into(),
            env: vec![("X".into(), "1".into())],
            container,
            in_container: None,
        }
    }

    #[test]
    fn named_ports_resolve() {
        let t = target();
        assert_eq!(
            port_number(&IntOrString::String("http".into()), &t.container),
            Ok(8080)
        );
        assert_eq!(port_number(&IntOrString::Int(81), &t.container), Ok(81));
        assert!(port_number(&IntOrString::String("nope".into()), &t.container).is_err());
    }

    #[tokio::test]
    async fn exec_probe_sees_env_and_thresholds_count() {
        let probe: Probe = serde_json::from_value(serde_json::json!({
            "exec": {"command": ["sh", "-c", "test \"$X\" = 1"]}, "periodSeconds": 1, "failureThreshold": 2
        }))
        .unwrap();
        let mut s = ProbeState::new(Kind::Liveness, probe, Instant::now());
        assert_eq!(s.tick(&target()).await, None);
        assert_eq!(s.result, Some(true));
        let mut bad = target();
        bad.env.clear();
        s.next_due = Instant::now();
        assert!(s.tick(&bad).await.is_some());
        assert_eq!(s.result, Some(true), "one failure is below the threshold");
        s.next_due = Instant::now();
        assert!(s.tick(&bad).await.is_some());
        assert_eq!(s.result, Some(false));
    }

    /// An HTTPS server with a self-signed certificate for another name:
    /// answers 200 on /ok and 503 elsewhere.
    async fn https_server() -> u16 {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let ck = rcgen::generate_simple_self_signed(vec!["not-this-host".into()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut buf = vec![0u8; 1024];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /ok ");
                let status = if ok {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        port
    }

    fn http_probe(scheme: &str, port: u16, path: &str) -> Probe {
        serde_json::from_value(serde_json::json!({"httpGet": {
            "scheme": scheme, "port": port, "path": path}}))
        .unwrap()
    }

    #[tokio::test]
    async fn https_probes_skip_certificate_verification_but_check_the_status() {
        let port = https_server().await;
        let t = target();
        assert_eq!(run(&http_probe("HTTPS", port, "/ok"), &t).await, Ok(()));
        let bad = run(&http_probe("HTTPS", port, "/sick"), &t).await;
        assert_eq!(bad, Err("HTTP probe failed with statuscode: 503".into()));
        // Plain HTTP against a TLS port is no success.
        assert!(run(&http_probe("HTTP", port, "/ok"), &t).await.is_err());
    }

    #[tokio::test]
    async fn grpc_probes_ask_the_standard_health_service() {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("db", tonic_health::ServingStatus::NotServing)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        let probe = |svc: Option<&str>| -> Probe {
            serde_json::from_value(serde_json::json!({"grpc": {"port": port, "service": svc}}))
                .unwrap()
        };
        let t = target();
        assert_eq!(run(&probe(None), &t).await, Ok(()));
        let db = run(&probe(Some("db")), &t).await.unwrap_err();
        assert!(db.contains("NOT_SERVING"), "{db}");
        let unknown = run(&probe(Some("nope")), &t).await.unwrap_err();
        assert!(unknown.contains("nope"), "{unknown}");
        server.abort();
        let down = run(&probe(None), &t).await.unwrap_err();
        assert!(down.contains("failed to connect"), "{down}");
    }
}
