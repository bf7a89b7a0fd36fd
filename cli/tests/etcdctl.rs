//! Drives the real `etcdctl` (v3 API, 3.4) against a 3-replica cluster
//! started from this test binary, and asserts what etcdctl prints.
//!
//! Every test starts its own cluster on random free 127.0.0.1 ports with
//! temporary data dirs; the [`Cluster`] fixture kills the replicas on drop
//! (and, if the test panicked, prints the tail of each replica's log).
//!
//! Environment:
//! - `KEEL_TEST_AGAINST_ETCD=1`: run the very same assertions against real
//!   etcd (`etcd` on PATH, or `ETCD_BIN`) instead of `keel server`; this is
//!   how the expectations below were validated.
//! - `ETCDCTL_BIN`: the etcdctl to drive (default: `etcdctl` on PATH).
//! - `KEEL_BIN`: run this keel binary instead of the one cargo built.
//! - `RUST_LOG`: passed through to the keel replicas.
//!
//! Every etcdctl call runs under a watchdog ([`CMD_TIMEOUT`]), so a hung
//! server fails the test instead of hanging CI.

mod util;

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Upper bound on any single etcdctl invocation.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound on a fresh cluster becoming healthy (leader elected).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on waiting for one watch event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// fixture
// ---------------------------------------------------------------------------

fn against_etcd() -> bool {
    matches!(std::env::var("KEEL_TEST_AGAINST_ETCD").as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

fn etcdctl_bin() -> String {
    std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".to_owned())
}

fn server_bin() -> String {
    if against_etcd() {
        std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned())
    } else {
        std::env::var("KEEL_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_keel").to_owned())
    }
}

/// `n` distinct ports on 127.0.0.1 reserved for this test process.
fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| util::ports::reserve("127.0.0.1")).collect()
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// A running cluster of keel (or etcd) replicas named n1..nN.
struct Cluster {
    members: Vec<Member>,
    // Dropped after the members are killed (field order), so logs survive
    // until the panic tail has been printed.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` replicas and waits until etcdctl reports every one healthy.
    fn start(n: usize) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("keel-etcdctl-")
            .tempdir()
            .expect("tempdir");
        let ports = free_ports(2 * n);
        let mut cluster = Cluster {
            members: (0..n)
                .map(|i| Member {
                    name: format!("n{}", i + 1),
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    log: dir.path().join(format!("n{}.log", i + 1)),
                    child: None,
                })
                .collect(),
            dir,
        };
        let initial_cluster = cluster
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let bin = server_bin();
        for i in 0..n {
            let m = &cluster.members[i];
            let data_dir = cluster.dir.path().join(&m.name);
            let mut cmd = Command::new(&bin);
            if against_etcd() {
                cmd.arg("--name")
                    .arg(&m.name)
                    .arg("--data-dir")
                    .arg(&data_dir)
                    .arg("--listen-client-urls")
                    .arg(m.client_url())
                    .arg("--advertise-client-urls")
                    .arg(m.client_url())
                    .arg("--listen-peer-urls")
                    .arg(m.peer_url())
                    .arg("--initial-advertise-peer-urls")
                    .arg(m.peer_url())
                    .arg("--initial-cluster")
                    .arg(&initial_cluster)
                    .arg("--initial-cluster-state")
                    .arg("new")
                    .arg("--initial-cluster-token")
                    .arg(format!("keel-test-{}", ports[0]));
            } else {
                cmd.arg("server")
                    .arg("--name")
                    .arg(&m.name)
                    .arg("--data-dir")
                    .arg(&data_dir)
                    .arg("--listen-client")
                    .arg(m.endpoint())
                    .arg("--listen-peer")
                    .arg(format!("127.0.0.1:{}", m.peer_port))
                    .arg("--disable-api");
                if n > 1 {
                    cmd.arg("--initial-cluster").arg(&initial_cluster);
                }
            }
            let log = File::create(&m.log).expect("create log file");
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log file"))
                .stderr(log);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
            cluster.members[i].child = Some(child);
        }
        cluster.wait_ready();
        cluster
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let all = self.all_endpoints();
        loop {
            for m in &mut self.members {
                if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    panic!("replica {} exited during startup: {status}", m.name);
                }
            }
            let out = run(
                self.etcdctl_cmd(&all, &["endpoint", "health"]),
                None,
                CMD_TIMEOUT,
            );
            if out.success {
                return;
            }
            if Instant::now() >= deadline {
                panic!("cluster not healthy within {READY_TIMEOUT:?}; last attempt:\n{out}");
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint()
    }

