//! The dashboard at `/ui/` end to end: its data needs credentials (401
//! without, 403 past RBAC), and headless Chromium, driven over the
//! DevTools protocol, logs in with a token, sees `keel up --agents 3`'s
//! nodes, and sees a new Deployment appear and its rollout progress and
//! complete through the API's watch, without a reload.
//!
//! With `KEEL_DASHBOARD_SCREENSHOT=PATH` the test also saves a screenshot
//! (what `scripts/dashboard-screenshot.sh` uses for the README).

mod util;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::kubectl::Kubectl;
use util::up::{ready_nodes, write, Up};
use util::wait_for;

/// `curl -k` against the API: (status code, body).
fn curl(url: &str, token: Option<&str>, method: &str) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sk", "-X", method, "-w", "\n%{http_code}", url]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = c.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The API URL and the admin token from a kubeconfig.
fn server_and_token(kubeconfig: &Path) -> (String, String) {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("no {name} in the kubeconfig"))
    };
    (field("server:"), field("token:"))
}

/// Headless Chromium with a DevTools websocket to one page; killed on drop.
struct Browser {
    child: Child,
    page: Cdp,
    /// The browser-level connection, kept open while the page is in use.
    _browser: Cdp,
    _profile: tempfile::TempDir,
}

/// One DevTools protocol connection (a websocket of JSON messages).
struct Cdp {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let (ws, _) = tungstenite::connect(url).expect("DevTools websocket");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        Cdp { ws, next_id: 0 }
    }

    /// One command's result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .expect("send to DevTools");
        loop {
            let m = self.ws.read().expect("DevTools answer");
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }
}

