//! Deployment status: the replica counts summed over its ReplicaSets and
//! the Available and Progressing conditions, exactly the fields `kubectl
//! rollout status` waits on (observedGeneration, updatedReplicas,
//! replicas, availableReplicas, ProgressDeadlineExceeded).

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};

use super::{deployment_path, rolling, Controller, State};
use crate::meta;
use crate::reconcile::{int_at, Reconciled};

const PROGRESSING: &str = "Progressing";
const AVAILABLE: &str = "Available";
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const PAUSED: &str = "DeploymentPaused";

/// Every replica is updated and available and the status describes the
/// current generation (Kubernetes' `DeploymentComplete`).
pub(super) fn is_complete(d: &Value, status: &Value) -> bool {
    let replicas = int_at(d, "/spec/replicas").max(0);
    int_at(status, "/updatedReplicas") == replicas
        && int_at(status, "/replicas") == replicas
        && int_at(status, "/availableReplicas") == replicas
        && int_at(status, "/observedGeneration") >= int_at(d, "/metadata/generation")
}

/// Something moved since `old` (Kubernetes' `DeploymentProgressing`).
fn is_progressing(old: &Value, new: &Value) -> bool {
    let n = |s: &Value, f: &str| int_at(s, &format!("/{f}"));
    let old_old = n(old, "replicas") - n(old, "updatedReplicas");
    let new_old = n(new, "replicas") - n(new, "updatedReplicas");
    n(new, "updatedReplicas") > n(old, "updatedReplicas")
        || new_old < old_old
        || n(new, "readyReplicas") > n(old, "readyReplicas")
        || n(new, "availableReplicas") > n(old, "availableReplicas")
}

/// `progressDeadlineSeconds`, unless unset or "never" (MaxInt32).
fn progress_deadline(d: &Value) -> Option<i64> {
    d["spec"]["progressDeadlineSeconds"]
        .as_i64()
        .filter(|s| *s != i64::from(i32::MAX))
}

fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn new_condition(kind: &str, status: &str, reason: &str, message: &str) -> Value {
    let now = meta::now_rfc3339();
    json!({"type": kind, "status": status, "lastUpdateTime": now,
           "lastTransitionTime": now, "reason": reason, "message": message})
}

fn remove_condition(status: &mut Value, kind: &str) {
    if let Some(a) = status["conditions"].as_array_mut() {
        a.retain(|c| c["type"] != kind);
    }
}

/// Kubernetes' `SetDeploymentCondition`: nothing changes when status and
/// reason are the same; the transition time survives a same-status change.
fn set_condition(status: &mut Value, mut cond: Value) {
    let kind = cond["type"].as_str().unwrap_or_default().to_string();
    if let Some(cur) = condition(status, &kind) {
        if cur["status"] == cond["status"] && cur["reason"] == cond["reason"] {
            return;
        }
        if cur["status"] == cond["status"] {
            cond["lastTransitionTime"] = cur["lastTransitionTime"].clone();
        }
    }
    remove_condition(status, &kind);
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    if let Some(a) = status["conditions"].as_array_mut() {
        a.push(cond);
    }
}

