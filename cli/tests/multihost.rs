//! keel on real separate hosts: Docker containers on a private network the
//! test creates (no registry, no base image: the image is built from the
//! keel binary and the shared libraries `ldd` lists).
//!
//! One cluster goes through every phase, while a client loop creates
//! ConfigMaps through the three servers' APIs (moving to the next server
//! when one fails, as the agents' `--server` list does) and reads each back:
//!
//! 1. `keel server --init`, two `keel server --join https://<ip>:6443`
//!    (mutual TLS between peers at distinct IPs) and two
//!    `keel agent --join` with all three servers as `--server`s;
//! 2. partition of the leader (`docker network disconnect`), then reconnect;
//! 3. SIGKILL of the leader's container, then start it again;
//! 4. `keel member remove` of a server: its container stops and does not
//!    come back with its old identity; a new container joins in its place;
//! 5. a rolling restart of the three servers (`docker restart`: SIGTERM, so
//!    the leader hands leadership over first).
//!
//! Every acknowledged write must be readable at the end, through every
//! server, and both agents' nodes keep renewing their leases. Failed
//! requests per phase are printed as a table; in the rolling restart there
//! must be none (a refused connection served by the next server is a
//! failover, not a failure).
//!
//! Needs a Docker daemon; without one it fails saying so, and
//! `KEEL_SKIP_DOCKER=1` skips it with a printed reason.

mod util;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Label on every container and network this test creates (Drop removes
/// them by it).
const LABEL: &str = "keel-test-multihost";
const NS: &str = "default";

// ---------------------------------------------------------------- docker

/// Whether to run: not with `KEEL_SKIP_DOCKER=1`, nor without a reachable
/// Docker daemon (both print why).
fn docker_usable() -> bool {
    if std::env::var("KEEL_SKIP_DOCKER").is_ok_and(|v| v == "1") {
        eprintln!("KEEL_SKIP_DOCKER=1: skipping the multi-host Docker test");
        return false;
    }
    match Command::new("docker")
        .args(["info", "-f", "{{.ServerVersion}}"])
        .output()
    {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "skipping the multi-host Docker test: no Docker daemon is reachable (`docker info`: {})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("skipping the multi-host Docker test: cannot run the docker CLI ({e})");
            false
        }
    }
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI")
}

