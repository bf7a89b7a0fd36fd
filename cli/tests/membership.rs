//! Runtime membership with the real `etcdctl` (3.4) and `keel member`
//! against `keel server` processes on loopback: growing a cluster 1 → 3
//! with its data, learners and promotion, move-leader, removing the
//! leader, a removed member that refuses to come back, replacing a replica
//! whose data dir was lost, and etcd's errors for bad changes.
//!
//! `ETCDCTL_BIN` overrides the etcdctl on PATH.

mod util;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::free_port;
use util::member::{initial_cluster, Member as Node};

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs a command with a watchdog (etcdctl may hang on a dead endpoint).
fn run(mut cmd: Command) -> Out {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let id = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        unsafe {
            libc::kill(id as i32, libc::SIGKILL);
        }
    });
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn etcdctl(endpoints: &[&Node], args: &[&str]) -> Out {
    let eps = endpoints
        .iter()
        .map(|n| n.client.clone())
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new(std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".into()));
    cmd.env("ETCDCTL_API", "3")
        .args(["--endpoints", &eps, "--command-timeout=8s"])
        .args(args);
    run(cmd)
}

fn keel_member(endpoint: &Node, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
    cmd.args(["member", "--endpoints", &endpoint.client])
        .args(args);
    run(cmd)
}

/// Retries `f` until it returns Some, for up to `secs`.
fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `member list -w json` members as (id, name, is_learner, peer url).
fn members(via: &[&Node]) -> Vec<(u64, String, bool, String)> {
    let out = etcdctl(via, &["member", "list", "-w", "json"]);
    assert!(out.ok, "member list: {}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["ID"].as_u64().unwrap(),
                m["name"].as_str().unwrap_or("").to_string(),
                m["isLearner"].as_bool().unwrap_or(false),
                m["peerURLs"][0].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The leader's member id, as `endpoint status` reports it.
fn leader_id(via: &[&Node]) -> Option<u64> {
    let out = etcdctl(via, &["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    v.as_array()?
        .iter()
        .map(|s| s["Status"]["leader"].as_u64().unwrap_or(0))
        .find(|l| *l != 0)
}

fn member_id_of(via: &[&Node], name: &str) -> u64 {
    members(via)
        .into_iter()
        .find(|m| m.1 == name)
        .unwrap_or_else(|| panic!("no member {name}"))
        .0
}

/// A serializable (local) read of `key` on one replica.
fn local_get(n: &Node, key: &str) -> Option<String> {
    let out = etcdctl(&[n], &["get", key, "--consistency=s", "--print-value-only"]);
    let v = out.stdout.trim().to_string();
    (out.ok && !v.is_empty()).then_some(v)
}

fn put(via: &[&Node], key: &str, value: &str) {
    eventually(&format!("put {key}"), 20, || {
        etcdctl(via, &["put", key, value]).ok.then_some(())
    });
}

/// `etcdctl member add` prints the environment to start the member with.
fn env_line<'a>(out: &'a str, var: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{var}=")))
        .unwrap_or_else(|| panic!("no {var} in:\n{out}"))
        .trim_matches('"')
}

#[test]
fn grow_one_to_three_move_and_remove_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut r0 = Node::store_only(dir.path(), "r0");
    let mut r1 = Node::store_only(dir.path(), "r1");
    let mut r2 = Node::store_only(dir.path(), "r2");
    r0.start(&initial_cluster(&[&r0]), "new");
    for i in 0..20 {
        put(&[&r0], &format!("k{i:02}"), &format!("v{i}"));
    }

    // A voter, as etcd adds it: etcdctl prints the flags to start it with.
    let out = etcdctl(
        &[&r0],
        &["member", "add", "r1", "--peer-urls", &r1.peer_url()],
    );
    assert!(out.ok, "member add: {}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("added to cluster"), "{}", out.stdout);
    let ic = env_line(&out.stdout, "ETCD_INITIAL_CLUSTER").to_string();
    let sorted = |s: &str| {
        let mut v: Vec<String> = s.split(',').map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&ic), sorted(&initial_cluster(&[&r0, &r1])));
    assert_eq!(
        env_line(&out.stdout, "ETCD_INITIAL_CLUSTER_STATE"),
        "existing"
    );
    r1.start(&ic, "existing");
    // It catches up, gets its data, and is promoted to voter by itself.
    assert_eq!(
        eventually("r1 has the data", 20, || local_get(&r1, "k19")),
        "v19"
    );
    eventually("r1 a named voter", 20, || {
        members(&[&r0])
            .iter()
            .any(|m| m.1 == "r1" && !m.2)
            .then_some(())
    });

    // A learner: listed as one, promoted by hand once in sync.
    let out = etcdctl(
        &[&r1],
        &[
            "member",
            "add",
            "r2",
            "--learner",
            "--peer-urls",
            &r2.peer_url(),
        ],
    );
    assert!(out.ok, "member add --learner: {}", out.stderr);
    let ic = env_line(&out.stdout, "ETCD_INITIAL_CLUSTER").to_string();
    let listed = members(&[&r0]);
    let learner = listed.iter().find(|m| m.3 == r2.peer_url()).unwrap();
    assert!(learner.2, "r2 should be a learner: {listed:?}");
    assert_eq!(learner.1, "", "not started yet");
    r2.start(&ic, "existing");
    assert_eq!(
        eventually("r2 has the data", 20, || local_get(&r2, "k19")),
        "v19"
    );
    let r2_id = learner.0;
    eventually("promote r2", 20, || {
        let out = etcdctl(&[&r0], &["member", "promote", &format!("{r2_id:x}")]);
        out.ok.then_some(())
    });
    let listed = members(&[&r2]);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|m| !m.2), "all voters: {listed:?}");
    assert!(keel_member(&r2, &["list"]).stdout.contains("r2"));

    // move-leader hands leadership to r2.
    let all = [&r0, &r1, &r2];
    let out = etcdctl(&all, &["move-leader", &format!("{r2_id:x}")]);
    assert!(
        out.ok,
        "move-leader: {}{}\n{}\n{}",
        out.stdout,
        out.stderr,
        util::tail(&r0.log(), 30),
        util::tail(&r2.log(), 30)
    );
    assert_eq!(leader_id(&all), Some(r2_id));

    // The table names the leader.
    let table = keel_member(&r0, &["list"]);
    assert!(table.ok, "{}", table.stderr);
    let r2_row = table.stdout.lines().find(|l| l.contains(" r2 ")).unwrap();
    assert!(
        r2_row.contains("voter") && r2_row.trim_end().ends_with('*'),
        "{}",
        table.stdout
    );

    // Remove the leader (by name, with keel member): it stops, the other
    // two elect and keep the data.
    let out = keel_member(&r0, &["remove", "r2"]);
    assert!(out.ok, "remove leader: {}{}", out.stdout, out.stderr);
    let st = r2.wait_exit(20);
    assert!(!st.success());
    assert!(
        r2.log().contains("removed from the cluster"),
        "{}",
        r2.log()
    );
    put(&[&r0, &r1], "after-remove", "x");
    let listed = members(&[&r0]);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(leader_id(&[&r0, &r1]).is_some_and(|l| l != r2_id));

    // The removed member refuses to come back with its old identity.
    r2.start(&ic, "existing");
    let st = r2.wait_exit(20);
    assert!(!st.success());
    assert!(
        r2.log().contains("was removed from the cluster") && r2.log().contains("cannot rejoin"),
        "{}",
        util::tail(&r2.log(), 10)
    );
    assert_eq!(local_get(&r0, "after-remove").as_deref(), Some("x"));
}

/// Starts a 3-replica static cluster and waits until it takes writes.
fn three(dir: &Path) -> [Node; 3] {
    let mut ns = [
        Node::store_only(dir, "r0"),
        Node::store_only(dir, "r1"),
        Node::store_only(dir, "r2"),
    ];
    let ic = initial_cluster(&[&ns[0], &ns[1], &ns[2]]);
    for n in ns.iter_mut() {
        n.start(&ic, "new");
    }
    put(&[&ns[0], &ns[1], &ns[2]], "ready", "1");
    ns
}

fn expect_err(out: Out, msg: &str) {
    assert!(!out.ok, "should fail with {msg:?}: {}", out.stdout);
    assert!(
        out.stderr.contains(msg),
        "want {msg:?}, got: {}",
        out.stderr
    );
}

#[test]
fn bad_membership_changes_get_etcds_errors() {
    let dir = tempfile::tempdir().unwrap();
    let [r0, r1, mut r2] = three(dir.path());
    let all = [&r0, &r1, &r2];
    let before = members(&all);

    expect_err(
        etcdctl(&[&r0], &["member", "remove", "123456789abcdef"]),
        "etcdserver: member not found",
    );
    expect_err(
        etcdctl(
            &[&r1],
            &["member", "add", "dup", "--peer-urls", &r2.peer_url()],
        ),
        "etcdserver: Peer URLs already exists",
    );
    // etcdctl checks URLs itself; keel member passes them to the server.
    expect_err(
        keel_member(&r0, &["add", "bad", "--peer-url", "http://127.0.0.1"]),
        "etcdserver: given member URLs are invalid",
    );
    expect_err(
        etcdctl(
            &[&r0],
            &["member", "promote", &format!("{:x}", before[0].0)],
        ),
        "etcdserver: can only promote a learner member",
    );
    expect_err(
        etcdctl(&all, &["move-leader", "123456789abcdef"]),
        "etcdserver: bad leader transferee",
    );
    assert_eq!(members(&all), before, "nothing changed");

    // A learner that never started is not in sync: promoting it is refused.
    let lagging = format!("http://127.0.0.1:{}", free_port());
    let out = etcdctl(
        &[&r0],
        &["member", "add", "l1", "--learner", "--peer-urls", &lagging],
    );
    assert!(out.ok, "{}", out.stderr);
    let learner = members(&all)
        .into_iter()
        .find(|m| m.3 == lagging)
        .expect("learner listed");
    assert!(learner.2);
    expect_err(
        etcdctl(&[&r1], &["member", "promote", &format!("{:x}", learner.0)]),
        "etcdserver: can only promote a learner member which is in sync with leader",
    );
    // One learner at a time, as etcd.
    let other = format!("http://127.0.0.1:{}", free_port());
    expect_err(
        etcdctl(
            &[&r0],
            &["member", "add", "l2", "--learner", "--peer-urls", &other],
        ),
        "etcdserver: too many learner members in cluster",
    );
    let out = etcdctl(&[&r0], &["member", "remove", &format!("{:x}", learner.0)]);
    assert!(out.ok, "remove learner: {}", out.stderr);
    assert_eq!(members(&all), before);

    // With one of three down, a fourth voter would need 3 of 4: refused.
    r2.kill();
    put(&[&r0, &r1], "r2-down", "1");
    // The leader counts a voter as started while it answered within an
    // election timeout (500 ms here); give it three.
    std::thread::sleep(Duration::from_millis(1500));
    expect_err(
        etcdctl(&[&r0, &r1], &["member", "add", "r3", "--peer-urls", &other]),
        "etcdserver: re-configuration failed due to not enough started members",
    );
    // And removing a live voter would leave 1 started of 2: refused.
    let r1_id = member_id_of(&[&r0], "r1");
    expect_err(
        etcdctl(&[&r0], &["member", "remove", &format!("{r1_id:x}")]),
        "etcdserver: re-configuration failed due to not enough started members",
    );
    assert_eq!(members(&[&r0, &r1]).len(), 3);
    put(&[&r0, &r1], "still", "writable");
}

#[test]
fn a_replica_whose_data_dir_was_lost_rejoins_only_as_a_new_member() {
    let dir = tempfile::tempdir().unwrap();
    let [r0, r1, mut r2] = three(dir.path());
    for i in 0..10 {
        put(&[&r0, &r1], &format!("k{i}"), &format!("v{i}"));
    }
    let old_id = member_id_of(&[&r0], "r2");
    r2.kill();

    // The disk died: same flags, an empty data dir. Under its old id it
    // could vote twice in a term, so it is refused.
    let lost_dir = r2.data_dir.clone();
    r2.data_dir = dir.path().join("r2-new-disk");
    let ic = initial_cluster(&[&r0, &r1, &r2]);
    r2.start(&ic, "new");
    assert!(!r2.wait_exit(20).success());
    assert!(
        r2.log().contains("has already been bootstrapped"),
        "{}",
        util::tail(&r2.log(), 10)
    );

    // Replace it: remove the old member, add a new one on the same peer URL.
    let out = keel_member(&r0, &["remove", "r2"]);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    let out = keel_member(&r1, &["add", "r2", "--peer-url", &r2.peer_url()]);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("--initial-cluster-state existing"),
        "{}",
        out.stdout
    );
    r2.data_dir = dir.path().join("r2-replacement");
    r2.start(&ic, "existing");
    assert_eq!(
        eventually("r2 has the data", 20, || local_get(&r2, "k9")),
        "v9"
    );
    let new_id = eventually("r2 named voter", 20, || {
        members(&[&r0])
            .into_iter()
            .find(|m| m.1 == "r2" && !m.2)
            .map(|m| m.0)
    });
    assert_ne!(new_id, old_id, "ids are never reused");
    assert_eq!(members(&[&r0]).len(), 3);
    // The old data dir, never touched, still belongs to the removed member.
    assert!(lost_dir.join("store").exists());
    put(&[&r2], "via-new-r2", "ok");
}

