//! Peer RPC over mutual TLS on loopback: member certificates get through,
//! a foreign CA or a non-member name is refused on both sides, removal
//! from the membership revokes, and reloads change the served certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keel_net::tls::{tls_incoming, Members, Role};
use keel_net::{peer_server, PeerClient, PeerHandler, PeerMethod, TlsConfig, TlsFiles, Transport};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};

struct Echo;

#[tonic::async_trait]
impl PeerHandler for Echo {
    async fn handle(&self, _m: PeerMethod, data: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
        Ok(data)
    }
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca() -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// Writes `dir/{cert,key,ca}.pem` for a peer certificate with `sans`.
fn write_peer(dir: &Path, ca: &Ca, trusted: &Ca, sans: &[&str]) -> TlsFiles {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    for s in sans {
        p.subject_alt_names.push(match s.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(s.to_string().try_into().unwrap()),
        });
    }
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), &trusted.pem).unwrap();
    TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        trusted_ca: Some(dir.join("ca.pem")),
        flag_prefix: "peer-",
    }
}

fn members(list: &[(&str, &str)]) -> Arc<Members> {
    Arc::new(Members::fixed(
        list.iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect(),
    ))
}

fn peer_tls(files: TlsFiles, m: Arc<Members>) -> Arc<TlsConfig> {
    TlsConfig::load(
        files,
        Role::Peer {
            members: m,
            client_cert_auth: true,
        },
    )
    .unwrap()
}

async fn serve(tls: Arc<TlsConfig>) -> String {
    let l = Transport::Tcp
        .incoming("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(peer_server(Arc::new(Echo)))
            .serve_with_incoming(tls_incoming(l, tls)),
    );
    addr
}

async fn call(client: &PeerClient, addr: &str) -> Result<Vec<u8>, keel_net::PeerError> {
    client
        .call(
            addr,
            PeerMethod::Vote,
            b"hi".to_vec(),
            Duration::from_secs(2),
        )
        .await
}

#[tokio::test]
async fn members_connect_and_strangers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (good, other) = (ca(), ca());
    // Both replicas are members "a" and "b"; only "a" serves here.
    let m = members(&[("a", "127.0.0.1:1"), ("b", "node-b:2")]);
    let server = peer_tls(
        write_peer(&dir.path().join("a"), &good, &good, &["a"]),
        m.clone(),
    );
    let addr = serve(server).await;

    let b = peer_tls(
        write_peer(&dir.path().join("b"), &good, &good, &["b"]),
        m.clone(),
    );
    let ok = PeerClient::with_tls(Transport::Tcp, Some(b));
    assert_eq!(call(&ok, &addr).await.unwrap(), b"hi");

    // A certificate from another CA: the server refuses the handshake.
    let foreign = peer_tls(
        write_peer(&dir.path().join("f"), &other, &good, &["b"]),
        m.clone(),
    );
    let e = call(&PeerClient::with_tls(Transport::Tcp, Some(foreign)), &addr).await;
    assert!(e.is_err(), "foreign CA accepted");

    // Signed by the right CA but naming no member.
    let stranger = peer_tls(
        write_peer(&dir.path().join("s"), &good, &good, &["intruder"]),
        m.clone(),
    );
    let e = call(&PeerClient::with_tls(Transport::Tcp, Some(stranger)), &addr).await;
    assert!(e.is_err(), "non-member accepted");

    // The client side checks the server too: a dialler whose membership
    // does not contain "a" (nor 127.0.0.1) refuses the server.
    let picky = peer_tls(
        write_peer(&dir.path().join("p"), &good, &good, &["b"]),
        members(&[("b", "node-b:2")]),
    );
    let e = call(&PeerClient::with_tls(Transport::Tcp, Some(picky)), &addr).await;
    assert!(e.is_err(), "client accepted a non-member server");

    // Plaintext to a TLS port fails.
    assert!(call(&PeerClient::new(Transport::Tcp), &addr).await.is_err());

    // Removing "b" from the membership revokes its certificate for new
    // connections.
    m.set_source(Arc::new(|| vec![("a".into(), "127.0.0.1:1".into())]));
    let b2 = peer_tls(
        write_peer(&dir.path().join("b2"), &good, &good, &["b"]),
        members(&[("a", "127.0.0.1:1"), ("b", "node-b:2")]),
    );
    let e = call(&PeerClient::with_tls(Transport::Tcp, Some(b2)), &addr).await;
    assert!(e.is_err(), "removed member accepted");
}

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let good = ca();
    let m = members(&[("a", "127.0.0.1:1")]);
    let files = write_peer(&dir.path().join("a"), &good, &good, &["a"]);
    let server = peer_tls(files.clone(), m.clone());
    let addr = serve(server.clone()).await;
    let first = served_cert(&addr, &good).await;

    assert!(!server.reload_if_changed().unwrap(), "nothing changed yet");
    std::thread::sleep(Duration::from_millis(20));
    write_peer(&dir.path().join("a"), &good, &good, &["a"]);
    assert!(server.reload_if_changed().unwrap());
    let second = served_cert(&addr, &good).await;
    assert_ne!(first, second, "new handshakes must get the new certificate");

    // A broken replacement is refused and the previous one stays.
    std::fs::write(&files.key, "not a key").unwrap();
    let e = server.reload().unwrap_err().to_string();
    assert!(e.contains("--peer-key-file"), "{e}");
    assert_eq!(served_cert(&addr, &good).await, second);
}

#[test]
fn bad_files_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let good = ca();
    let files = write_peer(&dir.path().join("a"), &good, &good, &["a"]);
    let role = || Role::Peer {
        members: members(&[("a", "x:1")]),
        client_cert_auth: true,
    };
    let mut missing = files.clone();
    missing.cert = dir.path().join("nope.pem");
    let e = TlsConfig::load(missing, role()).unwrap_err().to_string();
    assert!(
        e.contains("--peer-cert-file") && e.contains("cannot read"),
        "{e}"
    );

    // A key that belongs to another certificate.
    let other = write_peer(&dir.path().join("b"), &good, &good, &["b"]);
    let mut mismatched = files.clone();
    mismatched.key = other.key.clone();
    let e = TlsConfig::load(mismatched, role()).unwrap_err().to_string();
    assert!(e.contains("does not match"), "{e}");

    let mut no_ca = files.clone();
    no_ca.trusted_ca = None;
    let e = TlsConfig::load(no_ca, role()).unwrap_err().to_string();
    assert!(e.contains("--peer-trusted-ca-file"), "{e}");
}

/// The DER certificate a TLS server at `addr` presents to a member.
async fn served_cert(addr: &str, ca: &Ca) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let f = write_peer(dir.path(), ca, ca, &["a"]);
    let tls = peer_tls(f, members(&[("a", "127.0.0.1:1")]));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("a").unwrap();
    let s = tokio_rustls::TlsConnector::from(tls.client_config().unwrap())
        .connect(name, tcp)
        .await
        .unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}
