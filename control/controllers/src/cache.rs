//! Typed, shared list+watch caches: the "watch → cache" half of every
//! controller, on kube-runtime's [`watcher`] and [`reflector::Store`].
//!
//! One [`Informer`] per resource kind is shared through [`Caches`] by every
//! loop that reads that kind, so the scheduler, the ReplicaSet, Deployment
//! and node-lifecycle controllers hold one pod cache between them, and a
//! read hands out an `Arc<K>` instead of cloning the object.
//!
//! Guarantees: the store is always some consistent revision of the
//! collection (a list, then every watch event in order; kube-runtime's
//! watcher relists after a 410 or a broken watch). Subscribers see every
//! change as [`Change::Applied`] or [`Change::Deleted`], including the
//! differences a relist found; one that falls more than the channel's
//! capacity behind gets [`Change::Resync`] and must reconcile everything
//! it owns.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;

/// How many changes a subscriber may fall behind before it gets a resync.
const CHANGES_CAPACITY: usize = 4096;

/// What changed in the cache.
#[derive(Debug)]
pub enum Change<K> {
    /// Created or updated (the new object, as the cache holds it).
    Applied(Arc<K>),
    /// Deleted (the last known object).
    Deleted(Arc<K>),
    /// The subscriber lagged: look at everything.
    Resync,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(o) => Change::Applied(o.clone()),
            Change::Deleted(o) => Change::Deleted(o.clone()),
            Change::Resync => Change::Resync,
        }
    }
}

