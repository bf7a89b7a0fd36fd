//! Pod spec validation, shared by pods and every pod template (Deployment,
//! ReplicaSet, StatefulSet, DaemonSet, Job, CronJob, ReplicationController):
//! containers, ports, volumes and mounts, environment, resources,
//! tolerations and pod-level policies, each reported at its field path.

use std::collections::HashSet;

use crate::kinds::common::errs::{at_least, child, index, key, required_str, syntax, Errs};
use crate::kinds::common::json::{get, list, map, str_of};
use crate::kinds::common::meta::{annotations, labels};
use crate::kinds::common::names::{
    dns1123_label, dns1123_subdomain, iana_svc_name, qualified_name,
};
use crate::kinds::common::ports::{port_number, PROTOCOLS};
use crate::kinds::common::quantities::resource_list;
use crate::quantity::quantity_nanos;
use serde_json::Value;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];

/// Validates a PodSpec at `path` (`spec`, `spec.template.spec`, ...).
pub fn pod_spec(e: &mut Errs, spec: &Value, path: &str) {
    let volumes = pod_volumes(e, spec, path);
    if list(spec, "containers").is_empty() {
        e.required(&child(path, "containers"), "");
    }
    let mut names = HashSet::new();
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for (i, c) in list(spec, key).iter().enumerate() {
            let p = index(&child(path, key), i);
            container(e, c, &p, &mut names, &volumes);
        }
    }
    pod_policies(e, spec, path);
    tolerations(e, list(spec, "tolerations"), &child(path, "tolerations"));
    labels(e, map(spec, "nodeSelector"), &child(path, "nodeSelector"));
    if get(spec, "hostNetwork") == Some(&Value::Bool(true)) {
        host_network_ports(e, spec, path);
    }
}

/// Enumerated and numeric pod-level fields.
fn pod_policies(e: &mut Errs, spec: &Value, path: &str) {
    let restart = get(spec, "restartPolicy");
    e.one_of(&child(path, "restartPolicy"), restart, RESTART_POLICIES);
    let dns = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
    e.one_of(&child(path, "dnsPolicy"), get(spec, "dnsPolicy"), &dns);
    if str_of(spec, "dnsPolicy") == Some("None") && get(spec, "dnsConfig").is_none() {
        e.required(
            &child(path, "dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        );
    }
    at_least(e, spec, "terminationGracePeriodSeconds", path, 0);
    at_least(e, spec, "activeDeadlineSeconds", path, 1);
    for k in ["hostname", "subdomain"] {
        if let Some(s) = str_of(spec, k).filter(|s| !s.is_empty()) {
            syntax(e, &child(path, k), s, dns1123_label(s));
        }
    }
    if let Some(sa) = str_of(spec, "serviceAccountName").filter(|s| !s.is_empty()) {
        syntax(
            e,
            &child(path, "serviceAccountName"),
            sa,
            dns1123_subdomain(sa),
        );
    }
}

/// Volume names must be unique labels, each with exactly one source.
/// Returns the names, for checking volumeMounts.
fn pod_volumes(e: &mut Errs, spec: &Value, path: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in list(spec, "volumes").iter().enumerate() {
        let p = index(&child(path, "volumes"), i);
        if let Some(name) = required_str(e, v, "name", &p) {
            syntax(e, &child(&p, "name"), name, dns1123_label(name));
            if !names.insert(name.to_string()) {
                e.duplicate(&child(&p, "name"), &Value::from(name));
            }
        }
        let sources = v.as_object().map_or(0, |m| {
            m.iter()
                .filter(|(k, v)| *k != "name" && !v.is_null())
                .count()
        });
        match sources {
            0 => e.required(&p, "must specify a volume type"),
            1 => {}
            _ => e.forbidden(&p, "may not specify more than 1 volume type"),
        }
    }
    names
}

fn container(
    e: &mut Errs,
    c: &Value,
    path: &str,
    names: &mut HashSet<String>,
    volumes: &HashSet<String>,
) {
    if let Some(name) = required_str(e, c, "name", path) {
        syntax(e, &child(path, "name"), name, dns1123_label(name));
        if !names.insert(name.to_string()) {
            e.duplicate(&child(path, "name"), &Value::from(name));
        }
    }
    required_str(e, c, "image", path);
    let pull = ["Always", "IfNotPresent", "Never"];
    e.one_of(
        &child(path, "imagePullPolicy"),
        get(c, "imagePullPolicy"),
        &pull,
    );
    let tmp = ["File", "FallbackToLogsOnError"];
    let tmp_path = child(path, "terminationMessagePolicy");
    e.one_of(&tmp_path, get(c, "terminationMessagePolicy"), &tmp);
    container_ports(e, list(c, "ports"), &child(path, "ports"));
    volume_mounts(
        e,
        list(c, "volumeMounts"),
        &child(path, "volumeMounts"),
        volumes,
    );
    env(e, list(c, "env"), &child(path, "env"));
    if let Some(res) = get(c, "resources") {
        let rp = child(path, "resources");
        resource_list(e, map(res, "limits"), &child(&rp, "limits"));
        resource_list(e, map(res, "requests"), &child(&rp, "requests"));
        requests_within_limits(e, res, &rp);
    }
}

fn container_ports(e: &mut Errs, ports: &[Value], path: &str) {
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = index(path, i);
        if let Some(name) = str_of(p, "name").filter(|n| !n.is_empty()) {
            syntax(e, &child(&pp, "name"), name, iana_svc_name(name));
            if !names.insert(name) {
                e.duplicate(&child(&pp, "name"), &Value::from(name));
            }
        }
        match get(p, "containerPort") {
            None => e.required(&child(&pp, "containerPort"), ""),
            Some(v) => port_number(e, v, &child(&pp, "containerPort")),
        }
        if let Some(v) = get(p, "hostPort").filter(|v| v.as_i64() != Some(0)) {
            port_number(e, v, &child(&pp, "hostPort"));
        }
        e.one_of(&child(&pp, "protocol"), get(p, "protocol"), PROTOCOLS);
    }
}

/// Host networking shares the node's ports: hostPort must equal containerPort.
fn host_network_ports(e: &mut Errs, spec: &Value, path: &str) {
    for (i, c) in list(spec, "containers").iter().enumerate() {
        for (j, p) in list(c, "ports").iter().enumerate() {
            let host = get(p, "hostPort").filter(|h| h.as_i64() != Some(0));
            if let Some(h) = host.filter(|h| Some(*h) != get(p, "containerPort")) {
                let pp = index(&child(&index(&child(path, "containers"), i), "ports"), j);
                e.invalid(
                    &child(&pp, "hostPort"),
                    h,
                    "must match `containerPort` when `hostNetwork` is true",
                );
            }
        }
    }
}

fn volume_mounts(e: &mut Errs, mounts: &[Value], path: &str, volumes: &HashSet<String>) {
    let mut paths = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let mp = index(path, i);
        if let Some(name) = required_str(e, m, "name", &mp) {
            if !volumes.contains(name) {
                e.not_found(&child(&mp, "name"), &Value::from(name));
            }
        }
        if let Some(p) = required_str(e, m, "mountPath", &mp) {
            if !paths.insert(p) {
                e.invalid(&child(&mp, "mountPath"), &Value::from(p), "must be unique");
            }
        }
    }
}