/// `docker ARGS`, which must succeed; its trimmed stdout.
fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(
        o.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Builds a `FROM scratch` image holding the (stripped) keel binary as
/// `/keel`, its shared libraries, a minimal /etc/passwd and empty
/// /data, /agent and /tmp.
fn build_image(tag: &str) {
    let ctx = tempfile::tempdir().unwrap();
    let rootfs = ctx.path().join("rootfs");
    for d in ["etc", "data", "agent", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    let bin = env!("CARGO_BIN_EXE_keel");
    // Debug info is most of a debug build: leave it out of the image.
    let st = Command::new("strip")
        .args(["--strip-debug", "-o"])
        .arg(rootfs.join("keel"))
        .arg(bin)
        .status();
    if !st.is_ok_and(|s| s.success()) {
        std::fs::copy(bin, rootfs.join("keel")).unwrap();
    }
    let ldd = Command::new("ldd").arg(bin).output().expect("run ldd");
    assert!(ldd.status.success(), "ldd {bin} failed");
    let ldd = String::from_utf8_lossy(&ldd.stdout).into_owned();
    let mut libs: Vec<&str> = ldd
        .split_whitespace()
        .filter(|w| w.starts_with('/') && !w.ends_with(':'))
        .collect();
    libs.sort_unstable();
    libs.dedup();
    for lib in libs {
        let dest = rootfs.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/keel\n").unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/keel\"]\n",
    )
    .unwrap();
    docker_ok(&["build", "-q", "-t", tag, ctx.path().to_str().unwrap()]);
}

/// A Docker network with a private /24 this test created, and everything
/// started on it; Drop removes the containers, the network and the image,
/// also when the test fails.
struct Net {
    name: String,
    /// `172.31.X.` (hosts are appended).
    prefix: String,
    image: String,
}

impl Net {
    fn create() -> Net {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let id = format!("{}-{nanos}", std::process::id());
        let name = format!("keel-test-{id}");
        let image = format!("keel-test/multihost:{id}");
        let mut net = None;
        // Another test run may hold a subnet: try a few.
        for k in 0..20u32 {
            let x = 100 + (nanos / 7 + k * 13) % 150;
            let subnet = format!("172.31.{x}.0/24");
            let o = docker(&[
                "network", "create", "--label", LABEL, "--subnet", &subnet, &name,
            ]);
            if o.status.success() {
                net = Some(format!("172.31.{x}."));
                break;
            }
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("overlap"), "docker network create: {err}");
        }
        let prefix = net.expect("no free 172.31.X.0/24 subnet for the test network");
        let net = Net {
            name,
            prefix,
            image,
        };
        build_image(&net.image);
        net
    }

    fn ip(&self, host: u8) -> String {
        format!("{}{host}", self.prefix)
    }

    fn container(&self, name: &str) -> String {
        format!("{}-{name}", self.name)
    }

    /// `docker run -d` of `/keel ARGS` as host `name` at `.host`.
    fn run(&self, name: &str, host: u8, args: &[&str]) {
        let c = self.container(name);
        let ip = self.ip(host);
        let mut a = vec![
            "run",
            "-d",
            "--name",
            &c,
            "--hostname",
            name,
            "--label",
            LABEL,
            "--network",
            &self.name,
            "--ip",
            &ip,
            "-e",
            "NO_COLOR=1",
            &self.image,
        ];
        a.extend_from_slice(args);
        docker_ok(&a);
    }

    fn logs(&self, name: &str) -> String {
        let o = docker(&["logs", "--tail", "60", &self.container(name)]);
        format!(
            "--- {name}:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    fn running(&self, name: &str) -> bool {
        docker(&["inspect", "-f", "{{.State.Running}}", &self.container(name)])
            .stdout
            .starts_with(b"true")
    }

    /// `keel ARGS` inside `name`'s container (`docker exec`).
    fn keel(&self, name: &str, args: &[&str]) -> Output {
        let c = self.container(name);
        let mut a = vec!["exec", &c, "/keel"];
        a.extend_from_slice(args);
        docker(&a)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let ids = docker(&["ps", "-aq", "--filter", &format!("network={}", self.name)]);
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let mut a = vec!["rm", "-f"];
            a.extend(ids.iter().map(String::as_str));
            let _ = docker(&a);
        }
        // Containers of a failed phase may have left the network already.
        for s in ["s0", "s1", "s2", "s3", "a0", "a1"] {
            let _ = docker(&["rm", "-f", &self.container(s)]);
        }
        let _ = docker(&["network", "rm", &self.name]);
        let _ = docker(&["rmi", "-f", &self.image]);
    }
}

// --------------------------------------------------------------- servers

/// One `keel server` host.
#[derive(Clone)]
struct Server {
    name: String,
    host: u8,
}

/// Flags every server gets: its peer URL (https: mTLS between replicas),
/// the etcd port on loopback, the API at its IP, named in its serving
/// certificate.
fn server_args(net: &Net, s: &Server) -> Vec<String> {
    let ip = net.ip(s.host);
    [
        "server",
        "--name",
        &s.name,
        "--data-dir",
        "/data",
        "--listen-peer",
        &format!("https://{ip}:2380"),
        "--listen-client",
        "127.0.0.1:2379",
        "--listen-api",
        &format!("{ip}:6443"),
        "--tls-san",
        &ip,
        "--heartbeat-interval",
        "100",
        "--election-timeout",
        "1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start_server(net: &Net, s: &Server, extra: &[&str]) {
    let mut args = server_args(net, s);
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    net.run(&s.name, s.host, &args);
}

/// `(name, leader?)` of each started member, as `keel member list` run on
/// `on` prints them.
fn members(net: &Net, on: &str) -> Option<Vec<(String, String, bool)>> {
    let o = net.keel(on, &["member", "list", "--endpoints", "127.0.0.1:2379"]);
    if !o.status.success() {
        return None;
    }
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    Some(
        out.lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3).then(|| (f[1].to_string(), f[2].to_string(), f.last() == Some(&"*")))
            })
            .collect(),
    )
}

