//! The Ingress router with hand-fed routes (Ingresses, Services and
//! EndpointSlices built here, no control plane) against hyper backends on
//! 127.0.0.1: routing by host and path, 404/503/502, forwarding headers,
//! upstream keep-alive, round-robin, h2c, and TLS by SNI with certificates
//! from Secrets. Everything listens on 127.0.0.1 with kernel-chosen ports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keel_node::ingress::{listen, Inputs, Router};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

/// A backend: answers every request with JSON naming itself and echoing
/// the request's path and headers; counts the connections it accepted.
struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn backend(name: &'static str) -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let headers: BTreeMap<String, String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    let path = req.uri().to_string();
                    let version = format!("{:?}", req.version());
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let out = json!({"name": name, "path": path, "headers": headers,
                                     "version": version, "body": String::from_utf8_lossy(&body)});
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("connection", "keep-alive, x-backend-private")
                            .header("x-backend-private", "1")
                            .header("keep-alive", "timeout=30")
                            .body(http_body_util::Full::new(Bytes::from(out.to_string())))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend { addr, connections }
}

fn ingress(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "ns", "creationTimestamp": "2024-01-01T00:00:00Z"},
           "spec": spec})
}

/// A Service `name` (port 80, named `http`) and one slice per endpoint.
fn service(name: &str, endpoints: &[SocketAddr]) -> (Value, Vec<Value>) {
    let svc = json!({"metadata": {"name": name, "namespace": "ns"},
                     "spec": {"ports": [{"name": "http", "port": 80}]}});
    let slices = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            json!({"metadata": {"name": format!("{name}-{i}"), "namespace": "ns",
                                "labels": {"kubernetes.io/service-name": name}},
                   "addressType": "IPv4",
                   "ports": [{"name": "http", "port": ep.port()}],
                   "endpoints": [{"addresses": [ep.ip().to_string()], "conditions": {"ready": true}}]})
        })
        .collect();
    (svc, slices)
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).unwrap())
}

fn inputs(
    ingresses: Vec<Value>,
    services: Vec<(Value, Vec<Value>)>,
    secrets: Vec<Value>,
) -> Inputs {
    let mut i = Inputs {
        ingresses: ingresses.into_iter().map(typed).collect(),
        secrets: secrets.into_iter().map(typed).collect(),
        keel_is_default: true,
        ..Inputs::default()
    };
    for (svc, slices) in services {
        i.services.push(typed(svc));
        i.slices.extend(slices.into_iter().map(typed));
    }
    i
}

fn path(p: &str, ty: &str, svc: &str) -> Value {
    json!({"path": p, "pathType": ty, "backend": {"service": {"name": svc, "port": {"number": 80}}}})
}

