//! The built-in Ingress router end to end on `keel up --agents 2`, driven
//! by the real kubectl: two Deployments of keel/echo behind selector-less
//! Services whose EndpointSlices the test writes, one Ingress (no class:
//! admission gives it the default class `keel`) routing host alpha.test to
//! one and beta.test to the other, and a TLS host served with the
//! certificate of its Secret. Both agents' routers share one address
//! (SO_REUSEPORT) on the fixture's node IP with free high ports.
//! Also: `kubectl get ingress` shows the router address, and invalid paths
//! are refused with 422 naming the field.

mod util;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use util::kubectl::Kubectl;
use util::up::{is_ready, pods, ready_nodes, write, Up};
use util::{free_port, wait_for};

const APPS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: alpha}
spec:
  replicas: 1
  selector: {matchLabels: {app: alpha}}
  template:
    metadata: {labels: {app: alpha}}
    spec:
      containers:
      - name: echo
        image: keel/echo
        env: [{name: PORT, value: "8080"}]
        readinessProbe: {httpGet: {path: /ready, port: 8080}, periodSeconds: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: beta}
spec:
  replicas: 1
  selector: {matchLabels: {app: beta}}
  template:
    metadata: {labels: {app: beta}}
    spec:
      containers:
      - name: echo
        image: keel/echo
        env: [{name: PORT, value: "8080"}]
        readinessProbe: {httpGet: {path: /ready, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: alpha}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: beta}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  tls:
  - hosts: [secure.test]
    secretName: secure-tls
  rules:
  - host: alpha.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 80}}}}
  - host: beta.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: beta, port: {name: http}}}}
  - host: secure.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 80}}}}
"#;

/// The EndpointSlice of a selector-less Service: its pod at `ip`.
fn slice(svc: &str, ip: &str) -> String {
    format!(
        r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {svc}-test
  labels:
    kubernetes.io/service-name: {svc}
    endpointslice.kubernetes.io/managed-by: ingress-test
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
- addresses: ["{ip}"]
  conditions: {{ready: true}}
"#
    )
}

/// GET `path` from `router` with `Host: host`, over TLS for `sni` when
/// `tls` holds the CA to trust: (status, body), or `None` when the
/// exchange failed.
fn get(
    router: SocketAddr,
    host: &str,
    path: &str,
    tls: Option<&CertificateDer<'static>>,
) -> Option<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(router).await.ok()?;
            let req = hyper::Request::get(path)
                .header("host", host)
                .body(Empty::<Bytes>::new())
                .ok()?;
            let resp = match tls {
                None => {
                    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                        .await
                        .ok()?;
                    tokio::spawn(conn);
                    send.send_request(req).await.ok()?
                }
                Some(ca) => {
                    let stream = tls_connect(tcp, host, ca).await.ok()?;
                    let (mut send, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream))
                            .await
                            .ok()?;
                    tokio::spawn(conn);
                    send.send_request(req).await.ok()?
                }
            };
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            Some((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .ok()
            .flatten()
    })
}

async fn tls_connect(
    tcp: tokio::net::TcpStream,
    sni: &str,
    ca: &CertificateDer<'static>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
}

/// A CA and a certificate for `host` it signs: (ca, cert_pem, key_pem).
fn pki(host: &str) -> (CertificateDer<'static>, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.der().clone(), cert.pem(), key.serialize_pem())
}

fn pod_ip(k: &Kubectl, app: &str) -> Option<String> {
    pods(k, &format!("app={app}"))
        .into_iter()
        .find(is_ready)
        .and_then(|p| p["status"]["podIP"].as_str().map(str::to_string))
}

/// Waits until `host` answers 200 with a body containing `want`.
fn wait_routed(
    up: &Up,
    router: SocketAddr,
    host: &str,
    want: &str,
    tls: Option<&CertificateDer<'static>>,
) {
    let last = RefCell::new(None);
    wait_for(
        &format!("{host} routed to {want}"),
        60,
        || {
            let answer = get(router, host, "/hello", tls);
            let ok = matches!(&answer, Some((200, body)) if body.contains(want));
            *last.borrow_mut() = answer;
            ok
        },
        || format!("last answer: {:?}\n{}", last.borrow(), up.log()),
    );
}

