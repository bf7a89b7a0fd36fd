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
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use keel_store::Store;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::api::services::ServiceRange;
use crate::api::{self, Api, ApiConfig};
use crate::audit::{Audit, Level, Record};
use crate::auth::authn::{self, Authn, StaticToken};
use crate::auth::{bootstrap_token, sa_token, Authorizer, Decision, UserInfo};
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
    /// Tokens accepted besides the cluster's admin token, with the users
    /// they authenticate (`--token-auth-file`).
    pub extra_tokens: Vec<StaticToken>,
    pub api: ApiConfig,
    /// Where nodes' pod CIDRs come from.
    pub pod_cidrs: PodCidrs,
    /// The audit log, when `--audit-log-path` is set.
    pub audit: Option<AuditConfig>,
}

/// `--audit-log-path` and the policy from `--audit-policy-file`.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub log_path: PathBuf,
    pub policy: crate::audit::Policy,
}

/// Started once the API serves, with the in-process API (the controller
/// manager); the task is aborted when the server stops.
pub type OnServing = Box<dyn FnOnce(LocalApi) -> tokio::task::JoinHandle<()> + Send>;

/// Binds the API port (before anything is written, so a clash fails
/// first) without listening: until [`serve`] is ready, connections are
/// refused, so a client moves on to another replica at once instead of
/// waiting on a replica that is still starting or catching up. Plain HTTP
/// is refused on a non-loopback address.
///
/// Errors: the address does not resolve, or binding it fails (in use, not
/// local).
pub async fn bind(addr: &str, insecure_http: bool) -> anyhow::Result<TcpSocket> {
    let bound = bind_socket(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--listen-api {addr}: {e}"))?;
    if insecure_http && !bound.local_addr()?.ip().is_loopback() {
        anyhow::bail!("--insecure-http serves without authentication and is allowed only on a loopback address, not {addr}");
    }
    Ok(bound)
}

/// The first of `addr`'s resolved addresses that binds (as
/// `TcpListener::bind` tries them), with `SO_REUSEADDR` so a restarted
/// server rebinds over its old connections in TIME_WAIT.
async fn bind_socket(addr: &str) -> std::io::Result<TcpSocket> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = match a {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a) {
            Ok(()) => return Ok(socket),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "resolves to no address")
    }))
}

/// Connections the API port queues before it accepts them.
const LISTEN_BACKLOG: u32 = 1024;

