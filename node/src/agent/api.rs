//! A `kube::Client` for the agent's API-watching loops (service proxy,
//! cluster DNS, ingress router), the way kube-proxy and CoreDNS reach the
//! API: typed list/watch over HTTPS with the agent's bearer token, trusting
//! the cluster CA.
//!
//! Pod assignments and status stay on the node service (gRPC); this client
//! is for reading cluster-wide objects (Services, EndpointSlices, Ingresses,
//! Secrets) into `kube-runtime` reflector caches.
//!
//! With a node identity (`keel agent --join`) every client authenticates
//! with the identity's *current* certificate: requests go through a
//! client rebuilt whenever rotation ([`super::rotation`]) swapped the
//! certificate, so every loop's next request or watch reconnect uses the
//! new one, and none keeps presenting a certificate that expires.
//!
//! Errors: no server configured, a server URL kube cannot parse, or a CA
//! bundle without a certificate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::future::BoxFuture;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use super::node_cert::NodeCert;
use super::rotation::NodeIdentity;
use super::AgentConfig;

/// A client on the configured servers, sending `user_agent` (the field
/// manager of any status writes, e.g. `keel-ingress`). With several
/// servers it fails over as the node stream does: a request that could not
/// reach its server moves the client to the next one (see [`failover`]).
pub fn client(cfg: &AgentConfig, user_agent: &str) -> anyhow::Result<kube::Client> {
    anyhow::ensure!(
        !cfg.servers.is_empty(),
        "no control-plane server configured"
    );
    let clients = cfg
        .servers
        .iter()
        .map(|server| one_client(cfg, server, user_agent))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(failover(clients))
}

/// The client of one server.
fn one_client(cfg: &AgentConfig, server: &str, user_agent: &str) -> anyhow::Result<kube::Client> {
    let url = server
        .parse()
        .with_context(|| format!("control-plane server {server:?} is not a URL"))?;
    let mut config = kube::Config::new(url);
    if let Some(pem) = &cfg.ca_pem {
        let roots = CertificateDer::pem_slice_iter(pem)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .context("cluster CA is not PEM")?;
        anyhow::ensure!(!roots.is_empty(), "cluster CA PEM holds no certificate");
        config.root_cert = Some(roots);
    }
    if let Some(token) = &cfg.token {
        config.auth_info.token = Some(token.clone().into());
    }
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(user_agent).context("user agent is not header text")?,
    ));
    match &cfg.node_identity {
        None => Ok(kube::Client::try_from(config)?),
        Some(id) => rotating(id.clone(), move |c: &NodeCert| {
            Ok(kube::Client::try_from(with_cert(config.clone(), c))?)
        }),
    }
}

/// One client over `clients` (one per server, at least one): requests go
/// to the current one; a transport failure (connect refused, connection
/// lost: no answer from the server) is returned to the caller, whose loop
/// retries as it does for any error, and moves every clone of the client
/// to the next server. Answers from a server, errors included, never move
/// it.
pub fn failover(clients: Vec<kube::Client>) -> kube::Client {
    assert!(!clients.is_empty(), "failover needs at least one client");
    if clients.len() == 1 {
        return clients.into_iter().next().expect("one client");
    }
    let svc = Failover {
        clients: Arc::new(clients),
        current: Arc::new(AtomicUsize::new(0)),
    };
    kube::Client::new(svc, "default")
}

/// See [`failover`].
#[derive(Clone)]
struct Failover {
    clients: Arc<Vec<kube::Client>>,
    current: Arc<AtomicUsize>,
}

impl tower::Service<http::Request<kube::client::Body>> for Failover {
    type Response = http::Response<kube::client::Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Self::Response, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), kube::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let n = self.clients.len();
        let i = self.current.load(Ordering::Relaxed) % n;
        let client = self.clients[i].clone();
        let current = self.current.clone();
        Box::pin(async move {
            let r = client.send(req).await;
            if let Err(e) = &r {
                if unreachable(e) {
                    // Only the first failing request of this server moves it.
                    let _ = current.compare_exchange(
                        i,
                        (i + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            }
            r
        })
    }
}

/// Whether `e` means the server never answered (as opposed to an answer).
fn unreachable(e: &kube::Error) -> bool {
    matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_))
}

/// `config` authenticated by the client certificate `c`.
fn with_cert(mut config: kube::Config, c: &NodeCert) -> kube::Config {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    config.auth_info.client_certificate_data = Some(b64(&c.cert_pem));
    config.auth_info.client_key_data = Some(b64(&c.key_pem).into());
    config
}

