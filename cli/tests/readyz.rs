//! `/readyz`, `/metrics` (API port) and `/health` (etcd client port) of
//! real `keel server` processes on loopback as membership and quorum
//! change: a healthy 3-replica cluster, a SIGKILLed leader, a learner
//! before and after promotion, a removed member, and a survivor without
//! quorum until the others come back.
//!
//! The API is served over plain HTTP on loopback (`--insecure-http`), so a
//! bare HTTP/1.1 request reads every endpoint.

mod util;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use util::member::{initial_cluster, Member as Node};

/// What this test reads from a member: `/readyz`, `/metrics` (API port)
/// and `/health` (etcd client port).
impl Node {
    fn api_addr(&self) -> &str {
        self.api.as_deref().expect("members here serve the API")
    }

    /// `/readyz?verbose` on the API port: (status, body), None when the
    /// request failed.
    fn readyz(&self) -> Option<(u16, String)> {
        http_get(self.api_addr(), "/readyz?verbose")
    }

    /// The value of an unlabelled sample in the API port's `/metrics`.
    fn metric(&self, name: &str) -> Option<f64> {
        let (code, body) = http_get(self.api_addr(), "/metrics")?;
        if code != 200 {
            return None;
        }
        body.lines().find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// `GET /health` on the etcd client port.
    fn health(&self) -> Option<(u16, String)> {
        http_get(&self.client, "/health")
    }
}

/// A plain HTTP/1.1 GET: (status, body), None when the connection or the
/// answer failed (a stopped or not yet serving replica).
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let sa = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Polls `f` every 200 ms until it returns Some, for up to `secs`; the
/// failure names `what` and the last value seen by `last`.
fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `n`'s `/readyz` answers `code` with a body containing
/// every needle; the last answer on timeout.
fn wait_readyz(n: &Node, code: u16, needles: &[&str], secs: u64) -> String {
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = n.readyz();
        if let Some((c, body)) = &r {
            if *c == code && needles.iter().all(|x| body.contains(x)) {
                return body.clone();
            }
        }
        last = r.or(last);
        assert!(
            Instant::now() < deadline,
            "{}: /readyz never answered {code} with {needles:?}; last: {last:?}\n{}",
            n.name,
            util::tail(&n.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `keel member ...` against `n`'s client port; (ok, stdout+stderr).
fn keel_member(n: &Node, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["member", "--endpoints", &n.client])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Index of the replica whose `/metrics` says it leads.
fn leader_of(nodes: &[&Node]) -> usize {
    eventually("a leader in /metrics", 30, || {
        nodes
            .iter()
            .position(|n| n.metric("etcd_server_is_leader") == Some(1.0))
    })
}

#[test]
fn readyz_metrics_and_health_follow_membership_and_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let mut ns = [
        Node::with_api(dir.path(), "r0"),
        Node::with_api(dir.path(), "r1"),
        Node::with_api(dir.path(), "r2"),
    ];
    let ic = initial_cluster(&[&ns[0], &ns[1], &ns[2]]);
    for n in ns.iter_mut() {
        n.start(&ic, "new");
    }

    // Healthy: every replica is ready, with every check listed.
    for n in &ns {
        let body = wait_readyz(n, 200, &["readyz check passed"], 60);
        for check in [
            "[+]ping ok",
            "[+]etcd-member ok",
            "[+]etcd-leader ok",
            "[+]etcd ok",
        ] {
            assert!(body.contains(check), "{}: {body}", n.name);
        }
        let (code, body) = n.health().expect("/health answers");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["health"], "true", "{body}");
        assert_eq!(v["reason"], "", "{body}");
    }
    let (code, body) = http_get(&ns[0].client, "/version").expect("/version answers");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["etcdserver"].as_str().is_some_and(|s| s.starts_with('3')),
        "{body}"
    );

    // SIGKILL the leader: the survivors see a leader change and a new
    // leader; the killed replica comes back ready.
    let li = leader_of(&[&ns[0], &ns[1], &ns[2]]);
    let survivors: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    let seen_before: Vec<f64> = survivors
        .iter()
        .map(|&i| {
            ns[i]
                .metric("etcd_server_leader_changes_seen_total")
                .expect("leader changes metric")
        })
        .collect();
    ns[li].kill();
    for (k, &i) in survivors.iter().enumerate() {
        let n = &ns[i];
        eventually(&format!("{}: a new leader in /metrics", n.name), 30, || {
            let changes = n.metric("etcd_server_leader_changes_seen_total")?;
            (changes > seen_before[k] && n.metric("etcd_server_has_leader")? == 1.0).then_some(())
        });
        wait_readyz(n, 200, &["[+]etcd-leader ok"], 30);
    }
    ns[li].start(&ic, "new");
    wait_readyz(&ns[li], 200, &["readyz check passed"], 60);

    // A learner is not ready until promoted.
    let mut r3 = Node::with_api(dir.path(), "r3");
    let (ok, out) = keel_member(
        &ns[0],
        &["add", "r3", "--learner", "--peer-url", &r3.peer_url()],
    );
    assert!(ok, "member add --learner: {out}");
    let ic4 = initial_cluster(&[&ns[0], &ns[1], &ns[2], &r3]);
    r3.start(&ic4, "existing");
    wait_readyz(&r3, 503, &["[-]etcd-member failed", "learner"], 60);
    eventually("r3: etcd_server_is_learner 1", 30, || {
        (r3.metric("etcd_server_is_learner")? == 1.0).then_some(())
    });
    eventually("promote r3", 30, || {
        keel_member(&ns[1], &["promote", "r3"]).0.then_some(())
    });
    wait_readyz(&r3, 200, &["[+]etcd-member ok", "readyz check passed"], 30);
    assert_eq!(r3.metric("etcd_server_is_learner"), Some(0.0));

    // A removed member stops (keel's behaviour, as etcd's): it leaves
    // nothing behind that could answer ready.
    let (ok, out) = keel_member(&ns[0], &["remove", "r3"]);
    assert!(ok, "member remove: {out}");
    eventually("r3 exits once removed", 30, || {
        r3.child.as_mut().unwrap().try_wait().unwrap()
    });
    assert!(
        r3.log().contains("removed from the cluster"),
        "{}",
        r3.log()
    );
    assert_eq!(r3.readyz(), None, "a removed member serves nothing");

    // Two of three gone: the survivor has no leader and says so.
    ns[1].kill();
    ns[2].kill();
    let body = wait_readyz(&ns[0], 503, &["[-]etcd-leader failed", "quorum"], 30);
    assert!(body.contains("[+]etcd-member ok"), "{body}");
    eventually("r0: etcd_server_has_leader 0", 30, || {
        (ns[0].metric("etcd_server_has_leader")? == 0.0).then_some(())
    });
    let (code, body) = ns[0].health().expect("/health answers without quorum");
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["health"], "false", "{body}");
    assert_eq!(v["reason"], "RAFT NO LEADER", "{body}");

    // They come back: ready again everywhere.
    ns[1].start(&ic, "new");
    ns[2].start(&ic, "new");
    for n in &ns {
        wait_readyz(n, 200, &["readyz check passed"], 60);
    }
    let (code, _) = ns[0].health().unwrap();
    assert_eq!(code, 200);
}
