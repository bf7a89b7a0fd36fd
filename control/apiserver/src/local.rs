//! The API as an in-process `tower::Service`, for clients that run inside
//! a replica (the controller manager's `kube::Client`).
//!
//! Why a service rather than direct calls: every request goes through
//! [`crate::api::handle`], the same routing, admission, defaults and
//! validation as kubectl's requests over the network, so an in-process
//! controller can never write what kubectl could not. It skips only the
//! socket, TLS and bearer-token check: whoever holds a [`LocalApi`] is
//! already inside the replica. It also answers `GET /cacerts` as the
//! server does, when given the CA ([`LocalApi::with_ca_cert`]), so an
//! in-process root CA publisher reads the CA the way an external one does.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;

use crate::api::{self, Api};

/// Cheap to clone; answers every request, errors included, as an HTTP
/// response (it never fails as a service).
#[derive(Clone)]
pub struct LocalApi {
    api: Arc<Api>,
    ca_cert_pem: Option<Arc<str>>,
}

impl LocalApi {
    pub fn new(api: Arc<Api>) -> LocalApi {
        LocalApi {
            api,
            ca_cert_pem: None,
        }
    }

    /// Also serves `ca_cert_pem` at [`crate::cacerts::PATH`].
    pub fn with_ca_cert(mut self, ca_cert_pem: &str) -> LocalApi {
        self.ca_cert_pem = Some(Arc::from(ca_cert_pem));
        self
    }
}

impl<B> tower::Service<Request<B>> for LocalApi
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(pem) = self
            .ca_cert_pem
            .as_ref()
            .filter(|_| req.uri().path() == crate::cacerts::PATH)
        {
            let response = crate::cacerts::respond(req.method(), pem);
            return Box::pin(async move { Ok(response) });
        }
        let api = self.api.clone();
        Box::pin(async move { Ok(api::handle(api, req.map(Body::new)).await) })
    }
}
