//! The Kubernetes REST API: one entry point that routes a request, runs
//! the verb against [`Objects`], and answers JSON, a Table, a watch stream
//! or a `Status` error.
//!
//! Guarantees: a client mistake gets a 4xx `Status` naming the problem and
//! changes nothing; a replica without quorum answers 503/504 within the
//! request timeout instead of stale data; no request can panic the server.

pub mod csr;
mod default_class;
mod delete;
pub use delete::finish_namespace;
mod eviction;
mod not_enforced;
pub(crate) mod output;
pub(crate) mod read;
pub mod route;
mod sa_volume;
mod scale;
pub mod service_accounts;
pub mod services;
pub(crate) mod watch;
pub(crate) mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use bytes::Bytes;
use serde_json::Value;

use crate::discovery;
use crate::metrics::Metrics;
use crate::status::{ApiError, ApiResult};
use crate::storage::Objects;
pub use route::{Query, Route, Target};

/// Limits and identity of one API server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted (Kubernetes: 3 MiB).
    pub max_body_bytes: usize,
    /// Upper bound on a non-watch request.
    pub request_timeout: Duration,
    /// Where service cluster IPs come from.
    pub service_range: services::ServiceRange,
    /// Kubernetes' ServiceAccount admission ([`service_accounts`]): new
    /// pods need their service account to exist. On by default; off only
    /// where no serviceaccounts controller runs.
    pub service_account_admission: bool,
    /// `iss` of service account tokens (`--service-account-issuer`).
    pub service_account_issuer: String,
    /// Audiences a token must carry one of (`--api-audiences`).
    pub api_audiences: Vec<String>,
    /// How this replica dials node agents over TLS; None: plaintext (a
    /// server on plain HTTP). Set by the server once it has the CA.
    pub agent_tls: Option<Arc<crate::agent_client::AgentTls>>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 3 * 1024 * 1024,
            request_timeout: Duration::from_secs(60),
            service_range: services::ServiceRange::default(),
            service_account_admission: true,
            service_account_issuer: crate::auth::sa_token::DEFAULT_ISSUER.to_string(),
            api_audiences: vec![crate::auth::sa_token::DEFAULT_ISSUER.to_string()],
            agent_tls: None,
        }
    }
}

/// Shared state of the API server on one replica.
pub struct Api {
    pub objects: Objects,
    pub metrics: Arc<Metrics>,
    pub cfg: ApiConfig,
}

/// One decoded request.
pub struct Req {
    pub method: Method,
    pub query: Query,
    pub accept: String,
    pub content_type: String,
    pub user_agent: String,
    pub body: Bytes,
    /// Who asks (None: an in-process caller, trusted as the controllers
    /// are; the server puts the authenticated user in the request's
    /// extensions).
    pub user: Option<crate::auth::UserInfo>,
}

/// What a handler answers.
pub enum Reply {
    Json {
        code: u16,
        body: Value,
        warnings: Vec<String>,
    },
    Text {
        code: u16,
        content_type: &'static str,
        body: String,
    },
    /// A JSON document already serialized.
    Raw {
        code: u16,
        body: Vec<u8>,
    },
    Stream(Response<Body>),
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply::json(200, body)
    }

    pub fn json(code: u16, body: Value) -> Reply {
        Reply::Json {
            code,
            body,
            warnings: vec![],
        }
    }
}

