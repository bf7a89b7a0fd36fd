//! The reverse proxy: one request in, the matching backend's next ready
//! endpoint out, over a keep-alive HTTP/1.1 connection pool.
//!
//! Guarantees per request: `Host` is passed on unchanged (from
//! `:authority` for HTTP/2 clients); `X-Forwarded-For` gets the client's
//! address appended, `X-Forwarded-Proto` and `X-Forwarded-Host` are set;
//! hop-by-hop headers (RFC 9110 §7.6.1, plus those the `Connection` header
//! names) are dropped both ways; bodies stream in both directions. Errors
//! are answered, never raised: 404 when no rule matches, 503 when the
//! backend has no ready endpoint, 502 when the endpoint cannot be reached
//! or breaks the exchange.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::crypto::CryptoProvider;

use super::table::{Inputs, Route, RouteTable};
use super::tls::CertResolver;

/// Response bodies: the upstream's, streamed, or a short error text.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// How long an idle upstream connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long connecting to an endpoint may take before the request fails (502).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Headers meaningful for one connection only (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// The scheme a listener serves, for `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The router's state: the current route table, the TLS certificates and
/// the upstream pool. Shared by every listener and connection.
pub struct Router {
    routes: RwLock<Arc<RouteTable>>,
    certs: Arc<CertResolver>,
    provider: Arc<CryptoProvider>,
    client: Client<HttpConnector, Incoming>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    /// A router with no routes (every request 404) and a fresh default
    /// certificate. Errors: the default certificate could not be made.
    pub fn new() -> anyhow::Result<Arc<Router>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = Arc::new(CertResolver::new(&provider)?);
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(Arc::new(Router {
            routes: RwLock::new(Arc::new(RouteTable::default())),
            certs,
            provider,
            client,
        }))
    }

    /// Rebuilds routes and certificates from `inputs` and swaps them in.
    pub fn update(&self, inputs: &Inputs) {
        self.set_routes(RouteTable::build(inputs));
        self.certs.update(inputs, &self.provider);
    }

    pub fn set_routes(&self, table: RouteTable) {
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn cert_resolver(&self) -> &Arc<CertResolver> {
        &self.certs
    }

    pub fn crypto_provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// Answers one request from `client` arriving on a `scheme` listener.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        scheme: Scheme,
    ) -> Response<Body> {
        let host = request_host(&req);
        let backend = match self.routes().route(&host, req.uri().path()) {
            Route::Backend(b) => b,
            Route::NotFound => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no Ingress rule matches host {host:?} path {:?}",
                        req.uri().path()
                    ),
                );
            }
        };
        let Some(endpoint) = backend.pick() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("backend {} has no ready endpoints", backend.name),
            );
        };
        let upstream = match upstream_request(req, endpoint, &host, client, scheme) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        match self.client.request(upstream).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.boxed())
            }
            Err(e) => {
                tracing::debug!(backend = %backend.name, %endpoint, error = %e, "ingress upstream failed");
                error(
                    StatusCode::BAD_GATEWAY,
                    format!("backend {} endpoint {endpoint} failed: {e}", backend.name),
                )
            }
        }
    }
}

/// The host a request asks for: `Host`, else the URI authority (HTTP/2).
fn request_host<B>(req: &Request<B>) -> String {
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// The request as sent to `endpoint`: HTTP/1.1, same path and query, same
/// `Host`, forwarding headers set, hop-by-hop headers gone.
fn upstream_request(
    req: Request<Incoming>,
    endpoint: SocketAddr,
    host: &str,
    client: SocketAddr,
    scheme: Scheme,
) -> Result<Request<Incoming>, String> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("http://{endpoint}{path}")
        .parse::<Uri>()
        .map_err(|e| format!("request target {path:?}: {e}"))?;
    parts.version = Version::HTTP_11;
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    if !host.is_empty() {
        let value = HeaderValue::from_str(host).map_err(|e| format!("host {host:?}: {e}"))?;
        h.insert(HOST, value.clone());
        h.insert(HeaderName::from_static("x-forwarded-host"), value);
    }
    let xff = HeaderName::from_static("x-forwarded-for");
    let client_ip = client.ip().to_string();
    let forwarded_for = match h.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.is_empty() => format!("{prior}, {client_ip}"),
        _ => client_ip,
    };
    h.insert(
        xff,
        HeaderValue::from_str(&forwarded_for).map_err(|e| e.to_string())?,
    );
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(scheme.as_str()),
    );
    Ok(Request::from_parts(parts, body))
}

/// Drops hop-by-hop headers, including those `Connection` lists.
/// `Transfer-Encoding` is left to hyper, which re-frames bodies itself.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// A plain-text error answer.
pub fn error(status: StatusCode, message: String) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("{message}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept"]);
    }

    #[test]
    fn the_host_comes_from_the_header_or_the_authority() {
        let r = Request::builder()
            .uri("/x")
            .header(HOST, "a.test:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r), "a.test:8080");
        let r = Request::builder().uri("https://b.test/x").body(()).unwrap();
        assert_eq!(request_host(&r), "b.test");
    }
}