/// Environment variable names: any printable ASCII but '=' (relaxed rule).
fn env(e: &mut Errs, vars: &[Value], path: &str) {
    for (i, v) in vars.iter().enumerate() {
        let p = index(path, i);
        let Some(name) = required_str(e, v, "name", &p) else {
            continue;
        };
        if !name.chars().all(|c| (' '..='~').contains(&c) && c != '=') {
            e.invalid(
                &child(&p, "name"),
                &Value::from(name),
                "a valid environment variable name must consist only of printable ASCII \
                 characters other than '='",
            );
        }
    }
}

fn tolerations(e: &mut Errs, tols: &[Value], path: &str) {
    for (i, t) in tols.iter().enumerate() {
        let p = index(path, i);
        if let Some(k) = str_of(t, "key").filter(|k| !k.is_empty()) {
            syntax(e, &child(&p, "key"), k, qualified_name(k));
        }
        let op = get(t, "operator");
        e.one_of(&child(&p, "operator"), op, &["Exists", "Equal"]);
        let has_value = str_of(t, "value").is_some_and(|v| !v.is_empty());
        if op.and_then(Value::as_str) == Some("Exists") && has_value {
            e.invalid(
                &child(&p, "operator"),
                &Value::from("Exists"),
                "value must be empty when `operator` is 'Exists'",
            );
        }
        let effects = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
        let effect = get(t, "effect").filter(|v| v.as_str() != Some(""));
        e.one_of(&child(&p, "effect"), effect, &effects);
    }
}

/// Requests may not exceed limits, resource by resource.
fn requests_within_limits(e: &mut Errs, resources: &Value, path: &str) {
    let limits = map(resources, "limits");
    let requests_path = child(path, "requests");
    for (name, req) in map(resources, "requests").into_iter().flatten() {
        let limit = limits.and_then(|l| l.get(name));
        let Some(limit_q) = limit.and_then(Value::as_str) else {
            continue;
        };
        let (Some(r), Some(l)) = (
            req.as_str().and_then(quantity_nanos),
            quantity_nanos(limit_q),
        ) else {
            continue;
        };
        if r > l {
            let detail = format!("must be less than or equal to {name} limit of {limit_q}");
            e.invalid(&key(&requests_path, name), req, &detail);
        }
    }
}

