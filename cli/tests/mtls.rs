//! TLS between replicas and on the etcd client port, end to end: three
//! `keel server` processes on 127.0.0.1-3 with https peer and client URLs
//! and client certificate auth, certificates from `keel certs`, the real
//! `etcdctl` as client. Also: peers with a foreign CA or a non-member name
//! are refused, certificates rotate on SIGHUP without failing a write, and
//! misconfigurations are refused at startup (before anything binds; no
//! traffic leaves loopback).

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn keel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keel"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free port on `ip` (a loopback address).
fn free_port(ip: &str) -> u16 {
    util::ports::reserve(ip)
}

fn issue(dir: &Path, ca: &Path, kind: &str, name: &str, hosts: &[&str], out: &Path) {
    let mut c = keel();
    c.args(["certs", "issue", "--kind", kind, "--name", name, "--ca-dir"])
        .arg(dir.join(ca))
        .arg("--out")
        .arg(out);
    for h in hosts {
        c.args(["--host", h]);
    }
    run_ok(&mut c);
}

struct Node {
    name: String,
    ip: String,
    peer_port: u16,
    client_port: u16,
    certs: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

struct TlsCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            if std::thread::panicking() {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                eprintln!("--- {} log ---\n{}", n.name, util::tail(&log, 40));
            }
        }
    }
}

impl TlsCluster {
    fn start() -> TlsCluster {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run_ok(keel().args(["certs", "init-ca", "--out"]).arg(d.join("ca")));
        let mut nodes = Vec::new();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let ip = format!("127.0.0.{}", i + 1);
            let certs = d.join("certs").join(name);
            issue(d, Path::new("ca"), "peer", name, &[&ip], &certs);
            issue(d, Path::new("ca"), "server", name, &[&ip], &certs);
            nodes.push(Node {
                name: name.to_string(),
                peer_port: free_port(&ip),
                client_port: free_port(&ip),
                ip,
                certs,
                child: None,
                log: d.join(format!("{name}.log")),
            });
        }
        issue(
            d,
            Path::new("ca"),
            "etcd-client",
            "root",
            &[],
            &d.join("client"),
        );
        let mut c = TlsCluster { dir, nodes };
        for i in 0..3 {
            c.spawn(i);
        }
        c
    }

    fn initial_cluster(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}=https://{}:{}", n.name, n.ip, n.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let ic = self.initial_cluster();
        let d = self.dir.path().to_path_buf();
        let n = &mut self.nodes[i];
        let c = &n.certs;
        let child = keel()
            .arg("server")
            .args(["--name", &n.name, "--disable-api"])
            .arg("--data-dir")
            .arg(d.join("data").join(&n.name))
            .arg("--listen-peer-urls")
            .arg(format!("https://{}:{}", n.ip, n.peer_port))
            .arg("--listen-client-urls")
            .arg(format!("https://{}:{}", n.ip, n.client_port))
            .args(["--initial-cluster", &ic])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .arg("--peer-cert-file")
            .arg(c.join("peer.crt"))
            .arg("--peer-key-file")
            .arg(c.join("peer.key"))
            .arg("--peer-trusted-ca-file")
            .arg(c.join("ca.crt"))
            .arg("--peer-client-cert-auth")
            .arg("--cert-file")
            .arg(c.join("server.crt"))
            .arg("--key-file")
            .arg(c.join("server.key"))
            .arg("--trusted-ca-file")
            .arg(c.join("ca.crt"))
            .arg("--client-cert-auth")
            // Rotation below is triggered by SIGHUP, not by the poll.
            .args(["--tls-reload-interval-s", "3600"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&n.log).unwrap())
            .spawn()
            .unwrap();
        n.child = Some(child);
    }

    fn endpoint(&self, i: usize) -> String {
        let n = &self.nodes[i];
        format!("https://{}:{}", n.ip, n.client_port)
    }

    fn etcdctl(&self, i: usize, with_cert: bool, args: &[&str]) -> Output {
        let d = self.dir.path();
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint(i)))
            .arg(format!("--cacert={}", d.join("ca/ca.crt").display()))
            .args(["--dial-timeout=1s", "--command-timeout=3s"]);
        if with_cert {
            c.arg(format!("--cert={}", d.join("client/client.crt").display()))
                .arg(format!("--key={}", d.join("client/client.key").display()));
        }
        c.args(args).output().unwrap()
    }

    fn put(&self, i: usize, k: &str, v: &str) -> bool {
        self.etcdctl(i, true, &["put", k, v]).status.success()
    }

    fn get(&self, i: usize, k: &str) -> String {
        let out = self.etcdctl(i, true, &["get", "--print-value-only", k]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn log(&self) -> String {
        self.nodes
            .iter()
            .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn wait_writable(&self) {
        util::wait_for(
            "a writable cluster",
            30,
            || self.put(0, "ready", "1"),
            || self.log(),
        );
    }

    fn peer_addr(&self, i: usize) -> String {
        format!("{}:{}", self.nodes[i].ip, self.nodes[i].peer_port)
    }
}

fn read_pem_certs(p: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(p)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Connects to a peer port presenting `cert`/`key`, trusting `ca`, and
/// speaks the HTTP/2 preface: `Some(server certificate)` if the server
/// answers (it accepted us), `None` if it refused the handshake.
fn peer_session(addr: &str, ca: &Path, cert: &Path, key: &Path) -> Option<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_pem_certs(ca) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            read_pem_certs(cert),
            PrivateKeyDer::from_pem_file(key).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let host = addr.rsplit_once(':').unwrap().0.to_string();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from(host).unwrap()).unwrap();
    let Ok(mut tcp) = TcpStream::connect(addr) else {
        return None;
    };
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    if tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").is_err() {
        return None;
    }
    let mut buf = [0u8; 9];
    match tls.read(&mut buf) {
        Ok(n) if n > 0 => {}
        _ => return None,
    }
    Some(conn.peer_certificates()?[0].to_vec())
}

