//! `keel controller-manager`: the scheduler and controllers as their own
//! process, against any keel API server through a kubeconfig (HTTPS and a
//! bearer token), as kube-controller-manager runs beside kube-apiserver.
//!
//! The loops are the same code a replica runs in-process; only the client
//! differs. Several instances may run: the `kube-system/keel-controller-manager`
//! Lease lets exactly one of them (or one replica) lead.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use keel_controllers::certificates::signer::SigningConfig;
use keel_controllers::manager::{Clients, ManagerConfig};

/// Leader election and control-loop timing, shared by `keel server` and
/// `keel controller-manager`.
#[derive(Args, Debug, Clone)]
pub struct ManagerArgs {
    /// Controller-manager lease duration, in seconds (failover time).
    #[arg(long, default_value_t = 15)]
    leader_elect_lease_duration_s: u64,
    /// How often the lease holder renews and the others check, in ms.
    #[arg(long, default_value_t = 2000)]
    leader_elect_retry_period_ms: u64,
    /// A node whose lease is not renewed this long becomes NotReady (s).
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period_s: u64,
    /// How long pods tolerate an unreachable or not-ready node before they
    /// are evicted, unless they say otherwise (s).
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_s: u64,
    /// How often every HorizontalPodAutoscaler is reconciled, in seconds
    /// (kube-controller-manager's --horizontal-pod-autoscaler-sync-period).
    #[arg(long, default_value_t = 15)]
    horizontal_pod_autoscaler_sync_period_s: u64,
    /// Scale-down stabilization window of HPAs that set none, in seconds
    /// (kube-controller-manager's
    /// --horizontal-pod-autoscaler-downscale-stabilization).
    #[arg(long, default_value_t = 300)]
    horizontal_pod_autoscaler_downscale_stabilization_s: u64,
    /// The longest validity of the certificates the CSR signer issues
    /// (node and user client certificates), a duration such as 8760h or
    /// 10m; agents renew theirs at 80% of it.
    #[arg(long, default_value = "8760h")]
    cluster_signing_duration: String,
}

impl ManagerArgs {
    /// The manager's configuration, holding the lease as `identity`.
    pub fn config(&self, identity: &str) -> anyhow::Result<ManagerConfig> {
        let mut m = ManagerConfig::new(identity);
        m.lease_duration = Duration::from_secs(self.leader_elect_lease_duration_s.max(1));
        m.retry_period = Duration::from_millis(self.leader_elect_retry_period_ms.max(100));
        if m.retry_period >= m.lease_duration {
            bail!(
                "--leader-elect-retry-period-ms must be shorter than --leader-elect-lease-duration-s"
            );
        }
        m.node_monitor_grace = Duration::from_secs(self.node_monitor_grace_period_s.max(1));
        m.default_eviction_s = self.default_unreachable_toleration_s;
        m.hpa.sync_period =
            Duration::from_secs(self.horizontal_pod_autoscaler_sync_period_s.max(1));
        m.hpa.downscale_stabilization =
            Duration::from_secs(self.horizontal_pod_autoscaler_downscale_stabilization_s);
        Ok(m)
    }

    /// The CSR signer's configuration for the CA in `ca_cert_file` and
    /// `ca_key_file`. Errors: a bad --cluster-signing-duration.
    pub fn signing(
        &self,
        ca_cert_file: PathBuf,
        ca_key_file: PathBuf,
    ) -> anyhow::Result<SigningConfig> {
        let duration = keel_apiserver::api::parse_go_duration(&self.cluster_signing_duration)
            .filter(|d| d.as_secs() >= 10)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--cluster-signing-duration {:?}: expected a duration of at least 10s, such as 8760h or 10m",
                    self.cluster_signing_duration
                )
            })?;
        Ok(SigningConfig {
            ca_cert_file,
            ca_key_file,
            duration,
        })
    }
}

#[derive(Args, Debug)]
pub struct ControllerManagerArgs {
    /// The kubeconfig to reach the API with (a replica writes an admin one
    /// to <data-dir>/kubeconfig).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Who this instance is in the leader Lease (default: host name and
    /// process id, unique per instance).
    #[arg(long)]
    identity: Option<String>,
    /// The cluster CA certificate the CSR signer issues with (a replica
    /// keeps it in <data-dir>/pki/ca.crt); without it no CSR is signed.
    #[arg(long, requires = "cluster_signing_key_file")]
    cluster_signing_cert_file: Option<PathBuf>,
    /// The cluster CA's private key (<data-dir>/pki/ca.key).
    #[arg(long, requires = "cluster_signing_cert_file")]
    cluster_signing_key_file: Option<PathBuf>,
    #[command(flatten)]
    manager: ManagerArgs,
}

pub async fn run(a: ControllerManagerArgs) -> anyhow::Result<()> {
    let identity = a.identity.clone().unwrap_or_else(default_identity);
    let mut cfg = a.manager.config(&identity)?;
    if let (Some(c), Some(k)) = (&a.cluster_signing_cert_file, &a.cluster_signing_key_file) {
        cfg.signing = Some(a.manager.signing(c.clone(), k.clone())?);
    }
    let config = keel_controllers::client::kubeconfig(&a.kubeconfig).await?;
    // Fail now, with the file named, rather than inside a loop later.
    keel_controllers::client::with_user_agent(&config, "keel-controller-manager")?;
    let clients: Clients = Arc::new(move |name| {
        keel_controllers::client::with_user_agent(&config, name)
            .expect("a client that built once builds again")
    });
    tracing::info!(%identity, kubeconfig = %a.kubeconfig.display(), "keel controller-manager started");
    let manager = keel_controllers::manager::spawn(clients, cfg);
    crate::server::shutdown_signal().await;
    tracing::info!("shutting down");
    manager.abort();
    Ok(())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "keel".into());
    format!("{host}_{}", std::process::id())
}