/// The counts and the Available condition (Kubernetes' `calculateStatus`);
/// zero counts are omitted as the API omits them.
fn calculate(st: &State) -> Value {
    let sum = |f: &str| -> i64 { st.all().map(|rs| int_at(rs, f)).sum() };
    let available = sum("/status/availableReplicas");
    let unavailable = (sum("/spec/replicas") - available).max(0);
    let counts = [
        ("observedGeneration", int_at(&st.d, "/metadata/generation")),
        ("replicas", sum("/status/replicas")),
        (
            "updatedReplicas",
            st.new_rs
                .as_ref()
                .map_or(0, |rs| int_at(rs, "/status/replicas")),
        ),
        ("readyReplicas", sum("/status/readyReplicas")),
        ("availableReplicas", available),
        ("unavailableReplicas", unavailable),
        ("collisionCount", int_at(&st.d, "/status/collisionCount")),
    ];
    let mut status = json!({});
    for (k, v) in counts.into_iter().filter(|(_, v)| *v != 0) {
        status[k] = json!(v);
    }
    if let Some(c) = st.d["status"]["conditions"].as_array() {
        status["conditions"] = json!(c);
    }
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

/// The pause/resume and new-ReplicaSet notes Kubernetes writes before a
/// step (`checkPausedConditions`, `getNewReplicaSet`).
fn note_progress(st: &State, status: &mut Value) {
    let paused = st.d["spec"]["paused"].as_bool() == Some(true);
    let reason =
        condition(status, PROGRESSING).and_then(|c| c["reason"].as_str().map(str::to_string));
    if paused && reason.as_deref() != Some(PAUSED) {
        set_condition(
            status,
            new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused"),
        );
    } else if !paused && reason.as_deref() == Some(PAUSED) {
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
    let Some(rs) = st.new_rs.as_ref().map(meta::name) else {
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
fn note_rollout(st: &State, status: &mut Value, now: Timestamp) {
    let cur = condition(status, PROGRESSING).cloned();
    let reason = cur
        .as_ref()
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default();
    let already_complete = int_at(status, "/replicas") == int_at(status, "/updatedReplicas")
        && reason == NEW_RS_AVAILABLE;
    if already_complete {
        return;
    }
    let rs = st.new_rs.as_ref().map(meta::name).unwrap_or_default();
    if is_complete(&st.d, status) {
        let msg = format!("ReplicaSet {rs:?} has successfully progressed.");
        set_condition(
            status,
            new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, &msg),
        );
    } else if is_progressing(&st.d["status"], status) {
        let msg = format!("ReplicaSet {rs:?} is progressing.");
        let mut cond = new_condition(PROGRESSING, "True", "ReplicaSetUpdated", &msg);
        if let Some(c) = cur.as_ref().filter(|c| c["status"] == "True") {
            cond["lastTransitionTime"] = c["lastTransitionTime"].clone();
        }
        remove_condition(status, PROGRESSING);
        set_condition(status, cond);
    } else if time_left(st, status, now) == Some(Duration::ZERO) {
        let msg = format!("ReplicaSet {rs:?} has timed out progressing.");
        set_condition(status, new_condition(PROGRESSING, "False", TIMED_OUT, &msg));
    }
}

/// Time until the progress deadline passes (`None`: no deadline running).
fn time_left(st: &State, status: &Value, now: Timestamp) -> Option<Duration> {
    let deadline = progress_deadline(&st.d)?;
    let c = condition(status, PROGRESSING)?;
    if matches!(
        c["reason"].as_str(),
        Some(NEW_RS_AVAILABLE) | Some(TIMED_OUT)
    ) {
        return None;
    }
    let updated = c["lastUpdateTime"].as_str().and_then(meta::parse_time)?;
    let left = updated.as_second() + deadline - now.as_second();
    Some(Duration::from_secs(left.max(0).unsigned_abs()))
}

impl Controller {
    /// Writes the status when it changed. `rollout`: this was a rollout
    /// step, so Progressing is updated too; then a reconcile is asked for
    /// when the progress deadline would pass.
    pub(super) async fn write_status(&self, st: &State, rollout: bool) -> Reconciled {
        let now = Timestamp::now();
        let mut status = calculate(st);
        if progress_deadline(&st.d).is_none() {
            remove_condition(&mut status, PROGRESSING);
        } else {
            note_progress(st, &mut status);
            if rollout {
                note_rollout(st, &mut status, now);
            }
        }
        if status != st.d["status"] {
            let mut updated = st.d.clone();
            updated["status"] = status.clone();
            self.client
                .update(&(deployment_path(&st.d) + "/status"), &updated)
                .await?;
        }
        let recheck = match rollout && !is_complete(&st.d, &status) {
            true => time_left(st, &status, now).map(|d| d + Duration::from_secs(1)),
            false => None,
        };
        Ok(recheck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_transition_time_and_skip_no_ops() {
        let mut s = json!({});
        let mut c = new_condition(AVAILABLE, "True", "A", "m");
        c["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        set_condition(&mut s, c);
        set_condition(&mut s, new_condition(AVAILABLE, "True", "B", "m2"));
        let got = condition(&s, AVAILABLE).cloned().unwrap_or_default();
        assert_eq!(got["reason"], "B");
        assert_eq!(got["lastTransitionTime"], "2020-01-01T00:00:00Z");
        set_condition(&mut s, new_condition(AVAILABLE, "False", "C", "m3"));
        let got = condition(&s, AVAILABLE).cloned().unwrap_or_default();
        assert_ne!(got["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(s["conditions"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn complete_needs_every_count_and_the_generation() {
        let d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 3}});
        let s = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
                       "availableReplicas": 3});
        assert!(is_complete(&d, &s));
        let mut stale = s.clone();
        stale["observedGeneration"] = json!(1);
        assert!(!is_complete(&d, &stale));
        let mut old_left = s.clone();
        old_left["replicas"] = json!(4);
        assert!(!is_complete(&d, &old_left));
    }

    #[test]
    fn progress_is_any_count_moving_forward() {
        let old = json!({"replicas": 4, "updatedReplicas": 1, "availableReplicas": 3});
        assert!(is_progressing(
            &old,
            &json!({"replicas": 4, "updatedReplicas": 2, "availableReplicas": 3})
        ));
        assert!(is_progressing(
            &old,
            &json!({"replicas": 3, "updatedReplicas": 1, "availableReplicas": 3})
        ));
        assert!(!is_progressing(&old, &old));
    }
}