impl Browser {
    /// `None` (with the reason printed) when Chromium is not installed.
    fn start() -> Option<Browser> {
        let bin = ["chromium", "chromium-browser"].into_iter().find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        let Some(bin) = bin else {
            eprintln!(
                "SKIP browser checks: chromium is not installed (apt-get install -y chromium)"
            );
            return None;
        };
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                // The cluster's own CA signs the API's certificate.
                "--ignore-certificate-errors",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it chose and the browser target's path
        // into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (port, browser_path) = loop {
            let text = std::fs::read_to_string(&port_file).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(Ok(port)), Some(path)) =
                (lines.next().map(|l| l.trim().parse::<u16>()), lines.next())
            {
                break (port, path.trim().to_string());
            }
            assert!(Instant::now() < deadline, "chromium did not open DevTools");
            std::thread::sleep(Duration::from_millis(100));
        };
        // A page of our own, then a connection to it.
        let mut browser = Cdp::connect(&format!("ws://127.0.0.1:{port}{browser_path}"));
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let id = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let page = Cdp::connect(&format!("ws://127.0.0.1:{port}/devtools/page/{id}"));
        Some(Browser {
            child,
            page,
            _browser: browser,
            _profile: profile,
        })
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.page.call(method, params)
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r["exceptionDetails"].is_null(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is true in the page; panics with `what` and the
    /// value of `show` after `secs`.
    fn wait(&mut self, what: &str, secs: u64, expr: &str, show: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.eval(expr) == Value::Bool(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what}: {}", self.eval(show));
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait(
            "the page to load",
            20,
            "document.readyState === 'complete' && !!document.querySelector('#dash')",
            "document.documentElement.outerHTML.slice(0, 500)",
        );
    }

    /// Fills the login form with `token` and submits it.
    fn log_in(&mut self, token: &str) {
        self.wait(
            "the login form",
            20,
            "!document.querySelector('#login').hidden",
            "document.body.innerText",
        );
        let token = serde_json::to_string(token).unwrap();
        self.eval(&format!(
            "document.querySelector('#token').value = {token}; \
             document.querySelector('#login-form').requestSubmit(); true"
        ));
    }

    fn screenshot(&mut self, path: &Path) {
        let height = self
            .eval("document.documentElement.scrollHeight")
            .as_u64()
            .unwrap_or(1000);
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .unwrap();
        std::fs::write(path, png).unwrap();
        eprintln!("wrote {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.page.ws.close(None);
        // SIGTERM first: Chromium then takes its helper processes down too.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two echo pods with requests, so the nodes' allocation shows them.
const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: keel/echo:v1
        resources:
          requests: {cpu: 250m, memory: 64Mi}
"#;

const WEB_ROW: &str = "document.querySelector('tr[data-kind=\"Deployment\"][data-name=\"web\"]')";

#[test]
fn dashboard_needs_credentials_and_follows_the_cluster_live() {
    let up = Up::start(3, &[]);
    let k: Kubectl = up.kubectl();
    wait_for("3 Ready nodes", 90, || ready_nodes(&k) == 3, || up.log());
    let (server, admin) = server_and_token(&k.kubeconfig);

    // Unauthenticated, the page is 401, its body the login form (a
    // browser cannot send a token when it navigates); with a token, 200.
    let (code, body) = curl(&format!("{server}/ui/"), None, "GET");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("src=\"app.js\""), "{body}");
    assert_eq!(curl(&format!("{server}/ui/"), Some(&admin), "GET").0, 200);
    assert_eq!(curl(&format!("{server}/ui/app.js"), None, "GET").0, 200);
    assert_eq!(curl(&format!("{server}/ui/nope"), None, "GET").0, 404);
    assert_eq!(curl(&format!("{server}/ui/"), None, "POST").0, 405);
    // ...its data is not: 401 without credentials or with a wrong token.
    let raft = format!("{server}/ui/api/raft");
    let (code, body) = curl(&raft, None, "GET");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"kind\":\"Status\""), "a Status: {body}");
    assert_eq!(curl(&raft, Some("not-a-token"), "GET").0, 401);
    assert_eq!(curl(&format!("{server}/api/v1/nodes"), None, "GET").0, 401);
    // The admin sees the raft status: one member, leading.
    let (code, body) = curl(&raft, Some(&admin), "GET");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "RaftStatus");
    assert_eq!(v["members"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["members"][0]["role"], "leader", "{v}");
    assert_eq!(v["members"][0]["lag"], 0, "{v}");
    assert!(v["term"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(curl(&raft, Some(&admin), "DELETE").0, 405);
    // RBAC applies: a service account with no bindings is refused.
    let sa_token = k.ok(&["create", "token", "default", "-n", "default"]);
    let sa_token = sa_token.trim();
    let (code, body) = curl(&raft, Some(sa_token), "GET");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("/ui/api/raft"), "names the URL: {body}");

    let Some(mut b) = Browser::start() else {
        return;
    };
    b.navigate(&format!("{server}/ui/"));
    b.log_in(&admin);
    b.wait(
        "3 Ready nodes in the dashboard",
        30,
        "document.querySelectorAll('#nodes tr[data-ready=\"true\"]').length === 3",
        "document.querySelector('#nodes').innerText",
    );
    b.wait(
        "the raft leader row",
        15,
        "!!document.querySelector('#raft tr[data-role=\"leader\"]')",
        "document.querySelector('#raft').innerText",
    );
    b.wait(
        "the watch streams to open",
        15,
        "document.querySelector('#live').textContent === 'live'",
        "document.querySelector('#live').textContent",
    );
    let alloc = b.eval("document.querySelector('#nodes tbody tr td:nth-child(3)').innerText");
    assert!(
        alloc.as_str().is_some_and(|t| t.contains(" / ")),
        "allocation shown: {alloc}"
    );

    // A marker a reload would wipe; then a Deployment appears by itself.
    b.eval("window.__noReload = 'still here'; true");
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(dir.path(), "web.yaml", WEB);
    k.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    b.wait(
        "the new Deployment's row",
        20,
        &format!("!!{WEB_ROW}"),
        "document.querySelector('#workloads').innerText",
    );
    b.wait(
        "the Deployment's rollout to complete",
        90,
        &format!("{WEB_ROW}.dataset.rollout === 'complete'"),
        "document.querySelector('#workloads').innerText",
    );
    b.wait(
        "both pods Running in the row",
        30,
        &format!("{WEB_ROW}.innerText.includes('Running 2')"),
        &format!("{WEB_ROW}.innerText"),
    );
    // The nodes' allocation counts the pods' requests: 2 x 250m in all.
    b.wait(
        "the requests in the nodes' allocation",
        15,
        "Array.from(document.querySelectorAll('#nodes tbody tr td:nth-child(3)'))\
         .map(td => td.innerText).filter(t => t.startsWith('250m /')).length === 2 || \
         Array.from(document.querySelectorAll('#nodes tbody tr td:nth-child(3)'))\
         .some(td => td.innerText.startsWith('500m /'))",
        "document.querySelector('#nodes').innerText",
    );

    // Record every state the row shows during an image change.
    b.eval(&format!(
        "window.__states = []; new MutationObserver(() => {{ const r = {WEB_ROW}; \
         if (!r) return; const s = r.dataset.rollout + ' ' + r.querySelector('.images').textContent; \
         if (window.__states[window.__states.length - 1] !== s) window.__states.push(s); }})\
         .observe(document.querySelector('#workloads tbody'), {{childList: true, subtree: true}}); true"
    ));
    k.ok(&["set", "image", "deployment/web", "echo=keel/echo:v2"]);
    b.wait(
        "the rollout to v2 to complete",
        90,
        &format!(
            "{WEB_ROW}.dataset.rollout === 'complete' && \
             {WEB_ROW}.querySelector('.images').textContent === 'keel/echo:v2'"
        ),
        "JSON.stringify(window.__states)",
    );
    let states = b.eval("window.__states");
    assert!(
        states
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "progressing keel/echo:v2"),
        "the rollout was visibly in progress: {states}"
    );
    assert_eq!(b.eval("window.__noReload"), "still here", "no reload");
    assert!(
        b.eval("document.querySelector('#events tbody').innerText")
            .as_str()
            .is_some_and(|t| t.contains("deployment/web") || t.contains("pod/web")),
        "events of the rollout listed: {}",
        b.eval("document.querySelector('#events').innerText")
    );

    if let Ok(path) = std::env::var("KEEL_DASHBOARD_SCREENSHOT") {
        std::thread::sleep(Duration::from_secs(1));
        b.screenshot(Path::new(&path));
    }

    // A service account without bindings logs in and is told what it
    // may not see, instead of seeing it.
    b.eval("document.querySelector('#logout').click(); true");
    b.log_in(sa_token);
    b.wait(
        "the not-permitted notes",
        20,
        "document.querySelector('#nodes-note').textContent.includes('Not permitted to list nodes') && \
         document.querySelector('#raft-note').textContent.includes('Not permitted')",
        "document.querySelector('#dash').innerText",
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#nodes tr[data-name]').length"),
        0
    );
}
