//! `GET /cacerts`: the cluster CA certificate, to anyone.
//!
//! A machine joining the cluster (`keel server --join`, `keel agent
//! --join`) has no trust anchor yet. It fetches the CA here over an
//! unverified connection and accepts it only if its SHA-256 matches the
//! fingerprint in its join token (see
//! [`crate::auth::bootstrap_token::JoinToken::trusts`]), as k3s agents do
//! with the same path. The CA certificate is public; its key never leaves
//! the store.

use axum::body::Body;
use axum::http::{header, Method, Response, StatusCode};

/// The path this is served on.
pub const PATH: &str = "/cacerts";

/// The response for `method` on [`PATH`]: the PEM for GET, 405 otherwise.
pub fn respond(method: &Method, ca_cert_pem: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET, HEAD")
            .body(Body::from("only GET serves the cluster CA\n"))
            .expect("static response");
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-pem-file")
        .body(Body::from(ca_cert_pem.to_string()))
        .expect("static response")
}