/// Waits for the cluster's credentials (needs a quorum), writes the data
/// dir files, catches up with the leader, and only then listens on
/// `socket` (from [`bind`]) and serves until `shutdown` resolves. Then it
/// stops accepting at once (new connections are refused) and drains the
/// open ones (see [`drain`]) before returning. `on_serving` (the
/// controller manager, when this replica runs one) starts once the API is
/// ready and stops with it.
pub async fn serve(
    store: Store,
    socket: TcpSocket,
    cfg: ServeConfig,
    on_serving: Option<OnServing>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let objects = Objects::new(store, metrics.clone());
    let local = socket.local_addr()?;
    tokio::pin!(shutdown);
    let boot = tokio::select! {
        b = bootstrap(&objects, &cfg.data_dir) => b?,
        _ = &mut shutdown => return Ok(()),
    };
    let scheme = if cfg.insecure_http { "http" } else { "https" };
    let url = cfg
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{local}"));
    crate::bootstrap::ensure_namespaces(&objects).await;
    crate::bootstrap::ensure_default_service_accounts(&objects).await;
    crate::bootstrap::ensure_storage_class(&objects).await;
    crate::bootstrap::ensure_ingress_class(&objects).await;
    crate::bootstrap::ensure_kube_dns(&objects, cfg.api.service_range).await;
    crate::auth::bootstrap_policy::ensure(&objects).await;
    // Aggregated roles are filled before the first request (and before
    // tests take their "nothing written since" revisions).
    crate::auth::rbac::aggregation::settle(&objects).await;
    let acceptor = if cfg.insecure_http {
        None
    } else {
        Some(tls_acceptor(
            &boot,
            &cfg.data_dir,
            local,
            &cfg.tls_sans,
            cfg.api.service_range,
        )?)
    };
    // The admin token authenticates as a member of system:masters: a
    // cluster made before RBAC keeps every power it had, and so do agents
    // still holding the admin kubeconfig.
    let mut tokens = cfg.extra_tokens.clone();
    tokens.push(StaticToken {
        token: boot.admin_token.clone(),
        user: UserInfo::admin(),
    });
    let sa_tokens = crate::auth::sa_token::Tokens::load_or_create(
        &objects,
        &cfg.api.service_account_issuer,
        &cfg.api.api_audiences,
    )
    .await?;
    let rbac = crate::auth::rbac::Rbac::new(objects.clone());
    let authz = Arc::new(crate::auth::authorizer(&rbac));
    let auth = Arc::new(Auth {
        tokens,
        ca_cert_pem: boot.ca_cert_pem.clone(),
        join_ca: boot.clone(),
        sa_tokens,
        required: !cfg.insecure_http,
        authz: authz.clone(),
        rbac,
        max_body_bytes: cfg.api.max_body_bytes,
        audit: match &cfg.audit {
            Some(a) => Some(Audit::open(&a.log_path, a.policy.clone())?),
            None => None,
        },
    });
    let _aggregation = AbortOnDrop(tokio::spawn(crate::auth::rbac::aggregation::run(
        objects.clone(),
        Duration::from_secs(2),
    )));
    let mut api_cfg = cfg.api.clone();
    if !cfg.insecure_http {
        let tls = crate::agent_client::AgentTls::new(&boot, Some(&cfg.data_dir))?;
        api_cfg.agent_tls = Some(Arc::new(tls));
    }
    let api = Arc::new(Api {
        objects,
        metrics,
        cfg: api_cfg,
    });
    let grpc = tonic::service::Routes::new(crate::nodeservice::service(
        Client::new(api.clone(), "keel-node-service"),
        api.objects.clone(),
        cfg.pod_cidrs,
        authz,
    ));
    let api_endpoint = ApiEndpoint::new(cfg.advertise_url.as_deref(), local);
    let _kubernetes = AbortOnDrop(tokio::spawn(kubernetes_service::keep(
        Client::new(api.clone(), "kube-apiserver"),
        cfg.api.service_range,
        api_endpoint,
    )));
    tokio::select! {
        _ = catch_up(api.objects.store()) => {}
        _ = &mut shutdown => return Ok(()),
    }
    let listener = socket.listen(LISTEN_BACKLOG)?;
    // Written once the port accepts, so whoever waits for the kubeconfig
    // (tests, `keel up`'s agents) finds the API serving.
    boot.write_files(&cfg.data_dir, &url, !cfg.insecure_http)?;
    let _loops = on_serving.map(|start| {
        AbortOnDrop(start(
            LocalApi::new(api.clone()).with_ca_cert(&boot.ca_cert_pem),
        ))
    });
    tracing::info!(%url, "serving the Kubernetes API");
    let connections = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => spawn_conn(sock, peer, acceptor.clone(), connections.watcher(), Handlers {
                    api: api.clone(),
                    grpc: grpc.clone(),
                    auth: auth.clone(),
                    cert: None,
                    peer: Some(peer),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut shutdown => {
                // Closed first: new connections are refused (clients try
                // the next replica) rather than queued and never accepted.
                drop(listener);
                drain(connections).await;
                return Ok(());
            }
        }
    }
}

/// How long a stopping server lets open connections finish. Watches and
/// node streams never finish by themselves; they are cut after this.
const DRAIN_TIMEOUT_MS: u64 = 3_000;

/// Drains open connections before the caller shuts the store down, so a
/// rolling restart answers in-flight requests instead of failing them with
/// "raft stopped": HTTP/2 connections get GOAWAY (clients open new streams
/// elsewhere), HTTP/1.1 ones close after their current response, idle ones
/// at once. Bounded by [`DRAIN_TIMEOUT_MS`].
async fn drain(connections: GracefulShutdown) {
    let open = connections.count();
    let drained = tokio::time::timeout(
        Duration::from_millis(DRAIN_TIMEOUT_MS),
        connections.shutdown(),
    )
    .await;
    match drained {
        Ok(()) => tracing::info!(open, "API connections drained"),
        Err(_) => tracing::info!(open, "API connections still open after the drain timeout"),
    }
}

