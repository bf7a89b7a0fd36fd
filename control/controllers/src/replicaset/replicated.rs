//! What the ReplicaSet controller needs of the object it runs: ReplicaSets
//! (apps/v1) and ReplicationControllers (core/v1) keep N pods from a
//! template the same way, and differ only in the selector's shape (a
//! `LabelSelector` versus a plain label map) and in their status type.
//! Kubernetes runs ReplicationControllers through its ReplicaSet
//! controller the same way (`pkg/controller/replication`).

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{
    PodTemplateSpec, ReplicationController, ReplicationControllerStatus,
};
use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::reconcile::selector_of;
use crate::selector::LabelSelector;

/// The status fields the controller owns, absent counting as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
    pub observed_generation: i64,
}

/// A controller of `spec.replicas` pods made from `spec.template`.
pub trait Replicated:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The field manager and event source, e.g. `replicaset-controller`.
    const COMPONENT: &'static str;

    /// The selector, when it may control pods: None for an absent or
    /// invalid one, and for an empty one (it would take every pod of the
    /// namespace; the API server refuses those anyway).
    fn selector(&self) -> Option<LabelSelector>;
    /// `spec.replicas`, 0 when absent (the API server defaults it to 1).
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// The owned status fields as stored.
    fn counts(&self) -> Counts;
    /// Sets the owned status fields, omitting zeros as Kubernetes does
    /// (`omitempty`) except `replicas`, which Go always emits; other
    /// fields (conditions) are kept.
    fn set_counts(&mut self, c: &Counts);
}

fn nonzero(v: i32) -> Option<i32> {
    Some(v).filter(|v| *v != 0)
}

fn nonzero_i64(v: i64) -> Option<i64> {
    Some(v).filter(|v| *v != 0)
}

impl Replicated for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";

    fn selector(&self) -> Option<LabelSelector> {
        self.spec.as_ref().and_then(|s| selector_of(&s.selector))
    }

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }

    fn counts(&self) -> Counts {
        self.status.as_ref().map_or(Counts::default(), |s| Counts {
            replicas: s.replicas,
            fully_labeled: s.fully_labeled_replicas.unwrap_or(0),
            ready: s.ready_replicas.unwrap_or(0),
            available: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
        })
    }

    fn set_counts(&mut self, c: &Counts) {
        let s = self.status.get_or_insert_with(ReplicaSetStatus::default);
        s.replicas = c.replicas;
        s.fully_labeled_replicas = nonzero(c.fully_labeled);
        s.ready_replicas = nonzero(c.ready);
        s.available_replicas = nonzero(c.available);
        s.observed_generation = nonzero_i64(c.observed_generation);
    }
}

impl Replicated for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";

    /// A plain label map: every pair must match.
    fn selector(&self) -> Option<LabelSelector> {
        let labels = self.spec.as_ref()?.selector.as_ref()?;
        let typed = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some(labels.clone()),
            match_expressions: None,
        };
        selector_of(&typed)
    }

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }

    fn counts(&self) -> Counts {
        self.status.as_ref().map_or(Counts::default(), |s| Counts {
            replicas: s.replicas,
            fully_labeled: s.fully_labeled_replicas.unwrap_or(0),
            ready: s.ready_replicas.unwrap_or(0),
            available: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
        })
    }

    fn set_counts(&mut self, c: &Counts) {
        let s = self
            .status
            .get_or_insert_with(ReplicationControllerStatus::default);
        s.replicas = c.replicas;
        s.fully_labeled_replicas = nonzero(c.fully_labeled);
        s.ready_replicas = nonzero(c.ready);
        s.available_replicas = nonzero(c.available);
        s.observed_generation = nonzero_i64(c.observed_generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ReplicationControllerSpec;
    use std::collections::BTreeMap;

    fn rc(selector: Option<&[(&str, &str)]>) -> ReplicationController {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        ReplicationController {
            spec: Some(ReplicationControllerSpec {
                replicas: Some(3),
                selector: selector.map(map),
                ..ReplicationControllerSpec::default()
            }),
            ..ReplicationController::default()
        }
    }

    #[test]
    fn a_replication_controller_selects_with_its_label_map() {
        let s = rc(Some(&[("app", "web"), ("tier", "fe")]))
            .selector()
            .expect("a selector");
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(s.matches_labels(Some(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")]))));
        assert!(!s.matches_labels(Some(&labels(&[("app", "web")]))));
        assert!(rc(None).selector().is_none());
        assert!(rc(Some(&[])).selector().is_none(), "empty selects nothing");
    }

    #[test]
    fn counts_round_trip_and_replicas_is_always_present() {
        let mut r = rc(None);
        let c = Counts {
            replicas: 0,
            fully_labeled: 2,
            ready: 0,
            available: 1,
            observed_generation: 4,
        };
        r.set_counts(&c);
        assert_eq!(r.counts(), c);
        let s = r.status.as_ref().expect("a status");
        assert_eq!(s.ready_replicas, None, "zeros are omitted");
        let json = serde_json::to_value(&r).expect("serializes");
        assert_eq!(json["status"]["replicas"], 0, "Go emits replicas: 0");
    }
}