/// Serves one HTTP request.
pub async fn handle(api: Arc<Api>, req: Request<Body>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (reply, resource) = match route::parse(&path) {
        Err(e) => (Err(e), String::new()),
        Ok(route) => {
            let resource = match &route {
                Route::Resource(t) => t.info.resource.to_string(),
                _ => String::new(),
            };
            (dispatch(&api, route, req).await, resource)
        }
    };
    let resp = match reply {
        Ok(r) => into_response(r),
        Err(e) => error_response(&e),
    };
    api.metrics.observe_request(
        verb_label(&method),
        &resource,
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

fn verb_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

async fn dispatch(api: &Arc<Api>, route: Route, req: Request<Body>) -> ApiResult<Reply> {
    let accept = header_str(&req, header::ACCEPT);
    match route {
        Route::Version => Ok(Reply::ok(discovery::version())),
        Route::CoreGroups if discovery::wants_aggregated(&accept) => {
            Ok(aggregated(discovery::aggregated(true)))
        }
        Route::CoreGroups => Ok(Reply::ok(discovery::api_versions())),
        Route::Groups if discovery::wants_aggregated(&accept) => {
            Ok(aggregated(discovery::aggregated(false)))
        }
        Route::Groups => Ok(Reply::ok(discovery::api_group_list())),
        Route::Group(g) => Ok(Reply::ok(discovery::api_group(&g))),
        Route::GroupVersion(g, v) => Ok(Reply::ok(discovery::resource_list(&g, &v))),
        Route::OpenApiRoot => Ok(Reply::ok(discovery::openapi_root())),
        Route::OpenApiGroupVersion(g, v) => Ok(Reply::ok(discovery::openapi_group_version(&g, &v))),
        Route::Healthz | Route::Livez => Ok(text(200, "ok")),
        Route::Readyz => {
            // Type-erased: the checks' futures would otherwise deepen every
            // future that awaits the API past rustc's layout query depth.
            let checks: std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send + '_>> =
                Box::pin(readyz(api, req.uri().clone()));
            Ok(checks.await)
        }
        Route::Metrics => Ok(Reply::Text {
            code: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: api.metrics.render(api.objects.store()),
        }),
        Route::ResourceMetrics(m) => {
            let q = route::parse_query(req.uri().query());
            crate::metricsapi::serve(api, m, req.method(), &q).await
        }
        Route::Resource(t) if crate::podexec::is_stream(&t) => {
            Ok(Reply::Stream(crate::podexec::serve(api, t, req).await?))
        }
        Route::Resource(t) => {
            let r = read_request(api, req, accept).await?;
            resource(api, t, r).await
        }
    }
}

fn aggregated(body: Value) -> Reply {
    Reply::Text {
        code: 200,
        content_type: discovery::AGGREGATED_CONTENT_TYPE,
        body: body.to_string(),
    }
}

fn text(code: u16, s: &str) -> Reply {
    Reply::Text {
        code,
        content_type: "text/plain; charset=utf-8",
        body: s.to_string(),
    }
}

/// `/readyz[/check][?verbose][&exclude=check]` (see [`crate::readyz`]).
async fn readyz(api: &Api, uri: axum::http::Uri) -> Reply {
    let only: Vec<String> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .skip(1)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let verbose = !only.is_empty() || pairs.iter().any(|(k, _)| k == "verbose");
    let exclude: Vec<String> = pairs
        .into_iter()
        .filter(|(k, _)| k == "exclude")
        .map(|(_, v)| v)
        .collect();
    if let Some(why) = crate::readyz::unknown(&only) {
        return text(404, &why);
    }
    let checks = crate::readyz::run(api.objects.store(), &only, &exclude).await;
    let (code, body) = crate::readyz::render(&checks, verbose);
    Reply::Text {
        code,
        content_type: "text/plain; charset=utf-8",
        body,
    }
}

fn header_str(req: &Request<Body>, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn read_request(api: &Api, req: Request<Body>, accept: String) -> ApiResult<Req> {
    let content_type = header_str(&req, header::CONTENT_TYPE);
    let user_agent = header_str(&req, header::USER_AGENT);
    let method = req.method().clone();
    let user = req.extensions().get::<crate::auth::UserInfo>().cloned();
    let query = route::parse_query(req.uri().query());
    let limit = api.cfg.max_body_bytes;
    let body = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| ApiError::too_large(limit))?;
    Ok(Req {
        method,
        query,
        accept,
        content_type,
        user_agent,
        body,
        user,
    })
}

async fn resource(api: &Arc<Api>, t: Target, r: Req) -> ApiResult<Reply> {
    if r.method == Method::GET && route::flag(&r.query, "watch") {
        return watch::serve(api.clone(), t, r).await;
    }
    let what = format!("{} {}", r.method, t.info.qualified());
    let work = verb(api, &t, &r);
    match tokio::time::timeout(timeout_for(api, &r.query), work).await {
        Ok(res) => res,
        Err(_) => Err(ApiError::timeout(&what)),
    }
}

/// `?timeout=` (a Go duration such as `32s`) shortens the server's bound.
fn timeout_for(api: &Api, q: &Query) -> Duration {
    let asked = q.get("timeout").and_then(|s| parse_go_duration(s));
    match asked {
        Some(d) if d < api.cfg.request_timeout && !d.is_zero() => d,
        _ => api.cfg.request_timeout,
    }
}

/// `5s`, `32s`, `1m30s`, `500ms`: the subset of Go durations clients send.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let d = match &rest[..unit_len] {
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            _ => return None,
        };
        total = total.checked_add(d)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

async fn verb(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    use crate::resources::Sub;
    match (&r.method, t.name.is_some(), t.sub) {
        (&Method::GET, false, None) => read::list(api, t, r).await,
        (&Method::GET, true, None | Some(Sub::Status | Sub::Approval)) => {
            read::get(api, t, r).await
        }
        (&Method::GET, true, Some(Sub::Scale)) => scale::get(api, t).await,
        (&Method::GET, true, Some(Sub::Log)) => read::log(api, t, r).await,
        (&Method::POST, false, None) => write::create(api, t, r).await,
        (&Method::POST, true, Some(Sub::Binding)) => write::bind(api, t, r).await,
        (&Method::POST, true, Some(Sub::Eviction)) => eviction::evict(api, t, r).await,
        (&Method::PUT, true, None | Some(Sub::Status | Sub::Approval)) => {
            write::update(api, t, r).await
        }
        (&Method::PUT, true, Some(Sub::Scale)) => scale::update(api, t, r).await,
        (&Method::PATCH, true, None | Some(Sub::Status | Sub::Approval)) => {
            write::patch(api, t, r).await
        }
        (&Method::PATCH, true, Some(Sub::Scale)) => scale::patch(api, t, r).await,
        (&Method::DELETE, true, None) => delete::delete(api, t, r).await,
        (&Method::DELETE, false, None) => delete::delete_collection(api, t, r).await,
        _ => Err(ApiError::method_not_allowed(&format!(
            "{} {}",
            r.method,
            t.info.qualified()
        ))),
    }
}

pub fn into_response(r: Reply) -> Response<Body> {
    match r {
        Reply::Json {
            code,
            body,
            warnings,
        } => {
            let mut resp = json_response(code, Body::from(body.to_string()));
            let h = resp.headers_mut();
            for w in warnings {
                if let Ok(v) = HeaderValue::from_str(&warning_header(&w)) {
                    h.append("Warning", v);
                }
            }
            resp
        }
        Reply::Text {
            code,
            content_type,
            body,
        } => {
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = status_code(code);
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, private"),
            );
            resp
        }
        Reply::Raw { code, body } => json_response(code, Body::from(body)),
        Reply::Stream(resp) => resp,
    }
}

