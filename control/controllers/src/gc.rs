//! The garbage collector: objects whose owners are gone are deleted, and
//! the `foregroundDeletion` and `orphan` finalizers that DELETE's
//! `propagationPolicy` leaves on an owner are carried out.
//!
//! Shape (Kubernetes' GC, simplified): a metadata-only cache per resource
//! that can own or be owned feeds an ownership graph (owner uid →
//! dependents); every change queues the objects it may affect, and a
//! reconcile decides from the object alone:
//! - a dependent whose owners are all gone (or all waiting in foreground
//!   deletion) is deleted, in the foreground when it owns objects itself;
//!   one that still has a live owner only loses the references to the
//!   dead ones;
//! - an owner with `orphan` has the reference to it stripped from every
//!   dependent, then loses the finalizer;
//! - an owner with `foregroundDeletion` has its dependents deleted and
//!   loses the finalizer once no dependent with `blockOwnerDeletion` is
//!   left.
//!
//! The caches hold `PartialObjectMeta`: the collector reads nothing but
//! metadata, so it asks for metadata only (kube sends `Accept:
//! …;as=PartialObjectMetadata` for lists, watches, GETs and patches) and
//! keeps no spec or status of any object. keel's API server ignores `as=`
//! and answers with whole objects, which are cut down to their metadata as
//! they are read; a Kubernetes API server sends metadata alone. These
//! caches are the collector's own: no other loop reads every kind, nor
//! metadata alone.
//!
//! Guarantee: nothing is deleted on the cache's word alone. An owner
//! missing from the cache is looked up with a GET (a linearizable read)
//! before its dependent goes; the dependent is read too, and its delete
//! carries the uid and resourceVersion that were judged as preconditions,
//! so neither an object recreated under the same name nor one whose
//! reference was just stripped (orphaned) is collected by mistake. Every
//! metadata write is pinned to the uid and resourceVersion judged. An
//! owner of a kind keel does not serve is treated as alive: what cannot be
//! checked is kept.

mod graph;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::watcher;
use serde::Serialize;

use crate::cache::{key_of, next_change, split_key, Caches, Change, Informer};
use crate::client::{api_resource, is_status};
use crate::reconcile::{run_workers, WorkQueue, RESYNC};
use crate::resources::{ResourceInfo, RESOURCES};
use graph::{uid_of, Graph, ObjRef};

const WORKERS: usize = 8;
/// How often an owner in foreground deletion looks at its dependents again
/// even without events.
const FOREGROUND_RECHECK: Duration = Duration::from_secs(1);
/// How soon an object that changed while it was being judged is judged again.
const STALE_RECHECK: Duration = Duration::from_millis(200);
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";
pub const FINALIZER_ORPHAN: &str = "orphan";

/// What the collector caches of an object: its metadata alone.
type Meta = PartialObjectMeta<DynamicObject>;

/// A reconcile's outcome before the work queue sees it: `Some(d)` looks
/// again after `d`.
type Judged = Result<Option<Duration>, kube::Error>;

/// One resource the collector watches.
struct Watched {
    info: &'static ResourceInfo,
    api_resource: ApiResource,
    cache: Informer<Meta>,
}

impl Watched {
    /// Starts the metadata cache of `info` (every namespace), listing and
    /// watching through `client`.
    fn start(client: &kube::Client, info: &'static ResourceInfo) -> Watched {
        let api_resource = api_resource(info);
        let api: Api<Meta> = Api::all_with(client.clone(), &api_resource);
        let cache = Informer::spawn_with(api, api_resource.clone(), watcher::Config::default());
        Watched {
            info,
            api_resource,
            cache,
        }
    }
}

/// What became of one owner of a dependent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerState {
    /// Exists and is not waiting for its dependents.
    Alive,
    /// Gone, or replaced by another object of the same name.
    Gone,
    /// Being deleted in the foreground: waits for its dependents.
    Waiting,
}

/// The state of the owner with uid `uid`, given what is stored under its
/// name (`None`: nothing).
fn owner_state_of(stored: Option<&ObjectMeta>, uid: &str) -> OwnerState {
    match stored {
        None => OwnerState::Gone,
        Some(o) if uid_of(o) != uid => OwnerState::Gone,
        Some(o) if is_deleting(o) && has_finalizer(o, FINALIZER_FOREGROUND) => OwnerState::Waiting,
        Some(_) => OwnerState::Alive,
    }
}

struct Gc {
    /// Writes (and the GETs that confirm a judgement) go through this
    /// client, named `generic-garbage-collector`.
    client: kube::Client,
    watched: Vec<Watched>,
    graph: Mutex<Graph>,
    queue: WorkQueue,
}