/// A router serving plain HTTP on 127.0.0.1 (the listener task ends with
/// the test's runtime).
async fn http_router(router: &Arc<Router>) -> SocketAddr {
    let l = listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(listen::serve_http(router.clone(), l));
    addr
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn get(c: &HttpClient, router: SocketAddr, host: &str, p: &str) -> (StatusCode, String) {
    let req = Request::get(format!("http://{router}{p}"))
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), c.request(req))
        .await
        .expect("router answered in time")
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn name_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["name"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path_and_answers_404_503_502() {
    let a = backend("a").await;
    let b = backend("b").await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let router = Router::new().unwrap();
    router.update(&inputs(
        vec![ingress(
            "web",
            json!({"rules": [
                {"host": "a.test", "http": {"paths": [path("/", "Prefix", "a"), path("/b", "Prefix", "b")]}},
                {"host": "*.wild.test", "http": {"paths": [path("/", "Prefix", "b")]}},
                {"host": "empty.test", "http": {"paths": [path("/", "Prefix", "empty")]}},
                {"host": "down.test", "http": {"paths": [path("/", "Prefix", "down")]}},
            ]}),
        )],
        vec![
            service("a", &[a.addr]),
            service("b", &[b.addr]),
            service("empty", &[]),
            service("down", &[refused]),
        ],
        vec![],
    ));
    let addr = http_router(&router).await;
    let c = client();
    let (s, body) = get(&c, addr, "a.test", "/x?q=1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(name_of(&body), "a");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["path"], "/x?q=1", "path and query pass unchanged");
    assert_eq!(name_of(&get(&c, addr, "A.TEST:80", "/b/c").await.1), "b");
    assert_eq!(name_of(&get(&c, addr, "a.test", "/bc").await.1), "a");
    assert_eq!(name_of(&get(&c, addr, "x.wild.test", "/").await.1), "b");
    let (s, body) = get(&c, addr, "x.y.wild.test", "/").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, body) = get(&c, addr, "nobody.test", "/").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, body) = get(&c, addr, "empty.test", "/").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("ns/empty"), "{body}");
    let (s, body) = get(&c, addr, "down.test", "/").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");

    // A new table applies to the next request.
    router.update(&inputs(
        vec![ingress(
            "web",
            json!({"defaultBackend": {"service": {"name": "b", "port": {"name": "http"}}}}),
        )],
        vec![service("b", &[b.addr])],
        vec![],
    ));
    assert_eq!(name_of(&get(&c, addr, "a.test", "/").await.1), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_headers_keeps_host_and_drops_hop_by_hop() {
    let a = backend("a").await;
    let router = Router::new().unwrap();
    router.update(&inputs(
        vec![ingress(
            "web",
            json!({"rules": [{"http": {"paths": [path("/", "Prefix", "a")]}}]}),
        )],
        vec![service("a", &[a.addr])],
        vec![],
    ));
    let addr = http_router(&router).await;
    let req = Request::post(format!("http://{addr}/echo"))
        .header("host", "shop.test:8080")
        .header("x-forwarded-for", "10.1.2.3")
        .header("connection", "keep-alive, x-client-private")
        .header("x-client-private", "secret")
        .header("x-kept", "yes")
        .body(http_body_util::Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let c: Client<_, http_body_util::Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get("x-backend-private").is_none(),
        "response hop-by-hop named by Connection"
    );
    assert!(resp.headers().get("keep-alive").is_none());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    let h = &v["headers"];
    assert_eq!(h["host"], "shop.test:8080");
    assert_eq!(h["x-forwarded-host"], "shop.test:8080");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(h["x-kept"], "yes");
    assert!(h.get("x-client-private").is_none(), "{h}");
    assert_eq!(v["body"], "payload");
    assert_eq!(v["version"], "HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuses_upstream_connections_and_round_robins() {
    let a1 = backend("a1").await;
    let a2 = backend("a2").await;
    let router = Router::new().unwrap();
    router.update(&inputs(
        vec![ingress(
            "web",
            json!({"rules": [{"http": {"paths": [path("/", "Prefix", "a")]}}]}),
        )],
        vec![service("a", &[a1.addr, a2.addr])],
        vec![],
    ));
    let addr = http_router(&router).await;
    let c = client();
    let mut names = Vec::new();
    for _ in 0..20 {
        let (s, body) = get(&c, addr, "x", "/").await;
        assert_eq!(s, StatusCode::OK);
        names.push(name_of(&body));
    }
    for pair in names.chunks(2) {
        assert_ne!(pair[0], pair[1], "round-robin alternates: {names:?}");
    }
    assert_eq!(names.iter().filter(|n| *n == "a1").count(), 10);
    // Sequential requests: each endpoint was reached over one pooled connection.
    assert_eq!(a1.connections.load(Ordering::SeqCst), 1);
    assert_eq!(a2.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaks_h2c_with_prior_knowledge() {
    let a = backend("a").await;
    let router = Router::new().unwrap();
    router.update(&inputs(
        vec![ingress(
            "web",
            json!({"rules": [{"host": "h2.test", "http": {"paths": [path("/", "Prefix", "a")]}}]}),
        )],
        vec![service("a", &[a.addr])],
        vec![],
    ));
    let addr = http_router(&router).await;
    let req = Request::get("http://h2.test/over-h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    // Connect to the router but ask for h2.test (the :authority).
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["name"], "a");
    assert_eq!(
        v["headers"]["host"], "h2.test",
        "the authority becomes Host upstream"
    );
    assert_eq!(v["version"], "HTTP/1.1", "upstream stays HTTP/1.1");
}

/// A test CA and a certificate it signs for `hosts`: (ca, cert_pem, key_pem).
fn signed_cert(hosts: &[&str]) -> (CertificateDer<'static>, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.der().clone(), cert.pem(), key.serialize_pem())
}

fn tls_secret(name: &str, cert: &str, key: &str) -> Value {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"metadata": {"name": name, "namespace": "ns"}, "type": "kubernetes.io/tls",
           "data": {"tls.crt": b64(cert), "tls.key": b64(key)}})
}

/// A TLS connection to `addr` for `sni`, trusting only `ca`, offering `alpn`.
async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_tls_by_sni_from_secrets_with_a_default_fallback() {
    let a = backend("a").await;
    let (ca, cert, key) = signed_cert(&["secure.test"]);
    let router = Router::new().unwrap();
    router.update(&inputs(
        vec![ingress(
            "web",
            json!({"tls": [{"hosts": ["secure.test"], "secretName": "secure-tls"},
                           {"hosts": ["missing.test"], "secretName": "nope"}],
                   "rules": [{"http": {"paths": [path("/", "Prefix", "a")]}}]}),
        )],
        vec![service("a", &[a.addr])],
        vec![tls_secret("secure-tls", &cert, &key)],
    ));
    let l = listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(listen::serve_https(router.clone(), l));

    // HTTP/1.1 over TLS, the Secret's certificate verified against the CA.
    let tls = tls_connect(addr, "secure.test", &ca, &[b"http/1.1"])
        .await
        .unwrap();
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let expected = CertificateDer::pem_slice_iter(cert.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(served, expected);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/tls")
        .header("host", "secure.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");

    // HTTP/2 by ALPN.
    let tls = tls_connect(addr, "secure.test", &ca, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://secure.test/h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);

    // A host whose Secret is missing gets the default (self-signed)
    // certificate, which the test CA does not vouch for.
    let err = tls_connect(addr, "missing.test", &ca, &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    let err = tls_connect(addr, "unknown.test", &ca, &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}
