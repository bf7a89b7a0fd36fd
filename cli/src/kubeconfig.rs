//! `keel kubeconfig --user alice --group dev [--expiry 24h]`: prints a
//! kubeconfig for a new user, authenticated by a client certificate the
//! cluster CA (from the data dir) signs. What the user may do is then up
//! to RBAC (RoleBindings naming the user or one of the groups).

use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct KubeconfigArgs {
    /// The data dir of a keel server (holds the cluster CA).
    #[arg(long, default_value = "./keel-data")]
    data_dir: PathBuf,
    /// The user name (the certificate's CommonName).
    #[arg(long)]
    user: String,
    /// A group the user is in (the certificate's Organization); repeat
    /// for two.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// How long the certificate is valid: a Go duration (`24h`, `90m`).
    #[arg(long, default_value = "8760h")]
    expiry: String,
    /// The API server URL (default: the one in the data dir's kubeconfig).
    #[arg(long)]
    server: Option<String>,
}

pub fn run(a: KubeconfigArgs) -> anyhow::Result<()> {
    let validity = keel_apiserver::api::parse_go_duration(&a.expiry)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--expiry {:?}: expected a duration such as 24h or 90m",
                a.expiry
            )
        })?;
    let kc = keel_apiserver::pki::issue_user_kubeconfig(
        &a.data_dir,
        &a.user,
        &a.groups,
        validity,
        a.server.as_deref(),
    )?;
    print!("{kc}");
    Ok(())
}