#[test]
fn tls_cluster_replicates_and_refuses_strangers() {
    let c = TlsCluster::start();
    c.wait_writable();
    let d = c.dir.path();

    // Writes replicate: put through a, read through b and c.
    assert!(c.put(0, "k", "v1"));
    util::wait_for(
        "replication",
        10,
        || c.get(1, "k") == "v1" && c.get(2, "k") == "v1",
        || c.log(),
    );

    // The member list advertises https.
    let out = c.etcdctl(0, true, &["member", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains(&format!("https://{}", c.peer_addr(1))),
        "{list}"
    );

    // Without a client certificate etcdctl is refused.
    let out = c.etcdctl(0, false, &["put", "k", "v2", "--command-timeout=1s"]);
    assert!(
        !out.status.success(),
        "a client without a certificate got in"
    );
    assert_eq!(c.get(0, "k"), "v1");

    // A member's certificate gets through the peer port (control)...
    let b = &c.nodes[1].certs;
    let ca = d.join("ca/ca.crt");
    assert!(peer_session(
        &c.peer_addr(0),
        &ca,
        &b.join("peer.crt"),
        &b.join("peer.key")
    )
    .is_some());

    // ...one from another CA does not...
    run_ok(
        keel()
            .args(["certs", "init-ca", "--out"])
            .arg(d.join("evil-ca")),
    );
    issue(
        d,
        Path::new("evil-ca"),
        "peer",
        "b",
        &["127.0.0.2"],
        &d.join("evil"),
    );
    let evil = d.join("evil");
    assert!(peer_session(
        &c.peer_addr(0),
        &ca,
        &evil.join("peer.crt"),
        &evil.join("peer.key")
    )
    .is_none());

    // ...nor one from the right CA naming no member.
    issue(
        d,
        Path::new("ca"),
        "peer",
        "intruder",
        &["127.0.0.9"],
        &d.join("intruder"),
    );
    let i = d.join("intruder");
    assert!(peer_session(
        &c.peer_addr(0),
        &ca,
        &i.join("peer.crt"),
        &i.join("peer.key")
    )
    .is_none());
    // The refusal is logged by the replica a moment after the handshake.
    util::wait_for(
        "the refusal of a non-member certificate in the log",
        10,
        || c.log().contains("names no current member"),
        || util::tail(&c.log(), 40),
    );

    // The cluster still works.
    assert!(c.put(1, "k", "v3"));
    util::wait_for("replication", 10, || c.get(0, "k") == "v3", || c.log());
}

/// `keel member list` and `keel snapshot save` reach a client port that
/// requires client certificates with etcdctl's --cacert/--cert/--key;
/// without the client certificate they fail, naming the endpoint.
/// `GET path` over HTTP/1.1 (no ALPN) on a TLS port, presenting
/// `cert`/`key` and trusting `ca`: (status, body).
fn https_get(addr: &str, path: &str, ca: &Path, cert: &Path, key: &Path) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_pem_certs(ca) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            read_pem_certs(cert),
            PrivateKeyDer::from_pem_file(key).unwrap(),
        )
        .unwrap();
    // Offer only HTTP/1.1, as load balancers' probes do: the port must not
    // refuse the handshake for lack of h2.
    let mut cfg = cfg;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let host = addr.rsplit_once(':').unwrap().0.to_string();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from(host).unwrap()).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    // The server may close without close_notify; what was read counts.
    let _ = tls.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer from {addr}: {raw:?}"));
    (code, body.to_string())
}

