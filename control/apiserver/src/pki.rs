//! Cluster credentials: one CA and one admin token per cluster, created by
//! whichever replica starts first and kept in raft-store (as k3s keeps its
//! bootstrap data in its datastore), so every replica serves a certificate
//! from the same CA and accepts the same token. Each replica copies them
//! to `<data-dir>/pki/` and writes an admin kubeconfig to
//! `<data-dir>/kubeconfig`.
//!
//! Errors: a store without quorum fails the bootstrap (the server retries
//! until it has one); an unreadable bootstrap record is an error, never
//! silently replaced.

use std::path::Path;

use base64::Engine;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use crate::auth::authn::StaticToken;
use crate::private_file;
use crate::storage::Objects;

/// Where the bootstrap record lives (outside `/registry`, so no API
/// request can read it).
pub const BOOTSTRAP_KEY: &str = "/keel/bootstrap/v1";

/// The cluster's shared credentials.
#[derive(Clone, Serialize, Deserialize)]
pub struct Bootstrap {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub admin_token: String,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bootstrap { .. }") // never log keys or tokens
    }
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "keel-ca");
    dn.push(DnType::OrganizationName, "keel");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Bootstrap {
    pub fn generate() -> anyhow::Result<Bootstrap> {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        Ok(Bootstrap {
            ca_cert_pem: cert.pem(),
            ca_key_pem: key.serialize_pem(),
            admin_token: random_token(),
        })
    }

    /// The credentials a replica finds in `<data-dir>/pki/` before its
    /// store has any (`keel server --init` makes them first, so its peer
    /// certificate can be signed by the CA the cluster will keep). None
    /// when any of `ca.crt`, `ca.key`, `admin.token` is missing.
    pub fn read_seed(data_dir: &Path) -> anyhow::Result<Option<Bootstrap>> {
        let pki = data_dir.join("pki");
        let read = |f: &str| -> anyhow::Result<Option<String>> {
            match std::fs::read_to_string(pki.join(f)) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(anyhow::anyhow!("{}: {e}", pki.join(f).display())),
            }
        };
        let (Some(ca_cert_pem), Some(ca_key_pem), Some(admin_token)) =
            (read("ca.crt")?, read("ca.key")?, read("admin.token")?)
        else {
            return Ok(None);
        };
        Ok(Some(Bootstrap {
            ca_cert_pem,
            ca_key_pem,
            admin_token: admin_token.trim().to_string(),
        }))
    }

    /// Writes a fresh CA and admin token to `<data-dir>/pki/` (what
    /// [`Bootstrap::read_seed`] reads) and returns them.
    pub fn write_seed(data_dir: &Path) -> anyhow::Result<Bootstrap> {
        let b = Bootstrap::generate()?;
        let pki = data_dir.join("pki");
        std::fs::create_dir_all(&pki)?;
        private_file::write(&pki.join("ca.key"), b.ca_key_pem.as_bytes())?;
        private_file::write(&pki.join("ca.crt"), b.ca_cert_pem.as_bytes())?;
        private_file::write(&pki.join("admin.token"), b.admin_token.as_bytes())?;
        Ok(b)
    }

    /// The cluster's record, created by the first replica to get here:
    /// with `seed` if given (see [`Bootstrap::read_seed`]), else fresh. A
    /// record already in the store always wins over the seed.
    pub async fn load_or_create(
        objects: &Objects,
        seed: Option<&Bootstrap>,
    ) -> anyhow::Result<Bootstrap> {
        let fresh = match seed {
            Some(b) => serde_json::to_vec(b)?,
            None => serde_json::to_vec(&Bootstrap::generate()?)?,
        };
        let stored = objects
            .put_raw_if_absent(BOOTSTRAP_KEY, fresh)
            .await
            .map_err(|e| anyhow::anyhow!("bootstrap record: {}", e.message))?;
        serde_json::from_slice(&stored)
            .map_err(|e| anyhow::anyhow!("the bootstrap record in the store is unreadable: {e}"))
    }

    /// A serving certificate for this replica, signed by the cluster CA.
    /// `hosts` are DNS names or IP addresses clients use.
    pub fn server_cert(
        &self,
        hosts: &[String],
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name
            .push(DnType::CommonName, "keel-apiserver");
        for h in hosts {
            let san = match h.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(h.clone().try_into()?),
            };
            if !p.subject_alt_names.contains(&san) {
                p.subject_alt_names.push(san);
            }
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone()], key_der))
    }

    /// Writes `pki/ca.crt`, `pki/ca.key`, `pki/admin.token` and the admin
    /// `kubeconfig` for `server_url` into the data dir (owner-only modes).
    pub fn write_files(&self, data_dir: &Path, server_url: &str, tls: bool) -> anyhow::Result<()> {
        let pki = data_dir.join("pki");
        std::fs::create_dir_all(&pki)?;
        private_file::write(&pki.join("ca.crt"), self.ca_cert_pem.as_bytes())?;
        private_file::write(&pki.join("ca.key"), self.ca_key_pem.as_bytes())?;
        private_file::write(&pki.join("admin.token"), self.admin_token.as_bytes())?;
        let kc = self.kubeconfig(server_url, tls);
        private_file::write(&data_dir.join("kubeconfig"), kc.as_bytes())?;
        Ok(())
    }

    /// An admin kubeconfig. Over https it carries the CA and the token;
    /// over plain http (loopback development) kubectl sends no token, so
    /// it has none.
    pub fn kubeconfig(&self, server_url: &str, tls: bool) -> String {
        let cluster = if tls {
            let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_cert_pem);
            format!("    server: {server_url}\n    certificate-authority-data: {ca}\n")
        } else {
            format!("    server: {server_url}\n")
        };
        let user_block = if tls {
            format!("- name: admin\n  user:\n    token: {}\n", self.admin_token)
        } else {
            "- name: admin\n  user: {}\n".to_string()
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: keel\n  cluster:\n{cluster}\
             users:\n{user_block}contexts:\n- name: keel\n  context:\n    cluster: keel\n    user: admin\n\
             current-context: keel\npreferences: {{}}\n"
        )
    }
}