/// A PodTemplateSpec: labels, pod spec, and the restart policies the owning
/// controller can honour.
pub fn pod_template(e: &mut Errs, tpl: Option<&Value>, path: &str, restart: &[&str]) {
    let null = Value::Null;
    let tpl = tpl.unwrap_or(&null);
    let meta = tpl.get("metadata").unwrap_or(&null);
    labels(e, map(meta, "labels"), &child(path, "metadata.labels"));
    annotations(
        e,
        map(meta, "annotations"),
        &child(path, "metadata.annotations"),
    );
    let spec = tpl.get("spec").unwrap_or(&null);
    let spec_path = child(path, "spec");
    pod_spec(e, spec, &spec_path);
    if let Some(rp) = get(spec, "restartPolicy") {
        let known = rp.as_str().filter(|r| RESTART_POLICIES.contains(r));
        if known.is_some_and(|r| !restart.contains(&r)) {
            e.not_supported(&child(&spec_path, "restartPolicy"), rp, restart);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::common::testing::{bad, c, ok, pod};
    use serde_json::{json, Value};

    #[test]
    fn pod_containers() {
        bad(
            "",
            "pods",
            &pod(json!({"containers": []})),
            "spec.containers",
            "FieldValueRequired",
        );
        let dup = pod(json!({"containers": [c("a")], "initContainers": [c("a")]}));
        bad(
            "",
            "pods",
            &dup,
            "spec.initContainers[0].name",
            "FieldValueDuplicate",
        );
        let noimg = pod(json!({"containers": [c("a"), {"name": "b"}]}));
        bad(
            "",
            "pods",
            &noimg,
            "spec.containers[1].image",
            "FieldValueRequired",
        );
        let badname = pod(json!({"containers": [c("A")]}));
        bad(
            "",
            "pods",
            &badname,
            "spec.containers[0].name",
            "FieldValueInvalid",
        );
    }

    #[test]
    fn pod_ports() {
        let ports =
            |p: Value| pod(json!({"containers": [{"name": "a", "image": "x", "ports": p}]}));
        ok(
            "",
            "pods",
            &ports(
                json!([{"containerPort": 80, "name": "http", "protocol": "TCP"},
            {"containerPort": 81, "name": "metrics"}]),
            ),
        );
        bad(
            "",
            "pods",
            &ports(json!([{"containerPort": 0}])),
            "spec.containers[0].ports[0].containerPort",
            "FieldValueInvalid",
        );
        bad(
            "",
            "pods",
            &ports(json!([{"containerPort": 70000}])),
            "spec.containers[0].ports[0].containerPort",
            "FieldValueInvalid",
        );
        bad(
            "",
            "pods",
            &ports(json!([{"containerPort": 1, "name": "h"}, {"containerPort": 2, "name": "h"}])),
            "spec.containers[0].ports[1].name",
            "FieldValueDuplicate",
        );
        bad(
            "",
            "pods",
            &ports(json!([{"containerPort": 1, "protocol": "HTTP"}])),
            "spec.containers[0].ports[0].protocol",
            "FieldValueNotSupported",
        );
    }

    #[test]
    fn pod_policies_and_volumes() {
        bad(
            "",
            "pods",
            &pod(json!({"containers": [c("a")], "restartPolicy": "Sometimes"})),
            "spec.restartPolicy",
            "FieldValueNotSupported",
        );
        let vols = |mount: &str| {
            pod(json!({"volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": mount, "mountPath": "/d"}]}]}))
        };
        ok("", "pods", &vols("data"));
        bad(
            "",
            "pods",
            &vols("nope"),
            "spec.containers[0].volumeMounts[0].name",
            "FieldValueNotFound",
        );
        let dup = pod(json!({"containers": [c("a")], "volumes": [
            {"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]}));
        bad(
            "",
            "pods",
            &dup,
            "spec.volumes[1].name",
            "FieldValueDuplicate",
        );
        let two = pod(json!({"containers": [c("a")], "volumes": [
            {"name": "v", "emptyDir": {}, "hostPath": {"path": "/"}}]}));
        bad("", "pods", &two, "spec.volumes[0]", "FieldValueForbidden");
    }

    #[test]
    fn pod_resources() {
        let res =
            |r: Value| pod(json!({"containers": [{"name": "a", "image": "x", "resources": r}]}));
        ok(
            "",
            "pods",
            &res(json!({"requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"cpu": "0.5", "memory": "1073741824"}})),
        );
        let cause = bad(
            "",
            "pods",
            &res(json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})),
            "spec.containers[0].resources.requests[cpu]",
            "FieldValueInvalid",
        );
        assert_eq!(
            cause.message,
            "Invalid value: \"2\": must be less than or equal to cpu limit of 1"
        );
        bad(
            "",
            "pods",
            &res(json!({"limits": {"cpu": "lots"}})),
            "spec.containers[0].resources.limits[cpu]",
            "FieldValueInvalid",
        );
        bad(
            "",
            "pods",
            &res(json!({"requests": {"cpu": "-1"}})),
            "spec.containers[0].resources.requests[cpu]",
            "FieldValueInvalid",
        );
    }
}