fn sigterm(n: &mut Node) -> std::process::ExitStatus {
    let pid = n.child.as_ref().expect("running").id();
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    n.wait_exit(20)
}

#[test]
fn update_a_peer_url_and_hand_leadership_over_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let [mut r0, mut r1, mut r2] = three(dir.path());

    // member update: r2 moves to a new peer port.
    let r2_id = member_id_of(&[&r0], "r2");
    let old_peer = r2.peer.clone();
    // The flags it was bootstrapped with; they name the cluster.
    let ic = initial_cluster(&[&r0, &r1, &r2]);
    r2.peer = format!("127.0.0.1:{}", free_port());
    let out = etcdctl(
        &[&r0],
        &[
            "member",
            "update",
            &format!("{r2_id:x}"),
            "--peer-urls",
            &r2.peer_url(),
        ],
    );
    assert!(
        out.ok,
        "member update: {}{}\n{}\n{}",
        out.stdout,
        out.stderr,
        util::tail(&r0.log(), 30),
        util::tail(&r1.log(), 30)
    );
    let listed = members(&[&r1]);
    assert!(
        listed.iter().any(|m| m.0 == r2_id && m.3 == r2.peer_url()),
        "{listed:?}"
    );
    assert!(!listed.iter().any(|m| m.3.ends_with(&old_peer)));
    r2.kill();
    r2.start(&ic, "new");
    put(&[&r0, &r1], "after-update", "1");
    assert_eq!(
        eventually("r2 replicates on its new port", 20, || local_get(
            &r2,
            "after-update"
        )),
        "1"
    );

    // SIGTERM the leader: it hands leadership to another voter first.
    let nodes = [&mut r0, &mut r1, &mut r2];
    let leader = eventually("a leader", 20, || {
        leader_id(&[&*nodes[0], &*nodes[1], &*nodes[2]])
    });
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let li = names
        .iter()
        .position(|n| member_id_of(&[&*nodes[0], &*nodes[1], &*nodes[2]], n) == leader)
        .unwrap();
    assert!(sigterm(nodes[li]).success(), "clean exit");
    assert!(
        nodes[li].log().contains("handing leadership over"),
        "{}",
        util::tail(&nodes[li].log(), 20)
    );
    let rest: Vec<&Node> = (0..3).filter(|i| *i != li).map(|i| &*nodes[i]).collect();
    let new_leader = eventually("a new leader", 20, || leader_id(&rest));
    assert_ne!(new_leader, leader);
    put(&rest, "after-handoff", "1");
}

#[test]
fn a_member_removed_while_down_stops_when_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let [r0, r1, mut r2] = three(dir.path());
    let ic = initial_cluster(&[&r0, &r1, &r2]);
    r2.kill();
    put(&[&r0, &r1], "r2-down", "1");
    let out = keel_member(&r0, &["remove", "r2"]);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    // It still believes it is a voter; the leader tells it otherwise.
    r2.start(&ic, "new");
    assert!(!r2.wait_exit(20).success());
    assert!(
        r2.log().contains("removed from the cluster"),
        "{}",
        util::tail(&r2.log(), 10)
    );
    r2.start(&ic, "new");
    assert!(!r2.wait_exit(20).success());
    assert!(
        r2.log().contains("cannot rejoin"),
        "{}",
        util::tail(&r2.log(), 10)
    );
    assert_eq!(members(&[&r0, &r1]).len(), 2);
    put(&[&r0, &r1], "still", "writable");
}