/// Resources the collector watches: everything served except events,
/// which own nothing, are owned by nothing and churn the most.
fn collectable() -> Vec<&'static ResourceInfo> {
    RESOURCES.iter().filter(|r| r.kind != "Event").collect()
}

/// Runs until aborted (leadership lost). The metadata caches list and
/// watch through `caches`' client; writes go through `client`.
pub async fn run(client: kube::Client, caches: Caches) {
    let watched: Vec<Watched> = collectable()
        .into_iter()
        .map(|info| Watched::start(caches.client(), info))
        .collect();
    let gc = Arc::new(Gc {
        client,
        watched,
        graph: Mutex::new(Graph::default()),
        queue: WorkQueue::new(),
    });
    let mut feeds = tokio::task::JoinSet::new();
    for res in 0..gc.watched.len() {
        let mut rx = gc.watched[res].cache.subscribe();
        let gc = gc.clone();
        feeds.spawn(async move {
            while let Some(change) = next_change(&mut rx).await {
                gc.observe(res, change);
            }
        });
    }
    for w in &gc.watched {
        w.cache.wait_synced().await;
    }
    for res in 0..gc.watched.len() {
        gc.resync(res);
    }
    let resync = {
        let gc = gc.clone();
        async move {
            loop {
                tokio::time::sleep(RESYNC).await;
                (0..gc.watched.len()).for_each(|res| gc.resync(res));
            }
        }
    };
    let workers = {
        let gc = gc.clone();
        run_workers(gc.queue.clone(), WORKERS, move |key| {
            let gc = gc.clone();
            async move { gc.reconcile(&key).await }
        })
    };
    tokio::join!(resync, workers);
}

fn owner_refs(m: &ObjectMeta) -> &[OwnerReference] {
    m.owner_references.as_deref().unwrap_or_default()
}

fn has_finalizer(m: &ObjectMeta, f: &str) -> bool {
    m.finalizers.iter().flatten().any(|x| x == f)
}

fn is_deleting(m: &ObjectMeta) -> bool {
    m.deletion_timestamp.is_some()
}

/// Something for the collector to do about the object itself.
fn interesting(m: &ObjectMeta) -> bool {
    if is_deleting(m) {
        return has_finalizer(m, FINALIZER_ORPHAN) || has_finalizer(m, FINALIZER_FOREGROUND);
    }
    !owner_refs(m).is_empty()
}

/// One metadata list the collector rewrites.
#[derive(Debug)]
enum MetaEdit {
    Finalizers(Vec<String>),
    OwnerReferences(Vec<OwnerReference>),
}

/// A JSON merge patch of `metadata`, pinned to the uid and resourceVersion
/// judged: a concurrent change makes it 409 and the object is judged again.
#[derive(Debug, Serialize)]
struct MetadataPatch<'a> {
    metadata: PinnedMetadata<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PinnedMetadata<'a> {
    uid: &'a str,
    resource_version: &'a str,
    /// `Some(None)` is a merge patch `null`: the list goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    finalizers: Option<Option<Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_references: Option<Option<Vec<OwnerReference>>>,
}

/// A list for a merge patch: `None` (`null`) when empty, so the field goes.
fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    Some(v).filter(|v| !v.is_empty())
}

impl<'a> MetadataPatch<'a> {
    /// `None` when `judged` lacks the uid or resourceVersion to pin to
    /// (the API always sets both).
    fn new(judged: &'a ObjectMeta, edit: MetaEdit) -> Option<MetadataPatch<'a>> {
        let mut m = PinnedMetadata {
            uid: judged.uid.as_deref()?,
            resource_version: judged.resource_version.as_deref()?,
            finalizers: None,
            owner_references: None,
        };
        match edit {
            MetaEdit::Finalizers(f) => m.finalizers = Some(non_empty(f)),
            MetaEdit::OwnerReferences(r) => m.owner_references = Some(non_empty(r)),
        }
        Some(MetadataPatch { metadata: m })
    }
}

impl Gc {
    fn graph(&self) -> MutexGuard<'_, Graph> {
        self.graph
            .lock()
            .expect("the garbage collector's graph lock is never poisoned")
    }

    fn enqueue(&self, r: &ObjRef) {
        self.queue.add(&r.queue_key());
    }

