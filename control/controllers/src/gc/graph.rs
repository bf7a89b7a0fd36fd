//! The collector's ownership graph: which objects reference which owner
//! uid, kept from the metadata caches' changes.
//!
//! Invariant: `dependents` and `by_uid` are exactly what `nodes` implies;
//! every mutation goes through [`Graph::apply`] and [`Graph::remove`],
//! which update all three together.

use std::collections::{HashMap, HashSet};

use kube::api::ObjectMeta;

/// One watched object: its resource (an index into the collector's list
/// of watched resources) and its cache key (`namespace/name` or `name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ObjRef {
    pub res: usize,
    pub key: String,
}

impl ObjRef {
    /// The work-queue key, `<res>|<namespace/name>`.
    pub fn queue_key(&self) -> String {
        format!("{}|{}", self.res, self.key)
    }

    /// The inverse of [`ObjRef::queue_key`].
    pub fn parse(s: &str) -> Option<ObjRef> {
        let (res, key) = s.split_once('|')?;
        Some(ObjRef {
            res: res.parse().ok()?,
            key: key.to_string(),
        })
    }
}

/// The uid of an object, empty when the API left it out.
pub(crate) fn uid_of(meta: &ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or_default()
}

/// The ownership graph.
#[derive(Default)]
pub(crate) struct Graph {
    /// Owner uid → objects that reference it.
    dependents: HashMap<String, HashSet<ObjRef>>,
    /// Each object's own uid and its owners' uids, to undo its edges.
    nodes: HashMap<ObjRef, (String, Vec<String>)>,
    /// uid → object, to queue the owners of a deleted dependent.
    by_uid: HashMap<String, ObjRef>,
}

impl Graph {
    /// Records the object with metadata `meta` under `r`; returns the uid
    /// it replaced when another object had that key (deleted and
    /// recreated between two looks).
    pub fn apply(&mut self, r: &ObjRef, meta: &ObjectMeta) -> Option<String> {
        let uid = uid_of(meta).to_string();
        let replaced = self.remove(r).filter(|old| *old != uid);
        let owners: Vec<String> = meta
            .owner_references
            .iter()
            .flatten()
            .map(|o| o.uid.clone())
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
    pub fn remove(&mut self, r: &ObjRef) -> Option<String> {
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

    /// The objects that reference the owner `uid`.
    pub fn dependents_of(&self, uid: &str) -> Vec<ObjRef> {
        self.dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The known owners of `r`.
    pub fn owners_of(&self, r: &ObjRef) -> Vec<ObjRef> {
        let Some((_, owners)) = self.nodes.get(r) else {
            return vec![];
        };
        owners
            .iter()
            .filter_map(|u| self.by_uid.get(u).cloned())
            .collect()
    }

    /// The objects of resource `res` the graph knows.
    pub fn keys_of(&self, res: usize) -> Vec<ObjRef> {
        self.nodes
            .keys()
            .filter(|r| r.res == res)
            .cloned()
            .collect()
    }

    #[cfg(test)]
    pub fn contains(&self, r: &ObjRef) -> bool {
        self.nodes.contains_key(r)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;

    /// Metadata named and identified by `uid`, at resourceVersion 7, owned
    /// by ConfigMaps with the given uids (also the collector's fixture).
    pub(crate) fn meta(uid: &str, owners: &[&str]) -> ObjectMeta {
        let refs = owners
            .iter()
            .map(|o| OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: format!("name-of-{o}"),
                uid: o.to_string(),
                ..Default::default()
            })
            .collect();
        ObjectMeta {
            name: Some(uid.into()),
            uid: Some(uid.into()),
            resource_version: Some("7".into()),
            owner_references: Some(refs),
            ..Default::default()
        }
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
        g.apply(&r(0, "d/owner"), &meta("o1", &[]));
        g.apply(&r(1, "d/dep"), &meta("u1", &["o1", "o2"]));
        assert_eq!(g.dependents_of("o1"), vec![r(1, "d/dep")]);
        assert_eq!(g.owners_of(&r(1, "d/dep")), vec![r(0, "d/owner")]);
        // An update that drops an owner drops the edge.
        g.apply(&r(1, "d/dep"), &meta("u1", &["o2"]));
        assert!(g.dependents_of("o1").is_empty());
        assert_eq!(g.dependents_of("o2"), vec![r(1, "d/dep")]);
        g.remove(&r(1, "d/dep"));
        assert!(g.dependents_of("o2").is_empty());
        assert!(!g.contains(&r(1, "d/dep")));
    }

    #[test]
    fn a_recreated_object_reports_the_uid_it_replaced() {
        let mut g = Graph::default();
        assert_eq!(g.apply(&r(0, "d/a"), &meta("u1", &[])), None);
        assert_eq!(g.apply(&r(0, "d/a"), &meta("u1", &[])), None);
        assert_eq!(g.apply(&r(0, "d/a"), &meta("u2", &[])), Some("u1".into()));
        assert_eq!(g.keys_of(0), vec![r(0, "d/a")]);
        assert!(g.keys_of(1).is_empty());
    }

    #[test]
    fn queue_keys_round_trip() {
        let k = r(7, "ns/a|b").queue_key();
        assert_eq!(ObjRef::parse(&k), Some(r(7, "ns/a|b")));
        assert_eq!(ObjRef::parse("x|y"), None);
    }
}
