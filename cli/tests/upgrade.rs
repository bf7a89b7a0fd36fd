//! The upgrade path to node identities: a data dir from before them
//! (nothing but `pki/` with the CA and the admin token, no `agents/`, no
//! node certificates) starts a server whose admin token is a member of
//! `system:masters`; an agent that still runs with that admin kubeconfig,
//! as agents did then, keeps working, and the server warns once per node
//! telling how to re-join it; following that advice (`keel token create`,
//! `keel agent --join` on the same root dir) gives the node its own
//! identity without a second warning.

mod util;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use util::kubectl::Kubectl;
use util::{wait_for, Cluster};

/// The first words of the server's warning (see
/// `keel_apiserver::nodeservice::admin_credential_warning`).
const WARNING: &str = r#"agent of node "old-1" uses an administrator credential"#;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `keel agent` for node `old-1` on `root` with `auth` arguments, its
/// stderr appended to `log`.
fn agent(root: &Path, auth: &[&str], log: &Path) -> Agent {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("agent")
        .args(auth)
        .args(["--node-name", "old-1", "--runtime", "exec"])
        .arg("--root-dir")
        .arg(root)
        .args(["--listen-logs", "127.0.0.1:0"])
        .args(["--heartbeat-interval-ms", "500"])
        .args(["--join-timeout-s", "30", "--disable-ingress"])
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .unwrap();
    Agent(child)
}

fn ready(k: &Kubectl) -> bool {
    let o = k.run(&["get", "node", "old-1", "-o", "json"]);
    let n: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    n["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn registrations(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("node registered")
        .count()
}

#[test]
fn a_pre_identity_cluster_keeps_working_and_its_agents_are_told_to_rejoin() {
    let mut c = Cluster::prepare(1, &[]);
    // The old layout: the CA and the admin token, nothing else.
    let old = keel_apiserver::pki::Bootstrap::write_seed(&c.replicas[0].data_dir).unwrap();
    c.spawn(0);
    let server = format!("https://{}", c.api_addr(0));
    let admin_kc = c.replicas[0].data_dir.join("kubeconfig");
    let kc_text = std::fs::read_to_string(&admin_kc).unwrap();
    assert!(
        kc_text.contains(&format!("token: {}", old.admin_token)),
        "the admin kubeconfig does not carry the old admin token"
    );
    let k = Kubectl::new(admin_kc.clone());
    wait_for(
        "the API",
        60,
        || k.run(&["get", "ns", "default"]).status.success(),
        || c.log(0),
    );
    // The old admin token is a member of system:masters.
    let who = k.json(&["auth", "whoami"]);
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:masters"), "{who}");
    assert_eq!(
        k.ok(&["auth", "can-i", "*", "*", "--all-namespaces"])
            .trim(),
        "yes"
    );

    // An agent holding the admin kubeconfig, as agents did before.
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("old-1");
    let log = work.path().join("agent.log");
    let kc = admin_kc.to_str().unwrap();
    let mut a = agent(&root, &["--kubeconfig", kc], &log);
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(
        "node old-1 Ready (admin credential)",
        60,
        || ready(&k),
        agent_log,
    );
    wait_for(
        "the re-join warning",
        30,
        || c.log(0).contains(WARNING),
        || c.log(0),
    );
    let server_log = c.log(0);
    let line = server_log.lines().find(|l| l.contains(WARNING)).unwrap();
    for advice in [
        "keel token create",
        "keel agent --join",
        "--node-name old-1",
    ] {
        assert!(line.contains(advice), "{line:?} lacks {advice:?}");
    }
    // A restarted agent registers again; the warning is not repeated.
    drop(a);
    let before = registrations(&log);
    a = agent(&root, &["--kubeconfig", kc], &log);
    wait_for(
        "the agent to register again",
        60,
        || registrations(&log) > before,
        agent_log,
    );
    assert_eq!(c.log(0).matches(WARNING).count(), 1, "{}", c.log(0));

    // Re-join as the warning says, on the same root dir.
    drop(a);
    let o = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["token", "create", "--kind", "agent", "--kubeconfig", kc])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let token = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let registered = registrations(&log);
    let _a = agent(&root, &["--join", &server, "--token", &token], &log);
    wait_for(
        "the re-joined agent to register",
        60,
        || registrations(&log) > registered,
        agent_log,
    );
    wait_for(
        "node old-1 Ready (node identity)",
        60,
        || ready(&k),
        agent_log,
    );
    let node_kc = std::fs::read_to_string(root.join("kubeconfig")).unwrap();
    assert!(node_kc.contains("client-certificate-data"), "{node_kc}");
    assert!(!node_kc.contains(&old.admin_token));
    assert_eq!(c.log(0).matches(WARNING).count(), 1, "{}", c.log(0));
}
