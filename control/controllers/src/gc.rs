//! The garbage collector: objects whose owners are gone are deleted, and
//! the `foregroundDeletion` and `orphan` finalizers that DELETE's
//! `propagationPolicy` leaves on an owner are carried out.
//!
//! Shape (Kubernetes' GC, simplified): one informer per resource that can
//! own or be owned feeds an ownership graph (owner uid → dependents);
//! every change queues the objects it may affect, and a reconcile decides
//! from the object alone:
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
//! Guarantee: nothing is deleted on the cache's word alone. An owner
//! missing from the cache is looked up with a GET (a linearizable read)
//! before its dependent goes; the dependent is read too, and its delete
//! carries the uid and resourceVersion that were judged as preconditions,
//! so neither an object recreated under the same name nor one whose
//! reference was just stripped (orphaned) is collected by mistake. An owner of a kind keel does not serve is
//! treated as alive: what cannot be checked is kept.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::client::{path, Client, ClientResult};
use crate::informer::{key_of, next_change, Change, Informer};
use crate::meta;
use crate::reconcile::{run_workers, Reconciled, WorkQueue, RESYNC};
use crate::resources::{ResourceInfo, RESOURCES};

const WORKERS: usize = 8;
/// How often an owner in foreground deletion looks at its dependents again
/// even without events.
const FOREGROUND_RECHECK: Duration = Duration::from_secs(1);
/// How soon an object that changed while it was being judged is judged again.
const STALE_RECHECK: Duration = Duration::from_millis(200);
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";
pub const FINALIZER_ORPHAN: &str = "orphan";

/// One watched object: its resource (index into [`Gc::watched`]) and cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ObjRef {
    res: usize,
    key: String,
}

impl ObjRef {
    /// The work queue key, `<res>|<namespace/name>`.
    fn queue_key(&self) -> String {
        format!("{}|{}", self.res, self.key)
    }

    fn parse(s: &str) -> Option<ObjRef> {
        let (res, key) = s.split_once('|')?;
        Some(ObjRef {
            res: res.parse().ok()?,
            key: key.to_string(),
        })
    }
}

/// The ownership graph, kept from informer events.
#[derive(Default)]
struct Graph {
    /// Owner uid → objects that reference it.
    dependents: HashMap<String, HashSet<ObjRef>>,
    /// Each object's own uid and its owners' uids, to undo its edges.
    nodes: HashMap<ObjRef, (String, Vec<String>)>,
    /// uid → object, to queue the owners of a deleted dependent.
    by_uid: HashMap<String, ObjRef>,
}

impl Graph {
    /// Records `obj` under `r`; returns the uid it replaced when another
    /// object had that key (deleted and recreated between two looks).
    fn apply(&mut self, r: &ObjRef, obj: &Value) -> Option<String> {
        let replaced = self.remove(r).filter(|old| old != meta::uid(obj));
        let uid = meta::uid(obj).to_string();
        let owners: Vec<String> = owner_refs(obj)
            .iter()
            .filter_map(|o| o["uid"].as_str().map(str::to_string))
            .collect();
        for o in &owners {
            self.dependents
                .entry(o.clone())
                .or_default()
                .insert(r.clone());
        }
        self.by_uid.insert(uid.clone(), r.clone());
        self.nodes.insert(r.clone(), (uid, owners));
        replaced
    }

    /// Forgets `r`'s edges; returns its uid.
    fn remove(&mut self, r: &ObjRef) -> Option<String> {
        let (uid, owners) = self.nodes.remove(r)?;
        for o in owners {
            if let Some(d) = self.dependents.get_mut(&o) {
                d.remove(r);
                if d.is_empty() {
                    self.dependents.remove(&o);
                }
            }
        }
        if self.by_uid.get(&uid) == Some(r) {
            self.by_uid.remove(&uid);
        }
        Some(uid)
    }