fn json_response(code: u16, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status_code(code);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `299 - "text"` with quotes escaped (kubectl drops warnings whose inner
/// quotes are not escaped).
fn warning_header(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("299 - \"{clean}\"")
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    if e.code >= 500 {
        tracing::warn!(code = e.code, reason = e.reason, message = %e.message, "request failed");
    }
    into_response(Reply::json(e.code, e.to_status()))
}

/// Decodes a request body: JSON, or YAML when the content type says so.
pub fn decode_body(r: &Req) -> ApiResult<Value> {
    if r.body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let ct = r.content_type.to_ascii_lowercase();
    if ct.contains("protobuf") {
        // kubectl's typed commands (`create configmap`, `create deployment`,
        // ...) send Kubernetes protobuf.
        return crate::protobuf::decode_protobuf(&r.body).map_err(|e| {
            ApiError::bad_request(format!("the protobuf request body cannot be decoded: {e}"))
        });
    }
    if ct.contains("yaml") {
        let text = std::str::from_utf8(&r.body)
            .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            return Ok(v);
        }
        return serde_saphyr::from_str::<Value>(text).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
        });
    }
    serde_json::from_slice(&r.body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("32s"), Some(Duration::from_secs(32)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("x"), None);
        assert_eq!(parse_go_duration("99999999999999999999h"), None);
    }

    #[test]
    fn warnings_escape_quotes() {
        assert_eq!(
            warning_header("unknown field \"spec.x\""),
            "299 - \"unknown field \\\"spec.x\\\"\""
        );
    }
}
