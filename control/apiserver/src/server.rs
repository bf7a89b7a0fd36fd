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

use crate::api::services::ServiceRange;
use crate::api::{self, Api, ApiConfig};
use crate::client::Client;
use crate::kubernetes_service::{self, ApiEndpoint};
use crate::local::LocalApi;
use crate::metrics::Metrics;
use crate::nodeservice::PodCidrs;
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
    /// Where nodes' pod CIDRs come from.
    pub pod_cidrs: PodCidrs,
}

/// Started once the API serves, with the in-process API (the controller
/// manager); the task is aborted when the server stops.
pub type OnServing = Box<dyn FnOnce(LocalApi) -> tokio::task::JoinHandle<()> + Send>;

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
/// dir files, then serves until `shutdown` resolves. `on_serving` (the
/// controller manager, when this replica runs one) starts once the API is
/// ready and stops with it.
pub async fn serve(
    store: Store,
    listener: TcpListener,
    cfg: ServeConfig,
    on_serving: Option<OnServing>,
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
    crate::bootstrap::ensure_default_service_accounts(&objects).await;
    crate::bootstrap::ensure_storage_class(&objects).await;
    crate::bootstrap::ensure_ingress_class(&objects).await;
    crate::bootstrap::ensure_kube_dns(&objects, cfg.api.service_range).await;
    let acceptor = if cfg.insecure_http {
        None
    } else {
        Some(tls_acceptor(
            &boot,
            local,
            &cfg.tls_sans,
            cfg.api.service_range,
        )?)
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
    let grpc = tonic::service::Routes::new(crate::nodeservice::service(
        Client::new(api.clone(), "keel-node-service"),
        api.objects.clone(),
        cfg.pod_cidrs,
    ));
    let api_endpoint = ApiEndpoint::new(cfg.advertise_url.as_deref(), local);
    let _kubernetes = AbortOnDrop(tokio::spawn(kubernetes_service::keep(
        Client::new(api.clone(), "kube-apiserver"),
        cfg.api.service_range,
        api_endpoint,
    )));
    let _loops = on_serving.map(|start| AbortOnDrop(start(LocalApi::new(api.clone()))));
    tracing::info!(%url, "serving the Kubernetes API");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => spawn_conn(sock, peer, acceptor.clone(), Handlers {
                    api: api.clone(),
                    grpc: grpc.clone(),
                    auth: auth.clone(),
                }),
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
    range: ServiceRange,
) -> anyhow::Result<TlsAcceptor> {
    let mut hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        local.ip().to_string(),
    ];
    // What pods dial: the `kubernetes` Service's names and address. The
    // certificate is made at every start, so existing clusters get them too.
    hosts.extend(
        crate::kubernetes_service::SERVICE_DNS_NAMES
            .iter()
            .map(|s| s.to_string()),
    );
    hosts.push(range.api_service_ip().to_string());
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

/// Stops what `on_serving` started when the server stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one connection serves: the REST API, and gRPC (the node service)
/// on the same port, told apart by content type as kube-apiserver does
/// for its own protocols.
#[derive(Clone)]
struct Handlers {
    api: Arc<Api>,
    grpc: tonic::service::Routes,
    auth: Arc<Auth>,
}

impl Handlers {
    async fn serve(self, req: Request<Body>) -> Response<Body> {
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"));
        let allowed = self.auth.allows(&req);
        match (grpc, allowed) {
            (false, true) => api::handle(self.api, req).await,
            (false, false) => api::error_response(&ApiError::unauthorized()),
            (true, true) => {
                use tower::ServiceExt;
                match self.grpc.oneshot(req).await {
                    Ok(resp) => resp.map(Body::new),
                    Err(never) => match never {},
                }
            }
            (true, false) => tonic::Status::unauthenticated("a valid bearer token is required")
                .into_http::<Body>(),
        }
    }
}

fn spawn_conn(sock: TcpStream, peer: SocketAddr, acceptor: Option<TlsAcceptor>, h: Handlers) {
    let _ = sock.set_nodelay(true);
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let h = h.clone();
            async move { Ok::<_, Infallible>(h.serve(req.map(Body::new)).await) }
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