    fn dependents_of(&self, uid: &str) -> Vec<ObjRef> {
        self.dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn owners_of(&self, r: &ObjRef) -> Vec<ObjRef> {
        let Some((_, owners)) = self.nodes.get(r) else {
            return vec![];
        };
        owners
            .iter()
            .filter_map(|u| self.by_uid.get(u).cloned())
            .collect()
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

struct Gc {
    client: Client,
    watched: Vec<(&'static ResourceInfo, Informer)>,
    graph: Mutex<Graph>,
    queue: WorkQueue,
}

/// Resources the collector watches: everything served except events,
/// which own nothing, are owned by nothing and churn the most.
fn collectable() -> Vec<&'static ResourceInfo> {
    RESOURCES.iter().filter(|r| r.kind != "Event").collect()
}

/// Runs until aborted (leadership lost).
pub async fn run(client: Client) {
    let watched: Vec<_> = collectable()
        .into_iter()
        .map(|info| {
            let uri = path(&info.api_version(), info.resource, None, None);
            (info, Informer::spawn(client.clone(), &uri, ""))
        })
        .collect();
    let gc = Arc::new(Gc {
        client,
        watched,
        graph: Mutex::new(Graph::default()),
        queue: WorkQueue::new(),
    });
    let mut feeds = tokio::task::JoinSet::new();
    for res in 0..gc.watched.len() {
        let mut rx = gc.watched[res].1.subscribe();
        let gc = gc.clone();
        feeds.spawn(async move {
            while let Some(change) = next_change(&mut rx).await {
                gc.observe(res, change);
            }
        });
    }
    for (_, informer) in &gc.watched {
        informer.wait_synced().await;
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

fn owner_refs(obj: &Value) -> Vec<Value> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn has_finalizer(obj: &Value, f: &str) -> bool {
    meta::finalizers(obj).iter().any(|x| x == f)
}

/// Something for the collector to do about `obj` itself.
fn interesting(obj: &Value) -> bool {
    if meta::is_deleting(obj) {
        return has_finalizer(obj, FINALIZER_ORPHAN) || has_finalizer(obj, FINALIZER_FOREGROUND);
    }
    !owner_refs(obj).is_empty()
}

impl Gc {
    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        // A poisoned lock means a panic elsewhere; the graph itself is
        // still consistent (every mutation is a few map operations).
        self.graph.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enqueue(&self, r: &ObjRef) {
        self.queue.add(&r.queue_key());
    }

    /// Updates the graph from one informer change and queues what it affects.
    fn observe(&self, res: usize, change: Change) {
        match change {
            Change::Applied(obj) => {
                let r = ObjRef {
                    res,
                    key: key_of(&obj),
                };
                let replaced = self.graph().apply(&r, &obj);
                if let Some(old) = replaced {
                    // The old object is gone: its dependents may be orphans.
                    let deps = self.graph().dependents_of(&old);
                    deps.iter().for_each(|d| self.enqueue(d));
                }
                if interesting(&obj) {
                    self.enqueue(&r);
                }
            }
            Change::Deleted(obj) => {
                let r = ObjRef {
                    res,
                    key: key_of(&obj),
                };
                // Owners may be waiting for this object; dependents may be orphans now.
                let affected = {
                    let mut g = self.graph();
                    let mut affected = g.owners_of(&r);
                    g.remove(&r);
                    affected.extend(g.dependents_of(meta::uid(&obj)));
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
        let objs = self.watched[res].1.list();
        let live: HashSet<String> = objs.iter().map(key_of).collect();
        let mut orphaned = Vec::new();
        {
            let stale: Vec<ObjRef> = g
                .nodes
                .keys()
                .filter(|r| r.res == res && !live.contains(&r.key))
                .cloned()
                .collect();
            for r in &stale {
                orphaned.extend(g.remove(r));
            }
            for obj in &objs {
                let r = ObjRef {
                    res,
                    key: key_of(obj),
                };
                orphaned.extend(g.apply(&r, obj));
            }
        }
        let deps: Vec<ObjRef> = orphaned.iter().flat_map(|u| g.dependents_of(u)).collect();
        drop(g);
        deps.iter().for_each(|d| self.enqueue(d));
        for obj in objs.iter().filter(|o| interesting(o)) {
            self.enqueue(&ObjRef {
                res,
                key: key_of(obj),
            });
        }
    }

    fn cached(&self, r: &ObjRef) -> Option<Value> {
        self.watched.get(r.res)?.1.get(&r.key)
    }

    fn uri(&self, res: usize, obj: &Value) -> String {
        let info = self.watched[res].0;
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .filter(|_| info.namespaced);
        path(
            &info.api_version(),
            info.resource,
            ns,
            Some(meta::name(obj)),
        )
    }

    async fn reconcile(&self, qkey: &str) -> Reconciled {
        let Some(r) = ObjRef::parse(qkey) else {
            return Ok(None);
        };
        let Some(obj) = self.cached(&r) else {
            return Ok(None); // gone: its Deleted event queued what it affects
        };
        if meta::is_deleting(&obj) {
            if has_finalizer(&obj, FINALIZER_ORPHAN) {
                return self.orphan_dependents(&r, &obj).await;
            }
            if has_finalizer(&obj, FINALIZER_FOREGROUND) {
                return self.delete_dependents(&r, &obj).await;
            }
            return Ok(None);
        }
        if owner_refs(&obj).is_empty() {
            return Ok(None);
        }
        self.collect_if_orphaned(&r, &obj).await
    }

    /// Dependents that still reference `owner_uid`, from the caches.
    fn live_dependents(&self, owner_uid: &str) -> Vec<(ObjRef, Value)> {
        let refs = self.graph().dependents_of(owner_uid);
        refs.into_iter()
            .filter_map(|r| self.cached(&r).map(|o| (r, o)))
            .filter(|(_, o)| {
                owner_refs(o)
                    .iter()
                    .any(|x| x["uid"].as_str() == Some(owner_uid))
            })
            .collect()
    }

    /// `orphan`: strip the reference from every dependent, then the finalizer.
    async fn orphan_dependents(&self, r: &ObjRef, owner: &Value) -> Reconciled {
        let uid = meta::uid(owner);
        for (dr, dep) in self.live_dependents(uid) {
            let info = self.watched[dr.res].0;
            crate::reconcile::set_owner_refs(
                &self.client,
                &dep,
                (&info.api_version(), info.resource),
                uid,
                None,
            )
            .await?;
        }
        self.remove_finalizer(r, owner, FINALIZER_ORPHAN).await
    }

    /// `foregroundDeletion`: delete the dependents (their own reconcile
    /// sees this owner waiting and deletes them), and drop the finalizer
    /// once none that blocks the owner's deletion is left.
    async fn delete_dependents(&self, r: &ObjRef, owner: &Value) -> Reconciled {
        let uid = meta::uid(owner);
        let deps = self.live_dependents(uid);
        let blocking = deps.iter().any(|(_, d)| {
            owner_refs(d).iter().any(|x| {
                x["uid"].as_str() == Some(uid) && x["blockOwnerDeletion"].as_bool() == Some(true)
            })
        });
        for (dr, d) in &deps {
            if !meta::is_deleting(d) {
                self.enqueue(dr);
            }
        }
        if blocking {
            return Ok(Some(FOREGROUND_RECHECK));
        }
        self.remove_finalizer(r, owner, FINALIZER_FOREGROUND).await
    }

    /// Removes one finalizer, pinned to the cached resourceVersion; the
    /// API deletes the object when it was the last one.
    async fn remove_finalizer(&self, r: &ObjRef, obj: &Value, finalizer: &str) -> Reconciled {
        let rest: Vec<String> = meta::finalizers(obj)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        let finalizers = if rest.is_empty() {
            Value::Null
        } else {
            json!(rest)
        };
        self.patch_metadata(r, obj, "finalizers", finalizers).await
    }

    /// Sets one metadata field of `obj`, pinned to the version judged (a
    /// concurrent change makes it 409 and the object is judged again).
    async fn patch_metadata(
        &self,
        r: &ObjRef,
        obj: &Value,
        field: &str,
        value: Value,
    ) -> Reconciled {
        let patch = json!({"metadata": {
            field: value,
            "resourceVersion": meta::resource_version(obj),
        }});
        match self.client.merge_patch(&self.uri(r.res, obj), &patch).await {
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes `dep` when none of its owners is alive; otherwise drops the
    /// references to owners that are gone or waiting for it.
    async fn collect_if_orphaned(&self, r: &ObjRef, dep: &Value) -> Reconciled {
        let mut alive = false;
        let mut dead = Vec::new();
        let mut waiting = false;
        for o in owner_refs(dep) {
            match self.owner_state(dep, &o).await? {
                OwnerState::Alive => alive = true,
                OwnerState::Gone => dead.push(o),
                OwnerState::Waiting => {
                    waiting = true;
                    dead.push(o);
                }
            }
        }
        if dead.is_empty() {
            return Ok(None);
        }
        // Judged from the cache; act only if the stored object is that
        // same version (an orphaning may just have stripped a reference
        // the cache still shows).
        match self.client.get(&self.uri(r.res, dep)).await? {
            None => return Ok(None),
            Some(live) if meta::uid(&live) != meta::uid(dep) => return Ok(None),
            Some(live) if meta::resource_version(&live) != meta::resource_version(dep) => {
                return Ok(Some(STALE_RECHECK)); // its newer version queues it too
            }
            Some(_) => {}
        }
        if alive {
            return self.drop_owner_refs(r, dep, &dead).await;
        }
        let owns_others = !self.graph().dependents_of(meta::uid(dep)).is_empty();
        let policy = match waiting && owns_others {
            true => "Foreground",
            false => "Background",
        };
        let options = json!({
            "kind": "DeleteOptions", "apiVersion": "v1",
            "propagationPolicy": policy,
            "preconditions": {"uid": meta::uid(dep), "resourceVersion": meta::resource_version(dep)},
        });
        tracing::debug!(object = %r.key, resource = self.watched[r.res].0.resource, policy,
                        "garbage collecting an object whose owners are gone");
        match self
            .client
            .delete(&self.uri(r.res, dep), Some(&options))
            .await
        {
            Ok(_) => Ok(None),
            // Changed (or replaced) since it was judged: judge it again.
            Err(e) if e.is_conflict() => Ok(Some(STALE_RECHECK)),
            Err(e) => Err(e),
        }
    }

    async fn drop_owner_refs(&self, r: &ObjRef, dep: &Value, dead: &[Value]) -> Reconciled {
        let dead_uids: HashSet<&str> = dead.iter().filter_map(|o| o["uid"].as_str()).collect();
        let keep: Vec<Value> = owner_refs(dep)
            .into_iter()
            .filter(|o| !o["uid"].as_str().is_some_and(|u| dead_uids.contains(u)))
            .collect();
        self.patch_metadata(r, dep, "ownerReferences", json!(keep))
            .await
    }

    /// Judges one ownerReference of `dep`: from the cache when it shows
    /// the owner, else from a GET, so a lagging cache never condemns a
    /// dependent.
    async fn owner_state(&self, dep: &Value, owner_ref: &Value) -> ClientResult<OwnerState> {
        let Some(res) = self.resource_of(owner_ref) else {
            return Ok(OwnerState::Alive);
        };
        let info = self.watched[res].0;
        let dep_ns = dep["metadata"]["namespace"].as_str().unwrap_or_default();
        if info.namespaced && dep_ns.is_empty() {
            // A cluster-scoped object cannot be owned by a namespaced one;
            // Kubernetes reports it and leaves it alone, and so does keel.
            return Ok(OwnerState::Alive);
        }
        let name = owner_ref["name"].as_str().unwrap_or_default();
        let uid = owner_ref["uid"].as_str().unwrap_or_default();
        let ns = info.namespaced.then_some(dep_ns);
        let key = match ns {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        };
        let owner = match self.watched[res].1.get(&key) {
            Some(o) if meta::uid(&o) == uid => Some(o),
            _ => {
                let uri = path(&info.api_version(), info.resource, ns, Some(name));
                self.client.get(&uri).await?
            }
        };
        Ok(match owner {
            Some(o) if meta::uid(&o) != uid => OwnerState::Gone,
            None => OwnerState::Gone,
            Some(o) if meta::is_deleting(&o) && has_finalizer(&o, FINALIZER_FOREGROUND) => {
                OwnerState::Waiting
            }
            Some(_) => OwnerState::Alive,
        })
    }

    /// The watched resource of an ownerReference's group and kind. The
    /// version does not matter (Kubernetes maps a kind in any served
    /// version of its group to the same objects): a reference written as
    /// `apps/v1beta1` Deployment names an `apps/v1` Deployment.
    fn resource_of(&self, owner_ref: &Value) -> Option<usize> {
        let api_version = owner_ref["apiVersion"].as_str()?;
        let kind = owner_ref["kind"].as_str()?;
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        self.watched
            .iter()
            .position(|(i, _)| i.group == group && i.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(uid: &str, owners: &[&str]) -> Value {
        let refs: Vec<Value> = owners.iter().map(|o| json!({"uid": o})).collect();
        json!({"metadata": {"name": uid, "uid": uid, "ownerReferences": refs}})
    }

    fn r(res: usize, key: &str) -> ObjRef {
        ObjRef {
            res,
            key: key.into(),
        }
    }

    #[test]
    fn graph_tracks_edges_through_updates_and_deletes() {
        let mut g = Graph::default();
        g.apply(&r(0, "d/owner"), &obj("o1", &[]));
        g.apply(&r(1, "d/dep"), &obj("u1", &["o1", "o2"]));
        assert_eq!(g.dependents_of("o1"), vec![r(1, "d/dep")]);
        assert_eq!(g.owners_of(&r(1, "d/dep")), vec![r(0, "d/owner")]);
        // An update that drops an owner drops the edge.
        g.apply(&r(1, "d/dep"), &obj("u1", &["o2"]));
        assert!(g.dependents_of("o1").is_empty());
        assert_eq!(g.dependents_of("o2"), vec![r(1, "d/dep")]);
        g.remove(&r(1, "d/dep"));
        assert!(g.dependents_of("o2").is_empty());
        assert!(!g.nodes.contains_key(&r(1, "d/dep")));
    }

    #[test]
    fn queue_keys_round_trip() {
        let k = r(7, "ns/a|b").queue_key();
        assert_eq!(ObjRef::parse(&k), Some(r(7, "ns/a|b")));
        assert_eq!(ObjRef::parse("x|y"), None);
    }

    #[test]
    fn only_owned_or_finalizing_objects_need_a_look() {
        assert!(!interesting(&obj("a", &[])));
        assert!(interesting(&obj("a", &["o"])));
        let mut d = obj("a", &[]);
        d["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        d["metadata"]["finalizers"] = json!(["orphan"]);
        assert!(interesting(&d));
        d["metadata"]["finalizers"] = json!(["example.com/x"]);
        assert!(!interesting(&d));
    }
}
