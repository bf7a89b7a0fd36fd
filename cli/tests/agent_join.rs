//! `keel token` and `keel agent --join`: an agent with nothing but a join
//! token gets a node certificate through a CSR (auto-approved, signed by
//! the cluster CA), registers its Node and runs pods; bad tokens (wrong
//! secret, wrong CA fingerprint, expired, deleted) are refused with a
//! message and no Node; a short-lived certificate is rotated in place.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use util::kubectl::Kubectl;
use util::{kill_processes_under, wait_for, Cluster};

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .output()
        .expect("run keel")
}

fn token_create(kubeconfig: &Path, extra: &[&str]) -> String {
    let kc = kubeconfig.to_str().unwrap();
    let mut args = vec!["token", "create", "--kubeconfig", kc];
    args.extend_from_slice(extra);
    let o = keel(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// `keel agent --join` for node `name` with its root dir under `dir`.
fn agent(dir: &Path, server: &str, token: &str, name: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
    cmd.arg("agent")
        .args(["--join", server, "--token", token, "--node-name", name])
        .arg("--root-dir")
        .arg(dir.join(name))
        .args(["--listen-logs", "127.0.0.1:0"])
        .args(["--heartbeat-interval-ms", "500"])
        .args(["--join-timeout-s", "30"]);
    cmd
}

/// An agent that must refuse to join: its error output.
fn refused(dir: &Path, server: &str, token: &str, name: &str) -> String {
    let o = agent(dir, server, token, name).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "joined with a bad token:\n{err}");
    err
}

struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, server: &str, token: &str, name: &str) -> Agent {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = agent(dir, server, token, name)
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn node_names(k: &Kubectl) -> Vec<String> {
    let nodes = k.json(&["get", "nodes"]);
    nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn is_ready(n: &Value) -> bool {
    n["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn client_cert(kubeconfig: &Path) -> String {
    std::fs::read_to_string(kubeconfig)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-certificate-data: "))
        .unwrap_or("")
        .to_string()
}

#[test]
fn agents_join_with_tokens_and_rotate_their_certificates() {
    let c = Cluster::start(1, &["--cluster-signing-duration", "20s"]);
    let server = format!("https://{}", c.api_addr(0));
    let admin = c.replicas[0].data_dir.join("kubeconfig");
    let k = Kubectl::new(admin.clone());
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();

    let join = token_create(&admin, &["--kind", "agent", "--description", "test node"]);
    assert!(join.starts_with("K10"), "{join}");
    let (hash, token) = join.split_once("::").unwrap();
    let id = token.split('.').next().unwrap();
    let list = keel(&["token", "list", "--kubeconfig", admin.to_str().unwrap()]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        list.contains(id) && list.contains("agent") && list.contains("test node"),
        "{list}"
    );
    assert!(!list.contains(token), "list shows the secret:\n{list}");

    // Bad input is refused before anything is sent.
    let bad_ttl = keel(&[
        "token",
        "create",
        "--kubeconfig",
        admin.to_str().unwrap(),
        "--ttl",
        "soon",
    ]);
    assert!(String::from_utf8_lossy(&bad_ttl.stderr).contains("--ttl"));

    // Wrong secret, wrong CA, expired and deleted tokens: refused, named.
    let wrong_secret = format!("{hash}::{id}.0000000000000000");
    let e = refused(dir, &server, &wrong_secret, "bad-secret");
    assert!(e.contains("wrong secret"), "{e}");
    let wrong_ca = format!("K10{}::{token}", "0".repeat(64));
    let e = refused(dir, &server, &wrong_ca, "bad-ca");
    assert!(e.contains("fingerprint"), "{e}");
    let short = token_create(&admin, &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_secs(2));
    let e = refused(dir, &server, &short, "expired");
    assert!(e.contains("expired"), "{e}");
    let gone = token_create(&admin, &[]);
    let gone_id = gone.split("::").nth(1).unwrap().split('.').next().unwrap();
    let del = keel(&[
        "token",
        "delete",
        "--kubeconfig",
        admin.to_str().unwrap(),
        gone_id,
    ]);
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    let e = refused(dir, &server, &gone, "deleted");
    assert!(e.contains("does not exist"), "{e}");
    let names = node_names(&k);
    for bad in ["bad-secret", "bad-ca", "expired", "deleted"] {
        assert!(
            !names.iter().any(|n| n == bad),
            "node {bad} registered: {names:?}"
        );
    }

    // A user's CSR: refused when its subject breaks the signer's rules;
    // approved and issued, or denied, by an admin with kubectl.
    let user_csr = |name: &str, cn: &str, org: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        let yaml = format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\n\
             spec:\n  request: {b64}\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [client auth]\n"
        );
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        k.run(&["create", "-f", path.to_str().unwrap()])
    };
    let o = user_csr("root", "eve", "system:masters");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("system:masters"),
        "{o:?}"
    );
    assert!(user_csr("alice", "alice", "dev").status.success());
    assert!(user_csr("mallory", "mallory", "dev").status.success());
    k.ok(&["certificate", "approve", "alice"]);
    k.ok(&["certificate", "deny", "mallory"]);
    wait_for(
        "alice's certificate",
        30,
        || k.json(&["get", "csr", "alice"])["status"]["certificate"].is_string(),
        || util::tail(&c.log(0), 40),
    );
    let csrs = k.ok(&["get", "csr"]);
    assert!(
        csrs.lines()
            .any(|l| l.starts_with("alice ") && l.contains("Approved,Issued")),
        "{csrs}"
    );
    assert!(
        csrs.lines()
            .any(|l| l.starts_with("mallory ") && l.contains("Denied")),
        "{csrs}"
    );

    // A good token: the node registers, with its own certificate.
    let mut a = Agent::start(dir, &server, &join, "joined");
    wait_for(
        "node joined Ready",
        90,
        || {
            k.json(&["get", "nodes"])["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["metadata"]["name"] == "joined" && is_ready(n))
        },
        || format!("{}\n{}", a.log(), util::tail(&c.log(0), 40)),
    );
    let kubeconfig = dir.join("joined").join("kubeconfig");
    let first = client_cert(&kubeconfig);
    assert!(
        !first.is_empty(),
        "no node certificate in {}",
        kubeconfig.display()
    );
    let csrs = k.ok(&["get", "csr"]);
    let bootstrap = format!("system:bootstrap:{id}");
    assert!(
        csrs.lines().any(|l| l.contains(&bootstrap)
            && l.contains("Approved,Issued")
            && l.contains("kubernetes.io/kube-apiserver-client-kubelet")),
        "{csrs}"
    );

    // Pods run on it.
    k.ok(&[
        "run",
        "p",
        "--image",
        "keel/pause",
        "--restart",
        "Never",
        "--overrides",
        r#"{"spec":{"nodeName":"joined"}}"#,
    ]);
    wait_for(
        "pod p Running on the joined node",
        60,
        || k.json(&["get", "pod", "p"])["status"]["phase"] == "Running",
        || a.log(),
    );

    // Rotation: the 20 s certificate is renewed with the node's own
    // identity and swapped in, and the node stays Ready.
    wait_for(
        "the node certificate to rotate",
        40,
        || {
            let now = client_cert(&kubeconfig);
            !now.is_empty() && now != first
        },
        || a.log(),
    );
    let csrs = k.ok(&["get", "csr"]);
    assert!(
        csrs.lines()
            .any(|l| l.contains("system:node:joined") && l.contains("Approved,Issued")),
        "{csrs}"
    );
    assert!(
        a.log().contains("rotated the node's client certificate"),
        "{}",
        a.log()
    );
    let renewed_at = std::time::Instant::now();
    wait_for(
        "a heartbeat after the rotation",
        30,
        || {
            let lease = k.json(&["get", "lease", "-n", "kube-node-lease", "joined"]);
            let t = lease["spec"]["renewTime"]
                .as_str()
                .unwrap_or("")
                .to_string();
            renewed_at.elapsed() > Duration::from_secs(3) && !t.is_empty() && {
                std::thread::sleep(Duration::from_millis(1500));
                let again = k.json(&["get", "lease", "-n", "kube-node-lease", "joined"]);
                again["spec"]["renewTime"].as_str().unwrap_or("") != t
            }
        },
        || a.log(),
    );

    // A restart reuses the credentials: no second bootstrap CSR.
    a.stop();
    let mut b = Agent::start(dir, &server, &join, "joined");
    wait_for(
        "the restarted agent to start",
        30,
        || b.log().contains("using the node's existing credentials"),
        || b.log(),
    );
    let csrs = k.ok(&["get", "csr"]);
    assert_eq!(
        csrs.lines().filter(|l| l.contains(&bootstrap)).count(),
        1,
        "{csrs}"
    );
    b.stop();
    kill_processes_under(dir);
}