type Build = dyn Fn(&NodeCert) -> anyhow::Result<kube::Client> + Send + Sync;

/// A client that sends each request through `build(current certificate)`,
/// built once per certificate. Errors: the first build's.
pub fn rotating(
    identity: NodeIdentity,
    build: impl Fn(&NodeCert) -> anyhow::Result<kube::Client> + Send + Sync + 'static,
) -> anyhow::Result<kube::Client> {
    let svc = Rotating {
        identity,
        build: Arc::new(build),
        current: Arc::new(Mutex::new(None)),
    };
    svc.client()?;
    Ok(kube::Client::new(svc, "default"))
}

/// See [`rotating`].
#[derive(Clone)]
struct Rotating {
    identity: NodeIdentity,
    build: Arc<Build>,
    /// The certificate (PEM) the cached client presents, and the client.
    current: Arc<Mutex<Option<(String, kube::Client)>>>,
}

impl Rotating {
    /// The client of the identity's current certificate.
    fn client(&self) -> anyhow::Result<kube::Client> {
        let cert = self.identity.current();
        let mut cur = match self.current.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if let Some((pem, client)) = cur.as_ref() {
            if *pem == cert.cert_pem {
                return Ok(client.clone());
            }
        }
        let client = (self.build)(&cert)?;
        *cur = Some((cert.cert_pem, client.clone()));
        Ok(client)
    }
}

impl tower::Service<http::Request<kube::client::Body>> for Rotating {
    type Response = http::Response<kube::client::Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Self::Response, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), kube::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let client = self.client();
        Box::pin(async move {
            let client = client.map_err(|e| kube::Error::Service(e.into()))?;
            client.send(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    fn cert(n: u32) -> NodeCert {
        NodeCert {
            cert_pem: format!("cert-{n}"),
            key_pem: format!("key-{n}"),
        }
    }

    /// A client answering every request with the certificate it was
    /// built with, as a server would see it.
    fn presenting(c: &NodeCert) -> kube::Client {
        let pem = c.cert_pem.clone();
        let svc = tower::service_fn(move |_req: http::Request<kube::client::Body>| {
            let pem = pem.clone();
            async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(kube::client::Body::from(
                    pem.into_bytes(),
                )))
            }
        });
        kube::Client::new(svc, "default")
    }

    async fn presented(client: &kube::Client) -> String {
        let req = http::Request::get("/api/v1/services")
            .body(kube::client::Body::empty())
            .unwrap();
        let resp = client.send(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_use_the_rotated_certificate() {
        let identity = NodeIdentity::new(cert(1), None);
        let builds = Arc::new(Mutex::new(0));
        let b = builds.clone();
        let client = rotating(identity.clone(), move |c| {
            *b.lock().unwrap() += 1;
            Ok(presenting(c))
        })
        .unwrap();
        // A clone, as each loop holds one.
        let other = client.clone();
        assert_eq!(presented(&client).await, "cert-1");
        assert_eq!(presented(&other).await, "cert-1");
        assert_eq!(*builds.lock().unwrap(), 1, "one build per certificate");
        identity.set(cert(2));
        assert_eq!(presented(&other).await, "cert-2");
        assert_eq!(presented(&client).await, "cert-2");
        assert_eq!(*builds.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_failed_build_is_an_error_not_a_panic() {
        let identity = NodeIdentity::new(cert(1), None);
        let id = identity.clone();
        let client = rotating(identity.clone(), move |c| {
            anyhow::ensure!(c.cert_pem == "cert-1", "unusable certificate");
            Ok(presenting(c))
        })
        .unwrap();
        id.set(cert(2));
        let req = http::Request::get("/")
            .body(kube::client::Body::empty())
            .unwrap();
        let e = client.send(req).await.unwrap_err();
        assert!(e.to_string().contains("unusable certificate"), "{e}");
        assert!(rotating(identity, |_| anyhow::bail!("no")).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_server_moves_the_client_to_the_next() {
        let down = kube::Client::new(
            tower::service_fn(|_req: http::Request<kube::client::Body>| async {
                Err::<http::Response<kube::client::Body>, _>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "refused",
                ))
            }),
            "default",
        );
        let client = failover(vec![down, presenting(&cert(2))]);
        let req = http::Request::get("/api/v1/services")
            .body(kube::client::Body::empty())
            .unwrap();
        assert!(
            client.send(req).await.is_err(),
            "the first answer is the failure"
        );
        assert_eq!(presented(&client.clone()).await, "cert-2");
        assert_eq!(
            presented(&client).await,
            "cert-2",
            "it stays on the live server"
        );
    }
}
