//! The controller manager: the scheduler and the controllers run on exactly
//! one replica at a time, the holder of the `keel-controller-manager`
//! Lease, and move to another replica within a lease duration when it dies.
//!
//! Losing the lease aborts every loop at once (they are idempotent
//! reconcilers, so the next holder simply starts from what the store says).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::cache::Caches;
use crate::leader::{self, ElectionConfig};
use crate::{deployment, gc, namespace, nodelifecycle, replicaset, scheduler};

/// Makes the `kube::Client` each loop uses, given the loop's name (sent as
/// its user agent, which the API server records as the field manager).
pub type Clients = Arc<dyn Fn(&str) -> kube::Client + Send + Sync>;

/// How the controller manager runs on one replica.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// This replica's identity in the Lease.
    pub identity: String,
    pub lease_duration: Duration,
    pub retry_period: Duration,
    /// A node whose lease is not renewed this long becomes NotReady.
    pub node_monitor_grace: Duration,
    /// Default toleration of pods for unreachable/not-ready nodes.
    pub default_eviction_s: u64,
}

impl ManagerConfig {
    /// Kubernetes' defaults: 15 s lease, 2 s retry, 40 s node grace, 300 s eviction.
    pub fn new(identity: &str) -> ManagerConfig {
        ManagerConfig {
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
            node_monitor_grace: Duration::from_secs(40),
            default_eviction_s: 300,
        }
    }
}

/// Runs the election and, while this replica leads, every loop.
pub fn spawn(clients: Clients, cfg: ManagerConfig) -> JoinHandle<()> {
    tokio::spawn(async move {
        let election = ElectionConfig {
            lease_duration: cfg.lease_duration,
            retry_period: cfg.retry_period,
            ..ElectionConfig::controller_manager(&cfg.identity)
        };
        let mut leading = leader::spawn(clients("leader-election"), election);
        loop {
            if leading.wait_for(|l| *l).await.is_err() {
                return;
            }
            tracing::info!(identity = %cfg.identity, "leading: starting the scheduler and controllers");
            let loops = start(&clients, &cfg);
            let lost = leading.wait_for(|l| !*l).await.is_err();
            tracing::info!(identity = %cfg.identity, "lost the controller-manager lease: stopping loops");
            for l in &loops {
                l.abort();
            }
            if lost {
                return;
            }
        }
    })
}

/// Starts every loop. They share one cache per kind (`caches`), which
/// stops when the last loop holding it is aborted.
fn start(clients: &Clients, cfg: &ManagerConfig) -> Vec<JoinHandle<()>> {
    let caches = Caches::new(clients("keel-controller-manager"));
    let lifecycle = nodelifecycle::NodeLifecycleConfig {
        grace: cfg.node_monitor_grace,
        default_eviction_s: cfg.default_eviction_s,
    };
    vec![
        tokio::spawn(scheduler::run::run(
            clients("default-scheduler"),
            caches.clone(),
        )),
        tokio::spawn(replicaset::run(
            clients("replicaset-controller"),
            caches.clone(),
        )),
        tokio::spawn(deployment::run(
            clients("deployment-controller"),
            caches.clone(),
        )),
        tokio::spawn(nodelifecycle::run(
            clients("node-controller"),
            caches.clone(),
            lifecycle,
        )),
        tokio::spawn(gc::run(
            clients("generic-garbage-collector"),
            caches.clone(),
        )),
        tokio::spawn(namespace::run(
            clients("namespace-controller"),
            caches.clone(),
        )),
    ]
}
