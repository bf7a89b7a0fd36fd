//! Namespace deletion: a terminating namespace is emptied (pods stop
//! within their grace period, everything else goes), then the
//! `kubernetes` finalizer comes off and the namespace is deleted.
//!
//! The replica that accepted the DELETE starts this at once and keeps at
//! it for 30 s (`api/delete.rs`); this controller, on the lease holder,
//! owns the job from then on, so a namespace finishes even when that
//! replica died mid-way or a pod on a dead node took minutes to go.
//! Each pass is idempotent, so both running at once is harmless.

use std::time::Duration;

use super::{enqueue_all, run_workers, Reconciled, WorkQueue, RESYNC};
use crate::api;
use crate::client::Client;
use crate::informer::{next_change, Change, Informer};
use crate::meta;

const WORKERS: usize = 2;
/// How soon a namespace that is not empty yet is looked at again.
const RECHECK: Duration = Duration::from_millis(500);

/// Runs until aborted (leadership lost).
pub async fn run(client: Client) {
    let namespaces = Informer::spawn(client.clone(), "/api/v1/namespaces", "");
    let queue = WorkQueue::new();
    let mut rx = namespaces.subscribe();
    namespaces.wait_synced().await;
    enqueue_all(&queue, &namespaces);
    let feed = {
        let (queue, namespaces) = (queue.clone(), namespaces.clone());
        async move {
            let mut resync = tokio::time::interval(RESYNC);
            loop {
                tokio::select! {
                    change = next_change(&mut rx) => match change {
                        Some(Change::Applied(ns)) if meta::is_deleting(&ns) => {
                            queue.add(meta::name(&ns));
                        }
                        Some(Change::Applied(_) | Change::Deleted(_)) => {}
                        Some(Change::Resync) => enqueue_all(&queue, &namespaces),
                        None => return,
                    },
                    _ = resync.tick() => enqueue_all(&queue, &namespaces),
                }
            }
        }
    };
    let workers = run_workers(queue, WORKERS, move |name| {
        let (client, namespaces) = (client.clone(), namespaces.clone());
        async move { reconcile(&client, &namespaces, &name).await }
    });
    tokio::join!(feed, workers);
}

async fn reconcile(client: &Client, namespaces: &Informer, name: &str) -> Reconciled {
    let Some(ns) = namespaces.get(name) else {
        return Ok(None);
    };
    if !meta::is_deleting(&ns) {
        return Ok(None);
    }
    match api::finish_namespace(client.api(), name).await {
        Ok(true) => Ok(None),
        Ok(false) => Ok(Some(RECHECK)),
        Err(e) => {
            tracing::debug!(namespace = %name, error = %e.message, "namespace deletion pass failed");
            Ok(Some(RECHECK))
        }
    }
}
