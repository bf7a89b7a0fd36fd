//! `keel server --join URL --token T`: a new replica becomes a member of a
//! running cluster.
//!
//! 1. Fetch the cluster CA from `URL/cacerts` without trusting the
//!    connection, and accept it only if its SHA-256 is the join token's
//!    fingerprint: a wrong token, or another cluster, stops here, before
//!    the token's secret is sent anywhere.
//! 2. `POST URL/keel/v1/members` over TLS verified by that CA, with the
//!    bootstrap token: the cluster adds this replica as a learner (promoted
//!    to voter once caught up) and signs the peer and API serving
//!    certificates requested by CSRs. Keys are made here and never leave.
//! 3. Write `<data-dir>/pki/{ca.crt,peer.crt,peer.key,server.crt,server.key}`
//!    and start the store as `--initial-cluster-state existing` with the
//!    member list the cluster returned.
//!
//! A data dir that already holds a store has joined before: nothing is
//! asked of the cluster, but its CA must still be the token's (a data dir of
//! another cluster is refused).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use keel_apiserver::auth::bootstrap_token::{ca_hash, JoinToken};
use keel_apiserver::server_join::{JoinRequest, JoinResponse, PATH};
use keel_node::agent::join::fetch_ca;
use rcgen::{CertificateParams, KeyPair, SanType};
use tokio::time::Instant;

/// How long a join keeps retrying while the cluster cannot take a member
/// yet (another replica still catching up, an election).
const RETRY_FOR: Duration = Duration::from_secs(120);
/// The longest one request of the join may take.
const TRY_FOR: Duration = Duration::from_secs(15);

/// Where a joined replica's certificates are. The peer files are the ones
/// etcd's `--peer-cert-file`, `--peer-key-file` and
/// `--peer-trusted-ca-file` name, for the peer transport's mutual TLS;
/// the serving files are the API's `--tls-cert-file`/`--tls-private-key-file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedPki {
    pub trusted_ca_file: PathBuf,
    pub peer_cert_file: PathBuf,
    pub peer_key_file: PathBuf,
    pub serving_cert_file: PathBuf,
    pub serving_key_file: PathBuf,
}

impl JoinedPki {
    pub fn in_data_dir(data_dir: &Path) -> JoinedPki {
        let pki = data_dir.join("pki");
        JoinedPki {
            trusted_ca_file: pki.join("ca.crt"),
            peer_cert_file: pki.join("peer.crt"),
            peer_key_file: pki.join("peer.key"),
            serving_cert_file: pki.join("server.crt"),
            serving_key_file: pki.join("server.key"),
        }
    }
}

/// What a join gives the store to start with.
#[derive(Debug)]
pub struct Joined {
    /// `--initial-cluster`: every member, this one included. Empty when
    /// the data dir had joined before (its store knows the members).
    pub initial_cluster: Vec<(String, String)>,
    /// The cluster id the cluster reported (hex); `None` on a restart.
    pub cluster_id: Option<u64>,
    pub pki: JoinedPki,
}

/// This replica, as the join needs it.
pub struct Joiner<'a> {
    pub url: &'a str,
    pub token: &'a JoinToken,
    pub name: &'a str,
    pub data_dir: &'a Path,
    /// `host:port` others reach this replica's raft port at.
    pub peer_addr: &'a str,
    /// Names and addresses clients reach this replica's API at.
    pub api_hosts: Vec<String>,
}

/// Whether `data_dir` already holds a store (a restart, not a join).
pub fn has_store(data_dir: &Path) -> bool {
    data_dir.join("store").join("CURRENT").exists()
}