/// The serving certificate and key a replica got when it joined
/// (`<data-dir>/pki/server.crt` and `server.key`, written by `keel server
/// --join` from a CSR the cluster CA signed), so it serves the
/// certificate it was issued rather than one it makes itself.
///
/// `Ok(None)` when the files are absent (replicas that did not join make
/// their own certificate from the cluster CA), and when the certificate
/// does not name every host in `hosts` (unspecified addresses such as
/// 0.0.0.0 aside): a replica that joined with other addresses, or before
/// joins asked for the `kubernetes` Service's names, would otherwise fail
/// TLS for the clients dialling those; it makes its own then, and says so
/// in the log. Errors: unreadable files or bad PEM, naming the file.
#[allow(clippy::type_complexity)]
pub fn joined_server_cert(
    data_dir: &Path,
    hosts: &[String],
) -> anyhow::Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>> {
    use rustls::pki_types::pem::PemObject;
    let pki = data_dir.join("pki");
    let (cert_path, key_path) = (pki.join("server.crt"), pki.join("server.key"));
    if !cert_path.exists() || !key_path.exists() {
        return Ok(None);
    }
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{}: bad PEM certificate: {e}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| anyhow::anyhow!("{}: bad PEM private key: {e}", key_path.display()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow::anyhow!("{}: no certificate in it", cert_path.display()))?;
    let missing =
        missing_sans(leaf, hosts).map_err(|e| anyhow::anyhow!("{}: {e}", cert_path.display()))?;
    if !missing.is_empty() {
        tracing::warn!(
            cert = %cert_path.display(),
            ?missing,
            "the serving certificate from the join does not name these hosts; serving one made from the cluster CA instead"
        );
        return Ok(None);
    }
    Ok(Some((chain, key)))
}

