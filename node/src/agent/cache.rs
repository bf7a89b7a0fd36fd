//! A typed, cluster-wide `kube-runtime` reflector cache for the agent's
//! networking loops and the pod environment (Services, EndpointSlices).
//!
//! Guarantees: [`Cache::store`] holds the last listed-and-watched state (a
//! relist replaces it atomically at `InitDone`); [`Cache::changes`] ticks
//! after every applied event once the first list is done, so a consumer that
//! rebuilds from [`Cache::store`] on each tick sees every change. Watch errors
//! are retried with back-off (0.5 s doubling to 10 s); before the first
//! successful list they also mark the cache [`SyncState::Failing`], so callers
//! that must not wait on an unreachable API (the pod environment) can tell.

use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

use futures::StreamExt as _;
use kube::Resource;
use kube_runtime::reflector::{self, Store};
use kube_runtime::watcher;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// Whether the cache has listed its objects at least once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// The first list is under way.
    Syncing,
    /// Listed at least once; the store is complete (as of the last event).
    Synced,
    /// The first list failed (API unreachable or refusing); retried.
    Failing,
}

/// A reflector store plus its change and sync signals. Cheap to clone.
#[derive(Clone)]
pub struct Cache<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    changes: watch::Receiver<u64>,
    sync: watch::Receiver<SyncState>,
}

impl<K> Cache<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    /// Starts watching `api` (all namespaces, usually) and returns the cache
    /// with the future that feeds it; the caller runs the future as a task
    /// (it ends only when dropped).
    pub fn start(api: kube::Api<K>) -> (Cache<K>, impl std::future::Future<Output = ()> + Send) {
        let (store, writer) = reflector::store();
        let (changes_tx, changes) = watch::channel(0u64);
        let (sync_tx, sync) = watch::channel(SyncState::Syncing);
        let name = std::any::type_name::<K>();
        let feed = async move {
            let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()));
            futures::pin_mut!(stream);
            let mut backoff = Duration::from_millis(500);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Ok(_) => {
                        backoff = Duration::from_millis(500);
                        sync_tx.send_if_modified(|s| {
                            let changed = *s != SyncState::Synced;
                            *s = SyncState::Synced;
                            changed
                        });
                        changes_tx.send_modify(|n| *n += 1);
                    }
                    Err(e) => {
                        tracing::debug!(kind = name, error = %e, "watch failed; retrying");
                        sync_tx.send_if_modified(|s| match *s {
                            SyncState::Syncing => {
                                *s = SyncState::Failing;
                                true
                            }
                            _ => false,
                        });
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        };
        (
            Cache {
                store,
                changes,
                sync,
            },
            feed,
        )
    }
}

impl<K: Resource + 'static> Cache<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// The reflector store (read-only).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Ticks after each applied event (and the end of each relist).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    pub fn sync_state(&self) -> SyncState {
        *self.sync.borrow()
    }

    /// Waits up to `timeout` for the first complete list; `false` when the
    /// API failed first or the time ran out.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut sync = self.sync.clone();
        let done = tokio::time::timeout(
            timeout,
            sync.wait_for(|s| matches!(s, SyncState::Synced | SyncState::Failing)),
        )
        .await;
        matches!(done, Ok(Ok(s)) if *s == SyncState::Synced)
    }
}
