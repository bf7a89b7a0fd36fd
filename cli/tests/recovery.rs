//! Backup and disaster recovery with real processes: a 3-replica cluster
//! holding Kubernetes objects is backed up with `keel snapshot save`, loses
//! 2 of its 3 data dirs, and comes back (a) from the survivor with
//! `keel server --force-new-cluster` and (b) as a new 3-replica cluster
//! from `keel snapshot restore`. Both keep every object and the revision.
//! Bad snapshot files and non-empty target dirs are refused, changing
//! nothing.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::kubectl::Kubectl;
use util::Cluster;

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("keel runs")
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn failed(o: Output, what: &str) -> String {
    assert!(
        !o.status.success(),
        "{what} should have failed but printed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `etcdctl --endpoints ep args... -w json`, retried while the cluster
/// (re)elects.
fn etcdctl_json(ep: &str, args: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = Command::new("etcdctl")
            .args(["--endpoints", ep, "--command-timeout", "5s"])
            .args(args)
            .args(["-w", "json"])
            .env("ETCDCTL_API", "3")
            .output()
            .expect("etcdctl runs");
        if o.status.success() {
            return serde_json::from_slice(&o.stdout).expect("etcdctl -w json prints JSON");
        }
        assert!(
            Instant::now() < deadline,
            "etcdctl {args:?} via {ep}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A kubectl for replica `i`, once it serves (its kubeconfig names the
/// API address of this start).
fn kubectl(c: &Cluster, i: usize) -> Kubectl {
    c.api_addr(i);
    Kubectl::new(c.replicas[i].data_dir.join("kubeconfig"))
}

/// `(name, resourceVersion)` of the ConfigMaps in namespace `backup`,
/// retried until the API answers.
fn configmaps(k: &Kubectl) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = k.run(&["get", "configmaps", "-n", "backup", "-o", "json"]);
        if o.status.success() {
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            let mut out: Vec<(String, String)> = v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    (
                        i["metadata"]["name"].as_str().unwrap().to_string(),
                        i["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap()
                            .to_string(),
                    )
                })
                .filter(|(n, _)| n.starts_with("cm"))
                .collect();
            out.sort();
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl get configmaps: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn secret_value(k: &Kubectl) -> String {
    let v = k.json(&["get", "secret", "s1", "-n", "backup"]);
    v["data"]["p"].as_str().unwrap().to_string()
}

fn header_revision(v: &Value) -> i64 {
    v["header"]["revision"].as_i64().unwrap()
}

/// The Kubernetes objects the test backs up, and the store revision of one
/// of them, read through etcd's API.
struct Before {
    configmaps: Vec<(String, String)>,
    secret: String,
    cm1_mod_revision: i64,
    cluster_id: u64,
}

const CM1_KEY: &str = "/registry/configmaps/backup/cm1";

#[tokio::test(flavor = "multi_thread")]
async fn lose_two_of_three_then_force_new_cluster_and_restore() {
    let mut c = Cluster::start(3, &[]);
    c.wait_ready().await;
    let k = kubectl(&c, 0);
    k.ok(&["create", "namespace", "backup"]);
    for i in 1..=3 {
        k.ok(&[
            "create",
            "configmap",
            &format!("cm{i}"),
            "-n",
            "backup",
            &format!("--from-literal=n={i}"),
        ]);
    }
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "-n",
        "backup",
        "--from-literal=p=q",
    ]);
    let got = etcdctl_json(&c.endpoint(0), &["get", CM1_KEY]);
    let before = Before {
        configmaps: configmaps(&k),
        secret: secret_value(&k),
        cm1_mod_revision: got["kvs"][0]["mod_revision"].as_i64().unwrap(),
        cluster_id: got["header"]["cluster_id"].as_u64().unwrap(),
    };
    assert_eq!(before.configmaps.len(), 3);

    // Back up through any replica: a follower is listed first.
    let snap = c.dir().join("backup.snap");
    let snap_s = snap.to_str().unwrap();
    let leader = c.leader().await;
    let endpoints: Vec<String> = [(leader + 1) % 3, leader]
        .iter()
        .map(|i| c.replicas[*i].client_addr.clone())
        .collect();
    ok(
        keel(&[
            "snapshot",
            "save",
            snap_s,
            "--endpoints",
            &endpoints.join(","),
        ]),
        "snapshot save",
    );
    let status: Value = serde_json::from_str(&ok(
        keel(&["snapshot", "status", snap_s, "-w", "json"]),
        "snapshot status",
    ))
    .unwrap();
    let snap_revision = status["revision"].as_i64().unwrap();
    assert!(snap_revision >= before.cm1_mod_revision, "{status}");
    let table = ok(keel(&["snapshot", "status", snap_s]), "snapshot status");
    assert!(
        table.contains("REVISION") && table.contains(&snap_revision.to_string()),
        "{table}"
    );

    // Quorum lost for good: every replica stops, two data dirs are gone.
    for i in 0..3 {
        c.kill(i);
    }
    for i in 1..3 {
        let d = &c.replicas[i].data_dir;
        std::fs::rename(d, d.with_extension("lost")).unwrap();
    }

    // (a) The survivor alone, with --force-new-cluster. The kubeconfig is
    // rewritten with this start's API port.
    std::fs::remove_file(c.replicas[0].data_dir.join("kubeconfig")).unwrap();
    c.extra_args.push("--force-new-cluster".into());
    c.spawn(0);
    let k = kubectl(&c, 0);
    assert_eq!(configmaps(&k), before.configmaps, "{}", c.log(0));
    assert_eq!(secret_value(&k), before.secret);
    let got = etcdctl_json(&c.endpoint(0), &["get", CM1_KEY]);
    assert_eq!(
        got["kvs"][0]["mod_revision"].as_i64(),
        Some(before.cm1_mod_revision)
    );
    assert!(header_revision(&got) >= snap_revision);
    let members = etcdctl_json(&c.endpoint(0), &["member", "list"]);
    assert_eq!(members["members"].as_array().unwrap().len(), 1, "{members}");
    assert!(
        std::fs::read_dir(&c.replicas[0].data_dir)
            .unwrap()
            .flatten()
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with("store.before-force-new-cluster.")),
        "the old store is kept"
    );
    // It takes writes alone.
    k.ok(&["create", "configmap", "cm4", "-n", "backup"]);
    c.kill(0);

    // (b) A new 3-replica cluster restored from the file.
    let mut c2 = Cluster::prepare(3, &[]);
    for i in 0..3 {
        let r = &c2.replicas[i];
        ok(
            keel(&[
                "snapshot",
                "restore",
                snap_s,
                "--data-dir",
                r.data_dir.to_str().unwrap(),
                "--name",
                &r.name,
                "--initial-cluster",
                &c2.initial_cluster,
                "--initial-advertise-peer-urls",
                &format!("http://{}", r.peer_addr),
            ]),
            "snapshot restore",
        );
    }
    for i in 0..3 {
        c2.spawn(i);
    }
    c2.wait_ready().await;
    for i in 0..3 {
        let k = kubectl(&c2, i);
        assert_eq!(configmaps(&k), before.configmaps, "{}", c2.log(i));
        assert_eq!(secret_value(&k), before.secret);
    }
    let got = etcdctl_json(&c2.endpoint(2), &["get", CM1_KEY]);
    assert_eq!(
        got["kvs"][0]["mod_revision"].as_i64(),
        Some(before.cm1_mod_revision)
    );
    assert!(header_revision(&got) >= snap_revision);
    assert_ne!(
        got["header"]["cluster_id"].as_u64(),
        Some(before.cluster_id),
        "a restore makes a new cluster identity"
    );
    let members = etcdctl_json(&c2.endpoint(1), &["member", "list"]);
    assert_eq!(members["members"].as_array().unwrap().len(), 3, "{members}");

    // Restoring over a data dir in use is refused and changes nothing.
    let d0 = c2.replicas[0].data_dir.clone();
    let listing = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let files_before = listing(&d0);
    let err = failed(
        keel(&[
            "snapshot",
            "restore",
            snap_s,
            "--data-dir",
            d0.to_str().unwrap(),
            "--name",
            "r0",
            "--initial-cluster",
            &c2.initial_cluster,
        ]),
        "restore into a non-empty dir",
    );
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(listing(&d0), files_before);
}

/// A snapshot file of a one-replica store holding a few keys.
async fn small_snapshot(dir: &Path) -> PathBuf {
    let c = Cluster::start(1, &["--disable-api"]);
    c.wait_ready().await;
    for i in 0..5 {
        c.put_retry(0, &format!("k{i}"), "v").await;
    }
    let snap = dir.join("small.snap");
    ok(
        keel(&[
            "snapshot",
            "save",
            snap.to_str().unwrap(),
            "--endpoints",
            &c.replicas[0].client_addr,
        ]),
        "snapshot save",
    );
    snap
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_and_truncated_snapshots_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let snap = small_snapshot(dir.path()).await;
    let bytes = std::fs::read(&snap).unwrap();

    let mut flipped = bytes.clone();
    flipped[bytes.len() / 3] ^= 0x01;
    let corrupt = dir.path().join("corrupt.snap");
    std::fs::write(&corrupt, &flipped).unwrap();
    let truncated = dir.path().join("truncated.snap");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let no_trailer = dir.path().join("trailer.snap");
    let mut zeroed = bytes.clone();
    let n = zeroed.len();
    zeroed[n - 32..].fill(0);
    std::fs::write(&no_trailer, &zeroed).unwrap();

    for (file, want) in [
        (&corrupt, "hash mismatch"),
        (&truncated, "truncated"),
        (&no_trailer, "hash mismatch"),
    ] {
        let f = file.to_str().unwrap();
        let err = failed(keel(&["snapshot", "status", f]), "status of a bad file");
        assert!(err.contains(want), "{f}: {err}");
        let target = dir.path().join("restored");
        let err = failed(
            keel(&[
                "snapshot",
                "restore",
                f,
                "--data-dir",
                target.to_str().unwrap(),
                "--name",
                "a",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:1",
            ]),
            "restore of a bad file",
        );
        assert!(err.contains(want), "{f}: {err}");
        assert!(!target.exists(), "a refused restore creates nothing");
    }

    // The intact file restores, and refuses to overwrite a saved file.
    let target = dir.path().join("restored");
    ok(
        keel(&[
            "snapshot",
            "restore",
            snap.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
            "--name",
            "a",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:1",
        ]),
        "restore of the intact file",
    );
    assert!(target.join("store").exists());
    let err = failed(
        keel(&[
            "snapshot",
            "save",
            snap.to_str().unwrap(),
            "--endpoints",
            "127.0.0.1:1",
        ]),
        "save over an existing file",
    );
    assert!(err.contains("already exists"), "{err}");
}
