//! The read-only cluster dashboard at `/ui/`.
//!
//! The page is static: HTML, one hand-written script and a stylesheet,
//! embedded with `include_str!`. It holds no cluster data, so it is also
//! the login page: without credentials it is answered 401 with the page
//! as the body ([`page`]). Everything it shows it reads with the
//! viewer's own credentials from the ordinary API (list, then `?watch=1`
//! streamed with `fetch`), so authentication and RBAC apply exactly as
//! they do to kubectl: a list the viewer may not make shows as not
//! permitted, and an unauthenticated request for data is 401.
//!
//! The one thing the Kubernetes API has no resource for is the raft
//! store's membership and progress; [`raft`] serves it as JSON at
//! [`RAFT_PATH`], authorized as a non-resource URL `get` on that path
//! (cluster-admin has it through `nonResourceURLs: ["*"]`; grant others a
//! ClusterRole with that URL).

pub mod raft;

use axum::body::Body;
use axum::http::{header, Method, Response, StatusCode};

/// Where the dashboard lives.
pub const PREFIX: &str = "/ui";

/// The raft status endpoint (authenticated and authorized).
pub const RAFT_PATH: &str = "/ui/api/raft";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The page may run only its own script and talk only to this origin,
/// so an injected object name can never become code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// Whether `path` is one of the dashboard's public assets (served before
/// authentication): its script, stylesheet and the `/ui` redirect. The
/// page itself ([`is_page_path`]) and data under `/ui/api/` are not.
pub fn is_asset_path(path: &str) -> bool {
    (path == PREFIX || path.starts_with("/ui/"))
        && !path.starts_with("/ui/api/")
        && !is_page_path(path)
}

/// Whether `path` is the dashboard page.
pub fn is_page_path(path: &str) -> bool {
    path == "/ui/" || path == "/ui/index.html"
}

/// The page for a request that went through authentication: 200 for an
/// authenticated viewer (a client certificate, or a token from a script);
/// 401 for anyone else, with the page as the body all the same. A browser
/// cannot present a bearer token when it navigates, so the page is also
/// the login form: it keeps the token the viewer pastes and sends it with
/// every API call it makes. `WWW-Authenticate: Bearer` never opens the
/// browser's own password prompt.
pub fn page(method: &Method, authenticated: bool) -> Response<Body> {
    let mut r = asset(method, "/ui/");
    if authenticated || !r.status().is_success() {
        return r;
    }
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"keel dashboard\""),
    );
    r
}

/// The response for an asset path: the file for GET/HEAD, a redirect
/// from `/ui` to `/ui/`, 404 for unknown files, 405 for other methods.
pub fn asset(method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard is read-only: only GET is served under /ui/\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let (body, content_type) = match path {
        PREFIX => {
            return Response::builder()
                .status(StatusCode::MOVED_PERMANENTLY)
                .header(header::LOCATION, "/ui/")
                .body(Body::empty())
                .expect("static response")
        }
        "/ui/" | "/ui/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/ui/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/ui/style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => {
            return plain(
                StatusCode::NOT_FOUND,
                &format!("no dashboard file {path:?}; open /ui/\n"),
            )
        }
    };
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .header("content-security-policy", CSP)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(Body::from(body))
        .expect("static response")
}

/// The answer to an authorized request for [`RAFT_PATH`].
pub fn raft_response(method: &Method, store: &keel_store::Store) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return crate::api::error_response(&crate::status::ApiError::method_not_allowed(&format!(
            "{method} {RAFT_PATH}"
        )));
    }
    crate::api::into_response(crate::api::Reply::ok(raft::status(store)))
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text.to_string()))
        .expect("static response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_public_but_data_is_not() {
        assert!(is_asset_path("/ui"));
        assert!(!is_asset_path("/ui/") && is_page_path("/ui/"));
        assert!(is_asset_path("/ui/app.js"));
        assert!(!is_asset_path("/ui/api/raft"));
        assert!(!is_asset_path("/uix"));
        assert!(!is_asset_path("/api/v1/nodes"));
    }

    #[test]
    fn serves_the_page_and_refuses_writes_and_unknown_files() {
        let r = asset(&Method::GET, "/ui/");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(r.headers().contains_key("content-security-policy"));
        assert_eq!(
            asset(&Method::GET, "/ui").status(),
            StatusCode::MOVED_PERMANENTLY
        );
        assert_eq!(asset(&Method::GET, "/ui/app.js").status(), StatusCode::OK);
        assert_eq!(
            asset(&Method::GET, "/ui/nope.js").status(),
            StatusCode::NOT_FOUND
        );
        let post = asset(&Method::POST, "/ui/");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()["allow"], "GET, HEAD");
    }

    #[test]
    fn the_page_is_401_without_credentials_but_still_the_login_form() {
        let anon = page(&Method::GET, false);
        assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
        assert!(anon.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        assert_eq!(page(&Method::GET, true).status(), StatusCode::OK);
        assert_eq!(
            page(&Method::POST, false).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        // The CSP forbids inline script: the page must reference its files.
        assert!(INDEX_HTML.contains("src=\"app.js\""));
        assert!(INDEX_HTML.contains("href=\"style.css\""));
        assert!(!INDEX_HTML.contains("<script>"));
    }
}
