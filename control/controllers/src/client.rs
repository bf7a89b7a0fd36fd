//! How the controllers reach the API: a `kube::Client`, either over the
//! API server's in-process `tower::Service` ([`in_process`]) or over HTTPS
//! from a kubeconfig ([`kubeconfig`], [`with_user_agent`]). The same loops run on both.
//!
//! Loops are typed: they read shared caches ([`crate::cache`]) and write
//! through `kube::Api<K>`; resources known only at run time (the garbage
//! collector's, the namespace controller's) use `DynamicObject` with
//! [`api_resource`].

use std::path::Path;

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use kube::core::ApiResource;

use crate::resources::ResourceInfo;

/// A `kube::Client` over an in-process service (the API server's
/// `LocalApi`), sending `user_agent` with every request: the API server
/// records it as the field manager of writes without `fieldManager`.
pub fn in_process<S, B>(service: S, user_agent: &str) -> kube::Client
where
    S: tower::Service<Request<kube::client::Body>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    use tower::ServiceExt;
    let ua = HeaderValue::from_str(user_agent).unwrap_or(HeaderValue::from_static("keel"));
    let service = service.map_request(move |mut req: Request<kube::client::Body>| {
        req.headers_mut()
            .entry(header::USER_AGENT)
            .or_insert_with(|| ua.clone());
        req
    });
    kube::Client::new(service, "default")
}

/// The client configuration of a kubeconfig file (its current context).
/// Errors name the file and what is wrong with it.
pub async fn kubeconfig(path: &Path) -> anyhow::Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))
}

/// A `kube::Client` over HTTPS from `config`, sending `user_agent` (the
/// field manager of its writes, as in process).
pub fn with_user_agent(config: &kube::Config, user_agent: &str) -> anyhow::Result<kube::Client> {
    let mut config = config.clone();
    config
        .headers
        .push((header::USER_AGENT, HeaderValue::from_str(user_agent)?));
    Ok(kube::Client::try_from(config)?)
}

/// Whether `e` is the API's answer with HTTP status `code` (409 Conflict
/// or AlreadyExists, 404 NotFound, ...).
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The dynamic type of a served resource, from its registry row.
pub fn api_resource(info: &ResourceInfo) -> ApiResource {
    ApiResource {
        group: info.group.to_string(),
        version: info.version.to_string(),
        api_version: info.api_version(),
        kind: info.kind.to_string(),
        plural: info.resource.to_string(),
    }
}
