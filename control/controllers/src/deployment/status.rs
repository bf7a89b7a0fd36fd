//! Deployment status: the replica counts summed over its ReplicaSets and
//! the Available and Progressing conditions, exactly the fields `kubectl
//! rollout status` waits on (observedGeneration, updatedReplicas,
//! replicas, availableReplicas, ProgressDeadlineExceeded).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;

use super::{
    d_replicas, rolling, rs_available_replicas, rs_ready_replicas, rs_replicas, rs_status_replicas,
    to_i32, Controller, State,
};
use crate::reconcile::{name, Reconciled};

const PROGRESSING: &str = "Progressing";
const AVAILABLE: &str = "Available";
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const PAUSED: &str = "DeploymentPaused";

/// The counts of a status that progress and completion are judged on,
/// absent counting as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    observed_generation: i64,
    replicas: i64,
    updated: i64,
    ready: i64,
    available: i64,
}

impl Counts {
    fn of(s: Option<&DeploymentStatus>) -> Counts {
        let n = |f: fn(&DeploymentStatus) -> Option<i32>| i64::from(s.and_then(f).unwrap_or(0));
        Counts {
            observed_generation: s.and_then(|s| s.observed_generation).unwrap_or(0),
            replicas: n(|s| s.replicas),
            updated: n(|s| s.updated_replicas),
            ready: n(|s| s.ready_replicas),
            available: n(|s| s.available_replicas),
        }
    }
}

/// Every replica is updated and available and the status describes the
/// current generation (Kubernetes' `DeploymentComplete`).
pub(super) fn is_complete(d: &Deployment, status: Option<&DeploymentStatus>) -> bool {
    let replicas = d_replicas(d);
    let c = Counts::of(status);
    c.updated == replicas
        && c.replicas == replicas
        && c.available == replicas
        && c.observed_generation >= d.metadata.generation.unwrap_or(0)
}

/// Something moved since `old` (Kubernetes' `DeploymentProgressing`).
fn is_progressing(old: Option<&DeploymentStatus>, new: &DeploymentStatus) -> bool {
    let (old, new) = (Counts::of(old), Counts::of(Some(new)));
    let old_old = old.replicas - old.updated;
    let new_old = new.replicas - new.updated;
    new.updated > old.updated
        || new_old < old_old
        || new.ready > old.ready
        || new.available > old.available
}

/// `progressDeadlineSeconds`, unless unset or "never" (MaxInt32).
fn progress_deadline_s(d: &Deployment) -> Option<i64> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
        .map(i64::from)
}

fn condition<'a>(status: &'a DeploymentStatus, kind: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

/// Now, to the second, as Kubernetes writes `metav1.Time`.
fn now_s() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

fn new_condition(kind: &str, status: &str, reason: &str, message: &str) -> DeploymentCondition {
    let now = now_s();
    DeploymentCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
    }
}

fn remove_condition(status: &mut DeploymentStatus, kind: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != kind);
    }
}

/// Kubernetes' `SetDeploymentCondition`: nothing changes when status and
/// reason are the same; the transition time survives a same-status change.
fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(cur) = condition(status, &cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != cond.type_);
    conditions.push(cond);
}

/// The counts and the Available condition (Kubernetes' `calculateStatus`);
/// zero counts are omitted as the API omits them.
fn calculate(st: &State) -> DeploymentStatus {
    let sum = |f: fn(&ReplicaSet) -> i64| -> i64 { st.all().map(f).sum() };
    let available = sum(rs_available_replicas);
    let unavailable = (sum(rs_replicas) - available).max(0);
    let nonzero = |n: i64| Some(to_i32(n)).filter(|n| *n != 0);
    let old = st.d.status.as_ref();
    let mut status = DeploymentStatus {
        observed_generation: st.d.metadata.generation.filter(|g| *g != 0),
        replicas: nonzero(sum(rs_status_replicas)),
        updated_replicas: nonzero(st.new_rs.as_ref().map_or(0, rs_status_replicas)),
        ready_replicas: nonzero(sum(rs_ready_replicas)),
        available_replicas: nonzero(available),
        unavailable_replicas: nonzero(unavailable),
        collision_count: old.and_then(|s| s.collision_count).filter(|c| *c != 0),
        conditions: old.and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    };
    let cond = match available >= st.replicas() - rolling::max_unavailable(&st.d) {
        true => new_condition(
            AVAILABLE,
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        ),
        false => new_condition(
            AVAILABLE,
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        ),
    };
    set_condition(&mut status, cond);
    status
}

fn progressing_reason(status: &DeploymentStatus) -> Option<&str> {
    condition(status, PROGRESSING)?.reason.as_deref()
}

/// The pause/resume and new-ReplicaSet notes Kubernetes writes before a
/// step (`checkPausedConditions`, `getNewReplicaSet`).
fn note_progress(st: &State, status: &mut DeploymentStatus) {
    let paused = st.d.spec.as_ref().and_then(|s| s.paused) == Some(true);
    let was_paused = progressing_reason(status) == Some(PAUSED);
    if paused && !was_paused {
        set_condition(
            status,
            new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused"),
        );
    } else if !paused && was_paused {
        set_condition(
            status,
            new_condition(
                PROGRESSING,
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed",
            ),
        );
    }
    let Some(rs) = st.new_rs.as_ref().map(|rs| name(&rs.metadata)) else {
        return;
    };
    if st.created_new {
        let msg = format!("Created new replica set {rs:?}");
        set_condition(
            status,
            new_condition(PROGRESSING, "True", "NewReplicaSetCreated", &msg),
        );
    } else if condition(status, PROGRESSING).is_none() {
        let msg = format!("Found new replica set {rs:?}");
        set_condition(
            status,
            new_condition(PROGRESSING, "True", "FoundNewReplicaSet", &msg),
        );
    }
}