#[test]
fn keel_member_and_snapshot_save_speak_tls() {
    let c = TlsCluster::start();
    c.wait_writable();
    assert!(c.put(0, "tls-key", "tls-value"));
    let d = c.dir.path();
    let ca = d.join("ca/ca.crt");
    let (cert, key) = (d.join("client/client.crt"), d.join("client/client.key"));
    let tls_args = |with_cert: bool| {
        let mut v = vec!["--cacert".to_string(), ca.display().to_string()];
        if with_cert {
            v.extend([
                "--cert".to_string(),
                cert.display().to_string(),
                "--key".to_string(),
                key.display().to_string(),
            ]);
        }
        v
    };

    // etcd's /health on the same TLS port, for load balancers.
    let addr = format!("{}:{}", c.nodes[1].ip, c.nodes[1].client_port);
    let (code, body) = https_get(&addr, "/health", &ca, &cert, &key);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""health":"true""#), "{body}");

    let table = run_ok(
        keel()
            .args(["member", "list", "--endpoints", &c.endpoint(1)])
            .args(tls_args(true)),
    );
    for n in ["a", "b", "c"] {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(n)),
            "{n} missing from:\n{table}"
        );
    }
    assert!(
        table.lines().any(|l| l.trim_end().ends_with('*')),
        "{table}"
    );

    // Without a client certificate the replica refuses the handshake.
    let out = keel()
        .args(["member", "list", "--endpoints", &c.endpoint(1)])
        .args(tls_args(false))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // ... and says so, as etcdctl does, not a bare "transport error".
    let err = String::from_utf8_lossy(&out.stderr);
    let ep = format!("{}:{}", c.nodes[1].ip, c.nodes[1].client_port);
    assert!(
        err.contains(&format!("TLS handshake with {ep} failed"))
            // The alert, or (TLS 1.3 completes the client's side first) the
            // connection the server closed after it.
            && (err.contains("refused this client's certificate")
                || err.contains("requires a client certificate"))
            && err.contains("--cert/--key"),
        "{err}"
    );
    // A CA that did not sign the replica's certificate: named as such.
    run_ok(
        keel()
            .args(["certs", "init-ca", "--out"])
            .arg(d.join("other-ca")),
    );
    let out = keel()
        .args(["member", "list", "--endpoints", &c.endpoint(1)])
        .arg("--cacert")
        .arg(d.join("other-ca/ca.crt"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("TLS handshake with {ep} failed"))
            && err.contains("certificate signed by unknown authority")
            && err.contains("--cacert"),
        "{err}"
    );
    // Plaintext against the TLS port: the hint names the TLS flags.
    let out = keel()
        .args(["member", "list", "--endpoints", &ep])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cacert") && err.contains(&ep), "{err}");
    // An https endpoint without --cacert is refused up front.
    let out = keel()
        .args(["member", "list", "--endpoints", &c.endpoint(1)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs --cacert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let file = d.join("backup.snap");
    let saved = run_ok(
        keel()
            .args(["snapshot", "save"])
            .arg(&file)
            .args(["--endpoints", &c.endpoint(2)])
            .args(tls_args(true)),
    );
    assert!(saved.contains("Snapshot saved"), "{saved}");
    let status = run_ok(keel().args(["snapshot", "status", "-w", "json"]).arg(&file));
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(st["totalKey"].as_u64().unwrap_or(0) >= 2, "{status}");

    let refused = keel()
        .args(["snapshot", "save"])
        .arg(d.join("nocert.snap"))
        .args(["--endpoints", &c.endpoint(2)])
        .args(tls_args(false))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(!d.join("nocert.snap").exists());
}

#[test]
fn certificates_rotate_on_sighup_without_failed_writes() {
    let c = TlsCluster::start();
    c.wait_writable();
    let d = c.dir.path().to_path_buf();
    let ca = d.join("ca/ca.crt");
    let b = c.nodes[1].certs.clone();
    let served = |i: usize| {
        peer_session(
            &c.peer_addr(i),
            &ca,
            &b.join("peer.crt"),
            &b.join("peer.key"),
        )
        .expect("member refused")
    };
    let before = served(0);

    // Keep writing through every replica while certificates rotate.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match c.put(n % 3, &format!("w{n}"), "x") {
                    true => ok.fetch_add(1, Ordering::Relaxed),
                    false => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
        for i in 0..3 {
            let n = &c.nodes[i];
            let ip = n.ip.clone();
            issue(&d, Path::new("ca"), "peer", &n.name, &[&ip], &n.certs);
            issue(&d, Path::new("ca"), "server", &n.name, &[&ip], &n.certs);
            let pid = n.child.as_ref().unwrap().id().to_string();
            run_ok(Command::new("kill").args(["-HUP", &pid]));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while served(0) == before {
            assert!(
                Instant::now() < deadline,
                "the new certificate was never served"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
    });
    // New handshakes get exactly the new file's certificate.
    let now = read_pem_certs(&c.nodes[0].certs.join("peer.crt"))[0].to_vec();
    assert_eq!(served(0), now);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "writes failed during rotation"
    );
    assert!(ok.load(Ordering::Relaxed) > 0);
    // And new connections between the replicas work with the new certs:
    // restart b, which must re-handshake with both others.
    let mut c = c;
    if let Some(mut ch) = c.nodes[1].child.take() {
        ch.kill().unwrap();
        ch.wait().unwrap();
    }
    c.spawn(1);
    assert!(c.put(0, "after", "rotation"));
    util::wait_for(
        "b catching up",
        20,
        || c.get(1, "after") == "rotation",
        || c.log(),
    );
}

/// Runs `keel server` with `args` and expects it to exit with an error
/// containing every one of `needles`.
fn refused(args: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = keel()
        .arg("server")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--disable-api"])
        .args(args)
        // No backtrace: symbolizing one takes a second per refusal.
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} started");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} not in: {err}");
    }
}