/// Waits until a running server lists exactly `names` as voters with a
/// leader among them; the leader's name.
fn wait_voters(net: &Net, names: &[&str], secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    loop {
        for on in names.iter().filter(|n| net.running(n)) {
            let Some(ms) = members(net, on) else { continue };
            let mut voters: Vec<&str> = ms
                .iter()
                .filter(|m| m.1 == "voter")
                .map(|m| m.0.as_str())
                .collect();
            voters.sort_unstable();
            let leader = ms.iter().find(|m| m.2).map(|m| m.0.clone());
            if voters == names && ms.len() == names.len() {
                if let Some(l) = leader {
                    return l;
                }
            }
            last = Some(ms);
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = names.iter().map(|n| net.logs(n)).collect();
            panic!(
                "wanted voters {names:?} with a leader, last member list {last:?}\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn leader(net: &Net, names: &[&str]) -> String {
    wait_voters(net, names, 60)
}

// ---------------------------------------------------------------- client

/// A kube client for the server at `ip` from the admin kubeconfig (its
/// token and the cluster CA). kube's own retries are off: the loop counts
/// what each server answers.
async fn client(kubeconfig: &Path, ip: &str) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("admin kubeconfig parses");
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("admin kubeconfig loads");
    cfg.cluster_url = format!("https://{ip}:6443").parse().unwrap();
    cfg.default_retry = false;
    cfg.connect_timeout = Some(Duration::from_secs(2));
    cfg.read_timeout = Some(Duration::from_secs(5));
    cfg.write_timeout = Some(Duration::from_secs(5));
    Client::try_from(cfg).expect("client builds")
}

async fn readyz(c: &Client) -> bool {
    let req = http::Request::get("/readyz").body(vec![]).unwrap();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), c.request_text(req)).await,
        Ok(Ok(_))
    )
}