/// Waits until this replica has applied everything committed so far (a
/// read barrier through the leader), so the first request it serves does
/// not wait behind a restart's backlog of entries. Retries while there is
/// no leader yet; each try is bounded by the store's request timeout.
async fn catch_up(store: &Store) {
    while let Err(e) = store.read_barrier().await {
        tracing::info!(error = %e, "waiting to catch up with the leader before serving");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn bootstrap(objects: &Objects, data_dir: &std::path::Path) -> anyhow::Result<Bootstrap> {
    let seed = Bootstrap::read_seed(data_dir)?;
    let mut last = None;
    for _ in 0..600 {
        match Bootstrap::load_or_create(objects, seed.as_ref()).await {
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
    data_dir: &std::path::Path,
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
    // A joined replica serves the certificate it was issued at the join.
    let (chain, key) = match crate::pki::joined_server_cert(data_dir, &hosts)? {
        Some(issued) => issued,
        None => boot.server_cert(&hosts)?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Client certificates signed by the cluster CA authenticate their
    // subject; connections without one still serve (bearer tokens).
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(
        crate::pki::pem_to_der(&boot.ca_cert_pem)?,
    ))?;
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Authentication and authorization of every request on this replica.
/// Health and version endpoints answer anonymous requests, as Kubernetes
/// grants them to `system:unauthenticated` (`system:public-info-viewer`).
struct Auth {
    tokens: Vec<StaticToken>,
    /// The cluster CA certificate, served at `/cacerts` to joining machines.
    ca_cert_pem: String,
    /// Signs the certificates of replicas joining through
    /// [`crate::server_join`].
    join_ca: Bootstrap,
    /// Service account tokens: verified here, issued by TokenRequest.
    sa_tokens: crate::auth::sa_token::Tokens,
    /// False only for loopback plain HTTP: every request is the admin.
    required: bool,
    authz: Arc<crate::auth::Chain>,
    rbac: crate::auth::rbac::Rbac,
    max_body_bytes: usize,
    audit: Option<Audit>,
}

/// The group of agents' node credentials.
const NODES: &str = crate::auth::node::NODES_GROUP;

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
    /// The verified client certificate's user, for this connection.
    cert: Option<Result<UserInfo, String>>,
    /// The client's address (the audit log's sourceIPs).
    peer: Option<SocketAddr>,
}

/// What the audit log needs from before authorization.
struct Seen {
    authenticated: UserInfo,
    received: jiff::Timestamp,
    uri: String,
    user_agent: String,
}

/// The request body, read for the audit log when its level records it
/// (writes only; streams are never buffered).
async fn buffer_request(
    req: Request<Body>,
    level: Level,
    attrs: &crate::auth::Attributes,
) -> (Request<Body>, Option<bytes::Bytes>) {
    let writes = matches!(
        attrs.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    );
    let streamed = matches!(
        attrs.subresource.as_str(),
        "exec" | "attach" | "portforward"
    );
    if level < Level::Request || !writes || streamed {
        return (req, None);
    }
    let (parts, body) = req.into_parts();
    // The API's own limit applies afterwards; this only bounds memory.
    match axum::body::to_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => (Request::from_parts(parts, Body::from(b.clone())), Some(b)),
        Err(_) => (Request::from_parts(parts, Body::empty()), None),
    }
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn unauthorized(grpc: bool, why: &str) -> Response<Body> {
    if grpc {
        tonic::Status::unauthenticated(why.to_string()).into_http::<Body>()
    } else {
        api::error_response(&ApiError::unauthorized())
    }
}

impl Handlers {
    async fn serve(self, req: Request<Body>) -> Response<Body> {
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"));
        if req.uri().path() == crate::cacerts::PATH {
            return crate::cacerts::respond(req.method(), &self.auth.ca_cert_pem);
        }
        if !grpc && crate::ui::is_asset_path(req.uri().path()) {
            return crate::ui::asset(req.method(), req.uri().path());
        }
        let user = if !self.auth.required {
            UserInfo::admin()
        } else {
            let cert = match &self.cert {
                Some(Err(why)) => return unauthorized(grpc, why),
                Some(Ok(u)) => Some(u),
                None => None,
            };
            match authn::authenticate(&self.auth.tokens, cert, req.headers()) {
                Authn::User(u) => u,
                Authn::Rejected if bearer(req.headers()).is_some_and(sa_token::looks_like_jwt) => {
                    let tok = bearer(req.headers()).unwrap_or_default();
                    match self
                        .auth
                        .sa_tokens
                        .authenticate(&self.api.objects, tok)
                        .await
                    {
                        Ok(u) => u,
                        Err(why) => {
                            tracing::debug!(%why, "service account token refused");
                            return unauthorized(grpc, &why);
                        }
                    }
                }
                Authn::Rejected
                    if bearer(req.headers())
                        .is_some_and(bootstrap_token::BootstrapToken::looks_like) =>
                {
                    let tok = bearer(req.headers()).unwrap_or_default();
                    match bootstrap_token::authenticate(&self.api.objects, tok).await {
                        Ok(Ok(u)) => u,
                        Ok(Err(why)) => {
                            tracing::debug!(%why, "bootstrap token refused");
                            // A joining machine is told why (unknown,
                            // wrong secret, expired); no secret is named.
                            if !grpc {
                                let msg = format!("Unauthorized: {why}");
                                return api::error_response(&ApiError::new(
                                    401,
                                    "Unauthorized",
                                    msg,
                                ));
                            }
                            return unauthorized(grpc, &why);
                        }
                        Err(e) => return unauthorized(grpc, &e.message),
                    }
                }
                Authn::Anonymous if !grpc => UserInfo::anonymous(),
                Authn::Anonymous | Authn::Rejected => {
                    return unauthorized(
                        grpc,
                        "a valid bearer token or client certificate is required",
                    )
                }
            }
        };
        if !grpc && crate::ui::is_page_path(req.uri().path()) {
            let anonymous = user.name == crate::auth::ANONYMOUS;
            return crate::ui::page(req.method(), !anonymous);
        }
        if !grpc && req.uri().path() == crate::server_join::PATH {
            return crate::server_join::respond(
                self.api.objects.store(),
                &self.auth.join_ca,
                &user,
                req,
                self.auth.max_body_bytes,
            )
            .await;
        }
        if grpc {
            // The node service: agents, with a node credential (system:nodes)
            // or the admin one. Impersonation applies as on REST, so an
            // admin can act as a node (and tests can).
            let user = match crate::auth::impersonate::apply(
                self.auth.authz.as_ref(),
                user,
                req.headers(),
            )
            .await
            {
                Ok(u) => u,
                Err(e) => {
                    return tonic::Status::permission_denied(e.message).into_http::<Body>();
                }
            };
            if !(user.in_group(crate::auth::MASTERS) || user.in_group(NODES)) {
                return tonic::Status::permission_denied(format!(
                    "user {:?} may not use the node service",
                    user.name
                ))
                .into_http::<Body>();
            }
            use tower::ServiceExt;
            let mut req = req;
            if self.auth.required && user.in_group(crate::auth::MASTERS) && !user.in_group(NODES) {
                let admin = crate::nodeservice::AdminCredential(user.name.clone());
                req.extensions_mut().insert(admin);
            }
            req.extensions_mut().insert(user);
            return match self.grpc.oneshot(req).await {
                Ok(resp) => resp.map(Body::new),
                Err(never) => match never {},
            };
        }
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let received = jiff::Timestamp::now();
        let seen = Seen {
            authenticated: user.clone(),
            received,
            uri: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_string(), |p| p.to_string()),
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
        };
        match self.authorize(user, &method, &uri, req.headers()).await {
            Ok((user, attrs)) => {
                let level = self.audit_level(&attrs);
                let (req, request_body) = buffer_request(req, level, &attrs).await;
                let resp = self.answer(user, &attrs, req).await;
                self.audit(level, &attrs, &seen, request_body, resp).await
            }
            Err((e, attrs)) => {
                let resp = api::error_response(&e);
                match attrs {
                    Some(attrs) => {
                        let level = self.audit_level(&attrs);
                        self.audit(level, &attrs, &seen, None, resp).await
                    }
                    None => resp,
                }
            }
        }
    }

    /// Serves an authorized REST request.
    async fn answer(
        &self,
        user: UserInfo,
        attrs: &crate::auth::Attributes,
        mut req: Request<Body>,
    ) -> Response<Body> {
        if crate::auth::reviews::is_review_group(attrs) {
            return self.review(&user, attrs, req).await;
        }
        if let Some(resp) = self.service_account_endpoints(attrs, req.uri().path()) {
            return resp;
        }
        if attrs.resource_request
            && attrs.api_group.is_empty()
            && attrs.resource == "serviceaccounts"
            && attrs.subresource == "token"
        {
            return self.token_request(attrs, req).await;
        }
        if !attrs.resource_request && attrs.path == crate::ui::RAFT_PATH {
            return crate::ui::raft_response(req.method(), self.api.objects.store());
        }
        if let Some(doc) = crate::discovery::review_group_doc(req.uri().path()) {
            return api::into_response(api::Reply::ok(doc));
        }
        req.extensions_mut().insert(user);
        api::handle(self.api.clone(), req).await
    }

    /// OIDC discovery of the service account issuer.
    fn service_account_endpoints(
        &self,
        attrs: &crate::auth::Attributes,
        path: &str,
    ) -> Option<Response<Body>> {
        if attrs.resource_request || attrs.verb != "get" {
            return None;
        }
        let doc = match path {
            "/.well-known/openid-configuration" => self.auth.sa_tokens.openid_configuration(),
            "/openid/v1/jwks" => self.auth.sa_tokens.jwks(),
            _ => return None,
        };
        Some(api::into_response(api::Reply::ok(doc)))
    }

    /// `POST .../serviceaccounts/{name}/token`.
    async fn token_request(
        &self,
        attrs: &crate::auth::Attributes,
        req: Request<Body>,
    ) -> Response<Body> {
        let result = async {
            if attrs.verb != "create" || attrs.name.is_empty() || attrs.namespace.is_empty() {
                return Err(ApiError::method_not_allowed("serviceaccounts/token"));
            }
            let ct = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = axum::body::to_bytes(req.into_body(), self.auth.max_body_bytes)
                .await
                .map_err(|_| ApiError::too_large(self.auth.max_body_bytes))?;
            let body = crate::auth::reviews::decode(&ct, &body)?;
            crate::auth::token_request::create(
                &self.auth.sa_tokens,
                &self.api.objects,
                &attrs.user,
                &attrs.namespace,
                &attrs.name,
                &body,
            )
            .await
        }
        .await;
        match result {
            Ok(v) => api::into_response(api::Reply::json(201, v)),
            Err(e) => api::error_response(&e),
        }
    }

    fn audit_level(&self, attrs: &crate::auth::Attributes) -> Level {
        self.auth
            .audit
            .as_ref()
            .map_or(Level::None, |a| a.level(attrs))
    }

    /// Writes the audit event of one answered request (when the policy
    /// asks for it) and returns the response unchanged.
    async fn audit(
        &self,
        level: Level,
        attrs: &crate::auth::Attributes,
        seen: &Seen,
        request_body: Option<bytes::Bytes>,
        resp: Response<Body>,
    ) -> Response<Body> {
        let Some(audit) = self.auth.audit.as_ref().filter(|_| level > Level::None) else {
            return resp;
        };
        let json = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let streamed = attrs.verb == "watch"
            || matches!(
                attrs.subresource.as_str(),
                "log" | "exec" | "attach" | "portforward"
            );
        let (resp, response_body) = if level >= Level::RequestResponse && json && !streamed {
            let (parts, body) = resp.into_parts();
            match axum::body::to_bytes(body, usize::MAX).await {
                Ok(b) => (Response::from_parts(parts, Body::from(b.clone())), Some(b)),
                Err(_) => (Response::from_parts(parts, Body::empty()), None),
            }
        } else {
            (resp, None)
        };
        let authenticated = &seen.authenticated;
        let impersonator = (authenticated.name != attrs.user.name
            || authenticated.groups != attrs.user.groups)
            .then_some(authenticated);
        audit.log(
            level,
            &Record {
                attrs,
                impersonator,
                uri: &seen.uri,
                source_ip: self.peer.map(|p| p.ip().to_string()).unwrap_or_default(),
                user_agent: &seen.user_agent,
                code: resp.status().as_u16(),
                request_body: request_body.as_deref(),
                response_body: response_body.as_deref(),
                received: seen.received,
            },
        );
        resp
    }

    /// Impersonation, then the authorizer: the identity the request acts
    /// as and its attributes, or the Status to answer (401 for an
    /// anonymous request the public endpoints do not cover, 403 else).
    async fn authorize(
        &self,
        user: UserInfo,
        method: &axum::http::Method,
        uri: &axum::http::Uri,
        headers: &axum::http::HeaderMap,
    ) -> Result<(UserInfo, crate::auth::Attributes), (ApiError, Option<crate::auth::Attributes>)>
    {
        let anonymous = user.name == crate::auth::ANONYMOUS;
        let user = crate::auth::impersonate::apply(self.auth.authz.as_ref(), user, headers)
            .await
            .map_err(|e| (e, None))?;
        let attrs = crate::auth::request_info::attributes(&user, method, uri.path(), uri.query());
        match self.auth.authz.authorize(&attrs).await {
            Err(e) => Err((e, Some(attrs))),
            Ok(Decision::Allow) => Ok((user, attrs)),
            Ok(Decision::NoOpinion(_)) if anonymous => Err((ApiError::unauthorized(), None)),
            Ok(Decision::NoOpinion(reason)) => {
                let e = crate::auth::forbidden::error(&attrs, &reason);
                Err((e, Some(attrs)))
            }
        }
    }

    /// The access and identity reviews (create-only, never stored).
    async fn review(
        &self,
        user: &UserInfo,
        attrs: &crate::auth::Attributes,
        req: Request<Body>,
    ) -> Response<Body> {
        if crate::auth::reviews::kind_of(attrs).is_none() {
            return api::error_response(&ApiError::no_route());
        }
        if req.method() != axum::http::Method::POST {
            return api::error_response(&ApiError::method_not_allowed(&format!(
                "{} {}.{}",
                req.method(),
                attrs.resource,
                attrs.api_group
            )));
        }
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let limit = self.auth.max_body_bytes;
        let body = match axum::body::to_bytes(req.into_body(), limit).await {
            Ok(b) => b,
            Err(_) => return api::error_response(&ApiError::too_large(limit)),
        };
        let ctx = crate::auth::reviews::Reviews {
            authz: self.auth.authz.as_ref(),
            rbac: &self.auth.rbac,
            tokens: &self.auth.tokens,
            sa_tokens: &self.auth.sa_tokens,
            objects: &self.api.objects,
        };
        match crate::auth::reviews::serve(&ctx, user, attrs, &content_type, &body).await {
            Ok(v) => api::into_response(api::Reply::json(201, v)),
            Err(e) => api::error_response(&e),
        }
    }
}

/// The hyper service answering one connection's requests.
fn service_of(
    h: Handlers,
) -> impl hyper::service::Service<
    Request<hyper::body::Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let h = h.clone();
        async move { Ok::<_, Infallible>(h.serve(req.map(Body::new)).await) }
    })
}

fn spawn_conn(
    sock: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    watcher: Watcher,
    h: Handlers,
) {
    let _ = sock.set_nodelay(true);
    tokio::spawn(async move {
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let result = match acceptor {
            Some(a) => match tokio::time::timeout(Duration::from_secs(10), a.accept(sock)).await {
                Ok(Ok(tls)) => {
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|leaf| authn::cert_user(leaf));
                    let service = service_of(Handlers { cert, ..h });
                    watcher
                        .watch(builder.serve_connection_with_upgrades(TokioIo::new(tls), service))
                        .await
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            },
            None => {
                watcher
                    .watch(
                        builder.serve_connection_with_upgrades(TokioIo::new(sock), service_of(h)),
                    )
                    .await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    });
}