/// The entries of `hosts` (DNS names or IPs) that `cert` has no SAN for;
/// unspecified addresses (0.0.0.0, ::) are never required.
fn missing_sans(cert: &CertificateDer<'_>, hosts: &[String]) -> anyhow::Result<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Some(ext) = parsed
        .subject_alternative_name()
        .map_err(|e| anyhow::anyhow!("bad subjectAltName: {e}"))?
    {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(std::net::IpAddr::from(<[u8; 4]>::try_from(*b)?)),
                    16 => ips.push(std::net::IpAddr::from(<[u8; 16]>::try_from(*b)?)),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(hosts
        .iter()
        .filter(|h| match h.parse::<std::net::IpAddr>() {
            Ok(ip) => !ip.is_unspecified() && !ips.contains(&ip),
            Err(_) => !dns.contains(&h.to_ascii_lowercase()),
        })
        .cloned()
        .collect())
}

/// Tokens accepted besides the admin token: Kubernetes' static token file
/// format, `token,user,uid[,"group1,group2"]` per line.
pub fn read_token_file(path: &Path) -> anyhow::Result<Vec<StaticToken>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--token-auth-file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let t = StaticToken::parse_line(line).map_err(|e| {
            anyhow::anyhow!("--token-auth-file {} line {}: {e}", path.display(), i + 1)
        })?;
        out.push(t);
    }
    Ok(out)
}

/// The DER bytes of the first PEM block in `pem`.
pub fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(body)?)
}

/// `keel kubeconfig`: a kubeconfig for `user` in `groups`, authenticated
/// by a client certificate valid for `validity` and signed by the cluster
/// CA found in `data_dir/pki` (so only someone holding the CA key, i.e. an
/// operator of a replica, can issue one). The server URL is `server`, or
/// the one in `data_dir/kubeconfig`.
pub fn issue_user_kubeconfig(
    data_dir: &Path,
    user: &str,
    groups: &[String],
    validity: std::time::Duration,
    server: Option<&str>,
) -> anyhow::Result<String> {
    let read = |name: &str| {
        let p = data_dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (is --data-dir the data dir of a keel server that has started?)",
                p.display()
            )
        })
    };
    let url = match server {
        Some(s) => s.to_string(),
        None => read("kubeconfig")?
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_string))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no server URL in {}/kubeconfig: pass --server",
                    data_dir.display()
                )
            })?,
    };
    if !url.starts_with("https://") {
        anyhow::bail!("client certificates need an https server URL, not {url}");
    }
    let ca = Bootstrap {
        ca_cert_pem: read("pki/ca.crt")?,
        ca_key_pem: read("pki/ca.key")?,
        admin_token: String::new(),
    };
    let (cert, key) = ca.client_cert(user, groups, validity)?;
    Ok(Bootstrap::user_kubeconfig(
        &url,
        &ca.ca_cert_pem,
        user,
        &cert,
        &key,
    ))
}

/// At most this many groups fit one client certificate: the certificate
/// library keeps one value per subject attribute type, and a second
/// Organization is written under its raw OID.
pub const MAX_CERT_GROUPS: usize = 2;

impl Bootstrap {
    /// A client certificate for `user` in `groups` (subject CN and O, as
    /// Kubernetes reads them), valid for `validity`, signed by the cluster
    /// CA. Returns (certificate PEM, private key PEM).
    pub fn client_cert(
        &self,
        user: &str,
        groups: &[String],
        validity: std::time::Duration,
    ) -> anyhow::Result<(String, String)> {
        if user.is_empty() {
            anyhow::bail!("the user name is empty");
        }
        if groups.len() > MAX_CERT_GROUPS {
            anyhow::bail!(
                "at most {MAX_CERT_GROUPS} groups fit one client certificate, got {}",
                groups.len()
            );
        }
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, user);
        if let Some(g) = groups.first() {
            p.distinguished_name
                .push(DnType::OrganizationName, g.as_str());
        }
        if let Some(g) = groups.get(1) {
            p.distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 10]), g.as_str());
        }
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + validity;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A kubeconfig for a client certificate user (over TLS only).
    pub fn user_kubeconfig(
        server_url: &str,
        ca_pem: &str,
        user: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: keel\n  cluster:\n    server: {server_url}\n    \
             certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    \
             client-key-data: {}\ncontexts:\n- name: {user}@keel\n  context:\n    cluster: keel\n    user: {user}\n\
             current-context: {user}@keel\npreferences: {{}}\n",
            b64(ca_pem),
            b64(cert_pem),
            b64(key_pem)
        )
    }
}

/// What a certificate signed from a CSR is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertUse {
    /// Raft peer traffic: both ends authenticate (server and client auth).
    Peer,
    /// The Kubernetes API's TLS serving certificate.
    Serving,
}

