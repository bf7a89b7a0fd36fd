//! The root CA publisher (Kubernetes' `pkg/controller/certificates/rootcacertpublisher`):
//! every namespace that is not terminating has a ConfigMap
//! `kube-root-ca.crt` whose `ca.crt` is the cluster CA, so a pod's
//! projected token volume can carry the CA its in-cluster client must
//! trust to reach the API server.
//!
//! The CA is read once at start from the API server's `GET /cacerts` (the
//! same PEM the serving certificate chains to), retried until it answers.
//! Then, per namespace, from the shared Namespace and ConfigMap caches: a
//! namespace added or changed, or a `kube-root-ca.crt` deleted or changed,
//! queues its namespace; a pass creates the ConfigMap when missing and
//! puts `ca.crt` back when it differs (other keys and labels are left
//! alone, and a write lost to a concurrent one is retried by the queue).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::cache::{next_change, Caches, Change, Informer};
use crate::client::is_status;
use crate::reconcile::{enqueue_all, is_deleting, name, namespace, run_workers, Reconciled};
use crate::reconcile::{WorkQueue, RESYNC};

/// The ConfigMap every namespace gets.
pub const CONFIG_MAP: &str = "kube-root-ca.crt";
/// Its key holding the PEM.
pub const KEY: &str = "ca.crt";
/// Where the API server serves the cluster CA.
const CA_PATH: &str = "/cacerts";
const WORKERS: usize = 2;
const CA_RETRY: Duration = Duration::from_secs(1);

struct Controller {
    client: kube::Client,
    ca_pem: String,
    namespaces: Informer<Namespace>,
    config_maps: Informer<ConfigMap>,
}

/// Runs the root CA publisher until the future is dropped.
pub async fn run(client: kube::Client, caches: Caches) {
    let ca_pem = read_ca(&client).await;
    let ctl = Arc::new(Controller {
        client,
        ca_pem,
        namespaces: caches.get::<Namespace>(),
        config_maps: caches.get::<ConfigMap>(),
    });
    let queue = WorkQueue::new();
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.namespaces.wait_synced().await;
    ctl.config_maps.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |ns| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&ns).await }
    });
    tokio::join!(changes, workers);
}

/// The cluster CA PEM from the API server, asked until it answers one.
async fn read_ca(client: &kube::Client) -> String {
    loop {
        let req = http::Request::get(CA_PATH)
            .body(Vec::new())
            .expect("a static request");
        match client.request_text(req).await {
            Ok(pem) if pem.contains("BEGIN CERTIFICATE") => return pem,
            Ok(_) => tracing::warn!("the API server's {CA_PATH} holds no certificate"),
            Err(e) => tracing::warn!(error = %e, "reading the cluster CA"),
        }
        tokio::time::sleep(CA_RETRY).await;
    }
}

/// Maps namespace changes, and changes of a `kube-root-ca.crt`, to the
/// namespaces to reconcile (keys are namespace names).
async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut ns_rx = ctl.namespaces.subscribe();
    let mut cm_rx = ctl.config_maps.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut ns_rx) => match c {
                Some(Change::Applied(ns)) => queue.add(name(&ns.metadata)),
                Some(Change::Deleted(_)) => {}
                Some(Change::Resync) => enqueue_all(&queue, &ctl.namespaces),
                None => return,
            },
            c = next_change(&mut cm_rx) => match c {
                Some(Change::Applied(cm) | Change::Deleted(cm)) if name(&cm.metadata) == CONFIG_MAP => {
                    queue.add(namespace(&cm.metadata));
                }
                Some(Change::Applied(_) | Change::Deleted(_)) => {}
                Some(Change::Resync) => enqueue_all(&queue, &ctl.namespaces),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.namespaces),
        }
    }
}

impl Controller {
    /// Creates or repairs `kube-root-ca.crt` in the namespace `ns` when it
    /// is active.
    async fn reconcile(&self, ns: &str) -> Reconciled {
        let Some(namespace) = self.namespaces.get(None, ns) else {
            return Ok(None);
        };
        if is_deleting(&namespace.metadata) || phase(&namespace) == Some("Terminating") {
            return Ok(None);
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let result = match self.config_maps.get(Some(ns), CONFIG_MAP) {
            Some(cm) if holds(&cm, &self.ca_pem) => return Ok(None),
            Some(cm) => {
                let mut fixed = (*cm).clone();
                fixed
                    .data
                    .get_or_insert_with(Default::default)
                    .insert(KEY.to_string(), self.ca_pem.clone());
                api.replace(CONFIG_MAP, &PostParams::default(), &fixed)
                    .await
            }
            None => {
                api.create(&PostParams::default(), &wanted(&self.ca_pem))
                    .await
            }
        };
        match result {
            Ok(_) => Ok(None),
            // Created meanwhile (our cache lagged: the change requeues us),
            // or the namespace started terminating (403) or went (404).
            Err(e) if is_status(&e, 409) || is_status(&e, 403) || is_status(&e, 404) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Whether `cm` carries exactly `ca_pem` as `ca.crt`.
fn holds(cm: &ConfigMap, ca_pem: &str) -> bool {
    cm.data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .map(String::as_str)
        == Some(ca_pem)
}

/// The ConfigMap a namespace should have.
fn wanted(ca_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIG_MAP.to_string()),
            ..ObjectMeta::default()
        },
        data: Some([(KEY.to_string(), ca_pem.to_string())].into()),
        ..ConfigMap::default()
    }
}

fn phase(ns: &Namespace) -> Option<&str> {
    ns.status.as_ref()?.phase.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_ca_counts_as_published() {
        let pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        let cm = wanted(pem);
        assert_eq!(cm.metadata.name.as_deref(), Some(CONFIG_MAP));
        assert!(holds(&cm, pem));
        assert!(!holds(&cm, "other"));
        assert!(!holds(&ConfigMap::default(), pem));
    }
}
