//! `keel server --init` and `keel server --join URL --token T` on loopback:
//! one replica made from nothing grows to three voters through its join
//! token, writes through one replica read through the others, the cluster
//! keeps quorum with one replica killed, and the token survives a restart.
//! Wrong tokens (secret, CA fingerprint, group) are refused and nothing
//! joins.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use keel_proto::etcdserverpb::{
    cluster_client::ClusterClient, kv_client::KvClient, Member, MemberListRequest, PutRequest,
    RangeRequest,
};
use util::kubectl::Kubectl;
use util::{free_port, tail, wait_for};

/// One `keel server` process started by a test.
struct Server {
    name: String,
    client: String,
    peer: String,
    api: String,
    data_dir: PathBuf,
    log: PathBuf,
    out: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn new(dir: &Path, name: &str) -> Server {
        Server {
            name: name.into(),
            client: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            api: format!("127.0.0.1:{}", free_port()),
            data_dir: dir.join(name),
            log: dir.join(format!("{name}.log")),
            out: dir.join(format!("{name}.out")),
            child: None,
        }
    }

    /// A replica whose peer URL is `https://` (mutual TLS between peers).
    fn new_tls(dir: &Path, name: &str) -> Server {
        let mut s = Server::new(dir, name);
        s.peer = format!("https://{}", s.peer);
        s
    }

    fn api_url(&self) -> String {
        format!("https://{}", self.api)
    }