#[test]
fn ingress_routes_hosts_to_services_with_tls_and_status() {
    // The node IP follows the fixture's ports, so build it by hand to
    // know the address before start.
    let mut up = Up {
        child: None,
        dir: tempfile::tempdir().unwrap(),
        ports: (free_port(), free_port()),
    };
    let (http_port, https_port) = (free_port(), free_port());
    let node_ip = up.node_ip();
    let http: SocketAddr = format!("{node_ip}:{http_port}").parse().unwrap();
    let https: SocketAddr = format!("{node_ip}:{https_port}").parse().unwrap();
    up.spawn(
        2,
        &[
            "--ingress-http",
            &http.to_string(),
            "--ingress-https",
            &https.to_string(),
        ],
    );
    let k = up.kubectl();
    wait_for("2 ready nodes", 90, || ready_nodes(&k) == 2, || up.log());

    // The default class exists; a class-less Ingress gets it.
    let class = k.json(&["get", "ingressclass", "keel"]);
    assert_eq!(class["spec"]["controller"], "keel.dev/ingress");
    let (ca, cert, key) = pki("secure.test");
    let dir = up.dir.path().to_path_buf();
    let cert_file = write(&dir, "tls.crt", &cert);
    let key_file = write(&dir, "tls.key", &key);
    k.ok(&[
        "create",
        "secret",
        "tls",
        "secure-tls",
        "--cert",
        cert_file.to_str().unwrap(),
        "--key",
        key_file.to_str().unwrap(),
    ]);
    let apps = write(&dir, "apps.yaml", APPS);
    k.ok(&["apply", "-f", apps.to_str().unwrap()]);
    let ing = k.json(&["get", "ingress", "web"]);
    assert_eq!(ing["spec"]["ingressClassName"], "keel", "{ing}");

    // Unknown hosts are 404 as soon as a router answers.
    let last = RefCell::new(None);
    wait_for(
        "404 for an unknown host",
        60,
        || {
            let answer = get(http, "nobody.test", "/", None);
            let ok = matches!(&answer, Some((404, _)));
            *last.borrow_mut() = answer;
            ok
        },
        || format!("last answer: {:?}\n{}", last.borrow(), up.log()),
    );
    // No endpoints yet: 503.
    wait_for(
        "503 before the slices exist",
        60,
        || matches!(get(http, "alpha.test", "/", None), Some((503, _))),
        || up.log(),
    );

    let mut ips = (None, None);
    wait_for(
        "ready pods",
        90,
        || {
            ips = (pod_ip(&k, "alpha"), pod_ip(&k, "beta"));
            ips.0.is_some() && ips.1.is_some()
        },
        || up.log(),
    );
    let (alpha_ip, beta_ip) = (ips.0.unwrap(), ips.1.unwrap());
    let slices = format!(
        "{}---{}",
        slice("alpha", &alpha_ip),
        slice("beta", &beta_ip)
    );
    let slices = write(&dir, "slices.yaml", &slices);
    k.ok(&["apply", "-f", slices.to_str().unwrap()]);

    wait_routed(&up, http, "alpha.test", "pod=alpha-", None);
    wait_routed(&up, http, "beta.test", "pod=beta-", None);
    wait_routed(&up, http, "beta.test:8080", "path=/hello", None);
    assert!(matches!(
        get(http, "nobody.test", "/", None),
        Some((404, _))
    ));
    // TLS: the Secret's certificate for secure.test, trusted via the test CA.
    wait_routed(&up, https, "secure.test", "pod=alpha-", Some(&ca));

    // The status controller publishes the routers' address.
    wait_for(
        "kubectl get ingress shows the address",
        60,
        || {
            let o = k.run(&["get", "ingress", "web"]);
            String::from_utf8_lossy(&o.stdout).contains(&node_ip)
        },
        || up.log(),
    );
    let ing = k.json(&["get", "ingress", "web"]);
    let lb: &Value = &ing["status"]["loadBalancer"]["ingress"][0];
    assert_eq!(lb["ip"], node_ip.as_str(), "{ing}");
    let ports: Vec<u64> = lb["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    let mut want = vec![u64::from(http_port), u64::from(https_port)];
    want.sort_unstable();
    assert_eq!(ports, want);
}

#[test]
fn invalid_ingress_paths_are_refused_with_the_field() {
    let up = Up::start(1, &["--disable-ingress"]);
    let k = up.kubectl();
    let dir = up.dir.path().to_path_buf();
    let bad = |path: &str, ty: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: bad}}\nspec:\n  rules:\n  - host: a.test\n    http:\n      paths:\n      - {{path: {path}, pathType: {ty}, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}\n"
        )
    };
    for (manifest, field) in [
        (bad("/", "Regex"), "spec.rules[0].http.paths[0].pathType"),
        (bad("rel", "Prefix"), "spec.rules[0].http.paths[0].path"),
    ] {
        let f = write(&dir, "bad.yaml", &manifest);
        let mut out = None;
        wait_for(
            "the API answers",
            60,
            || {
                let o = k.run(&["apply", "-f", f.to_str().unwrap()]);
                let text = String::from_utf8_lossy(&o.stderr).into_owned();
                let answered = text.contains("is invalid");
                out = Some((o.status.success(), text));
                answered || o.status.success()
            },
            || up.log(),
        );
        let (ok, stderr) = out.unwrap();
        assert!(!ok, "accepted: {manifest}");
        assert!(stderr.contains(field), "{stderr}");
    }
}
