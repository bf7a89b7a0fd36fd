//! `keel agent --join <url> --token <join token>`: the flags of an
//! agent's TLS bootstrap, and the node identity an agent runs with. The
//! bootstrap itself is [`keel_node::agent::join`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use keel_apiserver::auth::bootstrap_token::JoinToken;
use keel_node::agent::kubeconfig::KubeconfigAuth;
use keel_node::agent::node_cert::NodeCert;
use keel_node::agent::rotation::NodeIdentity;

#[derive(Args, Debug, Clone, Default)]
pub struct JoinArgs {
    /// Join the cluster through this API server
    /// (`https://<replica>:6443`) with --token: the agent obtains its own
    /// node certificate and keeps it in `<root-dir>/kubeconfig` (an agent
    /// restarted with a valid one does not join again).
    #[arg(long, requires = "token")]
    pub join: Option<String>,
    /// The join token (`K10<ca-sha256>::<id>.<secret>`, from `keel token
    /// create --kind agent`).
    #[arg(long, requires = "join")]
    pub token: Option<String>,
    /// How long to wait for the node certificate to be approved and
    /// issued, in seconds.
    #[arg(long, default_value_t = 120)]
    pub join_timeout_s: u64,
}

impl JoinArgs {
    /// Joins as `node` unless `<root_dir>/kubeconfig` already holds a
    /// valid node certificate; returns the kubeconfig's path.
    pub async fn ensure_joined(&self, node: &str, root_dir: &Path) -> anyhow::Result<PathBuf> {
        let (Some(server), Some(token)) = (&self.join, &self.token) else {
            anyhow::bail!("--kubeconfig or --join with --token is required");
        };
        let token = JoinToken::parse(token).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
        let join = keel_node::agent::join::Join {
            server: server.trim_end_matches('/').to_string(),
            ca_hash: token.ca_hash.clone(),
            token: token.token.to_string(),
            node: node.to_string(),
            kubeconfig: root_dir.join("kubeconfig"),
            timeout: Duration::from_secs(self.join_timeout_s.max(1)),
        };
        keel_node::agent::join::ensure_joined(&join)
            .await
            .with_context(|| format!("--join {server}"))
    }
}

/// The node identity in a kubeconfig with a client certificate, rotated
/// in place at `path`; None for token kubeconfigs.
pub fn node_identity(auth: &KubeconfigAuth, path: &Path) -> Option<NodeIdentity> {
    let cert = auth.client_cert_pem.as_ref()?;
    let key = auth.client_key_pem.as_ref()?;
    let cert = NodeCert {
        cert_pem: String::from_utf8_lossy(cert).into_owned(),
        key_pem: String::from_utf8_lossy(key).into_owned(),
    };
    Some(NodeIdentity::new(cert, Some(path.to_path_buf())))
}
