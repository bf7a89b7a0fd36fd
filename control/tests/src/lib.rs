//! In-process test server: a one-replica raft-store and the API server on
//! a loopback port over plain HTTP, plus a kube-rs client and raw requests.
#![allow(dead_code)]

pub mod client;

use std::time::Duration;

use http_body_util::BodyExt;
use keel_apiserver::api::ApiConfig;
use keel_apiserver::server::{self, ServeConfig};
use keel_store::{Store, StoreConfig};
use serde_json::Value;

pub struct TestServer {
    pub url: String,
    pub store: Store,
    pub client: kube::Client,
    /// The API server's configuration, shared by [`TestServer::api`].
    api_cfg: ApiConfig,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A reply: HTTP code, headers and body (JSON when it parses, else a string).
pub struct Reply {
    pub code: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
}

impl TestServer {
    /// A server without ServiceAccount admission: no serviceaccounts
    /// controller runs here to create the accounts new pods need (as
    /// Kubernetes' integration tests run with
    /// `--disable-admission-plugins=ServiceAccount`).
    pub async fn start() -> TestServer {
        TestServer::start_with(ApiConfig {
            service_account_admission: false,
            ..ApiConfig::default()
        })
        .await
    }

    pub async fn start_with(api: ApiConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new("a", dir.path().join("data"), &free_addr(), &free_addr());
        cfg.heartbeat_ms = 50;
        cfg.election_timeout_ms = 300;
        let store = Store::open(cfg).await.unwrap();
        store.wait_published().await;
        let listener = server::bind("127.0.0.1:0", true).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let serve_cfg = ServeConfig {
            data_dir: dir.path().join("data"),
            advertise_url: None,
            insecure_http: true,
            tls_sans: vec![],
            extra_tokens: vec![],
            api: api.clone(),
            pod_cidrs: Default::default(),
            audit: None,
        };
        let s = store.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            server::serve(s, listener, serve_cfg, None, stopped)
                .await
                .unwrap();
        });
        let config = kube::Config::new(url.parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let t = TestServer {
            url,
            store,
            client,
            api_cfg: api,
            stop,
            _dir: dir,
        };
        // The API refuses connections until it serves.
        let addr = t.url.trim_start_matches("http://").to_string();
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        t.wait_ready().await;
        t
    }

    /// A `kube::Client` over this server's in-process API (as a replica's
    /// controllers reach it), sending `user_agent`.
    pub fn in_process(&self, user_agent: &str) -> kube::Client {
        let local = keel_apiserver::local::LocalApi::new(self.api());
        keel_controllers::client::in_process(local, user_agent)
    }

    /// An in-process API over this server's store (the handler the
    /// server itself runs, without a socket).
    pub fn api(&self) -> std::sync::Arc<keel_apiserver::api::Api> {
        use keel_apiserver::metrics::Metrics;
        use keel_apiserver::storage::Objects;
        let metrics = std::sync::Arc::new(Metrics::new());
        std::sync::Arc::new(keel_apiserver::api::Api {
            objects: Objects::new(self.store.clone(), metrics.clone()),
            metrics,
            cfg: self.api_cfg.clone(),
        })
    }

    /// Waits for the API and for what the server writes in the background
    /// at start (the `default/kubernetes` Service, Endpoints and
    /// EndpointSlice), so a test's "nothing was written" revision checks
    /// never see those writes.
    async fn wait_ready(&self) {
        const STARTUP_OBJECTS: [&str; 3] = [
            "/api/v1/namespaces/default/services/kubernetes",
            "/api/v1/namespaces/default/endpoints/kubernetes",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
        ];
        for _ in 0..400 {
            let mut ready = self.get("/api/v1/namespaces/default").await.code == 200;
            for path in STARTUP_OBJECTS {
                ready = ready && self.get(path).await.code == 200;
            }
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the API server never became ready");
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Reply {
        let mut b = http::Request::builder().method(method).uri(path);
        if !content_type.is_empty() {
            b = b.header("content-type", content_type);
        }
        let req = b.body(body.to_vec()).unwrap();
        self.send(req).await
    }

    pub async fn send(&self, req: http::Request<Vec<u8>>) -> Reply {
        let (parts, body) = req.into_parts();
        let req = http::Request::from_parts(parts, kube::client::Body::from(body));
        let resp = self.client.send(req).await.unwrap();
        let code = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            code,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, "", b"").await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.request(
            "POST",
            path,
            "application/json",
            body.to_string().as_bytes(),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.request("PUT", path, "application/json", body.to_string().as_bytes())
            .await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: &Value) -> Reply {
        self.request("PATCH", path, content_type, body.to_string().as_bytes())
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, "", b"").await
    }

    /// Opens a watch and returns a line reader of its events.
    pub async fn watch(&self, path: &str) -> WatchStream {
        let req = http::Request::builder()
            .uri(path)
            .body(kube::client::Body::empty())
            .unwrap();
        let resp = self.client.send(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "watch {path}");
        WatchStream {
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub struct WatchStream {
    body: kube::client::Body,
    buf: Vec<u8>,
}

impl WatchStream {
    pub fn from_body(body: kube::client::Body) -> WatchStream {
        WatchStream {
            body,
            buf: Vec::new(),
        }
    }

    /// The next event, or None when the stream ended or `timeout` passed.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("watch events are JSON lines"));
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??;
            if let Ok(data) = frame.ok()?.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }
}

pub fn pod(name: &str, labels: Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    })
}

pub fn configmap(name: &str, data: Value) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

/// Aborts a background task (a controller loop) when the test ends.
pub struct Bg(tokio::task::JoinHandle<()>);

impl Drop for Bg {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn bg(f: impl std::future::Future<Output = ()> + Send + 'static) -> Bg {
    Bg(tokio::spawn(f))
}

/// A test server and an in-process client of its API (the way the
/// controllers reach it in a replica), with `user_agent` as the field manager.
pub async fn with_in_process_client(user_agent: &str) -> (TestServer, client::Client) {
    let server = TestServer::start().await;
    let json = keel_apiserver::client::Client::new(server.api(), user_agent);
    let client = client::Client::new(json, server.in_process(user_agent));
    (server, client)
}

/// Polls `f` until it returns Some, failing the test after `secs`.
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