/// The work-queue key of an object: `namespace/name`, or `name` when
/// cluster-scoped.
pub fn key_of<K: Resource>(obj: &K) -> String {
    let m = obj.meta();
    let name = m.name.as_deref().unwrap_or_default();
    match m.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// Splits a key from [`key_of`] into (namespace, name).
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

/// Aborts the watch task when the last [`Informer`] clone is dropped.
struct Task(AbortHandle);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A shared cache of one kind. Cheap to clone.
pub struct Informer<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + Hash,
{
    store: Store<K>,
    dyntype: K::DynamicType,
    changes: broadcast::Sender<Change<K>>,
    /// Turns true on the first complete list. A watch channel wakes every
    /// waiter; kube-runtime's `Store::wait_until_ready` wakes only the last
    /// of several concurrent ones, and loops sharing a cache wait at once.
    synced: watch::Receiver<bool>,
    _task: Arc<Task>,
}

impl<K> Clone for Informer<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            dyntype: self.dyntype.clone(),
            changes: self.changes.clone(),
            synced: self.synced.clone(),
            _task: self._task.clone(),
        }
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
{
    /// Starts listing and watching every object of `api`'s scope.
    pub fn spawn(api: Api<K>) -> Informer<K> {
        Informer::spawn_with(api, K::DynamicType::default(), watcher::Config::default())
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// Starts listing and watching `api` with `config` (selectors), for a
    /// kind known only at run time (`dyntype`).
    pub fn spawn_with(
        api: Api<K>,
        dyntype: K::DynamicType,
        config: watcher::Config,
    ) -> Informer<K> {
        let (feed, parts) = Feed::new(dyntype);
        let task = tokio::spawn(feed.run(api, config));
        parts.into_informer(task.abort_handle())
    }

    /// Resolves once the first list is in the cache; every concurrent
    /// waiter is woken. Never resolves if the informer's task is gone
    /// before its first list (the loop waiting is then aborted with it).
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        // An error means the feed is gone: nothing will ever come.
        if synced.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The object named `name` in `namespace` (None for cluster-scoped).
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let mut r = ObjectRef::new_with(name, self.dyntype.clone());
        if let Some(ns) = namespace {
            r = r.within(ns);
        }
        self.store.get(&r)
    }

    /// The object under a work-queue key from [`key_of`].
    pub fn get_key(&self, key: &str) -> Option<Arc<K>> {
        let (ns, name) = split_key(key);
        self.get(ns, name)
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// The cached objects for which `keep` holds.
    pub fn filter(&self, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.store.state_filter(|o| keep(o))
    }

    /// The cached objects in `namespace` for which `keep` holds.
    pub fn filter_in(&self, namespace: &str, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.store
            .state_filter(|o| o.meta().namespace.as_deref() == Some(namespace) && keep(o))
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change<K>> {
        self.changes.subscribe()
    }
}

/// Receives the next change, turning a lag into [`Change::Resync`]; `None`
/// when the informer is gone.
pub async fn next_change<K>(rx: &mut broadcast::Receiver<Change<K>>) -> Option<Change<K>> {
    match rx.recv().await {
        Ok(c) => Some(c),
        Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::Resync),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

/// The watch task's side: applies watcher events to the store and tells
/// subscribers what changed.
struct Feed<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    writer: reflector::store::Writer<K>,
    store: Store<K>,
    dyntype: K::DynamicType,
    changes: broadcast::Sender<Change<K>>,
    synced: watch::Sender<bool>,
    /// The cache as it was when a relist began, to announce differences.
    relisting: Option<Vec<Arc<K>>>,
}

/// The reading side of a new [`Feed`], made into an [`Informer`] once the
/// feed's task runs.
struct Parts<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + Hash,
{
    store: Store<K>,
    dyntype: K::DynamicType,
    changes: broadcast::Sender<Change<K>>,
    synced: watch::Receiver<bool>,
}

impl<K> Parts<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + Hash,
{
    fn into_informer(self, task: AbortHandle) -> Informer<K> {
        Informer {
            store: self.store,
            dyntype: self.dyntype,
            changes: self.changes,
            synced: self.synced,
            _task: Arc::new(Task(task)),
        }
    }
}

impl<K> Feed<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    fn new(dyntype: K::DynamicType) -> (Feed<K>, Parts<K>) {
        let writer = reflector::store::Writer::new(dyntype.clone());
        let store = writer.as_reader();
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let (synced_tx, synced) = watch::channel(false);
        let feed = Feed {
            writer,
            store: store.clone(),
            dyntype: dyntype.clone(),
            changes: changes.clone(),
            synced: synced_tx,
            relisting: None,
        };
        let parts = Parts {
            store,
            dyntype,
            changes,
            synced,
        };
        (feed, parts)
    }

    async fn run(mut self, api: Api<K>, config: watcher::Config) {
        let events = watcher(api, config).default_backoff();
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => self.apply(event),
                Err(e) => {
                    tracing::debug!(kind = %K::kind(&self.dyntype), error = %e, "watch failed; retrying")
                }
            }
        }
    }

    fn apply(&mut self, event: Event<K>) {
        match &event {
            Event::Apply(obj) => {
                self.writer.apply_watcher_event(&event);
                let r = ObjectRef::from_obj_with(obj, self.dyntype.clone());
                if let Some(cached) = self.store.get(&r) {
                    let _ = self.changes.send(Change::Applied(cached));
                }
            }
            Event::Delete(obj) => {
                let r = ObjectRef::from_obj_with(obj, self.dyntype.clone());
                let last = self.store.get(&r).unwrap_or_else(|| Arc::new(obj.clone()));
                self.writer.apply_watcher_event(&event);
                let _ = self.changes.send(Change::Deleted(last));
            }
            Event::Init => {
                self.relisting = Some(self.store.state());
                self.writer.apply_watcher_event(&event);
            }
            Event::InitApply(_) => self.writer.apply_watcher_event(&event),
            Event::InitDone => {
                self.writer.apply_watcher_event(&event);
                let before = self.relisting.take().unwrap_or_default();
                self.announce_relist(before);
                self.synced.send_replace(true);
            }
        }
    }

    /// After a (re)list: what disappeared is deleted, what is new or at
    /// another resourceVersion is applied.
    fn announce_relist(&self, before: Vec<Arc<K>>) {
        let old: HashMap<ObjectRef<K>, Arc<K>> = before
            .into_iter()
            .map(|o| {
                (
                    ObjectRef::from_obj_with(o.as_ref(), self.dyntype.clone()),
                    o,
                )
            })
            .collect();
        let now = self.store.state();
        let mut present = std::collections::HashSet::with_capacity(now.len());
        for obj in now {
            let r = ObjectRef::from_obj_with(obj.as_ref(), self.dyntype.clone());
            let same = old
                .get(&r)
                .is_some_and(|o| o.meta().resource_version == obj.meta().resource_version);
            present.insert(r);
            if !same {
                let _ = self.changes.send(Change::Applied(obj));
            }
        }
        for (r, obj) in old {
            if !present.contains(&r) {
                let _ = self.changes.send(Change::Deleted(obj));
            }
        }
    }
}