/// Kubernetes' `syncRolloutStatus` Progressing logic: complete, progressing
/// (refreshing lastUpdateTime) or timed out.
fn note_rollout(st: &State, status: &mut DeploymentStatus, now: Timestamp) {
    let cur = condition(status, PROGRESSING).cloned();
    let counts = Counts::of(Some(status));
    let already_complete = counts.replicas == counts.updated
        && cur.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
    if already_complete {
        return;
    }
    let rs = st
        .new_rs
        .as_ref()
        .map(|rs| name(&rs.metadata))
        .unwrap_or_default();
    if is_complete(&st.d, Some(status)) {
        let msg = format!("ReplicaSet {rs:?} has successfully progressed.");
        set_condition(
            status,
            new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, &msg),
        );
    } else if is_progressing(st.d.status.as_ref(), status) {
        let msg = format!("ReplicaSet {rs:?} is progressing.");
        let mut cond = new_condition(PROGRESSING, "True", "ReplicaSetUpdated", &msg);
        if let Some(c) = cur.filter(|c| c.status == "True") {
            cond.last_transition_time = c.last_transition_time;
        }
        remove_condition(status, PROGRESSING);
        set_condition(status, cond);
    } else if time_left(st, status, now) == Some(Duration::ZERO) {
        let msg = format!("ReplicaSet {rs:?} has timed out progressing.");
        set_condition(status, new_condition(PROGRESSING, "False", TIMED_OUT, &msg));
    }
}

/// Time until the progress deadline passes (`None`: no deadline running).
fn time_left(st: &State, status: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    let deadline_s = progress_deadline_s(&st.d)?;
    let c = condition(status, PROGRESSING)?;
    if matches!(c.reason.as_deref(), Some(NEW_RS_AVAILABLE | TIMED_OUT)) {
        return None;
    }
    let updated = c.last_update_time.as_ref()?.0;
    let left_s = updated.as_second() + deadline_s - now.as_second();
    Some(Duration::from_secs(left_s.max(0).unsigned_abs()))
}

impl Controller {
    /// Writes the status when it changed. `rollout`: this was a rollout
    /// step, so Progressing is updated too; then a reconcile is asked for
    /// when the progress deadline would pass.
    pub(super) async fn write_status(&self, st: &State, rollout: bool) -> Reconciled<kube::Error> {
        let now = Timestamp::now();
        let mut status = calculate(st);
        if progress_deadline_s(&st.d).is_none() {
            remove_condition(&mut status, PROGRESSING);
        } else {
            note_progress(st, &mut status);
            if rollout {
                note_rollout(st, &mut status, now);
            }
        }
        if st.d.status.as_ref() != Some(&status) {
            let mut updated = st.d.clone();
            updated.status = Some(status.clone());
            self.deployment_api(&st.d)
                .replace_status(name(&st.d.metadata), &PostParams::default(), &updated)
                .await?;
        }
        let recheck = match rollout && !is_complete(&st.d, Some(&status)) {
            true => time_left(st, &status, now).map(|d| d + Duration::from_secs(1)),
            false => None,
        };
        Ok(recheck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn t2020() -> Option<Time> {
        Some(Time(
            "2020-01-01T00:00:00Z".parse().expect("a test timestamp"),
        ))
    }

    #[test]
    fn conditions_keep_transition_time_and_skip_no_ops() {
        let mut s = DeploymentStatus::default();
        let mut c = new_condition(AVAILABLE, "True", "A", "m");
        c.last_transition_time = t2020();
        set_condition(&mut s, c);
        set_condition(&mut s, new_condition(AVAILABLE, "True", "B", "m2"));
        let got = condition(&s, AVAILABLE).cloned().unwrap_or_default();
        assert_eq!(got.reason.as_deref(), Some("B"));
        assert_eq!(got.last_transition_time, t2020());
        set_condition(&mut s, new_condition(AVAILABLE, "False", "C", "m3"));
        let got = condition(&s, AVAILABLE).cloned().unwrap_or_default();
        assert_ne!(got.last_transition_time, t2020());
        assert_eq!(s.conditions.as_ref().map(Vec::len), Some(1));
    }

    fn status(replicas: i32, updated: i32, available: i32) -> DeploymentStatus {
        DeploymentStatus {
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ..DeploymentStatus::default()
        }
    }

    #[test]
    fn complete_needs_every_count_and_the_generation() {
        let d = Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                ..DeploymentSpec::default()
            }),
            status: None,
        };
        let s = DeploymentStatus {
            observed_generation: Some(2),
            ..status(3, 3, 3)
        };
        assert!(is_complete(&d, Some(&s)));
        let stale = DeploymentStatus {
            observed_generation: Some(1),
            ..s.clone()
        };
        assert!(!is_complete(&d, Some(&stale)));
        let old_left = DeploymentStatus {
            replicas: Some(4),
            ..s.clone()
        };
        assert!(!is_complete(&d, Some(&old_left)));
    }

    #[test]
    fn progress_is_any_count_moving_forward() {
        let old = status(4, 1, 3);
        assert!(is_progressing(Some(&old), &status(4, 2, 3)));
        assert!(is_progressing(Some(&old), &status(3, 1, 3)));
        assert!(!is_progressing(Some(&old), &old));
    }
}