impl Bootstrap {
    /// Signs the certificate signing request `csr_pem` with the cluster CA:
    /// the CSR's signature is checked (the requester holds the key) and its
    /// subject alternative names are kept; the subject becomes
    /// `common_name`, the usages are those of `usage`, valid for
    /// `validity`. Returns the certificate PEM.
    ///
    /// Errors: a CSR that does not parse, has a bad signature or asks for
    /// extensions besides names and usages.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        common_name: &str,
        usage: CertUse,
        validity: std::time::Duration,
    ) -> anyhow::Result<String> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| anyhow::anyhow!("not a valid certificate signing request: {e}"))?;
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let p = &mut csr.params;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.custom_extensions.clear();
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = match usage {
            CertUse::Peer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            CertUse::Serving => vec![ExtendedKeyUsagePurpose::ServerAuth],
        };
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + validity;
        Ok(csr.signed_by(&issuer)?.pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_certs_chain_to_the_ca() {
        use rustls::client::danger::ServerCertVerifier;
        let b = Bootstrap::generate().unwrap();
        let (chain, _key) = b
            .server_cert(&["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        assert_eq!(chain.len(), 1);
        let mut roots = rustls::RootCertStore::empty();
        let ca = rustls::pki_types::CertificateDer::from(pem_der(&b.ca_cert_pem));
        roots.add(ca).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        verifier
            .verify_server_cert(
                &chain[0],
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .unwrap();
    }

    #[test]
    fn a_joined_certificate_is_served_only_when_it_names_every_host() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = |v: &[&str]| v.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        assert!(joined_server_cert(dir.path(), &hosts(&["localhost"]))
            .unwrap()
            .is_none());
        let b = Bootstrap::generate().unwrap();
        let (chain, key) = b
            .server_cert(&hosts(&["127.0.0.2", "kubernetes.default"]))
            .unwrap();
        let pki = dir.path().join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        let pem = |label: &str, der: &[u8]| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
        };
        std::fs::write(pki.join("server.crt"), pem("CERTIFICATE", &chain[0])).unwrap();
        std::fs::write(pki.join("server.key"), pem("PRIVATE KEY", key.secret_der())).unwrap();
        // Unspecified addresses are never required; names are
        // case-insensitive.
        let (got, _) = joined_server_cert(
            dir.path(),
            &hosts(&["127.0.0.2", "Kubernetes.Default", "0.0.0.0"]),
        )
        .unwrap()
        .expect("served from the files");
        assert_eq!(got, chain);
        assert!(
            joined_server_cert(dir.path(), &hosts(&["127.0.0.2", "127.0.0.3"]))
                .unwrap()
                .is_none(),
            "a missing SAN makes the replica use its own certificate"
        );
        std::fs::write(pki.join("server.key"), "not pem").unwrap();
        let err = joined_server_cert(dir.path(), &hosts(&["127.0.0.2"])).unwrap_err();
        assert!(err.to_string().contains("server.key"), "{err}");
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    #[test]
    fn kubeconfig_carries_token_only_over_tls() {
        let b = Bootstrap::generate().unwrap();
        let tls = b.kubeconfig("https://127.0.0.1:6443", true);
        assert!(tls.contains(&b.admin_token) && tls.contains("certificate-authority-data"));
        let plain = b.kubeconfig("http://127.0.0.1:6443", false);
        assert!(!plain.contains(&b.admin_token));
    }

    #[test]
    fn csr_signing_keeps_names_and_checks_the_request() {
        let b = Bootstrap::generate().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["node-a.example".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.9".parse().unwrap()));
        let csr = p.serialize_request(&key).unwrap().pem().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let pem = b.sign_csr(&csr, "s1", CertUse::Peer, day).unwrap();
        let der = pem_to_der(&pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "s1"
        );
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(sans.value.general_names.len(), 2);
        assert_eq!(
            cert.public_key().raw,
            rcgen::PublicKeyData::subject_public_key_info(&key)
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let ca_der = pem_to_der(&b.ca_cert_pem).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
        let mut tampered = csr.into_bytes();
        let i = tampered.len() / 2;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(b
            .sign_csr(&tampered, "s1", CertUse::Peer, day)
            .unwrap_err()
            .to_string()
            .contains("certificate signing request"));
    }

    #[test]
    fn token_file_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.csv");
        std::fs::write(&p, "abc,alice,1\n\nbroken\n").unwrap();
        let e = read_token_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
    }
}