/// One [`Informer`] per kind, made on first use and shared by every loop
/// of a controller manager. Cheap to clone; the informers stop when the
/// last clone is dropped (leadership lost).
#[derive(Clone)]
pub struct Caches {
    client: kube::Client,
    informers: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
}

impl Caches {
    /// Caches that list and watch through `client`.
    pub fn new(client: kube::Client) -> Caches {
        Caches {
            client,
            informers: Arc::default(),
        }
    }

    /// The client the caches read through.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The shared informer of every `K` in the cluster, started on first use.
    pub fn get<K>(&self) -> Informer<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let mut map = self
            .informers
            .lock()
            .expect("the caches lock is never poisoned");
        let entry = map
            .entry(TypeId::of::<K>())
            .or_insert_with(|| Box::new(Informer::<K>::spawn(Api::all(self.client.clone()))));
        entry
            .downcast_ref::<Informer<K>>()
            .expect("informers are stored under their own type id")
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::time::Duration;

    fn cm(name: &str, rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("d".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn informer_and_feed() -> (Informer<ConfigMap>, Feed<ConfigMap>) {
        let (feed, parts) = Feed::new(());
        let idle = tokio::spawn(std::future::pending::<()>());
        (parts.into_informer(idle.abort_handle()), feed)
    }

    fn list(feed: &mut Feed<ConfigMap>, objs: &[ConfigMap]) {
        feed.apply(Event::Init);
        for o in objs {
            feed.apply(Event::InitApply(o.clone()));
        }
        feed.apply(Event::InitDone);
    }

    /// Loops sharing a cache wait for it at the same time; each must start.
    #[tokio::test]
    async fn every_loop_waiting_for_a_shared_cache_starts() {
        let (informer, mut feed) = informer_and_feed();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let i = informer.clone();
                tokio::spawn(async move { i.wait_synced().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        list(&mut feed, &[cm("a", "1")]);
        for w in waiters {
            let started = tokio::time::timeout(Duration::from_secs(2), w).await;
            assert!(matches!(started, Ok(Ok(()))), "a loop never started");
        }
        assert_eq!(
            informer.get_key("d/a").map(|c| key_of(c.as_ref())),
            Some("d/a".into())
        );
    }

    /// A relist announces what changed while the watch was down: gone
    /// objects as deleted, new or changed ones as applied, the rest not.
    #[tokio::test]
    async fn a_relist_announces_the_differences() {
        let (informer, mut feed) = informer_and_feed();
        list(
            &mut feed,
            &[cm("same", "1"), cm("changed", "1"), cm("gone", "1")],
        );
        let mut rx = informer.subscribe();
        list(
            &mut feed,
            &[cm("same", "1"), cm("changed", "2"), cm("new", "3")],
        );
        let mut applied = vec![];
        let mut deleted = vec![];
        while let Ok(c) = rx.try_recv() {
            match c {
                Change::Applied(o) => applied.push(key_of(o.as_ref())),
                Change::Deleted(o) => deleted.push(key_of(o.as_ref())),
                Change::Resync => panic!("no lag here"),
            }
        }
        applied.sort();
        assert_eq!(applied, ["d/changed", "d/new"]);
        assert_eq!(deleted, ["d/gone"]);
        assert_eq!(informer.list().len(), 3);
    }

    /// A delete hands subscribers the last cached object and removes it.
    #[tokio::test]
    async fn watch_events_update_the_store_and_tell_subscribers() {
        let (informer, mut feed) = informer_and_feed();
        list(&mut feed, &[]);
        let mut rx = informer.subscribe();
        feed.apply(Event::Apply(cm("a", "5")));
        feed.apply(Event::Delete(cm("a", "6")));
        match rx.try_recv() {
            Ok(Change::Applied(o)) => assert_eq!(o.metadata.resource_version.as_deref(), Some("5")),
            other => panic!("{other:?}"),
        }
        match rx.try_recv() {
            Ok(Change::Deleted(o)) => assert_eq!(o.metadata.resource_version.as_deref(), Some("5")),
            other => panic!("{other:?}"),
        }
        assert!(informer.get(Some("d"), "a").is_none());
    }
}
