//! A StatefulSet's status: pod counts, the current and update revisions
//! and the collision count, shaped as Go emits it (`replicas` and
//! `availableReplicas` always, `collisionCount` always once synced, the
//! other counts only when non-zero), so typed clients (Python's
//! `kubernetes`) accept it and `kubectl rollout status` can follow it.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};

use super::plan::Counts;
use super::spec;

/// The status of `set` for `counts`; when every pod is updated and ready
/// a RollingUpdate is complete and the update revision becomes current
/// (Kubernetes' `completeRollingUpdate`).
pub(super) fn new_status(
    set: &StatefulSet,
    counts: Counts,
    current: &str,
    update: &str,
    collision_count: i32,
) -> StatefulSetStatus {
    let complete = !spec::is_on_delete(set)
        && counts.updated == counts.replicas
        && counts.ready == counts.replicas;
    let (current_replicas, current_revision) = match complete {
        true => (counts.updated, update),
        false => (counts.current, current),
    };
    let nonzero = |n: i32| (n != 0).then_some(n);
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    StatefulSetStatus {
        replicas: counts.replicas,
        ready_replicas: nonzero(counts.ready),
        available_replicas: Some(counts.available),
        current_replicas: nonzero(current_replicas),
        updated_replicas: nonzero(counts.updated),
        current_revision: nonempty(current_revision),
        update_revision: nonempty(update),
        collision_count: Some(collision_count),
        observed_generation: set.metadata.generation.filter(|g| *g != 0),
        conditions: None,
    }
}

/// The fields this controller owns, absent counting as zero.
fn owned(s: &StatefulSetStatus) -> impl PartialEq + '_ {
    (
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
            s.current_replicas.unwrap_or(0),
            s.updated_replicas.unwrap_or(0),
        ),
        s.current_revision.as_deref().unwrap_or_default(),
        s.update_revision.as_deref().unwrap_or_default(),
        s.collision_count,
        s.observed_generation.unwrap_or(0),
    )
}

/// `set`'s stored status differs from `new` in a field this controller owns.
pub(super) fn differs(set: &StatefulSet, new: &StatefulSetStatus) -> bool {
    let empty = StatefulSetStatus::default();
    let old = set.status.as_ref().unwrap_or(&empty);
    let differ = owned(old) != owned(new);
    differ
}

/// `set` with `new` as its status, keeping the conditions.
pub(super) fn with_status(set: &StatefulSet, new: &StatefulSetStatus) -> StatefulSet {
    let mut out = set.clone();
    let conditions = set.status.as_ref().and_then(|s| s.conditions.clone());
    out.status = Some(StatefulSetStatus {
        conditions,
        ..new.clone()
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statefulset::fixtures::set;

    #[test]
    fn a_finished_rolling_update_makes_the_update_revision_current() {
        let counts = Counts {
            replicas: 3,
            ready: 3,
            available: 3,
            current: 0,
            updated: 3,
        };
        let s = new_status(&set(), counts, "web-a", "web-b", 0);
        assert_eq!(s.current_revision.as_deref(), Some("web-b"));
        assert_eq!(s.current_replicas, Some(3));
        let midway = Counts {
            updated: 1,
            current: 2,
            ..counts
        };
        let s = new_status(&set(), midway, "web-a", "web-b", 0);
        assert_eq!(s.current_revision.as_deref(), Some("web-a"));
        assert_eq!(s.current_replicas, Some(2));
    }

    #[test]
    fn required_fields_are_always_present() {
        let s = new_status(&set(), Counts::default(), "web-a", "web-a", 0);
        let v = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(v["replicas"], 0);
        assert_eq!(v["availableReplicas"], 0);
        assert_eq!(v["collisionCount"], 0);
        assert_eq!(v["observedGeneration"], 1);
        assert!(v.get("readyReplicas").is_none());
        let mut stored = set();
        assert!(differs(&stored, &s));
        stored = with_status(&stored, &s);
        assert!(!differs(&stored, &s));
    }
}
