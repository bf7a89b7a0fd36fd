//! The PodStatus the agent reports: phase, conditions, container statuses,
//! addresses, start time and QoS class.
//!
//! Conditions keep their `lastTransitionTime` until their status changes
//! (seeded from the pod's stored status, so an agent restart changes
//! nothing), which keeps reports stable: the worker only reports a status
//! whose JSON differs from the last one it sent.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::container::{terminated_json, Run};
use crate::agent::time;
use crate::runtime::ContainerState;

/// Condition type → (status, reason, message, lastTransitionTime).
#[derive(Debug, Default, Clone)]
pub struct Conditions(BTreeMap<String, (String, String, String, String)>);

impl Conditions {
    /// Seeded from the pod's stored conditions.
    pub fn from_pod(pod: &Pod) -> Self {
        let mut c = Conditions::default();
        for cond in pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
        {
            let t = cond
                .last_transition_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_else(time::now);
            c.0.insert(
                cond.type_.clone(),
                (
                    cond.status.clone(),
                    cond.reason.clone().unwrap_or_default(),
                    cond.message.clone().unwrap_or_default(),
                    t,
                ),
            );
        }
        c
    }

    pub fn set(&mut self, kind: &str, ok: bool, reason: &str, message: &str) {
        let status = if ok { "True" } else { "False" };
        let keep = self
            .0
            .get(kind)
            .filter(|c| c.0 == status)
            .map(|c| c.3.clone());
        let since = keep.unwrap_or_else(time::now);
        self.0.insert(
            kind.into(),
            (status.into(), reason.into(), message.into(), since),
        );
    }

    fn json(&self) -> Value {
        let order = [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ];
        let mut out = Vec::new();
        for kind in order.iter().copied().chain(
            self.0
                .keys()
                .map(String::as_str)
                .filter(|k| !order.contains(k)),
        ) {
            if let Some((status, reason, message, since)) = self.0.get(kind) {
                let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
                if !reason.is_empty() {
                    c["reason"] = json!(reason);
                }
                if !message.is_empty() {
                    c["message"] = json!(message);
                }
                out.push(c);
            }
        }
        Value::Array(out)
    }
}

/// Everything the status is made of.
pub struct Snapshot<'a> {
    pub pod: &'a Pod,
    pub phase: &'a str,
    pub conditions: &'a Conditions,
    pub inits: &'a [Run],
    pub apps: &'a [Run],
    pub init_done: bool,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: &'a str,
    /// The waiting reason of containers that cannot start yet (volume setup).
    pub blocked: Option<&'a (String, String)>,
}

pub fn status_json(s: &Snapshot<'_>) -> Value {
    let inits: Vec<Value> = s
        .inits
        .iter()
        .map(|r| container_status(r, "PodInitializing", s.blocked))
        .collect();
    let default_wait = if s.init_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let apps: Vec<Value> = s
        .apps
        .iter()
        .map(|r| container_status(r, default_wait, s.blocked))
        .collect();
    let mut status = json!({
        "phase": s.phase,
        "conditions": s.conditions.json(),
        "hostIP": s.host_ip,
        "hostIPs": [{"ip": s.host_ip}],
        "startTime": s.start_time,
        "qosClass": qos_class(s.pod),
        "containerStatuses": apps,
    });
    if !inits.is_empty() {
        status["initContainerStatuses"] = json!(inits);
    }
    if let Some(ip) = &s.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    status
}

fn container_status(r: &Run, default_wait: &str, blocked: Option<&(String, String)>) -> Value {
    let image = r.spec.image.clone().unwrap_or_default();
    let state = match (&r.observed, &r.id) {
        (Some(ContainerState::Running { started_at }), _) => {
            json!({"running": {"startedAt": time::rfc3339(*started_at)}})
        }
        (Some(exited @ ContainerState::Exited { .. }), Some(id)) if !r.will_restart => {
            json!({"terminated": terminated_json(exited, id)})
        }
        _ => {
            let fallback = (default_wait.to_string(), String::new());
            let (reason, message) = r.waiting.as_ref().or(blocked).unwrap_or(&fallback);
            let mut w = json!({"reason": reason});
            if !message.is_empty() {
                w["message"] = json!(message);
            }
            json!({"waiting": w})
        }
    };
    // While waiting to restart, the exited instance is the last state.
    let last = match (&r.observed, &r.id) {
        (Some(exited @ ContainerState::Exited { .. }), Some(id)) if r.will_restart => {
            terminated_json(exited, id)
        }
        _ => r.last_terminated.clone(),
    };
    let mut c = json!({
        "name": r.spec.name,
        "image": image,
        "imageID": r.image_id().unwrap_or_else(|| format!("keel://{image}")),
        "ready": r.ready,
        "started": r.started,
        "restartCount": r.restart_count,
        "state": state,
        "lastState": last.map_or(json!({}), |t| json!({"terminated": t})),
    });
    if let Some(id) = &r.id {
        c["containerID"] = json!(format!("exec://{id}"));
    }
    c
}

/// Guaranteed: every container has cpu and memory limits equal to its
/// requests (or no requests); BestEffort: no requests or limits anywhere;
/// Burstable otherwise.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let res = c.resources.clone().unwrap_or_default();
        let limits = res.limits.unwrap_or_default();
        let requests = res.requests.unwrap_or_default();
        any |= !limits.is_empty() || !requests.is_empty();
        for r in ["cpu", "memory"] {
            let limit = limits.get(r);
            let ok = limit.is_some() && requests.get(r).is_none_or(|q| Some(q) == limit);
            guaranteed &= ok;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// The pod phase from its containers (see Kubernetes' `getPhase`).
pub fn phase(apps: &[Run], init_done: bool, init_failed: bool) -> &'static str {
    if init_failed {
        return "Failed";
    }
    if !init_done {
        return "Pending";
    }
    if !apps.is_empty() && apps.iter().all(Run::terminal) {
        let ok = apps
            .iter()
            .all(|r| r.observed.as_ref().and_then(ContainerState::exit_code) == Some(0));
        return if ok { "Succeeded" } else { "Failed" };
    }
    let never_ran = |r: &Run| r.id.is_none() && r.restart_count == 0 && r.last_terminated.is_none();
    if apps.iter().any(never_ran) {
        return "Pending";
    }
    "Running"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(resources: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": resources}]}})).unwrap()
    }

    #[test]
    fn qos_classes() {
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
        let g = json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1"}});
        assert_eq!(qos_class(&pod(g)), "Guaranteed");
    }

    #[test]
    fn transition_time_changes_only_on_transition() {
        let mut c = Conditions::default();
        c.set("Ready", false, "ContainersNotReady", "x");
        let t0 = c.0["Ready"].3.clone();
        c.0.get_mut("Ready").unwrap().3 = "2000-01-01T00:00:00Z".into();
        c.set("Ready", false, "ContainersNotReady", "y");
        assert_eq!(c.0["Ready"].3, "2000-01-01T00:00:00Z");
        c.set("Ready", true, "", "");
        assert_ne!(c.0["Ready"].3, "2000-01-01T00:00:00Z");
        assert!(!t0.is_empty());
    }
}