    /// Updates the graph from one cache change and queues what it affects.
    fn observe(&self, res: usize, change: Change<Meta>) {
        match change {
            Change::Applied(obj) => {
                let r = ObjRef {
                    res,
                    key: key_of(obj.as_ref()),
                };
                let replaced = self.graph().apply(&r, &obj.metadata);
                if let Some(old) = replaced {
                    // The old object is gone: its dependents may be orphans.
                    let deps = self.graph().dependents_of(&old);
                    deps.iter().for_each(|d| self.enqueue(d));
                }
                if interesting(&obj.metadata) {
                    self.enqueue(&r);
                }
            }
            Change::Deleted(obj) => {
                let r = ObjRef {
                    res,
                    key: key_of(obj.as_ref()),
                };
                // Owners may be waiting for this object; dependents may be orphans now.
                let affected = {
                    let mut g = self.graph();
                    let mut affected = g.owners_of(&r);
                    g.remove(&r);
                    affected.extend(g.dependents_of(uid_of(&obj.metadata)));
                    affected
                };
                affected.iter().for_each(|a| self.enqueue(a));
            }
            Change::Resync => self.resync(res),
        }
    }

    /// Rebuilds the graph's view of one resource from its cache and queues
    /// every object that needs a look.
    fn resync(&self, res: usize) {
        let mut g = self.graph();
        // Listed under the graph lock, so a change a feed task applies
        // meanwhile cannot be overwritten by this older snapshot.
        let objs = self.watched[res].cache.list();
        let live: HashSet<String> = objs.iter().map(|o| key_of(o.as_ref())).collect();
        let mut orphaned = Vec::new();
        for r in g.keys_of(res) {
            if !live.contains(&r.key) {
                orphaned.extend(g.remove(&r));
            }
        }
        for obj in &objs {
            let r = ObjRef {
                res,
                key: key_of(obj.as_ref()),
            };
            orphaned.extend(g.apply(&r, &obj.metadata));
        }
        let deps: Vec<ObjRef> = orphaned.iter().flat_map(|u| g.dependents_of(u)).collect();
        drop(g);
        deps.iter().for_each(|d| self.enqueue(d));
        for obj in objs.iter().filter(|o| interesting(&o.metadata)) {
            self.enqueue(&ObjRef {
                res,
                key: key_of(obj.as_ref()),
            });
        }
    }

    fn cached(&self, r: &ObjRef) -> Option<Arc<Meta>> {
        self.watched.get(r.res)?.cache.get_key(&r.key)
    }

