//! The controller manager: the scheduler and the controllers run on exactly
//! one replica at a time, the holder of the `keel-controller-manager`
//! Lease, and move to another replica within a lease duration when it dies.
//!
//! Losing the lease aborts every loop at once (they are idempotent
//! reconcilers, so the next holder simply starts from what the store says).
//! A loop runs until aborted; one that ends anyway (a panic: a broken
//! invariant) is a bug, logged as an error, and every loop is started
//! again on fresh caches after [`RESTART_DELAY`], so a cluster never goes
//! on silently without, say, its scheduler.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::ReplicationController;
use tokio::task::JoinHandle;

use crate::cache::Caches;
use crate::leader::{self, ElectionConfig};
use crate::{
    cronjob, daemonset, deployment, disruption, endpoints, endpointslice, gc, job, namespace,
    nodelifecycle, replicaset, resourcequota, scheduler, statefulset, volume,
};

/// How long after a loop died the loops start again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

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
    /// The HorizontalPodAutoscaler controller's sync period and windows.
    pub hpa: crate::hpa::HpaConfig,
    /// The cluster CA the CSR signer issues certificates with; None: no
    /// signer runs (approved CSRs wait).
    pub signing: Option<crate::certificates::signer::SigningConfig>,
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
            hpa: crate::hpa::HpaConfig::default(),
            signing: None,
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
            let mut loops = start(&clients, &cfg);
            let ended = tokio::select! {
                lost = leading.wait_for(|l| !*l) => Ended::Lease { closed: lost.is_err() },
                (died, i, _) = futures::future::select_all(loops.iter_mut()) => Ended::Loop {
                    index: i,
                    error: died.err().map(|e| e.to_string()),
                },
            };
            for l in &loops {
                l.abort();
            }
            match ended {
                Ended::Lease { closed: true } => return,
                Ended::Lease { closed: false } => {
                    tracing::info!(identity = %cfg.identity, "lost the controller-manager lease: stopped the loops");
                }
                Ended::Loop { index, error } => {
                    tracing::error!(loop_index = index, error = ?error, "a control loop ended; restarting every loop");
                    tokio::time::sleep(RESTART_DELAY).await;
                }
            }
        }
    })
}

/// Why the loops of one leadership term stopped.
enum Ended {
    /// Leadership lost (`closed`: the election itself is gone).
    Lease { closed: bool },
    /// Loop `index` of [`start`] returned or panicked.
    Loop { index: usize, error: Option<String> },
}

/// Starts every loop. They share one cache per kind (`caches`), which
/// stops when the last loop holding it is aborted.
fn start(clients: &Clients, cfg: &ManagerConfig) -> Vec<JoinHandle<()>> {
    let caches = Caches::new(clients("keel-controller-manager"));
    let lifecycle = nodelifecycle::NodeLifecycleConfig {
        grace: cfg.node_monitor_grace,
        default_eviction_s: cfg.default_eviction_s,
    };
    let mut loops = vec![
        tokio::spawn(scheduler::run::run(
            clients("default-scheduler"),
            caches.clone(),
        )),
        tokio::spawn(replicaset::run::<ReplicaSet>(
            clients("replicaset-controller"),
            caches.clone(),
        )),
        tokio::spawn(replicaset::run::<ReplicationController>(
            clients("replication-controller"),
            caches.clone(),
        )),
        tokio::spawn(deployment::run(
            clients("deployment-controller"),
            caches.clone(),
        )),
        tokio::spawn(statefulset::run(
            clients("statefulset-controller"),
            caches.clone(),
        )),
        tokio::spawn(daemonset::run(
            clients("daemonset-controller"),
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
        tokio::spawn(crate::serviceaccount::run(
            clients("service-account-controller"),
            caches.clone(),
        )),
        tokio::spawn(crate::rootca::run(
            clients("root-ca-cert-publisher"),
            caches.clone(),
        )),
        tokio::spawn(endpointslice::run(
            clients("endpointslice-controller"),
            caches.clone(),
        )),
        tokio::spawn(endpoints::run(
            clients("endpoints-controller"),
            caches.clone(),
        )),
        tokio::spawn(job::run(clients("job-controller"), caches.clone())),
        tokio::spawn(cronjob::run(clients("cronjob-controller"), caches.clone())),
        tokio::spawn(disruption::run(
            clients("disruption-controller"),
            caches.clone(),
        )),
        tokio::spawn(resourcequota::run(
            clients("resourcequota-controller"),
            caches.clone(),
        )),
        tokio::spawn(volume::binder::run(
            clients("persistentvolume-binder-controller"),
            caches.clone(),
        )),
        tokio::spawn(volume::provisioner::run(
            clients("local-path-provisioner"),
            caches.clone(),
        )),
        tokio::spawn(volume::protection::run(
            clients("persistentvolumeclaim-protection-controller"),
            caches.clone(),
        )),
        tokio::spawn(crate::ingress::run(
            clients("keel-ingress-status"),
            caches.clone(),
        )),
        tokio::spawn(crate::hpa::run(
            clients("horizontal-pod-autoscaler"),
            caches.clone(),
            cfg.hpa,
        )),
        tokio::spawn(crate::certificates::approver::run(
            clients("csrapproving"),
            caches.clone(),
        )),
    ];
    if let Some(signing) = &cfg.signing {
        loops.push(tokio::spawn(crate::certificates::signer::run(
            clients("csrsigning"),
            caches.clone(),
            signing.clone(),
        )));
    }
    loops
}
