//! `keel server --init`: the server join token.
//!
//! Once the API serves, the first replica makes sure a bootstrap token in
//! the server join group exists (a `kube-system/bootstrap-token-<id>`
//! Secret) and writes the full join token, `K10<ca-sha256>::<id>.<secret>`,
//! to `<data-dir>/token` (mode 0600). A restart reuses the token in that
//! file while its Secret still accepts it, so the token handed to other
//! machines keeps working; deleting the Secret revokes it, and the next
//! start mints a new one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Secret;
use keel_apiserver::auth::bootstrap_token::{
    self, ca_hash, BootstrapToken, JoinToken, NAMESPACE, SERVER_JOIN_GROUP,
};

/// `--init` on a data dir without a store: makes the cluster CA and admin
/// token in `<data-dir>/pki/` before the store starts (the API server
/// stores them as the cluster's credentials, see
/// `keel_apiserver::pki::Bootstrap::read_seed`), and, when a peer URL is
/// `https://`, a peer certificate signed by that CA for this replica's
/// name and peer hosts. So the first replica speaks peer TLS with the same
/// CA that signs the certificates of the replicas that join it.
///
/// Errors: unreadable or unwritable files under `<data-dir>/pki/`.
pub fn seed_pki(
    data_dir: &Path,
    name: &str,
    peer_urls: &[&crate::server_tls::Url],
) -> anyhow::Result<()> {
    use keel_apiserver::pki::Bootstrap;
    let has_store = data_dir.join("store").exists();
    let seed = match Bootstrap::read_seed(data_dir)? {
        Some(b) => b,
        None if !has_store => Bootstrap::write_seed(data_dir)?,
        None => return Ok(()),
    };
    let pki = data_dir.join("pki");
    if !peer_urls.iter().any(|u| u.https) || pki.join("peer.crt").exists() {
        return Ok(());
    }
    let mut hosts: Vec<String> = Vec::new();
    for u in peer_urls {
        let h = u.host.trim_matches(|c| c == '[' || c == ']').to_string();
        if !h.is_empty() && h != "0.0.0.0" && !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    let (cert, key) = crate::certs::issue(
        &seed.ca_key_pem,
        crate::certs::Kind::Peer,
        name,
        &hosts,
        PEER_CERT_DAYS,
    )?;
    // Key first, as `keel certs issue` writes them.
    keel_apiserver::private_file::write(&pki.join("peer.key"), &key)?;
    keel_apiserver::private_file::write(&pki.join("peer.crt"), &cert)?;
    Ok(())
}

/// Validity of the peer certificate `--init` issues itself.
const PEER_CERT_DAYS: u32 = 365;

/// Where the join token is written.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("token")
}

/// The valid join token: the one in `<data-dir>/token` if the cluster
/// still accepts it, else a new one (Secret created, file written).
pub async fn ensure(client: kube::Client, data_dir: &Path) -> anyhow::Result<JoinToken> {
    let ca_path = data_dir.join("pki").join("ca.crt");
    let ca_pem = std::fs::read_to_string(&ca_path)
        .with_context(|| format!("reading the cluster CA {}", ca_path.display()))?;
    let ca_hash = ca_hash(&keel_apiserver::pki::pem_to_der(&ca_pem)?);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client, NAMESPACE);
    let path = token_path(data_dir);
    if let Some(t) = reusable(&secrets, &path, &ca_hash).await? {
        return Ok(t);
    }
    let token = JoinToken {
        ca_hash,
        token: BootstrapToken::generate(),
    };
    let secret = token.token.to_secret(
        &[SERVER_JOIN_GROUP],
        None,
        "Joins control-plane replicas: keel server --join (made by keel server --init)",
    );
    secrets
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .context("creating the server join token Secret")?;
    keel_apiserver::private_file::write(&path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// The token in `path` when it names this cluster's CA and its Secret
/// authenticates it into the server join group.
async fn reusable(
    secrets: &kube::Api<Secret>,
    path: &Path,
    ca_hash: &str,
) -> anyhow::Result<Option<JoinToken>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let Ok(token) = JoinToken::parse(&text) else {
        tracing::warn!(path = %path.display(), "the join token file does not parse; making a new token");
        return Ok(None);
    };
    if token.ca_hash != ca_hash {
        tracing::warn!(path = %path.display(), "the join token file names another CA; making a new token");
        return Ok(None);
    }
    let Some(secret) = secrets
        .get_opt(&token.token.secret_name())
        .await
        .context("reading the server join token Secret")?
    else {
        tracing::info!("the join token's Secret is gone (revoked); making a new token");
        return Ok(None);
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    match bootstrap_token::validate(&secret, &token.token, now) {
        Ok(u) if u.in_group(SERVER_JOIN_GROUP) => Ok(Some(token)),
        Ok(_) => Ok(None),
        Err(why) => {
            tracing::info!(%why, "the join token no longer authenticates; making a new token");
            Ok(None)
        }
    }
}

/// [`ensure`], retried while the API is still settling; prints the token.
pub async fn ensure_and_print(client: kube::Client, data_dir: PathBuf) {
    let mut last = None;
    for _ in 0..30 {
        match ensure(client.clone(), &data_dir).await {
            Ok(t) => {
                let path = token_path(&data_dir);
                tracing::info!(path = %path.display(), "server join token ready");
                println!("keel server join token (also in {}):", path.display());
                println!("{t}");
                return;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Some(e) = last {
        tracing::error!(error = format!("{e:#}"), "no server join token");
    }
}
