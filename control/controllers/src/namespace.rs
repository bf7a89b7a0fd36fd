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
//! namespaced resource still lists (each delete pinned to the uid listed),
//! then removes the `kubernetes` finalizer with a write pinned to the
//! namespace's uid and resourceVersion.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::core::DynamicObject;

use crate::cache::{next_change, Caches, Change, Informer};
use crate::client::api_resource;
use crate::client::is_status;
use crate::reconcile::{enqueue_all, run_workers, Reconciled, WorkQueue, RESYNC};
use crate::resources::RESOURCES;

const WORKERS: usize = 2;
/// How soon a namespace that is not empty yet is looked at again.
const RECHECK: Duration = Duration::from_millis(500);
/// The finalizer this controller owns.
pub const FINALIZER: &str = "kubernetes";

/// Runs until aborted (leadership lost).
pub async fn run(client: kube::Client, caches: Caches) {
    let namespaces = caches.get::<Namespace>();
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
                        Some(Change::Applied(ns)) if is_deleting(&ns) => {
                            queue.add(ns.metadata.name.as_deref().unwrap_or_default());
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

fn is_deleting(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
}

/// One pass over the namespace `name`; a failed pass is logged and tried
/// again after [`RECHECK`], never backed off: a namespace stuck
/// terminating is what users see.
async fn reconcile(
    client: &kube::Client,
    namespaces: &Informer<Namespace>,
    name: &str,
) -> Reconciled {
    let Some(ns) = namespaces.get(None, name) else {
        return Ok(None);
    };
    if !is_deleting(&ns) {
        return Ok(None);
    }
    let Some(uid) = ns.metadata.uid.as_deref() else {
        tracing::warn!(namespace = %name, "terminating namespace without a uid");
        return Ok(None);
    };
    match finish(client, name, uid).await {
        Ok(true) => Ok(None),
        Ok(false) => Ok(Some(RECHECK)),
        Err(e) => {
            tracing::debug!(namespace = %name, error = %e, "namespace deletion pass failed");
            Ok(Some(RECHECK))
        }
    }
}

/// One pass over the terminating namespace `name` with uid `uid`;
/// Ok(true) once that namespace is gone (or replaced by a new one, left
/// alone).
async fn finish(client: &kube::Client, name: &str, uid: &str) -> Result<bool, kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    // The cache may lag a deletion and a create under the same name: a
    // GET confirms it is still this namespace before its contents go.
    if terminating(&api, name, uid).await?.is_none() {
        return Ok(true);
    }
    if delete_contents(client, name).await? > 0 {
        return Ok(false);
    }
    let Some(mut cur) = terminating(&api, name, uid).await? else {
        return Ok(true);
    };
    let finalizers = cur.metadata.finalizers.take().unwrap_or_default();
    let before = finalizers.len();
    let kept: Vec<String> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
    if kept.len() == before {
        // Only other finalizers hold it: nothing to write on this pass.
        return Ok(false);
    }
    // The PUT carries the resourceVersion just read: a lost race is
    // another pass. Without one it could overwrite a concurrent change.
    if cur.metadata.resource_version.is_none() {
        tracing::warn!(namespace = %name, "namespace read without a resourceVersion");
        return Ok(false);
    }
    cur.metadata.finalizers = Some(kept).filter(|k| !k.is_empty());
    api.replace(name, &PostParams::default(), &cur).await?;
    Ok(false)
}

/// The stored namespace `name` when it is still the one with uid `uid`
/// and still terminating.
async fn terminating(
    api: &Api<Namespace>,
    name: &str,
    uid: &str,
) -> Result<Option<Namespace>, kube::Error> {
    let cur = api.get_opt(name).await?;
    Ok(cur.filter(|ns| ns.metadata.uid.as_deref() == Some(uid) && is_deleting(ns)))
}

/// Deletes everything left in the namespace `ns` (pods get their grace
/// period, objects with finalizers wait for them); the number of objects
/// still listed.
async fn delete_contents(client: &kube::Client, ns: &str) -> Result<usize, kube::Error> {
    let mut left = 0;
    let mut seen = HashSet::new();
    for info in RESOURCES.iter().filter(|r| r.namespaced) {
        // Several versions of one resource list the same objects.
        if !seen.insert((info.group, info.resource)) {
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &api_resource(info));
        let list = api.list_metadata(&ListParams::default()).await?;
        for item in list.items {
            left += 1;
            let m = &item.metadata;
            if m.deletion_timestamp.is_some() {
                continue;
            }
            // The API sets both; without a uid the delete could not be
            // pinned to the object listed.
            let (Some(name), Some(uid)) = (m.name.as_deref(), m.uid.as_deref()) else {
                tracing::warn!(namespace = %ns, kind = info.kind, "listed object without name or uid");
                continue;
            };
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(name, &params).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(left)
}
