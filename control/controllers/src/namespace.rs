//! Namespace deletion: a terminating namespace is emptied (pods stop
//! within their grace period, everything else goes), then the
//! `kubernetes` finalizer comes off and the namespace is deleted.
//!
//! The replica that accepted the DELETE starts this at once and keeps at
//! it for 30 s; this controller, on the lease holder, owns the job from
//! then on, so a namespace finishes even when that replica died mid-way or
//! a pod on a dead node took minutes to go. Each pass is idempotent, so
//! both running at once is harmless. Like Kubernetes' namespace
//! controller it works only through the API: it deletes what every served
//! namespaced resource still lists, then removes the `kubernetes`
//! finalizer with a write pinned to the namespace's uid and version.

use std::time::Duration;

use serde_json::json;

use crate::client::{path, Client, ClientResult};
use crate::informer::{next_change, Change, Informer};
use crate::meta;
use crate::reconcile::{enqueue_all_json, run_workers, Reconciled, WorkQueue, RESYNC};
use crate::resources::RESOURCES;

const WORKERS: usize = 2;
/// How soon a namespace that is not empty yet is looked at again.
const RECHECK: Duration = Duration::from_millis(500);

/// Runs until aborted (leadership lost).
pub async fn run(client: Client) {
    let namespaces = Informer::spawn(client.clone(), "/api/v1/namespaces", "");
    let queue = WorkQueue::new();
    let mut rx = namespaces.subscribe();
    namespaces.wait_synced().await;
    enqueue_all_json(&queue, &namespaces);
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
                        Some(Change::Resync) => enqueue_all_json(&queue, &namespaces),
                        None => return,
                    },
                    _ = resync.tick() => enqueue_all_json(&queue, &namespaces),
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
    match finish(client, name, meta::uid(&ns)).await {
        Ok(true) => Ok(None),
        Ok(false) => Ok(Some(RECHECK)),
        Err(e) => {
            tracing::debug!(namespace = %name, error = %e, "namespace deletion pass failed");
            Ok(Some(RECHECK))
        }
    }
}

/// One pass over the terminating namespace `ns` with uid `uid`; Ok(true)
/// once that namespace is gone (or replaced by a new one, left alone).
async fn finish(client: &Client, ns: &str, uid: &str) -> ClientResult<bool> {
    if delete_contents(client, ns).await? > 0 {
        return Ok(false);
    }
    let uri = path("v1", "namespaces", None, Some(ns));
    let Some(mut cur) = client.get(&uri).await? else {
        return Ok(true);
    };
    if meta::uid(&cur) != uid || !meta::is_deleting(&cur) {
        return Ok(true);
    }
    let fins = meta::finalizers(&cur);
    let kept: Vec<String> = fins
        .iter()
        .filter(|f| *f != "kubernetes")
        .cloned()
        .collect();
    if kept == fins {
        // Only other finalizers hold it: nothing to write on this pass.
        return Ok(false);
    }
    // The PUT carries the version just read: a lost race is another pass.
    meta::set_finalizers(&mut cur, &kept);
    client.update(&uri, &cur).await?;
    Ok(false)
}

/// Deletes everything left in `ns` (pods get their grace period, objects
/// with finalizers wait for them); the number of objects still listed.
async fn delete_contents(client: &Client, ns: &str) -> ClientResult<usize> {
    let mut left = 0;
    let mut seen = std::collections::HashSet::new();
    for info in RESOURCES.iter().filter(|r| r.namespaced) {
        // Several versions of one resource list the same objects.
        if !seen.insert((info.group, info.resource)) {
            continue;
        }
        let coll = path(&info.api_version(), info.resource, Some(ns), None);
        let list = client.list(&coll).await?;
        for item in list["items"].as_array().into_iter().flatten() {
            left += 1;
            if meta::is_deleting(item) {
                continue;
            }
            let uri = path(
                &info.api_version(),
                info.resource,
                Some(ns),
                Some(meta::name(item)),
            );
            let options = json!({"kind": "DeleteOptions", "apiVersion": "v1",
                                 "preconditions": {"uid": meta::uid(item)}});
            match client.delete(&uri, Some(&options)).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(left)
}
