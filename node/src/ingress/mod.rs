//! The built-in Ingress router (networking.k8s.io/v1, class `keel`), run
//! by every agent, as ingress-nginx or Traefik would run on every node:
//! it routes by host and path straight to the ready endpoints of the
//! backend Services (not through ClusterIPs), over HTTP and HTTPS.
//!
//! One concept per module:
//! - [`matcher`]: host and path matching rules (pure);
//! - [`backend`]: a Service port resolved to ready endpoints, round-robin;
//! - [`table`]: Ingresses + Services + EndpointSlices → route table (pure);
//! - [`tls`]: SNI certificates from TLS Secrets, self-signed fallback;
//! - [`proxy`]: the reverse proxy (forwarding headers, pool, 404/502/503);
//! - [`listen`]: HTTP/HTTPS listeners (SO_REUSEPORT, h1 + h2);
//! - [`watch`]: reflectors feeding the table.

pub mod backend;
pub mod listen;
pub mod matcher;
pub mod proxy;
pub mod table;
pub mod tls;
pub mod watch;

use std::net::SocketAddr;

pub use proxy::Router;
pub use table::{Inputs, Route, RouteTable};

/// The Node annotation carrying the router's HTTP address (`ip:port`),
/// which the Ingress status controller publishes as the load balancer.
pub const HTTP_ANNOTATION: &str = "keel.dev/ingress-http";
/// The Node annotation carrying the router's HTTPS address.
pub const HTTPS_ANNOTATION: &str = "keel.dev/ingress-https";

/// Where an agent's router listens; `None` turns a listener off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressConfig {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
}

/// Runs the router until dropped: binds the listeners (a listener that
/// cannot bind is logged once and left off; the agent keeps running) and
/// follows the cluster through `client`.
pub async fn run(cfg: IngressConfig, client: kube::Client) {
    let router = match Router::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "ingress router could not start");
            return;
        }
    };
    let http = cfg.http.and_then(|a| bind_or_warn(a, "http"));
    let https = cfg.https.and_then(|a| bind_or_warn(a, "https"));
    if http.is_none() && https.is_none() {
        return;
    }
    let serve_http = {
        let router = router.clone();
        async move {
            match http {
                Some(l) => listen::serve_http(router, l).await,
                None => std::future::pending().await,
            }
        }
    };
    let serve_https = {
        let router = router.clone();
        async move {
            match https {
                Some(l) => {
                    if let Err(e) = listen::serve_https(router, l).await {
                        tracing::error!(error = %e, "ingress HTTPS listener failed");
                    }
                    std::future::pending().await
                }
                None => std::future::pending().await,
            }
        }
    };
    tokio::select! {
        () = serve_http => {}
        () = serve_https => {}
        () = watch::run(client, router) => {}
    }
}

fn bind_or_warn(addr: SocketAddr, what: &str) -> Option<tokio::net::TcpListener> {
    match listen::bind(addr) {
        Ok(l) => {
            tracing::info!(%addr, "ingress {what} listener up");
            Some(l)
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "ingress {what} listener could not bind (ports below 1024 need root); serving without it");
            None
        }
    }
}
