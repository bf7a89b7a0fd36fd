//! The workload controllers, in kube-rs / client-go shape: informers cache
//! the kinds a controller reads, every change is mapped to the key
//! (`namespace/name`) of the object that owns it, and workers reconcile
//! keys idempotently from the caches. A reconcile never asks *why* it runs,
//! so a missed or duplicated event, a restart or a new leader all converge
//! to the same state.
//!
//! Shared here: the [`WorkQueue`] (deduplicated keys, delayed requeues,
//! back-off), [`run_workers`], [`Expectations`] and the ownership and pod
//! helpers both the ReplicaSet and the Deployment controller need, on
//! typed k8s-openapi objects.
//!
//! A poisoned lock here means a worker panicked while holding it, which is
//! a bug: every lock is taken with `expect`, so the bug fails loudly
//! instead of silently dropping keys or reporting expectations satisfied.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::{Debug, Display};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as TypedLabelSelector, ObjectMeta, OwnerReference,
};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::cache;
use crate::client::is_status;
use crate::selector::LabelSelector;

/// What a reconcile asks of the queue: `Ok(None)` done, `Ok(Some(d))`
/// look again after `d` (e.g. when a pod turns available), `Err` retry
/// with back-off (a 409 is retried at once, the cache was just stale).
pub type Reconciled<E = kube::Error> = Result<Option<Duration>, E>;

/// An error a reconcile fails with, as far as the queue cares.
pub trait ReconcileError: Display + Send + 'static {
    /// The write lost a race with a newer version (HTTP 409).
    fn is_conflict(&self) -> bool;
}

impl ReconcileError for kube::Error {
    fn is_conflict(&self) -> bool {
        is_status(self, 409)
    }
}

/// First retry delay after a failure; doubles per failure up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A conflict means our cache lagged a write; the event that catches it up
/// re-queues the key anyway, so this is only a safety net.
const CONFLICT_RETRY: Duration = Duration::from_millis(20);
/// How often every object is reconciled even without events (client-go's
/// resync), so nothing stays wrong forever after a lost update.
pub const RESYNC: Duration = Duration::from_secs(30);

/// client-go's rate-limited work queue: a key is queued at most once, is
/// never handed to two workers at the same time, and a key added while
/// it is being processed is queued again when its worker finishes.
#[derive(Clone, Default)]
pub struct WorkQueue {
    inner: Arc<QueueInner>,
}

#[derive(Default)]
struct QueueInner {
    state: Mutex<QueueState>,
    notify: Notify,
}

#[derive(Default)]
struct QueueState {
    queue: VecDeque<String>,
    /// Keys waiting to be processed (queued, or re-added while processing).
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
}

impl WorkQueue {
    pub fn new() -> WorkQueue {
        WorkQueue::default()
    }

