//! Serving the API on one replica: TLS (cluster CA) by default, bearer
//! token authentication, plain HTTP only for loopback development.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keel_store::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::api::{self, Api, ApiConfig};
use crate::metrics::Metrics;
use crate::pki::Bootstrap;
use crate::status::ApiError;
use crate::storage::Objects;

/// How one replica serves the API.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    /// `https://host:port` written into the kubeconfig (default: the
    /// listen address).
    pub advertise_url: Option<String>,
    /// Serve plain HTTP without authentication (loopback only).
    pub insecure_http: bool,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Tokens accepted besides the cluster's admin token.
    pub extra_tokens: Vec<String>,
    pub api: ApiConfig,
}

/// Binds the API port (before anything is written, so a clash fails
/// first). Plain HTTP is refused on a non-loopback address.
pub async fn bind(addr: &str, insecure_http: bool) -> anyhow::Result<TcpListener> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--listen-api {addr}: {e}"))?;
    if insecure_http && !l.local_addr()?.ip().is_loopback() {
        anyhow::bail!("--insecure-http serves without authentication and is allowed only on a loopback address, not {addr}");
    }
    Ok(l)
}

/// Waits for the cluster's credentials (needs a quorum), writes the data
/// dir files, then serves until `shutdown` resolves.
pub async fn serve(
    store: Store,
    listener: TcpListener,
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let objects = Objects::new(store, metrics.clone());
    let local = listener.local_addr()?;
    tokio::pin!(shutdown);
    let boot = tokio::select! {
        b = bootstrap(&objects) => b?,
        _ = &mut shutdown => return Ok(()),
    };
    let scheme = if cfg.insecure_http { "http" } else { "https" };
    let url = cfg
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{local}"));
    boot.write_files(&cfg.data_dir, &url, !cfg.insecure_http)?;
    crate::bootstrap::ensure_namespaces(&objects).await;
    let acceptor = if cfg.insecure_http {
        None
    } else {
        Some(tls_acceptor(&boot, local, &cfg.tls_sans)?)
    };
    let mut tokens = cfg.extra_tokens.clone();
    tokens.push(boot.admin_token.clone());
    let auth = Arc::new(Auth {
        tokens,
        required: !cfg.insecure_http,
    });
    let api = Arc::new(Api {
        objects,
        metrics,
        cfg: cfg.api.clone(),
    });
    tracing::info!(%url, "serving the Kubernetes API");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => spawn_conn(sock, peer, acceptor.clone(), api.clone(), auth.clone()),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut shutdown => return Ok(()),
        }
    }
}

async fn bootstrap(objects: &Objects) -> anyhow::Result<Bootstrap> {
    let mut last = None;
    for _ in 0..600 {
        match Bootstrap::load_or_create(objects).await {
            Ok(b) => return Ok(b),
            Err(e) => {
                tracing::info!(error = %e, "waiting for a quorum to load the cluster credentials");
                last = Some(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no quorum for the cluster credentials")))
}

fn tls_acceptor(
    boot: &Bootstrap,
    local: SocketAddr,
    sans: &[String],
) -> anyhow::Result<TlsAcceptor> {
    let mut hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        local.ip().to_string(),
    ];
    hosts.extend(sans.iter().cloned());
    let (chain, key) = boot.server_cert(&hosts)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Bearer-token authentication. Health and version endpoints are open,
/// as in Kubernetes (`system:public-info-viewer`).
struct Auth {
    tokens: Vec<String>,
    required: bool,
}

impl Auth {
    fn allows(&self, req: &Request<Body>) -> bool {
        if !self.required {
            return true;
        }
        let path = req.uri().path();
        if matches!(path, "/version" | "/healthz" | "/livez" | "/readyz") {
            return true;
        }
        let Some(v) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(tok) = v.strip_prefix("Bearer ") else {
            return false;
        };
        self.tokens
            .iter()
            .any(|t| constant_time_eq(t.as_bytes(), tok.trim().as_bytes()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn spawn_conn(
    sock: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    api: Arc<Api>,
    auth: Arc<Auth>,
) {
    let _ = sock.set_nodelay(true);
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let api = api.clone();
            let auth = auth.clone();
            async move {
                let req = req.map(Body::new);
                let resp: Response<Body> = if auth.allows(&req) {
                    api::handle(api, req).await
                } else {
                    api::error_response(&ApiError::unauthorized())
                };
                Ok::<_, Infallible>(resp)
            }
        });
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let result = match acceptor {
            Some(a) => match tokio::time::timeout(Duration::from_secs(10), a.accept(sock)).await {
                Ok(Ok(tls)) => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), service)
                        .await
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            },
            None => {
                builder
                    .serve_connection_with_upgrades(TokioIo::new(sock), service)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    });
}