    /// The API of resource `res`, in `namespace` when it is namespaced.
    fn api(&self, res: usize, namespace: Option<&str>) -> Api<Meta> {
        let w = &self.watched[res];
        match namespace.filter(|_| w.info.namespaced) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &w.api_resource),
            None => Api::all_with(self.client.clone(), &w.api_resource),
        }
    }

    async fn reconcile(&self, qkey: &str) -> Judged {
        let Some(r) = ObjRef::parse(qkey) else {
            return Ok(None);
        };
        let Some(obj) = self.cached(&r) else {
            return Ok(None); // gone: its Deleted event queued what it affects
        };
        let m = &obj.metadata;
        if m.uid.is_none() || m.resource_version.is_none() {
            // Nothing can be pinned to it; the API always sets both.
            tracing::warn!(object = %r.key, "cached object without uid or resourceVersion");
            return Ok(None);
        }
        if is_deleting(m) {
            if has_finalizer(m, FINALIZER_ORPHAN) {
                return self.orphan_dependents(&r, m).await;
            }
            if has_finalizer(m, FINALIZER_FOREGROUND) {
                return self.delete_dependents(&r, m).await;
            }
            return Ok(None);
        }
        if owner_refs(m).is_empty() {
            return Ok(None);
        }
        self.collect_if_orphaned(&r, m).await
    }

    /// Dependents that still reference `owner_uid`, from the caches.
    fn live_dependents(&self, owner_uid: &str) -> Vec<(ObjRef, Arc<Meta>)> {
        let refs = self.graph().dependents_of(owner_uid);
        refs.into_iter()
            .filter_map(|r| self.cached(&r).map(|o| (r, o)))
            .filter(|(_, o)| owner_refs(&o.metadata).iter().any(|x| x.uid == owner_uid))
            .collect()
    }

    /// `orphan`: strip the reference from every dependent, then the finalizer.
    async fn orphan_dependents(&self, r: &ObjRef, owner: &ObjectMeta) -> Judged {
        let uid = uid_of(owner);
        for (dr, dep) in self.live_dependents(uid) {
            let keep: Vec<OwnerReference> = owner_refs(&dep.metadata)
                .iter()
                .filter(|o| o.uid != uid)
                .cloned()
                .collect();
            self.patch_metadata(&dr, &dep.metadata, MetaEdit::OwnerReferences(keep))
                .await?;
        }
        self.remove_finalizer(r, owner, FINALIZER_ORPHAN).await
    }

    /// `foregroundDeletion`: delete the dependents (their own reconcile
    /// sees this owner waiting and deletes them), and drop the finalizer
    /// once none that blocks the owner's deletion is left.
    async fn delete_dependents(&self, r: &ObjRef, owner: &ObjectMeta) -> Judged {
        let uid = uid_of(owner);
        let deps = self.live_dependents(uid);
        let blocking = deps.iter().any(|(_, d)| {
            owner_refs(&d.metadata)
                .iter()
                .any(|x| x.uid == uid && x.block_owner_deletion == Some(true))
        });
        for (dr, d) in &deps {
            if !is_deleting(&d.metadata) {
                self.enqueue(dr);
            }
        }
        if blocking {
            return Ok(Some(FOREGROUND_RECHECK));
        }
        self.remove_finalizer(r, owner, FINALIZER_FOREGROUND).await
    }

    /// Removes one finalizer, pinned to the cached version; the API
    /// deletes the object when it was the last one.
    async fn remove_finalizer(&self, r: &ObjRef, obj: &ObjectMeta, finalizer: &str) -> Judged {
        let rest: Vec<String> = obj
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != finalizer)
            .cloned()
            .collect();
        self.patch_metadata(r, obj, MetaEdit::Finalizers(rest))
            .await
    }

    /// Rewrites one metadata list of the object `r`, pinned to the version
    /// judged (`judged`). An object already gone needs nothing.
    async fn patch_metadata(&self, r: &ObjRef, judged: &ObjectMeta, edit: MetaEdit) -> Judged {
        let Some(patch) = MetadataPatch::new(judged, edit) else {
            tracing::warn!(object = %r.key, "no uid or resourceVersion to pin a write to");
            return Ok(None);
        };
        let (ns, name) = split_key(&r.key);
        let params = PatchParams::default();
        match self
            .api(r.res, ns)
            .patch(name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes `dep` when none of its owners is alive; otherwise drops the
    /// references to owners that are gone or waiting for it.
    async fn collect_if_orphaned(&self, r: &ObjRef, dep: &ObjectMeta) -> Judged {
        let mut alive = false;
        let mut dead: Vec<&str> = Vec::new();
        let mut waiting = false;
        for o in owner_refs(dep) {
            match self.owner_state(r, o).await? {
                OwnerState::Alive => alive = true,
                OwnerState::Gone => dead.push(&o.uid),
                OwnerState::Waiting => {
                    waiting = true;
                    dead.push(&o.uid);
                }
            }
        }
        if dead.is_empty() {
            return Ok(None);
        }
        // Judged from the cache; act only if the stored object is that
        // same version (an orphaning may just have stripped a reference
        // the cache still shows).
        let (ns, name) = split_key(&r.key);
        match self.api(r.res, ns).get_opt(name).await? {
            None => return Ok(None),
            Some(live) if live.metadata.uid != dep.uid => return Ok(None),
            Some(live) if live.metadata.resource_version != dep.resource_version => {
                return Ok(Some(STALE_RECHECK)); // its newer version queues it too
            }
            Some(_) => {}
        }
        if alive {
            return self.drop_owner_refs(r, dep, &dead).await;
        }
        let owns_others = !self.graph().dependents_of(uid_of(dep)).is_empty();
        let policy = match waiting && owns_others {
            true => PropagationPolicy::Foreground,
            false => PropagationPolicy::Background,
        };
        tracing::debug!(object = %r.key, resource = self.watched[r.res].info.resource, ?policy,
                        "garbage collecting an object whose owners are gone");
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: dep.uid.clone(),
                resource_version: dep.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match self.api(r.res, ns).delete(name, &params).await {
            Ok(_) => Ok(None),
            Err(e) if is_status(&e, 404) => Ok(None),
            // Changed (or replaced) since it was judged: judge it again.
            Err(e) if is_status(&e, 409) => Ok(Some(STALE_RECHECK)),
            Err(e) => Err(e),
        }
    }

    async fn drop_owner_refs(&self, r: &ObjRef, dep: &ObjectMeta, dead_uids: &[&str]) -> Judged {
        let keep: Vec<OwnerReference> = owner_refs(dep)
            .iter()
            .filter(|o| !dead_uids.contains(&o.uid.as_str()))
            .cloned()
            .collect();
        self.patch_metadata(r, dep, MetaEdit::OwnerReferences(keep))
            .await
    }

    /// Judges one ownerReference of the dependent `dep`: from the cache
    /// when it shows the owner, else from a GET, so a lagging cache never
    /// condemns a dependent.
    async fn owner_state(
        &self,
        dep: &ObjRef,
        owner_ref: &OwnerReference,
    ) -> Result<OwnerState, kube::Error> {
        let Some(res) = self.resource_of(owner_ref) else {
            return Ok(OwnerState::Alive);
        };
        let (dep_ns, _) = split_key(&dep.key);
        let ns = match (self.watched[res].info.namespaced, dep_ns) {
            // A cluster-scoped object cannot be owned by a namespaced one;
            // Kubernetes reports it and leaves it alone, and so does keel.
            (true, None) => return Ok(OwnerState::Alive),
            (true, Some(ns)) => Some(ns),
            (false, _) => None,
        };
        let name = owner_ref.name.as_str();
        if name.is_empty() {
            return Ok(OwnerState::Alive); // names nothing that can be checked
        }
        let cached = self.watched[res].cache.get(ns, name);
        if let Some(o) = cached.filter(|o| uid_of(&o.metadata) == owner_ref.uid) {
            return Ok(owner_state_of(Some(&o.metadata), &owner_ref.uid));
        }
        let stored = self.api(res, ns).get_opt(name).await?;
        Ok(owner_state_of(
            stored.as_ref().map(|o| &o.metadata),
            &owner_ref.uid,
        ))
    }

    /// The watched resource of an ownerReference's group and kind. The
    /// version does not matter (Kubernetes maps a kind in any served
    /// version of its group to the same objects): a reference written as
    /// `apps/v1beta1` Deployment names an `apps/v1` Deployment.
    fn resource_of(&self, owner_ref: &OwnerReference) -> Option<usize> {
        let group = owner_ref.api_version.split_once('/').map_or("", |(g, _)| g);
        self.watched
            .iter()
            .position(|w| w.info.group == group && w.info.kind == owner_ref.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::graph::tests::meta;
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn deleting(mut m: ObjectMeta, finalizers: &[&str]) -> ObjectMeta {
        m.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        m.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
        m
    }

    #[test]
    fn only_owned_or_finalizing_objects_need_a_look() {
        assert!(!interesting(&meta("a", &[])));
        assert!(interesting(&meta("a", &["o"])));
        assert!(interesting(&deleting(meta("a", &[]), &["orphan"])));
        assert!(!interesting(&deleting(meta("a", &[]), &["example.com/x"])));
    }

    #[test]
    fn owner_states() {
        assert_eq!(owner_state_of(None, "o"), OwnerState::Gone);
        let o = meta("o", &[]);
        assert_eq!(owner_state_of(Some(&o), "o"), OwnerState::Alive);
        assert_eq!(owner_state_of(Some(&o), "other"), OwnerState::Gone);
        let fg = deleting(meta("o", &[]), &[FINALIZER_FOREGROUND]);
        assert_eq!(owner_state_of(Some(&fg), "o"), OwnerState::Waiting);
        let orphaning = deleting(meta("o", &[]), &[FINALIZER_ORPHAN]);
        assert_eq!(owner_state_of(Some(&orphaning), "o"), OwnerState::Alive);
    }

    #[test]
    fn metadata_patches_are_pinned_and_clear_empty_lists() {
        let m = meta("u", &["o1", "o2"]);
        let p = MetadataPatch::new(&m, MetaEdit::Finalizers(vec![])).unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"metadata": {"uid": "u", "resourceVersion": "7", "finalizers": null}})
        );
        let keep = m.owner_references.clone().unwrap()[1..].to_vec();
        let p = MetadataPatch::new(&m, MetaEdit::OwnerReferences(keep)).unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"metadata": {"uid": "u", "resourceVersion": "7", "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "name-of-o2", "uid": "o2"}]}})
        );
        let unpinned = ObjectMeta {
            resource_version: None,
            ..m
        };
        assert!(MetadataPatch::new(&unpinned, MetaEdit::Finalizers(vec![])).is_none());
    }

    #[test]
    fn every_watched_resource_has_its_registry_row_as_dynamic_type() {
        let rows = collectable();
        assert!(rows.iter().all(|r| r.kind != "Event"));
        let deploy = rows.iter().find(|r| r.kind == "Deployment").unwrap();
        let ar = api_resource(deploy);
        assert_eq!(
            (
                ar.group.as_str(),
                ar.version.as_str(),
                ar.api_version.as_str(),
                ar.plural.as_str()
            ),
            ("apps", "v1", "apps/v1", "deployments")
        );
    }
}
