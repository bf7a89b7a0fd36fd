//! `keel token create|list|delete`: bootstrap tokens through the API, as
//! `kubeadm token` manages them. A token is a
//! `kube-system/bootstrap-token-<id>` Secret; `create` prints the join
//! token (`K10<ca-sha256>::<id>.<secret>`) a new agent (`--kind agent`) or
//! control-plane replica (`--kind server`) joins with. Rotating a token is
//! creating a new one and deleting the old: machines that already joined
//! keep their own credentials.
//!
//! Errors: a bad `--ttl`, an unreadable kubeconfig or one without the
//! cluster CA (a join token must carry its fingerprint), an unknown token
//! id, or the API refusing the write, each named.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Secret;
use keel_apiserver::auth::bootstrap_token::{
    self, BootstrapToken, JoinToken, AGENT_JOIN_GROUP, SERVER_JOIN_GROUP,
};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// An admin kubeconfig (a replica writes one to <data-dir>/kubeconfig).
    #[arg(long, global = true, default_value = "./keel-data/kubeconfig")]
    kubeconfig: PathBuf,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token and print its join token.
    Create(CreateArgs),
    /// List the bootstrap tokens (ids, kinds, expiry; never secrets).
    List,
    /// Delete a token: nothing can join with it any more.
    Delete {
        /// The token's id (or the whole `<id>.<secret>` or join token).
        id: String,
    },
}

/// What a token may join.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum TokenKind {
    /// Node agents (`keel agent --join`).
    Agent,
    /// Control-plane replicas (`keel server --join`).
    Server,
}

impl TokenKind {
    fn group(self) -> &'static str {
        match self {
            TokenKind::Agent => AGENT_JOIN_GROUP,
            TokenKind::Server => SERVER_JOIN_GROUP,
        }
    }

    fn of_groups(groups: &str) -> &'static str {
        let has = |g: &str| groups.split(',').any(|x| x.trim() == g);
        match (has(AGENT_JOIN_GROUP), has(SERVER_JOIN_GROUP)) {
            (true, true) => "agent,server",
            (true, false) => "agent",
            (false, true) => "server",
            (false, false) => "<none>",
        }
    }
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// What the token may join.
    #[arg(long, value_enum, default_value_t = TokenKind::Agent)]
    kind: TokenKind,
    /// How long the token is valid, a duration such as 24h or 90m; 0 means
    /// it never expires.
    #[arg(long, default_value = "24h")]
    ttl: String,
    /// A note stored with the token (who it is for).
    #[arg(long, default_value = "")]
    description: String,
}

/// `--ttl`: None for 0 (never expires).
pub fn parse_ttl(s: &str) -> anyhow::Result<Option<std::time::Duration>> {
    if s.trim() == "0" {
        return Ok(None);
    }
    match keel_apiserver::api::parse_go_duration(s.trim()) {
        Some(d) if !d.is_zero() => Ok(Some(d)),
        Some(_) => Ok(None),
        None => bail!("--ttl {s:?}: expected a duration such as 24h, 90m or 0 (never expires)"),
    }
}

pub async fn run(a: TokenArgs) -> anyhow::Result<()> {
    let config = keel_controllers::client::kubeconfig(&a.kubeconfig)
        .await
        .with_context(|| format!("--kubeconfig {}", a.kubeconfig.display()))?;
    let ca_der = config.root_cert.as_ref().and_then(|c| c.first()).cloned();
    let client = keel_controllers::client::with_user_agent(&config, "keel-token")?;
    let api: Api<Secret> = Api::namespaced(client, bootstrap_token::NAMESPACE);
    match a.command {
        TokenCommand::Create(c) => {
            let ttl = parse_ttl(&c.ttl)?;
            let Some(ca_der) = ca_der else {
                bail!(
                    "--kubeconfig {} has no certificate-authority-data: a join token carries the cluster CA's fingerprint, so it needs an https kubeconfig",
                    a.kubeconfig.display()
                );
            };
            let token = BootstrapToken::generate();
            let expiration = ttl.map(|d| {
                let at = jiff::Timestamp::now()
                    + jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
                at.round(jiff::Unit::Second).unwrap_or(at).to_string()
            });
            let secret = token.to_secret(&[c.kind.group()], expiration.as_deref(), &c.description);
            api.create(&PostParams::default(), &secret)
                .await
                .context("creating the bootstrap token Secret")?;
            let join = JoinToken {
                ca_hash: bootstrap_token::ca_hash(&ca_der),
                token,
            };
            println!("{join}");
        }
        TokenCommand::List => {
            let list = api.list(&ListParams::default()).await?;
            println!("{:<8} {:<13} {:<22} DESCRIPTION", "ID", "KIND", "EXPIRES");
            for s in list
                .items
                .iter()
                .filter(|s| s.type_.as_deref() == Some(bootstrap_token::SECRET_TYPE))
            {
                let field = |k: &str| {
                    s.data
                        .as_ref()
                        .and_then(|d| d.get(k))
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                        .unwrap_or_default()
                };
                let expires = field("expiration");
                println!(
                    "{:<8} {:<13} {:<22} {}",
                    field("token-id"),
                    TokenKind::of_groups(&field("auth-extra-groups")),
                    if expires.is_empty() {
                        "<never>".to_string()
                    } else {
                        expires
                    },
                    field("description")
                );
            }
        }
        TokenCommand::Delete { id } => {
            let id = token_id(&id)?;
            let name = format!("bootstrap-token-{id}");
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => println!("bootstrap token {id} deleted"),
                Err(e) if keel_controllers::client::is_status(&e, 404) => {
                    bail!("there is no bootstrap token {id}")
                }
                Err(e) => return Err(e).context(format!("deleting bootstrap token {id}")),
            }
        }
    }
    Ok(())
}

/// The id in `<id>`, `<id>.<secret>` or a join token.
fn token_id(s: &str) -> anyhow::Result<String> {
    let s = s.trim();
    if let Ok(j) = JoinToken::parse(s) {
        return Ok(j.token.id);
    }
    if let Ok(t) = BootstrapToken::parse(s) {
        return Ok(t.id);
    }
    if s.len() == 6
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Ok(s.to_string());
    }
    bail!("{s:?} is not a token id (6 characters of [a-z0-9]), <id>.<secret> or join token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_id_parsing() {
        assert_eq!(parse_ttl("0").unwrap(), None);
        assert_eq!(
            parse_ttl("90m").unwrap(),
            Some(std::time::Duration::from_secs(5400))
        );
        assert!(parse_ttl("tomorrow")
            .unwrap_err()
            .to_string()
            .contains("--ttl"));
        assert_eq!(token_id("abcdef").unwrap(), "abcdef");
        assert_eq!(token_id("abcdef.0123456789abcdef").unwrap(), "abcdef");
        assert!(token_id("ABC").is_err());
    }
}