impl Joiner<'_> {
    pub async fn join(&self) -> anyhow::Result<Joined> {
        let pki = JoinedPki::in_data_dir(self.data_dir);
        if has_store(self.data_dir) {
            self.check_existing_ca(&pki)?;
            tracing::info!(data_dir = %self.data_dir.display(), "the data dir has joined before; starting from it");
            return Ok(Joined {
                initial_cluster: vec![],
                cluster_id: None,
                pki,
            });
        }
        let ca_pem = self.fetch_trusted_ca().await?;
        let peer_key = KeyPair::generate()?;
        let serving_key = KeyPair::generate()?;
        let host = self
            .peer_addr
            .rsplit_once(':')
            .map_or(self.peer_addr, |(h, _)| h)
            .trim_matches(|c| c == '[' || c == ']');
        let req = JoinRequest {
            name: self.name.to_string(),
            peer_url: format!("http://{}", self.peer_addr),
            peer_csr: csr(&peer_key, &[host.to_string()])?,
            serving_csr: csr(&serving_key, &self.api_hosts)?,
        };
        let resp = self.post_join(&ca_pem, &req).await?;
        if resp.ca_cert.trim() != ca_pem.trim() {
            bail!(
                "{} answered the join with a different CA than it serves at /cacerts",
                self.url
            );
        }
        std::fs::create_dir_all(self.data_dir.join("pki"))
            .with_context(|| format!("creating {}/pki", self.data_dir.display()))?;
        keel_apiserver::private_file::write(&pki.trusted_ca_file, ca_pem.as_bytes())?;
        keel_apiserver::private_file::write(&pki.peer_cert_file, resp.peer_cert.as_bytes())?;
        keel_apiserver::private_file::write(
            &pki.peer_key_file,
            peer_key.serialize_pem().as_bytes(),
        )?;
        keel_apiserver::private_file::write(&pki.serving_cert_file, resp.serving_cert.as_bytes())?;
        keel_apiserver::private_file::write(
            &pki.serving_key_file,
            serving_key.serialize_pem().as_bytes(),
        )?;
        let initial_cluster = resp
            .members
            .iter()
            .map(|m| (m.name.clone(), crate::server::strip_scheme(&m.peer_url)))
            .collect();
        let cluster_id = u64::from_str_radix(&resp.cluster_id, 16)
            .with_context(|| format!("bad cluster id {:?} in the join answer", resp.cluster_id))?;
        tracing::info!(
            member_id = %resp.member_id,
            cluster_id = %resp.cluster_id,
            members = resp.members.len(),
            "added to the cluster as a learner; catching up"
        );
        Ok(Joined {
            initial_cluster,
            cluster_id: Some(cluster_id),
            pki,
        })
    }

    /// A data dir from an earlier join must hold the token's CA.
    fn check_existing_ca(&self, pki: &JoinedPki) -> anyhow::Result<()> {
        let Ok(pem) = std::fs::read_to_string(&pki.trusted_ca_file) else {
            return Ok(()); // stopped before its API first served: nothing to compare
        };
        let have = ca_hash(&keel_apiserver::pki::pem_to_der(&pem)?);
        if have != self.token.ca_hash {
            bail!(
                "data dir {} belongs to another cluster: its CA has SHA-256 {have}, the join token's \
                 fingerprint is {}; use an empty --data-dir to join this cluster",
                self.data_dir.display(),
                self.token.ca_hash
            );
        }
        Ok(())
    }

    /// The CA `URL/cacerts` serves, if it is the one the token names.
    async fn fetch_trusted_ca(&self) -> anyhow::Result<String> {
        // Not trusted yet: the fingerprint below decides. The fetch trusts
        // whatever certificate the server shows and needs no system roots
        // (a kube client would load the platform's, which a minimal host or
        // container image does not have: the join then failed there).
        let uri: http::Uri = self.url.parse().with_context(|| {
            format!(
                "--join {:?} is not a URL such as https://host:6443",
                self.url
            )
        })?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            bail!(
                "--join {:?} is not a URL such as https://host:6443",
                self.url
            );
        }
        tracing::info!(url = %self.url, "fetching the cluster CA");
        // A replica still starting accepts connections before it answers
        // (and the TLS handshake has no timeout of its own): bound each try.
        let deadline = Instant::now() + RETRY_FOR;
        let pem = loop {
            let err = match tokio::time::timeout(TRY_FOR, fetch_ca(self.url)).await {
                Ok(Ok(pem)) => break pem,
                Ok(Err(e)) => e,
                Err(_) => anyhow::anyhow!("no answer within {TRY_FOR:?}"),
            };
            if Instant::now() >= deadline {
                return Err(
                    err.context(format!("fetching the cluster CA from {}/cacerts", self.url))
                );
            }
            tracing::info!(
                error = format!("{err:#}"),
                "the cluster CA is not served yet; retrying"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let der = keel_apiserver::pki::pem_to_der(&pem)
            .with_context(|| format!("{}/cacerts did not answer a PEM certificate", self.url))?;
        if !self.token.trusts(&der) {
            bail!(
                "CA fingerprint mismatch: the join token expects a cluster CA with SHA-256 {}, but {} \
                 serves one with SHA-256 {}; refusing to join (a token of another cluster, or not the \
                 server you meant)",
                self.token.ca_hash,
                self.url,
                ca_hash(&der)
            );
        }
        Ok(pem)
    }

    /// `POST URL/keel/v1/members`, retried while the cluster answers that
    /// it cannot take a member yet.
    async fn post_join(&self, ca_pem: &str, join: &JoinRequest) -> anyhow::Result<JoinResponse> {
        let mut cfg = kube::Config::new(self.url.parse()?);
        cfg.root_cert = Some(vec![keel_apiserver::pki::pem_to_der(ca_pem)?]);
        cfg.connect_timeout = Some(Duration::from_secs(5));
        cfg.read_timeout = Some(Duration::from_secs(30));
        let client = kube::Client::try_from(cfg)?;
        let body = serde_json::to_vec(join)?;
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let req = http::Request::post(PATH)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", self.token.token),
                )
                .body(body.clone())?;
            let err = match tokio::time::timeout(TRY_FOR, client.request::<JoinResponse>(req)).await
            {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e)) => e,
                Err(_) => {
                    if Instant::now() >= deadline {
                        bail!("{} did not answer the join within {TRY_FOR:?}", self.url);
                    }
                    tracing::info!("no answer to the join yet; retrying");
                    continue;
                }
            };
            let retry = match &err {
                kube::Error::Api(s) => {
                    (s.code == 409 && s.message.contains("not enough started"))
                        || s.code == 503
                        || s.code == 504
                        || s.code == 429
                }
                // Not connected: nothing was asked of the cluster yet.
                _ => true,
            };
            if !retry || Instant::now() >= deadline {
                return Err(match err {
                    kube::Error::Api(s) => anyhow::anyhow!(
                        "{} refused the join ({} {}): {}",
                        self.url,
                        s.code,
                        s.reason,
                        s.message
                    ),
                    other => {
                        anyhow::Error::new(other).context(format!("joining through {}", self.url))
                    }
                });
            }
            tracing::info!(error = %err, "the cluster cannot take a member yet; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// A PEM certificate signing request for `key` naming `hosts`.
fn csr(key: &KeyPair, hosts: &[String]) -> anyhow::Result<String> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    for h in hosts {
        let san = match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                h.clone()
                    .try_into()
                    .with_context(|| format!("{h:?} is not a DNS name or IP address"))?,
            ),
        };
        if !p.subject_alt_names.contains(&san) {
            p.subject_alt_names.push(san);
        }
    }
    Ok(p.serialize_request(key)?.pem()?)
}

/// Once caught up, this learner is a voter: the leader promotes members
/// added as voters itself, but that promise lives in its memory, so after
/// a leader change the joiner asks for the promotion (refused until it is
/// in sync). Returns when this replica votes.
pub async fn ensure_promoted(store: keel_store::Store) {
    let me = store.member_id();
    let mut asked = false;
    loop {
        if !store.is_learner(me) {
            tracing::info!("this replica is a voter");
            return;
        }
        if asked {
            match store.member_promote(me).await {
                Ok(()) => {}
                Err(e) => tracing::debug!(error = %e, "promotion not done yet"),
            }
        }
        // Give the leader's own promotion the first chance.
        asked = true;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrs_name_ips_and_dns_names() {
        let key = KeyPair::generate().unwrap();
        let pem = csr(&key, &["127.0.0.1".into(), "keel.example".into()]).unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE REQUEST"));
        assert!(csr(&key, &["nämé.example".into()]).is_err(), "not ASCII");
    }

    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        keel_apiserver::private_file::write(&p, b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
