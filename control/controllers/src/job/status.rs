//! A Job's status: its conditions, when it finished, and the comparison
//! that keeps the controller from writing an unchanged status.
//!
//! Conditions carry every field (type, status, reason, message,
//! lastProbeTime, lastTransitionTime) since typed clients expect them.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const SUSPENDED: &str = "Suspended";
/// Kubernetes 1.31+: set with `Complete` / `Failed` (keel sets both at once).
pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
pub const FAILURE_TARGET: &str = "FailureTarget";

/// The condition of `type_` in `status`, if any.
pub fn condition<'a>(status: Option<&'a JobStatus>, type_: &str) -> Option<&'a JobCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn is_true(status: Option<&JobStatus>, type_: &str) -> bool {
    condition(status, type_).is_some_and(|c| c.status == "True")
}

/// The Job is Complete or Failed (final: nothing changes it again).
pub fn is_finished(job: &Job) -> bool {
    let s = job.status.as_ref();
    is_true(s, COMPLETE) || is_true(s, FAILED)
}

/// The Job's `Suspended` condition is True.
pub fn is_suspended(status: Option<&JobStatus>) -> bool {
    is_true(status, SUSPENDED)
}

/// When the Job finished (completionTime, else its final condition's
/// transition), for ttlSecondsAfterFinished.
pub fn finished_at(job: &Job) -> Option<Timestamp> {
    let s = job.status.as_ref()?;
    if let Some(t) = &s.completion_time {
        return Some(t.0);
    }
    [COMPLETE, FAILED]
        .iter()
        .filter_map(|t| condition(Some(s), t))
        .find(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Sets condition `type_` to `status` with `reason` and `message`; the
/// transition time changes only when the status does.
pub fn set_condition(
    s: &mut JobStatus,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let conditions = s.conditions.get_or_insert_with(Vec::new);
    let fresh = JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => {
            c.reason = fresh.reason;
            c.message = fresh.message;
        }
        Some(c) => *c = fresh,
        None => conditions.push(fresh),
    }
}

/// The status with counts absent-as-zero and empty lists as absent, so
/// that two statuses meaning the same compare equal.
fn normalized(s: &JobStatus) -> JobStatus {
    let nonzero = |v: Option<i32>| v.filter(|n| *n != 0);
    let nonempty = |v: &Option<Vec<String>>| v.clone().filter(|l| !l.is_empty());
    let uncounted = s.uncounted_terminated_pods.as_ref();
    JobStatus {
        active: nonzero(s.active),
        succeeded: nonzero(s.succeeded),
        failed: nonzero(s.failed),
        ready: Some(s.ready.unwrap_or(0)),
        completed_indexes: s.completed_indexes.clone().filter(|c| !c.is_empty()),
        uncounted_terminated_pods: Some(UncountedTerminatedPods {
            succeeded: uncounted.and_then(|u| nonempty(&u.succeeded)),
            failed: uncounted.and_then(|u| nonempty(&u.failed)),
        }),
        ..s.clone()
    }
}

/// `new` says something `old` does not.
pub fn differs(old: Option<&JobStatus>, new: &JobStatus) -> bool {
    normalized(&old.cloned().unwrap_or_default()) != normalized(new)
}

/// `new` as Kubernetes writes it: zero counts omitted, `ready` always,
/// `uncountedTerminatedPods` always (possibly `{}`).
pub fn canonical(new: &JobStatus) -> JobStatus {
    normalized(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let t0: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        let mut s = JobStatus::default();
        set_condition(
            &mut s,
            SUSPENDED,
            "True",
            "JobSuspended",
            "Job suspended",
            t0,
        );
        set_condition(
            &mut s,
            SUSPENDED,
            "True",
            "JobSuspended",
            "Job suspended",
            t1,
        );
        let c = condition(Some(&s), SUSPENDED).unwrap();
        assert_eq!(c.last_transition_time, Some(Time(t0)));
        set_condition(&mut s, SUSPENDED, "False", "JobResumed", "Job resumed", t1);
        let c = condition(Some(&s), SUSPENDED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.last_transition_time.clone()),
            ("False", Some(Time(t1)))
        );
        assert!(!is_suspended(Some(&s)));
    }

    #[test]
    fn zero_counts_equal_absent_ones() {
        let a = JobStatus {
            active: Some(0),
            ready: Some(0),
            ..Default::default()
        };
        assert!(!differs(Some(&JobStatus::default()), &a));
        let b = JobStatus {
            active: Some(1),
            ..Default::default()
        };
        assert!(differs(Some(&a), &b));
        assert_eq!(canonical(&a).active, None);
        assert_eq!(canonical(&a).ready, Some(0));
    }
}