#[test]
fn misconfigurations_are_refused_at_startup() {
    let p = free_port("127.0.0.1").to_string();
    let lp = format!("http://127.0.0.1:{p}");
    // Plaintext off loopback: refused before binding.
    refused(
        &[
            "--listen-client-urls",
            "http://10.0.0.1:2379",
            "--listen-peer-urls",
            &lp,
        ],
        &["--listen-client-urls", "loopback"],
    );
    refused(
        &["--listen-peer-urls", "http://10.0.0.1:2380"],
        &["--listen-peer-urls", "loopback"],
    );
    refused(
        &["--listen-peer-urls", "http://0.0.0.0:2380"],
        &["loopback"],
    );
    // https without files, or without client auth off loopback.
    refused(
        &["--listen-peer-urls", &format!("https://127.0.0.1:{p}")],
        &["--peer-cert-file"],
    );
    refused(
        &[
            "--listen-client-urls",
            "https://10.0.0.1:2379",
            "--listen-peer-urls",
            &lp,
        ],
        &["--client-cert-auth"],
    );
    // Unreadable files and a key that is not the certificate's.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(keel().args(["certs", "init-ca", "--out"]).arg(d.join("ca")));
    issue(
        d,
        Path::new("ca"),
        "server",
        "a",
        &["127.0.0.1"],
        &d.join("a"),
    );
    issue(
        d,
        Path::new("ca"),
        "server",
        "b",
        &["127.0.0.1"],
        &d.join("b"),
    );
    let s = |p: &str| d.join(p).display().to_string();
    let lc = format!("https://127.0.0.1:{}", free_port("127.0.0.1"));
    refused(
        &[
            "--listen-peer-urls",
            &lp,
            "--listen-client-urls",
            &lc,
            "--cert-file",
            &s("a/missing.crt"),
            "--key-file",
            &s("a/server.key"),
        ],
        &["--cert-file", "cannot read"],
    );
    refused(
        &[
            "--listen-peer-urls",
            &lp,
            "--listen-client-urls",
            &lc,
            "--cert-file",
            &s("a/server.crt"),
            "--key-file",
            &s("b/server.key"),
        ],
        &["--key-file", "does not match"],
    );
    refused(
        &[
            "--listen-peer-urls",
            &lp,
            "--cert-file",
            &s("a/server.crt"),
            "--key-file",
            &s("a/server.key"),
        ],
        &["--cert-file is set but --listen-client-urls is not https://"],
    );
}

/// A joining replica finds `<data-dir>/pki/{peer.crt,peer.key,ca.crt}`:
/// with an https peer URL and no peer TLS flags, those are used, with
/// peer client cert auth on.
#[test]
fn pki_files_in_the_data_dir_are_the_peer_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(keel().args(["certs", "init-ca", "--out"]).arg(d.join("ca")));
    issue(
        d,
        Path::new("ca"),
        "peer",
        "solo",
        &["127.0.0.1"],
        &d.join("data/pki"),
    );
    issue(
        d,
        Path::new("ca"),
        "peer",
        "intruder",
        &["127.0.0.9"],
        &d.join("intruder"),
    );
    let peer = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let client = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let log = d.join("solo.log");
    let mut child = keel()
        .args(["server", "--name", "solo", "--disable-api", "--data-dir"])
        .arg(d.join("data"))
        .args(["--listen-peer-urls", &format!("https://{peer}")])
        .args(["--listen-client-urls", &format!("http://{client}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pki = d.join("data/pki");
    let ca = pki.join("ca.crt");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    util::wait_for(
        "the TLS peer port",
        20,
        || peer_session(&peer, &ca, &pki.join("peer.crt"), &pki.join("peer.key")).is_some(),
        read_log,
    );
    let i = d.join("intruder");
    let refused = peer_session(&peer, &ca, &i.join("peer.crt"), &i.join("peer.key")).is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(refused, "a non-member got in with the default files");
}
