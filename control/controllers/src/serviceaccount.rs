//! The serviceaccounts controller (Kubernetes'
//! `pkg/controller/serviceaccount`): every namespace that is not
//! terminating has a `default` ServiceAccount, created when the namespace
//! appears and again whenever it is deleted.
//!
//! Pods need it: the API server refuses a pod whose service account does
//! not exist (ServiceAccount admission), so clients and the workload
//! controllers wait for this one before their pods are accepted.
//!
//! Reconciled per namespace from the shared Namespace and ServiceAccount
//! caches: a namespace added or changed, or a `default` account deleted,
//! queues its namespace; a pass creates the account when the cache has
//! none, and an account that exists after all (the cache lagged) is not an
//! error.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::cache::{next_change, Caches, Change, Informer};
use crate::client::is_status;
use crate::reconcile::{enqueue_all, is_deleting, name, namespace, run_workers, Reconciled};
use crate::reconcile::{WorkQueue, RESYNC};

/// The account every namespace gets.
pub const DEFAULT: &str = "default";
const WORKERS: usize = 2;

struct Controller {
    client: kube::Client,
    namespaces: Informer<Namespace>,
    accounts: Informer<ServiceAccount>,
}

/// Runs the serviceaccounts controller until the future is dropped.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Controller {
        client,
        namespaces: caches.get::<Namespace>(),
        accounts: caches.get::<ServiceAccount>(),
    });
    let queue = WorkQueue::new();
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.namespaces.wait_synced().await;
    ctl.accounts.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |ns| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&ns).await }
    });
    tokio::join!(changes, workers);
}

/// Maps namespace changes, and deletions of a `default` account, to the
/// namespaces to reconcile (keys are namespace names).
async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut ns_rx = ctl.namespaces.subscribe();
    let mut sa_rx = ctl.accounts.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut ns_rx) => match c {
                Some(Change::Applied(ns)) => queue.add(name(&ns.metadata)),
                Some(Change::Deleted(_)) => {}
                Some(Change::Resync) => enqueue_all(&queue, &ctl.namespaces),
                None => return,
            },
            c = next_change(&mut sa_rx) => match c {
                Some(Change::Deleted(sa)) if name(&sa.metadata) == DEFAULT => {
                    queue.add(namespace(&sa.metadata));
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
    /// Creates `default` in the namespace `ns` when it is active and lacks
    /// one.
    async fn reconcile(&self, ns: &str) -> Reconciled {
        let Some(namespace) = self.namespaces.get(None, ns) else {
            return Ok(None);
        };
        if is_deleting(&namespace.metadata) || phase(&namespace) == Some("Terminating") {
            return Ok(None);
        }
        if self.accounts.get(Some(ns), DEFAULT).is_some() {
            return Ok(None);
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT.to_string()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => Ok(None),
            // Already there (our cache lagged), or the namespace started
            // terminating (403) or went (404) since the cache saw it.
            Err(e) if is_status(&e, 409) || is_status(&e, 403) || is_status(&e, 404) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn phase(ns: &Namespace) -> Option<&str> {
    ns.status.as_ref()?.phase.as_deref()
}