    fn state(&self) -> MutexGuard<'_, QueueState> {
        self.inner
            .state
            .lock()
            .expect("the work queue lock is never poisoned")
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: &str) {
        let mut s = self.state();
        if !s.dirty.insert(key.to_string()) || s.processing.contains(key) {
            return;
        }
        s.queue.push_back(key.to_string());
        drop(s);
        self.inner.notify.notify_one();
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: &str, delay: Duration) {
        let (q, key) = (self.clone(), key.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(&key);
        });
    }

    /// Waits for the next key; the caller must call [`WorkQueue::done`].
    pub async fn next(&self) -> String {
        loop {
            let notified = self.inner.notify.notified();
            {
                let mut s = self.state();
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    if !s.queue.is_empty() {
                        // Pass the wake-up on: another worker may be idle.
                        self.inner.notify.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    /// Ends processing of `key`, queueing it again if it was re-added meanwhile.
    pub fn done(&self, key: &str) {
        let mut s = self.state();
        let was_processing = s.processing.remove(key);
        assert!(was_processing, "done({key}) without next()");
        if s.dirty.contains(key) {
            s.queue.push_back(key.to_string());
            drop(s);
            self.inner.notify.notify_one();
        }
    }

    /// Queues `key` again after an exponentially growing delay.
    pub fn retry(&self, key: &str) {
        let n = {
            let mut s = self.state();
            let n = s.failures.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let factor = 1u32 << (n.saturating_sub(1)).min(16);
        self.add_after(key, (BASE_BACKOFF * factor).min(MAX_BACKOFF));
    }

    /// Forgets the failures of `key` (it reconciled).
    pub fn forget(&self, key: &str) {
        self.state().failures.remove(key);
    }

    /// Applies a reconcile's outcome and ends processing of `key`.
    pub fn finish<E: ReconcileError>(&self, key: &str, outcome: Reconciled<E>) {
        self.done(key);
        match outcome {
            Ok(after) => {
                self.forget(key);
                if let Some(d) = after {
                    self.add_after(key, d);
                }
            }
            Err(e) if e.is_conflict() => self.add_after(key, CONFLICT_RETRY),
            Err(e) => {
                tracing::debug!(%key, error = %e, "reconcile failed; retrying");
                self.retry(key);
            }
        }
    }

    /// Keys queued and not yet handed out.
    pub fn len(&self) -> usize {
        self.state().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs `workers` concurrent workers reconciling keys from `queue` forever.
/// Dropping the future (leadership lost) aborts them all.
pub async fn run_workers<F, Fut, E>(queue: WorkQueue, workers: usize, reconcile: F)
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Reconciled<E>> + Send + 'static,
    E: ReconcileError,
{
    let mut set = JoinSet::new();
    for _ in 0..workers.max(1) {
        let (q, f) = (queue.clone(), reconcile.clone());
        set.spawn(async move {
            loop {
                let key = q.next().await;
                let outcome = f(key.clone()).await;
                q.finish(&key, outcome);
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Queues every object of `informer` (a resync).
pub fn enqueue_all<K>(queue: &WorkQueue, informer: &cache::Informer<K>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    for obj in informer.list() {
        queue.add(&cache::key_of(obj.as_ref()));
    }
}

// ---- expectations ---------------------------------------------------------

/// How long an unobserved create or delete blocks further ones (Kubernetes
/// uses 5 minutes; a lost watch event should not stall a workload that long).
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Kubernetes' controller expectations, by name instead of by count: the
/// pods a controller created or deleted that its informer has not shown
/// yet. While any is pending the controller must not create or delete more,
/// or a reconcile on a stale cache would create the same replicas twice.
#[derive(Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Instant,
}

impl Expectations {
    fn pending(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        self.pending
            .lock()
            .expect("the expectations lock is never poisoned")
    }

    fn with(&self, key: &str, f: impl FnOnce(&mut Pending)) {
        let mut m = self.pending();
        let p = m.entry(key.to_string()).or_insert_with(|| Pending {
            creates: HashSet::new(),
            deletes: HashSet::new(),
            since: Instant::now(),
        });
        p.since = Instant::now();
        f(p);
    }

    /// `owner` created the object `name`.
    pub fn expect_create(&self, owner: &str, name: &str) {
        self.with(owner, |p| {
            p.creates.insert(name.to_string());
        });
    }

    /// `owner` deleted the object `name`.
    pub fn expect_delete(&self, owner: &str, name: &str) {
        self.with(owner, |p| {
            p.deletes.insert(name.to_string());
        });
    }

    /// The informer showed `name`; `gone` when deleted or terminating. Only
    /// that satisfies a delete: an older update may still arrive after it.
    pub fn observe(&self, owner: &str, name: &str, gone: bool) {
        let mut m = self.pending();
        if let Some(p) = m.get_mut(owner) {
            p.creates.remove(name);
            if gone {
                p.deletes.remove(name);
            }
        }
    }

    /// True when nothing is pending (or what is pending timed out).
    pub fn satisfied(&self, owner: &str) -> bool {
        let mut m = self.pending();
        let done = match m.get(owner) {
            None => return true,
            Some(p) => {
                (p.creates.is_empty() && p.deletes.is_empty())
                    || p.since.elapsed() > EXPECTATION_TIMEOUT
            }
        };
        if done {
            m.remove(owner);
        }
        done
    }

    /// Drops what is pending for `owner` (it was deleted).
    pub fn forget(&self, owner: &str) {
        self.pending().remove(owner);
    }
}

// ---- metadata -------------------------------------------------------------

/// `metadata.name` ("" when absent, which the API never stores).
pub fn name(m: &ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or_default()
}

/// `metadata.namespace` ("" when cluster-scoped).
pub fn namespace(m: &ObjectMeta) -> &str {
    m.namespace.as_deref().unwrap_or_default()
}

/// `metadata.uid` ("" when absent, which the API never stores).
pub fn uid(m: &ObjectMeta) -> &str {
    m.uid.as_deref().unwrap_or_default()
}

/// The object is terminating (`deletionTimestamp` set).
pub fn is_deleting(m: &ObjectMeta) -> bool {
    m.deletion_timestamp.is_some()
}

/// `metadata.creationTimestamp` in Unix seconds.
pub fn created_s(m: &ObjectMeta) -> Option<i64> {
    m.creation_timestamp.as_ref().map(|t| t.0.as_second())
}

// ---- ownership ------------------------------------------------------------

/// The ownerReference with `controller: true`, if any.
pub fn controller_ref(m: &ObjectMeta) -> Option<&OwnerReference> {
    m.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The key of the controller of the object with metadata `m` when that
/// controller is of `kind` (controllers are in their dependents' namespace).
pub fn controller_key(m: &ObjectMeta, kind: &str) -> Option<String> {
    let r = controller_ref(m).filter(|r| r.kind == kind)?;
    Some(format!("{}/{}", namespace(m), r.name))
}

/// A controller ownerReference to `owner` that blocks its foreground
/// deletion (what a ReplicaSet sets on its pods, a Deployment on its
/// ReplicaSets).
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let m = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: name(m).to_string(),
        uid: uid(m).to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A controller's selector; `None` when invalid or empty, which selects
/// nothing for a controller (Kubernetes refuses to manage "all pods").
pub fn selector_of(s: &TypedLabelSelector) -> Option<LabelSelector> {
    LabelSelector::from_typed(s).ok().filter(|s| !s.is_empty())
}

/// Objects of `candidates` (in `owner`'s namespace) that `owner` controls
/// after adoption and release (client-go's ControllerRefManager): orphans
/// matching the selector are adopted, owned objects that stopped matching
/// are released. Both are merge patches pinned to the object's
/// resourceVersion and uid, so a concurrent change makes them 409 instead
/// of overwriting it.
pub async fn claim<O, K>(
    client: &kube::Client,
    owner: &O,
    selector: &LabelSelector,
    candidates: Vec<Arc<K>>,
) -> kube::Result<Vec<Arc<K>>>
where
    O: Resource<DynamicType = ()>,
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let owner_meta = owner.meta();
    let owner_uid = uid(owner_meta);
    if owner_uid.is_empty() {
        // Not from the API (it always sets a uid): nothing can point at it.
        return Ok(Vec::new());
    }
    let owner_deleting = is_deleting(owner_meta);
    let mut mine = Vec::with_capacity(candidates.len());
    for obj in candidates {
        let m = obj.meta();
        assert_eq!(
            namespace(m),
            namespace(owner_meta),
            "claim across namespaces"
        );
        let matches = selector.matches_labels(m.labels.as_ref());
        match controller_ref(m) {
            Some(r) if r.uid == owner_uid => {
                if matches {
                    mine.push(obj);
                } else if !owner_deleting {
                    patch_owner_refs(client, obj.as_ref(), owner_uid, None).await?;
                }
            }
            Some(_) => {}
            None if matches && !owner_deleting && !is_deleting(m) => {
                let r = owner_ref(owner);
                if let Some(adopted) =
                    patch_owner_refs(client, obj.as_ref(), owner_uid, Some(r)).await?
                {
                    mine.push(Arc::new(adopted));
                }
            }
            None => {}
        }
    }
    Ok(mine)
}

/// Replaces the reference to `owner_uid` in `obj`'s ownerReferences by
/// `new` (or removes it), pinned to the version and uid of `obj`. `None`
/// when the object is gone.
pub async fn patch_owner_refs<K>(
    client: &kube::Client,
    obj: &K,
    owner_uid: &str,
    new: Option<OwnerReference>,
) -> kube::Result<Option<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let m = obj.meta();
    let mut refs: Vec<&OwnerReference> = m
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .collect();
    refs.extend(new.as_ref());
    // `null` removes the field; an empty list would be stored as one.
    let patch = json!({"metadata": {
        "ownerReferences": if refs.is_empty() { Value::Null } else { json!(refs) },
        "resourceVersion": m.resource_version,
        "uid": m.uid,
    }});
    let api: Api<K> = Api::namespaced(client.clone(), namespace(m));
    match api
        .patch(name(m), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(patched) => Ok(Some(patched)),
        Err(e) if is_status(&e, 404) => Ok(None),
        Err(e) => Err(e),
    }
}

// ---- pods -----------------------------------------------------------------

/// `status.phase`, if reported.
pub fn pod_phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// Counts toward replicas: not terminating and not finished.
pub fn pod_is_active(pod: &Pod) -> bool {
    !is_deleting(&pod.metadata) && !matches!(pod_phase(pod), Some("Succeeded" | "Failed"))
}

fn ready_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The pod's Ready condition is True.
pub fn pod_is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod last turned Ready (None when not ready).
pub fn pod_ready_since(pod: &Pod) -> Option<Timestamp> {
    let c = ready_condition(pod).filter(|c| c.status == "True")?;
    c.last_transition_time.as_ref().map(|t| t.0)
}

/// How long until a ready pod counts as available (`Some(0)` when it
/// already does, `None` when it is not ready). A ready pod without a
/// transition time counts as available at once.
pub fn pod_available_in(pod: &Pod, min_ready_s: i64, now: Timestamp) -> Option<Duration> {
    if !pod_is_ready(pod) {
        return None;
    }
    if min_ready_s <= 0 {
        return Some(Duration::ZERO);
    }
    let Some(since) = pod_ready_since(pod) else {
        return Some(Duration::ZERO);
    };
    let ready_for_s = now.as_second() - since.as_second();
    Some(Duration::from_secs(
        (min_ready_s - ready_for_s).max(0).unsigned_abs(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[tokio::test]
    async fn queue_dedups_and_requeues_keys_added_while_processing() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.next().await;
        assert_eq!(a, "a");
        q.add("a"); // while processing: held back, not handed out twice
        assert_eq!(q.next().await, "b");
        assert!(q.is_empty());
        q.done("a");
        assert_eq!(q.next().await, "a");
    }

    #[test]
    fn expectations_need_a_gone_event_for_deletes() {
        let e = Expectations::default();
        e.expect_create("ns/rs", "p1");
        e.expect_delete("ns/rs", "p2");
        assert!(!e.satisfied("ns/rs"));
        e.observe("ns/rs", "p1", false);
        e.observe("ns/rs", "p2", false);
        assert!(!e.satisfied("ns/rs"));
        e.observe("ns/rs", "p2", true);
        assert!(e.satisfied("ns/rs"));
    }

    #[test]
    #[should_panic(expected = "the expectations lock is never poisoned")]
    fn a_poisoned_expectations_lock_fails_loudly() {
        let e = Arc::new(Expectations::default());
        let e2 = e.clone();
        let _ = std::thread::spawn(move || {
            let _held = e2.pending();
            panic!("a worker bug while holding the lock");
        })
        .join();
        e.satisfied("ns/rs");
    }

    fn ready_pod(since: Option<Timestamp>) -> Pod {
        Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: since.map(Time),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let now = Timestamp::now();
        let t = Timestamp::from_second(now.as_second() - 3).unwrap_or(now);
        let pod = ready_pod(Some(t));
        assert_eq!(pod_available_in(&pod, 0, now), Some(Duration::ZERO));
        assert_eq!(
            pod_available_in(&pod, 10, now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(pod_available_in(&Pod::default(), 0, now), None);
        assert_eq!(
            pod_available_in(&ready_pod(None), 10, now),
            Some(Duration::ZERO)
        );
    }

    fn reference(kind: &str, name: &str, uid: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller,
            block_owner_deletion: None,
        }
    }

    #[test]
    fn controller_keys() {
        let m = ObjectMeta {
            namespace: Some("d".into()),
            owner_references: Some(vec![
                reference("ReplicaSet", "x", "1", None),
                reference("ReplicaSet", "web", "2", Some(true)),
            ]),
            ..Default::default()
        };
        assert_eq!(controller_key(&m, "ReplicaSet").as_deref(), Some("d/web"));
        assert_eq!(controller_key(&m, "Deployment"), None);
        assert_eq!(controller_key(&ObjectMeta::default(), "ReplicaSet"), None);
    }

    #[test]
    fn owner_refs_name_the_type_and_block_deletion() {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let r = owner_ref(&rs);
        assert_eq!(
            (
                r.api_version.as_str(),
                r.kind.as_str(),
                r.name.as_str(),
                r.uid.as_str()
            ),
            ("apps/v1", "ReplicaSet", "web", "u")
        );
        assert_eq!(
            (r.controller, r.block_owner_deletion),
            (Some(true), Some(true))
        );
    }
}