    fn all_endpoints(&self) -> String {
        self.members
            .iter()
            .map(Member::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn etcdctl_cmd(&self, endpoints: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(etcdctl_bin());
        // Don't let the developer's ETCDCTL_* environment leak into the test.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoints)
            .args(args);
        cmd
    }

    /// `etcdctl --endpoints <member i> args...`
    fn ctl(&self, i: usize, args: &[&str]) -> Out {
        run(self.etcdctl_cmd(&self.endpoint(i), args), None, CMD_TIMEOUT)
    }

    /// Like [`Cluster::ctl`], with `input` written to etcdctl's stdin.
    fn ctl_stdin(&self, i: usize, args: &[&str], input: &str) -> Out {
        run(
            self.etcdctl_cmd(&self.endpoint(i), args),
            Some(input),
            CMD_TIMEOUT,
        )
    }

    /// `etcdctl --endpoints <all members> args...`
    fn ctl_all(&self, args: &[&str]) -> Out {
        run(
            self.etcdctl_cmd(&self.all_endpoints(), args),
            None,
            CMD_TIMEOUT,
        )
    }

    /// `put k v -w json`, returning the revision of the put.
    fn put_rev(&self, i: usize, key: &str, value: &str) -> i64 {
        let v = json(&self.ctl(i, &["put", key, value, "-w", "json"]).ok());
        int(&v["header"]["revision"])
    }

    /// Spawns a long-running `etcdctl watch ...` against member i.
    fn watch(&self, i: usize, args: &[&str]) -> Watcher {
        let mut cmd = self.etcdctl_cmd(&self.endpoint(i), &[&["watch"], args].concat());
        let desc = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_buf = Arc::new(Mutex::new(String::new()));
        let sink = stderr_buf.clone();
        let mut stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Watcher {
            desc,
            child,
            lines: rx,
            stderr: stderr_buf,
            pending: Vec::new(),
            seen: Vec::new(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if thread::panicking() {
            for m in &self.members {
                let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!(
                    "----- {} (client {}, peer {}) log tail: {} -----\n{}",
                    m.name,
                    m.client_port,
                    m.peer_port,
                    m.log.display(),
                    tail.join("\n")
                );
            }
        }
    }
}

/// A finished etcdctl invocation.
struct Out {
    cmd: String,
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Asserts success; returns stdout.
    #[track_caller]
    fn ok(self) -> String {
        assert!(self.success, "etcdctl failed:\n{self}");
        self.stdout
    }
    /// Asserts failure; returns stdout + stderr.
    #[track_caller]
    fn err(self) -> String {
        assert!(!self.success, "etcdctl unexpectedly succeeded:\n{self}");
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command: {}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }
}

fn spawn_reader(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` to completion, killing it (and failing the test) after `timeout`.
fn run(mut cmd: Command, input: Option<&str>, timeout: Duration) -> Out {
    let desc = format!("{cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run {desc}: {e} (is etcdctl 3.4 installed? see ETCDCTL_BIN)")
    });
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_owned();
        thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    let out = spawn_reader(child.stdout.take().unwrap());
    let err = spawn_reader(child.stderr.take().unwrap());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let Some(status) = status else {
        panic!("timed out after {timeout:?}: {desc}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    };
    Out {
        cmd: desc,
        success: status.success(),
        code: status.code(),
        stdout,
        stderr,
    }
}

/// A running `etcdctl watch`; killed on drop.
struct Watcher {
    desc: String,
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    pending: Vec<String>,
    seen: Vec<String>,
}

/// One watch event as etcdctl prints it: type, key, value (empty for DELETE).
type Event = (String, String, String);

fn ev(kind: &str, key: &str, value: &str) -> Event {
    (kind.to_owned(), key.to_owned(), value.to_owned())
}

impl Watcher {
    fn line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // Process ended; give the stderr reader a moment to drain.
                thread::sleep(Duration::from_millis(100));
                None
            }
        }
    }

    /// The next event (etcdctl prints 3 lines per event), or None on timeout.
    fn event(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        while self.pending.len() < 3 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.line(left)?;
            self.pending.push(line);
        }
        let mut it = self.pending.drain(..);
        Some((it.next().unwrap(), it.next().unwrap(), it.next().unwrap()))
    }

    #[track_caller]
    fn expect_events(&mut self, expected: &[Event]) {
        for want in expected {
            match self.event(EVENT_TIMEOUT) {
                Some(got) => assert_eq!(&got, want, "unexpected watch event\n{}", self.diag()),
                None => panic!(
                    "no watch event within {EVENT_TIMEOUT:?}, wanted {want:?}\n{}",
                    self.diag()
                ),
            }
        }
    }

    fn diag(&mut self) -> String {
        let exited = self.child.try_wait().ok().flatten();
        format!(
            "watch command: {}\nexited: {:?}\nstdout lines so far: {:?}\nstderr: {}",
            self.desc,
            exited,
            self.seen,
            self.stderr.lock().unwrap()
        )
    }

    /// Makes sure the watch is established: puts `key` (which the watch must
    /// cover) until the watcher reports the latest put. Consumes those events.
    #[track_caller]
    fn sync(&mut self, c: &Cluster, via: usize, key: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        for n in 1.. {
            let value = format!("sync-{n}");
            assert_eq!(c.ctl(via, &["put", key, &value]).ok(), "OK\n");
            while let Some(got) = self.event(Duration::from_millis(500)) {
                assert!(
                    got.0 == "PUT" && got.1 == key && got.2.starts_with("sync-"),
                    "unexpected event {got:?} while syncing\n{}",
                    self.diag()
                );
                if got.2 == value {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().ok().flatten() {
                panic!(
                    "watch exited ({status}) before it was established\n{}",
                    self.diag()
                );
            }
            assert!(
                Instant::now() < deadline,
                "watch never reported puts of {key}\n{}",
                self.diag()
            );
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// small helpers
// ---------------------------------------------------------------------------

#[track_caller]
fn json(s: &str) -> Value {
    serde_json::from_str(s.trim())
        .unwrap_or_else(|e| panic!("etcdctl printed invalid JSON ({e}):\n{s}"))
}

/// A JSON integer (etcdctl prints int64/uint64 fields as numbers; absent = 0
/// because Go's encoding/json omits zero values tagged omitempty).
#[track_caller]
fn int(v: &Value) -> i64 {
    match v {
        Value::Null => 0,
        Value::Number(n) => n.as_i64().unwrap_or_else(|| panic!("not an i64: {n}")),
        other => panic!("expected a JSON number, got {other}"),
    }
}

#[track_caller]
fn uint(v: &Value) -> u64 {
    match v {
        Value::Null => 0,
        Value::Number(n) => n.as_u64().unwrap_or_else(|| panic!("not a u64: {n}")),
        other => panic!("expected a JSON number, got {other}"),
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

#[track_caller]
fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected output to contain {needle:?}, got:\n{haystack}"
    );
}

/// Parses `lease 694d7d8b5d3f6a0b granted with TTL(5s)` into the hex ID.
#[track_caller]
fn grant(c: &Cluster, i: usize, ttl: u32) -> String {
    let out = c.ctl(i, &["lease", "grant", &ttl.to_string()]).ok();
    let words: Vec<&str> = out.split_whitespace().collect();
    assert!(
        words.len() == 5
            && words[0] == "lease"
            && words[2] == "granted"
            && words[4] == format!("TTL({ttl}s)"),
        "unexpected lease grant output: {out:?}"
    );
    let id = words[1].to_owned();
    assert!(
        u64::from_str_radix(&id, 16).is_ok_and(|v| v > 0),
        "lease ID {id:?} is not nonzero hex"
    );
    id
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

#[test]
fn kv_put_get_del_and_bad_input() {
    let c = Cluster::start(3);

    let r1 = c.put_rev(0, "foo", "bar");
    assert!(
        r1 > 1,
        "first put must land above the initial revision 1, got {r1}"
    );
    let r2 = c.put_rev(0, "foo", "baz");
    assert_eq!(r2, r1 + 1);
    assert_eq!(c.ctl(0, &["put", "foo/a", "1"]).ok(), "OK\n");
    assert_eq!(c.ctl(0, &["put", "foo/b", "2"]).ok(), "OK\n");
    assert_eq!(c.ctl(0, &["put", "fop", "not-in-prefix"]).ok(), "OK\n");
    let head = r1 + 4;

    // Linearizable reads through other members see the writes immediately.
    assert_eq!(c.ctl(1, &["get", "foo"]).ok(), "foo\nbaz\n");
    assert_eq!(
        c.ctl(2, &["get", "--rev", &r1.to_string(), "foo"]).ok(),
        "foo\nbar\n"
    );
    assert_eq!(
        c.ctl(0, &["get", &format!("--rev={r2}"), "foo"]).ok(),
        "foo\nbaz\n"
    );
    assert_eq!(
        c.ctl(1, &["get", "foo", "--prefix"]).ok(),
        "foo\nbaz\nfoo/a\n1\nfoo/b\n2\n"
    );
    assert_eq!(c.ctl(1, &["get", "nothing-here"]).ok(), "");

    // JSON: header.revision, create/mod revision, version, base64 key/value.
    let v = json(&c.ctl(0, &["get", "foo", "-w", "json"]).ok());
    assert_eq!(int(&v["header"]["revision"]), head, "{v}");
    assert_eq!(int(&v["count"]), 1, "{v}");
    let kvs = v["kvs"].as_array().expect("kvs array");
    assert_eq!(kvs.len(), 1, "{v}");
    assert_eq!(kvs[0]["key"], b64("foo"));
    assert_eq!(kvs[0]["value"], b64("baz"));
    assert_eq!(int(&kvs[0]["create_revision"]), r1, "{v}");
    assert_eq!(int(&kvs[0]["mod_revision"]), r2, "{v}");
    assert_eq!(int(&kvs[0]["version"]), 2, "{v}");
    assert_eq!(int(&kvs[0]["lease"]), 0, "{v}");
    assert!(
        uint(&v["header"]["cluster_id"]) != 0,
        "header.cluster_id must be set: {v}"
    );
    assert!(
        uint(&v["header"]["member_id"]) != 0,
        "header.member_id must be set: {v}"
    );
    assert!(
        uint(&v["header"]["raft_term"]) != 0,
        "header.raft_term must be set: {v}"
    );

    // An old revision: the old value, but the header still carries the current revision.
    let v = json(
        &c.ctl(1, &["get", "foo", "--rev", &r1.to_string(), "-w", "json"])
            .ok(),
    );
    assert_eq!(int(&v["header"]["revision"]), head, "{v}");
    assert_eq!(v["kvs"][0]["value"], b64("bar"), "{v}");
    assert_eq!(int(&v["kvs"][0]["mod_revision"]), r1, "{v}");
    assert_eq!(int(&v["kvs"][0]["version"]), 1, "{v}");

    let v = json(&c.ctl(2, &["get", "foo", "--prefix", "-w", "json"]).ok());
    assert_eq!(int(&v["count"]), 3, "{v}");
    let keys: Vec<&str> = v["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [b64("foo"), b64("foo/a"), b64("foo/b")], "{v}");

    // del prints the number of deleted keys; deleting nothing doesn't bump the revision.
    assert_eq!(c.ctl(0, &["del", "foo/a"]).ok(), "1\n");
    assert_eq!(c.ctl(1, &["del", "foo", "--prefix"]).ok(), "2\n");
    assert_eq!(c.ctl(2, &["del", "foo"]).ok(), "0\n");
    assert_eq!(c.ctl(0, &["get", "foo", "--prefix"]).ok(), "");
    let v = json(&c.ctl(0, &["get", "foo", "-w", "json"]).ok());
    assert_eq!(int(&v["header"]["revision"]), head + 2, "{v}");
    assert_eq!(int(&v["count"]), 0, "{v}");
    assert!(v["kvs"].as_array().is_none_or(|a| a.is_empty()), "{v}");
    assert_eq!(c.ctl(0, &["get", "fop"]).ok(), "fop\nnot-in-prefix\n");

    // Bad input.
    assert_contains(&c.ctl(0, &["put", "", "v"]).err(), "key is not provided");
    assert_contains(
        &c.ctl(1, &["get", "--rev=999999", "fop"]).err(),
        "required revision is a future revision",
    );
}

#[test]
fn txn_interactive_success_and_failure() {
    let c = Cluster::start(3);
    assert_eq!(c.ctl(0, &["put", "k", "v"]).ok(), "OK\n");

    // Both compares hold: the success branch runs (a put and a get).
    let input = "mod(\"k\") > \"0\"\nvalue(\"k\") = \"v\"\n\nput r yes\nget k\n\nput r no\n\n";
    let out = c.ctl_stdin(1, &["txn", "-i"], input).ok();
    assert_contains(&out, "compares:");
    assert!(
        out.ends_with("SUCCESS\n\nOK\n\nk\nv\n"),
        "unexpected txn output:\n{out}"
    );
    assert!(!out.contains("FAILURE"), "{out}");
    assert_eq!(c.ctl(2, &["get", "r"]).ok(), "r\nyes\n");

    // A compare fails: the failure branch runs (a put and a delete).
    let input = "value(\"k\") = \"zz\"\nversion(\"k\") = \"1\"\n\nput r yes\n\nput r no\ndel k\n\n";
    let out = c.ctl_stdin(2, &["txn", "-i"], input).ok();
    assert!(
        out.ends_with("FAILURE\n\nOK\n\n1\n"),
        "unexpected txn output:\n{out}"
    );
    assert!(!out.contains("SUCCESS"), "{out}");
    assert_eq!(c.ctl(0, &["get", "r"]).ok(), "r\nno\n");
    assert_eq!(c.ctl(0, &["get", "k"]).ok(), "");

    // create-if-absent (non-interactive txn reads the same grammar from stdin).
    let input = "create(\"k\") = \"0\"\n\nput k created\n\nget k\n\n";
    let out = c.ctl_stdin(0, &["txn"], input).ok();
    assert_eq!(out, "SUCCESS\n\nOK\n");
    let out = c.ctl_stdin(0, &["txn"], input).ok();
    assert_eq!(out, "FAILURE\n\nk\ncreated\n");

    // Revision compares against the key's mod revision.
    let rev = int(&json(&c.ctl(1, &["get", "k", "-w", "json"]).ok())["kvs"][0]["mod_revision"]);
    let input = format!("mod(\"k\") = \"{rev}\"\n\ndel k\n\n\n");
    let out = c.ctl_stdin(1, &["txn", "-i"], &input).ok();
    assert!(
        out.ends_with("SUCCESS\n\n1\n"),
        "unexpected txn output:\n{out}"
    );
    assert_eq!(c.ctl(0, &["get", "k"]).ok(), "");
}

#[test]
fn watch_prefix_and_history() {
    let c = Cluster::start(3);

    // Live watch on member 3, writes through member 1.
    let mut w = c.watch(2, &["--prefix", "p/"]);
    w.sync(&c, 0, "p/0");
    assert_eq!(c.ctl(0, &["put", "p/a", "1"]).ok(), "OK\n");
    assert_eq!(c.ctl(1, &["put", "p/b", "hello world"]).ok(), "OK\n");
    assert_eq!(c.ctl(0, &["put", "q/x", "outside the prefix"]).ok(), "OK\n");
    assert_eq!(c.ctl(0, &["put", "p/a", "2"]).ok(), "OK\n");
    assert_eq!(c.ctl(2, &["del", "p/a"]).ok(), "1\n");
    assert_eq!(c.ctl(0, &["del", "--prefix", "p/"]).ok(), "2\n");
    assert_eq!(c.ctl(0, &["put", "q/y", "outside the prefix"]).ok(), "OK\n");
    assert_eq!(c.ctl(0, &["put", "p/end", "x"]).ok(), "OK\n");
    w.expect_events(&[
        ev("PUT", "p/a", "1"),
        ev("PUT", "p/b", "hello world"),
        ev("PUT", "p/a", "2"),
        ev("DELETE", "p/a", ""),
        // One range delete: its events arrive in key order.
        ev("DELETE", "p/0", ""),
        ev("DELETE", "p/b", ""),
        ev("PUT", "p/end", "x"),
    ]);
    drop(w);

    // History replay from a past revision, then live events.
    let r1 = c.put_rev(0, "h", "v1");
    assert_eq!(c.ctl(0, &["put", "h", "v2"]).ok(), "OK\n");
    assert_eq!(c.ctl(0, &["put", "hx", "other key"]).ok(), "OK\n");
    assert_eq!(c.ctl(0, &["del", "h"]).ok(), "1\n");
    assert_eq!(c.ctl(0, &["put", "h", "v3"]).ok(), "OK\n");
    let mut w = c.watch(1, &["--rev", &r1.to_string(), "h"]);
    w.expect_events(&[
        ev("PUT", "h", "v1"),
        ev("PUT", "h", "v2"),
        ev("DELETE", "h", ""),
        ev("PUT", "h", "v3"),
    ]);
    assert_eq!(c.ctl(2, &["put", "h", "v4"]).ok(), "OK\n");
    w.expect_events(&[ev("PUT", "h", "v4")]);
    drop(w);

    // The same replay as JSON: the first response starts at revision r1.
    let mut w = c.watch(2, &["--rev", &r1.to_string(), "h", "-w", "json"]);
    let line = w
        .line(EVENT_TIMEOUT)
        .unwrap_or_else(|| panic!("no JSON watch response\n{}", w.diag()));
    let v = json(&line);
    let first = &v["Events"][0];
    assert_eq!(first["kv"]["key"], b64("h"), "{v}");
    assert_eq!(first["kv"]["value"], b64("v1"), "{v}");
    assert_eq!(int(&first["kv"]["mod_revision"]), r1, "{v}");
    assert_eq!(int(&first["kv"]["create_revision"]), r1, "{v}");
    assert!(int(&v["Header"]["revision"]) >= r1 + 4, "{v}");
}

#[test]
fn leases() {
    let c = Cluster::start(3);

    let id = grant(&c, 0, 5);
    let id_dec = u64::from_str_radix(&id, 16).unwrap();
    assert_eq!(
        c.ctl(1, &["put", &format!("--lease={id}"), "lk", "lv"])
            .ok(),
        "OK\n"
    );
    let v = json(&c.ctl(2, &["get", "lk", "-w", "json"]).ok());
    assert_eq!(uint(&v["kvs"][0]["lease"]), id_dec, "{v}");

    assert_eq!(
        c.ctl(2, &["lease", "keep-alive", "--once", &id]).ok(),
        format!("lease {id} keepalived with TTL(5)\n")
    );

    let out = c.ctl(0, &["lease", "timetolive", &id, "--keys"]).ok();
    let prefix = format!("lease {id} granted with TTL(5s), remaining(");
    let rest = out
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("unexpected timetolive output: {out:?}"));
    let (remaining, rest) = rest
        .split_once("s)")
        .unwrap_or_else(|| panic!("unexpected timetolive output: {out:?}"));
    let remaining: i64 = remaining
        .parse()
        .unwrap_or_else(|_| panic!("unexpected timetolive output: {out:?}"));
    assert!(
        (1..=5).contains(&remaining),
        "remaining TTL {remaining} out of range: {out:?}"
    );
    assert_eq!(rest, ", attached keys([lk])\n");

    let v = json(
        &c.ctl(1, &["lease", "timetolive", &id, "--keys", "-w", "json"])
            .ok(),
    );
    assert_eq!(uint(&v["id"]), id_dec, "{v}");
    assert_eq!(int(&v["granted-ttl"]), 5, "{v}");
    assert!((1..=5).contains(&int(&v["ttl"])), "{v}");
    assert_eq!(v["keys"], serde_json::json!([b64("lk")]), "{v}");

    assert_eq!(
        c.ctl(1, &["lease", "revoke", &id]).ok(),
        format!("lease {id} revoked\n")
    );
    assert_eq!(c.ctl(0, &["get", "lk"]).ok(), "");
    assert_eq!(
        c.ctl(2, &["lease", "timetolive", &id]).ok(),
        format!("lease {id} already expired\n")
    );
    assert_contains(
        &c.ctl(0, &["lease", "keep-alive", "--once", &id]).err(),
        "requested lease not found",
    );
    assert_contains(
        &c.ctl(0, &["put", &format!("--lease={id}"), "lk", "lv"])
            .err(),
        "requested lease not found",
    );

    // A short lease with no keep-alive expires and takes its key with it.
    let short = grant(&c, 1, 2);
    let granted_at = Instant::now();
    assert_eq!(
        c.ctl(0, &["put", "--lease", &short, "sk", "sv"]).ok(),
        "OK\n"
    );
    assert_eq!(c.ctl(2, &["get", "sk"]).ok(), "sk\nsv\n");
    let deadline = granted_at + Duration::from_secs(10);
    loop {
        let out = c.ctl(2, &["get", "sk"]).ok();
        if out.is_empty() {
            break;
        }
        assert_eq!(out, "sk\nsv\n");
        assert!(
            Instant::now() < deadline,
            "key attached to a 2s lease still present after 10s"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        granted_at.elapsed() >= Duration::from_millis(1500),
        "2s lease expired after {:?}",
        granted_at.elapsed()
    );
    assert_eq!(
        c.ctl(0, &["lease", "timetolive", &short]).ok(),
        format!("lease {short} already expired\n")
    );
}

#[test]
fn compaction() {
    let c = Cluster::start(3);
    let r1 = c.put_rev(0, "c", "v1");
    let r2 = c.put_rev(1, "c", "v2");
    let r3 = c.put_rev(2, "c", "v3");
    assert_eq!((r2, r3), (r1 + 1, r1 + 2));
    assert_eq!(
        c.ctl(0, &["get", "--rev", &r1.to_string(), "c"]).ok(),
        "c\nv1\n"
    );

    assert_eq!(
        c.ctl(1, &["compaction", &r2.to_string()]).ok(),
        format!("compacted revision {r2}\n")
    );

    for i in 0..3 {
        let err = c.ctl(i, &["get", "--rev", &r1.to_string(), "c"]).err();
        assert_contains(&err, "required revision has been compacted");
    }
    // The compaction revision itself stays readable.
    assert_eq!(
        c.ctl(0, &["get", "--rev", &r2.to_string(), "c"]).ok(),
        "c\nv2\n"
    );
    assert_eq!(c.ctl(2, &["get", "c"]).ok(), "c\nv3\n");
    // Compacting again at or below the compacted revision is refused.
    assert_contains(
        &c.ctl(0, &["compaction", &r1.to_string()]).err(),
        "required revision has been compacted",
    );
    // A watch from a compacted revision is cancelled by the server.
    let out = run(
        c.etcdctl_cmd(&c.endpoint(2), &["watch", "--rev", &r1.to_string(), "c"]),
        None,
        CMD_TIMEOUT,
    );
    assert_contains(&out.err(), "required revision has been compacted");
}

#[test]
fn cluster_members_status_and_snapshot() {
    let c = Cluster::start(3);

    // member list: table and JSON.
    let out = c.ctl(0, &["member", "list"]).ok();
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split(", ").collect()).collect();
    assert_eq!(rows.len(), 3, "member list:\n{out}");
    for m in &c.members {
        let row = rows
            .iter()
            .find(|r| r.get(2) == Some(&m.name.as_str()))
            .unwrap_or_else(|| panic!("member {} missing from member list:\n{out}", m.name));
        assert_eq!(row.len(), 6, "member list row {row:?}");
        assert!(
            u64::from_str_radix(row[0], 16).is_ok_and(|id| id != 0),
            "member ID {:?}",
            row[0]
        );
        assert_eq!(row[1], "started", "{row:?}");
        assert_eq!(row[3], m.peer_url(), "{row:?}");
        assert_eq!(row[4], m.client_url(), "{row:?}");
        assert_eq!(row[5], "false", "{row:?}");
    }
    let v = json(&c.ctl(1, &["member", "list", "-w", "json"]).ok());
    let members = v["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members: {v}"));
    assert_eq!(members.len(), 3, "{v}");
    let mut ids = Vec::new();
    for m in &c.members {
        let j = members
            .iter()
            .find(|j| j["name"] == m.name.as_str())
            .unwrap_or_else(|| panic!("member {} missing: {v}", m.name));
        assert_eq!(j["peerURLs"], serde_json::json!([m.peer_url()]), "{v}");
        assert_eq!(j["clientURLs"], serde_json::json!([m.client_url()]), "{v}");
        let id = uint(&j["ID"]);
        assert!(
            id != 0 && rows.iter().any(|r| r[0] == format!("{id:x}")),
            "ID {id:x} not in table:\n{out}"
        );
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "member IDs must be distinct: {v}");
    assert_eq!(
        uint(&v["header"]["member_id"]),
        id_of(&v, "n2"),
        "header.member_id is the answering member: {v}"
    );

    let rev = c.put_rev(0, "status-probe", "x");

    // endpoint status (JSON): every member agrees on the leader and, once
    // applied, on the revision.
    let deadline = Instant::now() + Duration::from_secs(10);
    let statuses = loop {
        let v = json(&c.ctl_all(&["endpoint", "status", "-w", "json"]).ok());
        let arr = v
            .as_array()
            .unwrap_or_else(|| panic!("endpoint status JSON is not an array: {v}"))
            .clone();
        assert_eq!(arr.len(), 3, "{v}");
        if arr
            .iter()
            .all(|s| int(&s["Status"]["header"]["revision"]) == rev)
        {
            break arr;
        }
        assert!(
            Instant::now() < deadline,
            "members never all reported revision {rev}: {v}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    let leader = uint(&statuses[0]["Status"]["leader"]);
    assert!(
        ids.contains(&leader),
        "leader {leader:x} is not a member: {statuses:?}"
    );
    for (i, m) in c.members.iter().enumerate() {
        let s = &statuses[i];
        assert_eq!(s["Endpoint"], m.endpoint().as_str(), "{s}");
        let st = &s["Status"];
        assert_eq!(
            uint(&st["leader"]),
            leader,
            "members disagree on the leader: {statuses:?}"
        );
        assert_eq!(uint(&st["header"]["member_id"]), id_of(&v, &m.name), "{s}");
        assert!(st["version"].as_str().is_some_and(|s| !s.is_empty()), "{s}");
        assert!(uint(&st["raftTerm"]) >= 1, "{s}");
        assert!(uint(&st["raftIndex"]) >= 1, "{s}");
    }

    // endpoint status (table): one row per endpoint, exactly one leader.
    let out = c.ctl_all(&["endpoint", "status"]).ok();
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split(", ").collect()).collect();
    assert_eq!(rows.len(), 3, "endpoint status:\n{out}");
    for (i, row) in rows.iter().enumerate() {
        assert!(row.len() >= 9, "endpoint status row {row:?}");
        assert_eq!(row[0], c.endpoint(i), "{row:?}");
        assert_eq!(
            row[1],
            format!("{:x}", id_of(&v, &c.members[i].name)),
            "{row:?}"
        );
        assert_eq!(
            row[4] == "true",
            u64::from_str_radix(row[1], 16).unwrap() == leader,
            "{row:?}\n{out}"
        );
    }
    assert_eq!(
        rows.iter().filter(|r| r[4] == "true").count(),
        1,
        "exactly one leader:\n{out}"
    );

    // snapshot save: etcdctl 3.4 requires (size % 512) == 32, i.e. a sha256
    // trailer after a 512-byte-aligned body; `snapshot restore` checks the digest.
    let path = c.dir.path().join("snap.db");
    let path_s = path.to_str().unwrap();
    let out = c.ctl(0, &["snapshot", "save", path_s]).ok();
    assert_contains(&out, &format!("Snapshot saved at {path_s}"));
    check_snapshot_file(&path);
}

fn id_of(member_list: &Value, name: &str) -> u64 {
    let m = member_list["members"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no member {name} in {member_list}"));
    uint(&m["ID"])
}

#[track_caller]
fn check_snapshot_file(path: &Path) {
    let data =
        std::fs::read(path).unwrap_or_else(|e| panic!("snapshot file {}: {e}", path.display()));
    assert!(
        data.len() > 32,
        "snapshot file is only {} bytes",
        data.len()
    );
    assert_eq!(
        data.len() % 512,
        32,
        "snapshot is {} bytes: not a 512-aligned body plus sha256 trailer",
        data.len()
    );
    let (body, trailer) = data.split_at(data.len() - 32);
    assert_eq!(
        Sha256::digest(body).as_slice(),
        trailer,
        "snapshot sha256 trailer does not match its body"
    );
}