async fn wait_ready(c: &Client, what: &str, net: &Net, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !readyz(c).await {
        assert!(
            Instant::now() < deadline,
            "{what} never ready\n{}",
            net.logs(name)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the client loop saw in one phase.
#[derive(Default, Clone, Debug)]
struct PhaseStats {
    /// Writes acknowledged (created, or found created by an earlier try).
    acked: u64,
    /// Tries a running server answered with an error, or that got no
    /// answer in time: the failed requests.
    failed: u64,
    /// Tries whose connection was refused or reset (that server was
    /// down): the client moved on to the next server at once.
    failovers: u64,
    /// Read-backs answered with an error or not at all.
    read_errors: u64,
    /// Read-backs of an acknowledged write that saw another value or none
    /// (a GET without resourceVersion must be linearizable).
    stale_reads: u64,
    /// Writes given up after 30 s on every server.
    lost_ops: u64,
    /// The longest write, tries included.
    max_write_ms: u128,
    /// The first few errors, to say what failed.
    samples: Vec<String>,
}

impl PhaseStats {
    fn note(&mut self, what: &str, e: String) {
        if self.samples.len() < 4 {
            self.samples.push(format!("{what}: {e}"));
        }
    }
}

#[derive(Default)]
struct Shared {
    phase: String,
    /// Phases in the order they ran.
    phases: Vec<String>,
    stats: BTreeMap<String, PhaseStats>,
    /// The servers' clients, in order of preference (a replaced server's
    /// is swapped for its successor's).
    clients: Vec<Client>,
    /// name → value of every acknowledged write.
    acked: BTreeMap<String, String>,
    order: Vec<String>,
}

/// How one try went.
enum Try<T> {
    Done(T),
    /// The server was down (refused or reset): try the next at once.
    Down,
    /// The server answered an error or nothing in time.
    Failed(String),
}

fn classify<T>(r: Result<Result<T, kube::Error>, tokio::time::error::Elapsed>) -> Try<T> {
    match r {
        Ok(Ok(v)) => Try::Done(v),
        Ok(Err(kube::Error::Api(s))) => Try::Failed(format!("{} {}", s.code, s.message)),
        Ok(Err(e)) => {
            let chain = error_chain(&e);
            let s = chain.to_lowercase();
            // Refused or reset, or a kept-alive connection the server
            // closed as it went away (hyper: "connection closed before
            // message completed"): the request never reached it.
            let down = [
                "connection refused",
                "connection reset",
                "broken pipe",
                "no route",
                "closed before message completed",
            ]
            .iter()
            .any(|k| s.contains(k));
            match down {
                true => Try::Down,
                false => Try::Failed(chain),
            }
        }
        Err(_) => Try::Failed("no answer within 6s".into()),
    }
}

/// `e: its source: ...`, the whole chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn current(shared: &Mutex<Shared>) -> (String, Vec<Client>) {
    let g = shared.lock().unwrap();
    (g.phase.clone(), g.clients.clone())
}

/// Creates `w-<n>` through the servers in turn until one acknowledges it,
/// then reads it back (from the same server first). Runs until `stop`.
async fn client_loop(shared: Arc<Mutex<Shared>>, stop: Arc<AtomicBool>) {
    let mut cur = 0usize;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let name = format!("w-{n}");
        let value = format!("v{n}");
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.clone());
        cm.data = Some(BTreeMap::from([("v".to_string(), value.clone())]));
        let started = Instant::now();
        let mut tried = false;
        let acked = loop {
            let (phase, clients) = current(&shared);
            cur %= clients.len();
            let api: Api<ConfigMap> = Api::namespaced(clients[cur].clone(), NS);
            let r = tokio::time::timeout(
                Duration::from_secs(6),
                api.create(&PostParams::default(), &cm),
            )
            .await;
            let r = match r {
                // An earlier try was committed though its answer was lost.
                Ok(Err(kube::Error::Api(s))) if tried && s.code == 409 => break true,
                r => classify(r),
            };
            {
                let mut g = shared.lock().unwrap();
                let st = g.stats.entry(phase).or_default();
                match r {
                    Try::Done(_) => break true,
                    Try::Down => st.failovers += 1,
                    Try::Failed(e) => {
                        st.failed += 1;
                        st.note(&format!("create {name} via #{cur}"), e);
                    }
                }
            }
            tried = true;
            cur += 1;
            if started.elapsed() > Duration::from_secs(30) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let ms = started.elapsed().as_millis();
        if acked {
            read_back(&shared, cur, &name, &value).await;
        }
        let mut g = shared.lock().unwrap();
        let phase = g.phase.clone();
        let st = g.stats.entry(phase).or_default();
        st.max_write_ms = st.max_write_ms.max(ms);
        st.acked += u64::from(acked);
        st.lost_ops += u64::from(!acked);
        if acked {
            g.acked.insert(name.clone(), value);
            g.order.push(name);
        }
    }
}

/// Reads `name` back from server `cur`, or the next ones while servers
/// are down; an error answer or another value counts as a read error.
async fn read_back(shared: &Mutex<Shared>, mut cur: usize, name: &str, value: &str) {
    for _ in 0..6 {
        let (phase, clients) = current(shared);
        cur %= clients.len();
        let api: Api<ConfigMap> = Api::namespaced(clients[cur].clone(), NS);
        let r = classify(tokio::time::timeout(Duration::from_secs(6), api.get(name)).await);
        let mut g = shared.lock().unwrap();
        let st = g.stats.entry(phase).or_default();
        match r {
            Try::Failed(e) if e.starts_with("404 ") => {
                st.stale_reads += 1;
                st.note(&format!("read {name} via #{cur}"), e);
                return;
            }
            Try::Done(c) => {
                let got = c.data.and_then(|d| d.get("v").cloned());
                if got.as_deref() != Some(value) {
                    st.stale_reads += 1;
                    st.note(&format!("read {name} via #{cur}"), format!("{got:?}"));
                }
                return;
            }
            Try::Down => {}
            Try::Failed(e) => {
                st.read_errors += 1;
                st.note(&format!("read {name} via #{cur}"), e);
                return;
            }
        }
        cur += 1;
    }
}

fn set_phase(shared: &Mutex<Shared>, phase: &str) {
    let mut g = shared.lock().unwrap();
    g.phase = phase.to_string();
    g.phases.push(phase.to_string());
    g.stats.entry(phase.to_string()).or_default();
}

fn acked_count(shared: &Mutex<Shared>) -> usize {
    shared.lock().unwrap().acked.len()
}

/// Waits until the loop has `more` acknowledged writes than now.
async fn wait_progress(shared: &Mutex<Shared>, more: usize, what: &str, net: &Net, names: &[&str]) {
    let want = acked_count(shared) + more;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_count(shared) < want {
        if Instant::now() > deadline {
            let logs: Vec<String> = names.iter().map(|n| net.logs(n)).collect();
            panic!(
                "writes made no progress {what}: {:?}\n{}",
                shared.lock().unwrap().stats,
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------- agents

/// Whether node `name` is Ready and its lease was renewed after `since`.
async fn node_fresh(c: &Client, name: &str, since: SystemTime) -> bool {
    let nodes: Api<Node> = Api::all(c.clone());
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    let Ok(Ok(node)) = tokio::time::timeout(Duration::from_secs(5), nodes.get(name)).await else {
        return false;
    };
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let Ok(Ok(lease)) = tokio::time::timeout(Duration::from_secs(5), leases.get(name)).await else {
        return false;
    };
    let renewed = lease
        .spec
        .and_then(|s| s.renew_time)
        .map(|t| SystemTime::from(t.0))
        .is_some_and(|t| t > since);
    ready && renewed
}

async fn wait_nodes(c: &Client, names: &[&str], since: SystemTime, net: &Net) {
    let deadline = Instant::now() + Duration::from_secs(90);
    for n in names {
        while !node_fresh(c, n, since).await {
            assert!(
                Instant::now() < deadline,
                "node {n} not Ready with a renewed lease\n{}",
                net.logs(n)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

// ------------------------------------------------------------------ test

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_two_agents_survive_partition_kill_replacement_and_rolling_restart() {
    if !docker_usable() {
        return;
    }
    let t0 = Instant::now();
    let net = Net::create();
    let tmp = tempfile::tempdir().unwrap();
    let s = |name: &str, host: u8| Server {
        name: name.into(),
        host,
    };
    let (s0, s1, s2, s3) = (s("s0", 10), s("s1", 11), s("s2", 12), s("s3", 13));

    // 1. --init, then two joins through the first server's IP.
    start_server(&net, &s0, &["--init"]);
    let api0 = format!("https://{}:6443", net.ip(s0.host));
    let mut token = String::new();
    util::wait_for(
        "s0's join token",
        90,
        || {
            // --init prints the token on stdout once the API serves.
            let o = docker(&["logs", &net.container("s0")]);
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            if let Some(t) = out.lines().map(str::trim).find(|l| l.starts_with("K10")) {
                token = t.to_string();
            }
            !token.is_empty()
        },
        || net.logs("s0"),
    );
    for j in [&s1, &s2] {
        start_server(&net, j, &["--join", &api0, "--token", &token]);
    }
    let first_leader = wait_voters(&net, &["s0", "s1", "s2"], 120);
    let kubeconfig = tmp.path().join("kubeconfig");
    docker_ok(&[
        "cp",
        &format!("{}:/data/kubeconfig", net.container("s0")),
        kubeconfig.to_str().unwrap(),
    ]);
    let ips = [net.ip(s0.host), net.ip(s1.host), net.ip(s2.host)];
    let mut clients = Vec::new();
    for (ip, name) in ips.iter().zip(["s0", "s1", "s2"]) {
        let c = client(&kubeconfig, ip).await;
        wait_ready(&c, &format!("{name}'s API"), &net, name).await;
        clients.push(c);
    }
    let setup_s = t0.elapsed().as_secs_f64();

    // Two agents joined with an agent token, each with all three servers.
    let o = net.keel(
        "s0",
        &[
            "token",
            "create",
            "--kind",
            "agent",
            "--kubeconfig",
            "/data/kubeconfig",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let agent_token = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let servers: Vec<String> = ips.iter().map(|ip| format!("https://{ip}:6443")).collect();
    for (name, host) in [("a0", 20u8), ("a1", 21)] {
        let ip = net.ip(host);
        let logs = format!("{ip}:10250");
        let mut args = vec![
            "agent",
            "--join",
            &api0,
            "--token",
            &agent_token,
            "--node-name",
            name,
            "--root-dir",
            "/agent",
            "--runtime",
            "exec",
            "--node-ip",
            &ip,
            "--listen-logs",
            &logs,
            "--disable-ingress",
            "--heartbeat-interval-ms",
            "1000",
        ];
        for s in &servers {
            args.extend(["--server", s.as_str()]);
        }
        net.run(name, host, &args);
    }
    wait_nodes(&clients[0], &["a0", "a1"], UNIX_EPOCH, &net).await;

    // The client loop runs through every fault below.
    let shared = Arc::new(Mutex::new(Shared {
        clients: clients.clone(),
        ..Shared::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    set_phase(&shared, "steady");
    let looper = tokio::spawn(client_loop(shared.clone(), stop.clone()));
    let all = ["s0", "s1", "s2"];
    wait_progress(&shared, 5, "with three servers", &net, &all).await;

    // 2. Partition the leader from the others, then heal it.
    set_phase(&shared, "partition");
    let l = leader(&net, &all);
    let lc = net.container(&l);
    let lip = net.ip([&s0, &s1, &s2].iter().find(|s| s.name == l).unwrap().host);
    docker_ok(&["network", "disconnect", &net.name, &lc]);
    wait_progress(&shared, 5, &format!("with {l} partitioned"), &net, &all).await;
    docker_ok(&["network", "connect", "--ip", &lip, &net.name, &lc]);
    wait_voters(&net, &all, 90);
    wait_ready(
        &clients[all.iter().position(|n| *n == l).unwrap()],
        &l,
        &net,
        &l,
    )
    .await;
    wait_progress(&shared, 3, "after the partition healed", &net, &all).await;

    // 3. SIGKILL the leader's container; writes resume; it comes back.
    set_phase(&shared, "kill leader");
    let l = leader(&net, &all);
    docker_ok(&["kill", &net.container(&l)]);
    wait_progress(&shared, 5, &format!("with {l} killed"), &net, &all).await;
    docker_ok(&["start", &net.container(&l)]);
    wait_voters(&net, &all, 90);
    wait_ready(
        &clients[all.iter().position(|n| *n == l).unwrap()],
        &l,
        &net,
        &l,
    )
    .await;
    wait_progress(&shared, 3, "after the killed leader restarted", &net, &all).await;

    // 4. Remove s2 (not necessarily a follower: removing the leader works
    //    too); it stops and refuses to come back; s3 joins in its place.
    set_phase(&shared, "replace member");
    let o = net.keel(
        "s0",
        &["member", "remove", "s2", "--endpoints", "127.0.0.1:2379"],
    );
    assert!(
        o.status.success(),
        "member remove: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    util::wait_for(
        "s2 to stop once removed",
        60,
        || !net.running("s2"),
        || net.logs("s2"),
    );
    docker_ok(&["start", &net.container("s2")]);
    util::wait_for(
        "the removed s2 to refuse its old identity and exit",
        60,
        || !net.running("s2"),
        || net.logs("s2"),
    );
    start_server(&net, &s3, &["--join", &api0, "--token", &token]);
    let now = ["s0", "s1", "s3"];
    wait_voters(&net, &now, 120);
    let c3 = client(&kubeconfig, &net.ip(s3.host)).await;
    wait_ready(&c3, "s3's API", &net, "s3").await;
    shared.lock().unwrap().clients[2] = c3.clone();
    wait_progress(&shared, 3, "after s3 replaced s2", &net, &now).await;

    // 5. Rolling restart (SIGTERM: the leader hands over first).
    set_phase(&shared, "rolling restart");
    let roll_t0 = Instant::now();
    let ready_clients = [clients[0].clone(), clients[1].clone(), c3.clone()];
    for (i, name) in now.iter().enumerate() {
        docker_ok(&["restart", "-t", "30", &net.container(name)]);
        wait_voters(&net, &now, 90);
        wait_ready(&ready_clients[i], name, &net, name).await;
        wait_progress(&shared, 2, &format!("after restarting {name}"), &net, &now).await;
    }
    let roll_s = roll_t0.elapsed().as_secs_f64();
    let after_roll = SystemTime::now();
    set_phase(&shared, "after");
    wait_progress(&shared, 3, "after the rolling restart", &net, &now).await;
    stop.store(true, Ordering::Relaxed);
    looper.await.unwrap();

    // Every acknowledged write, through every current server.
    let g = std::mem::take(&mut *shared.lock().unwrap());
    for (name, c) in now.iter().zip(&ready_clients) {
        let api: Api<ConfigMap> = Api::namespaced(c.clone(), NS);
        let list = api
            .list(&ListParams::default())
            .await
            .expect("list configmaps");
        let seen: BTreeMap<String, String> = list
            .items
            .into_iter()
            .filter_map(|cm| {
                let v = cm.data?.get("v")?.clone();
                Some((cm.metadata.name?, v))
            })
            .collect();
        let missing: Vec<&String> = g
            .order
            .iter()
            .filter(|k| seen.get(*k) != g.acked.get(*k))
            .collect();
        assert!(
            missing.is_empty(),
            "{name} lacks acknowledged writes {missing:?}"
        );
    }
    // The agents kept (or regained) the control plane through their
    // --server lists: leases renewed after the rolling restart.
    wait_nodes(&c3, &["a0", "a1"], after_roll, &net).await;

    println!("multi-host (Docker) results: first leader {first_leader}, setup {setup_s:.1}s, rolling restart {roll_s:.1}s, total {:.1}s",
        t0.elapsed().as_secs_f64());
    println!(
        "| phase | acked writes | failed tries | failovers | read errors | stale reads | lost ops | max write ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for phase in &g.phases {
        let st = &g.stats[phase];
        println!(
            "| {phase} | {} | {} | {} | {} | {} | {} | {} |",
            st.acked,
            st.failed,
            st.failovers,
            st.read_errors,
            st.stale_reads,
            st.lost_ops,
            st.max_write_ms
        );
    }
    for phase in &g.phases {
        for e in &g.stats[phase].samples {
            println!("{phase}: {e}");
        }
    }
    // A clean stop drains and hands over, a restart serves only once
    // caught up: no request fails, whichever server it reaches.
    let roll = &g.stats["rolling restart"];
    assert!(
        roll.failed == 0 && roll.read_errors == 0,
        "requests failed during the rolling restart ({} tries, {} read-backs): {:?}",
        roll.failed,
        roll.read_errors,
        roll.samples
    );
    let lost: u64 = g.stats.values().map(|s| s.lost_ops).sum();
    assert_eq!(lost, 0, "writes given up on every server: {:?}", g.stats);
    let stale: u64 = g.stats.values().map(|s| s.stale_reads).sum();
    assert_eq!(
        stale, 0,
        "acknowledged writes read back stale: {:?}",
        g.stats
    );
    assert!(
        g.acked.len() > 30,
        "too few writes to mean anything: {}",
        g.acked.len()
    );
}