    fn start(&mut self, args: &[&str]) {
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["server", "--name", &self.name, "--disable-controllers"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client", &self.client, "--listen-peer", &self.peer])
            .args(["--listen-api", &self.api])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(args)
            .env_remove("KEEL_TOKEN")
            .stdout(open(&self.out))
            .stderr(open(&self.log))
            .spawn()
            .expect("start keel server");
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kubectl(&self) -> Kubectl {
        let kc = self.data_dir.join("kubeconfig");
        wait_for(
            &format!("{}'s kubeconfig", self.name),
            60,
            || kc.exists(),
            || tail(&self.log(), 40),
        );
        Kubectl::new(kc)
    }

    /// The token `--init` wrote (waits for it).
    fn token(&self) -> String {
        let p = self.data_dir.join("token");
        wait_for(
            &format!("{}'s join token", self.name),
            60,
            || std::fs::read_to_string(&p).is_ok_and(|t| t.starts_with("K10")),
            || tail(&self.log(), 40),
        );
        std::fs::read_to_string(&p).unwrap().trim().to_string()
    }

    /// Waits for the process to exit on its own; whether it succeeded.
    fn wait_exit(&mut self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let c = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                self.child = None;
                return st.success();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {secs}s:\n{}",
                self.name,
                tail(&self.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn members(s: &Server) -> Option<Vec<Member>> {
    let ch = util::channel(&format!("http://{}", s.client)).await;
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        ClusterClient::new(ch).member_list(MemberListRequest { linearizable: true }),
    )
    .await;
    match r {
        Ok(Ok(r)) => Some(r.into_inner().members),
        _ => None,
    }
}

/// Waits until `s` lists exactly `names`, all started voters.
async fn wait_voters(s: &Server, names: &[&str], logs: &[&Server]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ms = members(s).await.unwrap_or_default();
        let mut got: Vec<&str> = ms
            .iter()
            .filter(|m| !m.is_learner && !m.client_ur_ls.is_empty())
            .map(|m| m.name.as_str())
            .collect();
        got.sort();
        if got == names && ms.len() == names.len() {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = logs
                .iter()
                .map(|l| format!("--- {}:\n{}", l.name, tail(&l.log(), 30)))
                .collect();
            panic!(
                "members {ms:?}, wanted voters {names:?}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn configmap(k: &Kubectl, name: &str) -> Option<String> {
    let o = k.run(&[
        "get",
        "configmap",
        name,
        "-o",
        "jsonpath={.data.v}",
        "--request-timeout=5s",
    ]);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_then_two_joins_make_three_voters_that_keep_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let mut s0 = Server::new(dir.path(), "s0");
    let mut s1 = Server::new(dir.path(), "s1");
    let mut s2 = Server::new(dir.path(), "s2");
    s0.start(&["--init"]);
    let token = s0.token();
    assert_eq!(mode(&s0.data_dir.join("token")), 0o600);
    assert!(
        std::fs::read_to_string(&s0.out).unwrap().contains(&token),
        "--init prints the token"
    );
    let k0 = s0.kubectl();
    k0.ok(&["create", "configmap", "before", "--from-literal=v=1"]);

    // s1 joins through s0; s2 through s1 (any replica serves joins), at
    // once: s2 waits until s1 has caught up and votes.
    s1.start(&["--join", &s0.api_url(), "--token", &token]);
    let k1 = s1.kubectl();
    s2.start(&["--join", &s1.api_url(), "--token", &token]);
    let k2 = s2.kubectl();
    wait_voters(&s0, &["s0", "s1", "s2"], &[&s0, &s1, &s2]).await;
    for s in [&s1, &s2] {
        wait_for(
            &format!("{} votes", s.name),
            30,
            || s.log().contains("this replica is a voter"),
            || tail(&s.log(), 30),
        );
        let pki = s.data_dir.join("pki");
        for f in ["peer.crt", "server.crt"] {
            let pem = std::fs::read_to_string(pki.join(f)).unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{f}");
        }
        for f in ["peer.key", "server.key"] {
            assert_eq!(mode(&pki.join(f)), 0o600, "{f}");
        }
        assert_eq!(
            std::fs::read(pki.join("ca.crt")).unwrap(),
            std::fs::read(s0.data_dir.join("pki/ca.crt")).unwrap(),
            "one cluster CA"
        );
        // The API serves the certificate issued at the join (which names
        // the `kubernetes` Service too, else the replica would make its own).
        assert_eq!(
            served_cert(&s.api, &pki.join("ca.crt")).await,
            pem_der(&pki.join("server.crt")),
            "{} serves its joined server.crt",
            s.name
        );
    }

    // A write through one replica reads through the others.
    k1.ok(&["create", "configmap", "via-s1", "--from-literal=v=2"]);
    let seen = |k: &Kubectl, name: &str, v: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while configmap(k, name).as_deref() != Some(v) {
            assert!(Instant::now() < deadline, "configmap {name} never read {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    seen(&k2, "before", "1");
    seen(&k2, "via-s1", "2");
    seen(&k0, "via-s1", "2");
    let mut kv2 = KvClient::new(util::channel(&format!("http://{}", s2.client)).await);
    kv2.put(PutRequest {
        key: b"/plain/key".to_vec(),
        value: b"through-s2".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut kv1 = KvClient::new(util::channel(&format!("http://{}", s1.client)).await);
    let got = kv1
        .range(RangeRequest {
            key: b"/plain/key".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kvs[0].value, b"through-s2");

    // The first replica dies: the two joined ones are a quorum.
    s0.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = k1.run(&[
            "create",
            "configmap",
            "after-kill",
            "--from-literal=v=3",
            "--request-timeout=5s",
        ]);
        if o.status.success() || String::from_utf8_lossy(&o.stderr).contains("AlreadyExists") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write after s0 died: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            tail(&s1.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    seen(&k2, "after-kill", "3");
    seen(&k2, "before", "1");

    // Restarted, --init keeps the token it handed out.
    s0.start(&["--init"]);
    wait_for(
        "s0's second token announcement",
        60,
        || s0.log().matches("server join token ready").count() >= 2,
        || tail(&s0.log(), 30),
    );
    assert_eq!(s0.token(), token, "a restart reuses the join token");
    seen(&k0, "after-kill", "3");
}

/// The DER of the first certificate in the PEM file `path`.
fn pem_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_vec()
}

/// The leaf certificate (DER) the API at `addr` serves, after verifying it
/// against the CA in `ca` for the name 127.0.0.1.
async fn served_cert(addr: &str, ca: &Path) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem_der(ca).into()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS to {addr}: {e}"));
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A token like `token` with another secret.
fn with_secret(token: &str, secret: &str) -> String {
    let (head, _) = token.rsplit_once('.').unwrap();
    format!("{head}.{secret}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_refused_and_nothing_joins() {
    let dir = tempfile::tempdir().unwrap();
    let mut s0 = Server::new(dir.path(), "s0");
    s0.start(&["--init"]);
    let token = s0.token();
    let k0 = s0.kubectl();
    let hash = token
        .strip_prefix("K10")
        .unwrap()
        .split_once("::")
        .unwrap()
        .0
        .to_string();

    // A token in the agents' group authenticates but may not join servers.
    k0.ok(&[
        "create",
        "secret",
        "generic",
        "bootstrap-token-agent1",
        "-n",
        "kube-system",
        "--type=bootstrap.kubernetes.io/token",
        "--from-literal=token-id=agent1",
        "--from-literal=token-secret=0123456789abcdef",
        "--from-literal=usage-bootstrap-authentication=true",
        "--from-literal=auth-extra-groups=system:bootstrappers:keel:agents",
    ]);
    let cases = [
        (
            "wrong-secret",
            with_secret(&token, "0000000000000000"),
            "401",
        ),
        (
            "wrong-ca",
            format!(
                "K10{}::{}",
                "0".repeat(64),
                token.split_once("::").unwrap().1
            ),
            "CA fingerprint mismatch",
        ),
        (
            "agent-token",
            format!("K10{hash}::agent1.0123456789abcdef"),
            "403",
        ),
    ];
    for (name, bad, expect) in cases {
        let mut s = Server::new(dir.path(), name);
        s.start(&["--join", &s0.api_url(), "--token", &bad]);
        assert!(!s.wait_exit(30), "{name} must not start");
        let log = s.log();
        assert!(log.contains(expect), "{name}: wanted {expect:?} in:\n{log}");
        assert!(
            !s.data_dir.join("store").exists(),
            "{name}: a refused join writes no store"
        );
    }
    let ms = members(&s0).await.unwrap();
    assert_eq!(ms.len(), 1, "nothing joined: {ms:?}");

    // A data dir of another cluster is refused even with a good URL.
    let mut other = Server::new(dir.path(), "other");
    other.start(&["--init"]);
    other.token();
    other.kill();
    other.start(&["--join", &s0.api_url(), "--token", &token]);
    assert!(!other.wait_exit(30));
    assert!(
        other.log().contains("belongs to another cluster"),
        "{}",
        other.log()
    );
    assert_eq!(members(&s0).await.unwrap().len(), 1);
}

/// `--init` with an `https://` peer URL makes the cluster CA before its
/// store starts and signs its own peer certificate with it; a replica that
/// joins with an `https://` peer URL gets one from the same CA, and the two
/// speak mutual TLS (each checks the other names a member).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_and_join_with_https_peer_urls_use_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut s0 = Server::new_tls(dir.path(), "s0");
    let mut s1 = Server::new_tls(dir.path(), "s1");
    s0.start(&["--init"]);
    let token = s0.token();
    let k0 = s0.kubectl();
    let pki0 = s0.data_dir.join("pki");
    assert!(
        pki0.join("peer.crt").exists(),
        "--init issued its peer certificate"
    );
    assert_eq!(mode(&pki0.join("peer.key")), 0o600);
    s1.start(&["--join", &s0.api_url(), "--token", &token]);
    let k1 = s1.kubectl();
    wait_voters(&s0, &["s0", "s1"], &[&s0, &s1]).await;
    assert_eq!(
        std::fs::read(s1.data_dir.join("pki/ca.crt")).unwrap(),
        std::fs::read(pki0.join("ca.crt")).unwrap(),
        "the CA --init made before its store is the cluster's"
    );
    let ms = members(&s0).await.unwrap();
    for m in &ms {
        assert!(
            m.peer_ur_ls.iter().all(|u| u.starts_with("https://")),
            "peer URLs are https: {ms:?}"
        );
    }
    k1.ok(&["create", "configmap", "over-tls", "--from-literal=v=1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while configmap(&k0, "over-tls").as_deref() != Some("1") {
        assert!(
            Instant::now() < deadline,
            "a write through s1 never reached s0:\n{}",
            tail(&s0.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
