//! The pod row of `kubectl get pods`: READY counts, the STATUS reason
//! (init containers, sidecars, waiting and terminated states, Terminating),
//! restarts with the age of the last one, and the wide columns.

use crate::kinds::common::json::{at, count, int, list, text};
use crate::kinds::common::table::{
    age, deleting, has_condition, name, or_none, since, ts, Col, AGE, NAME,
};
use jiff::Timestamp;
use serde_json::{json, Value};

pub const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Ready",
        "string",
        false,
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    Col(
        "Status",
        "string",
        false,
        "The aggregate status of the containers in this pod.",
    ),
    Col(
        "Restarts",
        "string",
        false,
        "Container restarts in this pod and when the last one happened.",
    ),
    AGE,
    Col("IP", "string", true, "The pod's IP address."),
    Col("Node", "string", true, "The node the pod is bound to."),
    Col(
        "Nominated Node",
        "string",
        true,
        "The node the scheduler nominated for preemption.",
    ),
    Col(
        "Readiness Gates",
        "string",
        true,
        "Readiness gate conditions that are true, of all gates.",
    ),
];

/// Restart count and most recent restart time over a set of containers.
#[derive(Default, Clone, Copy)]
struct Restarts {
    count: i64,
    last: Option<Timestamp>,
}

impl Restarts {
    fn add(&mut self, status: &Value) {
        self.count += int(status, "restartCount");
        if let Some(t) = ts(status, "lastState.terminated.finishedAt") {
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
    }
}

/// What the pod row shows besides plain fields.
struct PodSummary {
    ready: i64,
    total: i64,
    reason: String,
    restarts: Restarts,
}

pub fn cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let s = pod_summary(pod);
    let restarts = match s.restarts.last {
        Some(t) if s.restarts.count != 0 => {
            format!("{} ({} ago)", s.restarts.count, since(Some(t), now))
        }
        _ => s.restarts.count.to_string(),
    };
    let ip = list(pod, "status.podIPs")
        .first()
        .map(|p| text(p, "ip"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| text(pod, "status.podIP"));
    vec![
        name(pod),
        json!(format!("{}/{}", s.ready, s.total)),
        json!(s.reason),
        json!(restarts),
        age(pod, now),
        json!(or_none(ip)),
        json!(or_none(text(pod, "spec.nodeName"))),
        json!(or_none(text(pod, "status.nominatedNodeName"))),
        json!(readiness_gates(pod)),
    ]
}

/// The pod STATUS column, READY counts and restarts, following Kubernetes'
/// printPod: phase or status reason, then init containers, then regular
/// containers (last one wins), then Terminating.
fn pod_summary(pod: &Value) -> PodSummary {
    let phase = text(pod, "status.phase");
    let mut reason = match text(pod, "status.reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if list(pod, "status.conditions")
        .iter()
        .any(|c| text(c, "type") == "PodScheduled" && text(c, "reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let sidecars = sidecar_names(pod);
    let mut s = PodSummary {
        ready: 0,
        total: count(pod, "spec.containers") + i64::try_from(sidecars.len()).unwrap_or(0),
        reason,
        restarts: Restarts::default(),
    };
    let (initializing, all, sidecar) = init_containers(pod, &sidecars, &mut s);
    if !initializing || has_condition(pod, "Initialized") {
        s.restarts = sidecar;
        main_containers(pod, &mut s);
    } else {
        s.restarts = all;
    }
    if deleting(pod) && text(pod, "status.reason") == "NodeLost" {
        s.reason = "Unknown".into();
    } else if deleting(pod) && !matches!(phase, "Failed" | "Succeeded") {
        s.reason = "Terminating".into();
    }
    s
}

/// Init containers with `restartPolicy: Always` are sidecars: they count
/// towards READY and keep running after initialization.
fn sidecar_names(pod: &Value) -> Vec<&str> {
    list(pod, "spec.initContainers")
        .iter()
        .filter(|c| text(c, "restartPolicy") == "Always")
        .map(|c| text(c, "name"))
        .collect()
}

/// Walks init container statuses until the first one still in the way and
/// names it (`Init:0/1`, `Init:CrashLoopBackOff`, `Init:ExitCode:1`).
/// Returns whether the pod is still initializing plus restarts over all init
/// containers and over sidecars only.
fn init_containers(
    pod: &Value,
    sidecars: &[&str],
    s: &mut PodSummary,
) -> (bool, Restarts, Restarts) {
    let (mut all, mut side) = (Restarts::default(), Restarts::default());
    let total_init = count(pod, "spec.initContainers");
    for (i, c) in list(pod, "status.initContainerStatuses").iter().enumerate() {
        let is_sidecar = sidecars.contains(&text(c, "name"));
        all.add(c);
        if is_sidecar {
            side.add(c);
        }
        let terminated = at(c, "state.terminated").filter(|t| t.is_object());
        if terminated.is_some_and(|t| int(t, "exitCode") == 0) {
            continue;
        }
        if is_sidecar && at(c, "started").and_then(Value::as_bool) == Some(true) {
            if at(c, "ready").and_then(Value::as_bool) == Some(true) {
                s.ready += 1;
            }
            continue;
        }
        let waiting = text(c, "state.waiting.reason");
        s.reason = match terminated {
            Some(t) => format!("Init:{}", terminated_reason(t)),
            None if !waiting.is_empty() && waiting != "PodInitializing" => {
                format!("Init:{waiting}")
            }
            None => format!("Init:{i}/{total_init}"),
        };
        return (true, all, side);
    }
    (false, all, side)
}

/// A terminated state's reason, or `Signal:N` / `ExitCode:N` without one.
fn terminated_reason(t: &Value) -> String {
    match (text(t, "reason"), int(t, "signal")) {
        ("", 0) => format!("ExitCode:{}", int(t, "exitCode")),
        ("", sig) => format!("Signal:{sig}"),
        (r, _) => r.to_string(),
    }
}

/// Regular containers, last to first so the first container's state wins;
/// a pod whose containers completed but one still runs reads Running or
/// NotReady rather than Completed.
fn main_containers(pod: &Value, s: &mut PodSummary) {
    let mut has_running = false;
    let mut error_reason = String::new();
    for c in list(pod, "status.containerStatuses").iter().rev() {
        s.restarts.add(c);
        let waiting = text(c, "state.waiting.reason");
        let terminated = at(c, "state.terminated").filter(|t| t.is_object());
        let running = at(c, "state.running").is_some_and(Value::is_object);
        if !waiting.is_empty() {
            s.reason = waiting.to_string();
        } else if let Some(t) = terminated {
            s.reason = terminated_reason(t);
            if int(t, "exitCode") != 0 {
                error_reason.clone_from(&s.reason);
            }
        } else if running && at(c, "ready").and_then(Value::as_bool) == Some(true) {
            has_running = true;
            s.ready += 1;
        }
    }
    if s.reason == "Completed" {
        if has_running && has_condition(pod, "Ready") {
            s.reason = "Running".into();
        } else if !error_reason.is_empty() {
            s.reason = error_reason;
        } else if has_running {
            s.reason = "NotReady".into();
        }
    }
}

/// `true/total` readiness gates, "<none>" without gates.
fn readiness_gates(pod: &Value) -> String {
    let gates = list(pod, "spec.readinessGates");
    if gates.is_empty() {
        return "<none>".into();
    }
    let passed = gates
        .iter()
        .filter(|g| has_condition(pod, text(g, "conditionType")))
        .count();
    format!("{passed}/{}", gates.len())
}

#[cfg(test)]
mod tests {
    use crate::kinds::common::testing::{
        ago, cell, column_definitions, dated_meta as meta, now, row_cells,
    };
    use serde_json::{json, Value};

    fn running_pod() -> Value {
        json!({
            "metadata": meta("x"),
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]},
            "status": {
                "phase": "Running", "podIP": "10.0.0.166",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                                        "state": {"running": {"startedAt": ago(6)}}}]
            }
        })
    }

    fn with_container_state(state: Value, ready: bool) -> Value {
        let mut p = running_pod();
        p["status"]["containerStatuses"][0]["state"] = state;
        p["status"]["containerStatuses"][0]["ready"] = json!(ready);
        p
    }

    #[test]
    fn pod_columns_and_running_row() {
        let cols = column_definitions("pods");
        assert_eq!(
            cols[0],
            json!({"name": "Name", "type": "string", "format": "name",
                                   "description": "Name must be unique within a namespace.", "priority": 0})
        );
        let wide: Vec<&Value> = cols
            .iter()
            .filter(|c| c["priority"] == 1)
            .map(|c| &c["name"])
            .collect();
        assert_eq!(wide, ["IP", "Node", "Nominated Node", "Readiness Gates"]);
        let row = row_cells("pods", &running_pod(), now());
        assert_eq!(
            row,
            vec![
                json!("x"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("6s"),
                json!("10.0.0.166"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn pod_status_reasons() {
        let pending = json!({"metadata": meta("p"), "spec": {"containers": [{"name": "c"}]},
                             "status": {"phase": "Pending"}});
        assert_eq!(cell("pods", &pending, "Status"), "Pending");
        assert_eq!(cell("pods", &pending, "Ready"), "0/1");
        assert_eq!(cell("pods", &pending, "IP"), "<none>");

        let creating =
            with_container_state(json!({"waiting": {"reason": "ContainerCreating"}}), false);
        assert_eq!(cell("pods", &creating, "Status"), "ContainerCreating");
        assert_eq!(cell("pods", &creating, "Ready"), "0/1");

        let crash = with_container_state(json!({"waiting": {"reason": "CrashLoopBackOff"}}), false);
        assert_eq!(cell("pods", &crash, "Status"), "CrashLoopBackOff");

        let mut done = with_container_state(
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
            false,
        );
        done["status"]["phase"] = json!("Succeeded");
        assert_eq!(cell("pods", &done, "Status"), "Completed");

        let failed = with_container_state(json!({"terminated": {"exitCode": 137}}), false);
        assert_eq!(cell("pods", &failed, "Status"), "ExitCode:137");
        let killed =
            with_container_state(json!({"terminated": {"exitCode": 1, "signal": 9}}), false);
        assert_eq!(cell("pods", &killed, "Status"), "Signal:9");

        let mut terminating = running_pod();
        terminating["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(cell("pods", &terminating, "Status"), "Terminating");
        terminating["status"]["reason"] = json!("NodeLost");
        assert_eq!(cell("pods", &terminating, "Status"), "Unknown");
        done["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(cell("pods", &done, "Status"), "Completed");
    }

    #[test]
    fn pod_completed_container_with_running_sibling() {
        let mut p = running_pod();
        p["spec"]["containers"] = json!([{"name": "a"}, {"name": "b"}]);
        p["status"]["containerStatuses"] = json!([
            {"name": "a", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "b", "ready": true, "state": {"running": {}}}
        ]);
        assert_eq!(cell("pods", &p, "Status"), "Running");
        assert_eq!(cell("pods", &p, "Ready"), "1/2");
        p["status"]["conditions"] = json!([]);
        assert_eq!(cell("pods", &p, "Status"), "NotReady");
    }

    #[test]
    fn pod_init_containers() {
        let mut p = json!({
            "metadata": meta("i"),
            "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Pending",
                       "initContainerStatuses": [{"name": "init", "restartCount": 0,
                                                  "state": {"running": {}}}],
                       "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "PodInitializing"}}}]}
        });
        assert_eq!(cell("pods", &p, "Status"), "Init:0/1");
        p["status"]["initContainerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert_eq!(cell("pods", &p, "Status"), "Init:CrashLoopBackOff");
        p["status"]["initContainerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 2}});
        assert_eq!(cell("pods", &p, "Status"), "Init:ExitCode:2");
        p["status"]["initContainerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 0}});
        assert_eq!(cell("pods", &p, "Status"), "PodInitializing");
    }

    #[test]
    fn pod_sidecar_counts_towards_ready() {
        let p = json!({
            "metadata": meta("s"),
            "spec": {"initContainers": [{"name": "side", "restartPolicy": "Always"}],
                     "containers": [{"name": "c"}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Initialized", "status": "True"}],
                       "initContainerStatuses": [{"name": "side", "started": true, "ready": true,
                                                  "restartCount": 2, "state": {"running": {}}}],
                       "containerStatuses": [{"name": "c", "ready": true, "restartCount": 1,
                                              "state": {"running": {}}}]}
        });
        assert_eq!(cell("pods", &p, "Ready"), "2/2");
        assert_eq!(cell("pods", &p, "Status"), "Running");
        assert_eq!(cell("pods", &p, "Restarts"), "3");
    }

    #[test]
    fn pod_restarts_with_last_restart_age() {
        let mut p = running_pod();
        p["status"]["containerStatuses"][0]["restartCount"] = json!(5);
        p["status"]["containerStatuses"][0]["lastState"] =
            json!({"terminated": {"exitCode": 1, "finishedAt": ago(300)}});
        assert_eq!(cell("pods", &p, "Restarts"), "5 (5m ago)");
    }

    #[test]
    fn pod_wide_columns() {
        let mut p = running_pod();
        p["status"]["podIPs"] = json!([{"ip": "fd00::1"}]);
        p["status"]["nominatedNodeName"] = json!("n2");
        p["spec"]["readinessGates"] = json!([{"conditionType": "g1"}, {"conditionType": "g2"}]);
        p["status"]["conditions"] =
            json!([{"type": "g1", "status": "True"}, {"type": "Ready", "status": "True"}]);
        assert_eq!(cell("pods", &p, "IP"), "fd00::1");
        assert_eq!(cell("pods", &p, "Nominated Node"), "n2");
        assert_eq!(cell("pods", &p, "Readiness Gates"), "1/2");
    }
}
