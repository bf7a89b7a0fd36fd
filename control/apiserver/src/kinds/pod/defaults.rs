//! Pod spec defaults, shared by pods and every pod template: restart and DNS
//! policy, scheduler, grace period, image pull policy, requests from limits,
//! probe timings and volume sources, after SetDefaults_Pod and friends.

use crate::kinds::common::defaults::{existing, items, object_at, set_default};
use serde_json::{json, Value};

pub fn defaults(obj: &mut Value) {
    if let Some(spec) = existing(obj, "spec") {
        pod_spec(spec);
    }
}

/// Pod spec defaults, shared by pods and every pod template.
fn pod_spec(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in items(spec, key) {
            container(c, host_network);
        }
    }
    for v in items(spec, "volumes") {
        volume(v);
    }
}

fn container(c: &mut Value, host_network: bool) {
    let pull = image_pull_policy(c.get("image").and_then(Value::as_str).unwrap_or(""));
    set_default(c, "imagePullPolicy", json!(pull));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    requests_from_limits(c);
    for p in items(c, "ports") {
        set_default(p, "protocol", json!("TCP"));
        if host_network {
            let port = p.get("containerPort").cloned().unwrap_or(Value::Null);
            set_default(p, "hostPort", port);
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = existing(c, probe) {
            probe_defaults(p);
        }
    }
    for env in items(c, "env") {
        let field_ref = existing(env, "valueFrom").and_then(|v| existing(v, "fieldRef"));
        if let Some(f) = field_ref {
            set_default(f, "apiVersion", json!("v1"));
        }
    }
}

/// Kubernetes pulls `:latest` and untagged images every time, since the tag
/// may move; a pinned tag or a digest is pulled only when missing.
fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let name = image.rsplit('/').next().unwrap_or(image);
    match name.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

/// A container that only states limits gets requests equal to them, so the
/// scheduler accounts for what the container may use (SetDefaults_Pod).
fn requests_from_limits(c: &mut Value) {
    let Some(resources) = object_at(c, "resources") else {
        return;
    };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    if let Some(requests) = object_at(resources, "requests").and_then(Value::as_object_mut) {
        for (name, qty) in limits {
            requests.entry(name).or_insert(qty);
        }
    }
}

fn probe_defaults(p: &mut Value) {
    set_default(p, "timeoutSeconds", json!(1));
    set_default(p, "periodSeconds", json!(10));
    set_default(p, "successThreshold", json!(1));
    set_default(p, "failureThreshold", json!(3));
    if let Some(h) = existing(p, "httpGet") {
        set_default(h, "path", json!("/"));
        set_default(h, "scheme", json!("HTTP"));
    }
}

/// Volume source defaults; a volume with no source at all becomes emptyDir,
/// as in SetDefaults_Volume.
fn volume(v: &mut Value) {
    let has_source = v.as_object().is_some_and(|m| m.keys().any(|k| k != "name"));
    if !has_source {
        set_default(v, "emptyDir", json!({}));
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(src) = existing(v, key) {
            set_default(src, "defaultMode", json!(0o644));
        }
    }
    if let Some(src) = existing(v, "hostPath") {
        set_default(src, "type", json!(""));
    }
}

/// Defaults for a `template` (PodTemplateSpec) field of a workload spec.
pub fn template(spec: &mut Value) {
    if let Some(ps) = existing(spec, "template").and_then(|t| existing(t, "spec")) {
        pod_spec(ps);
    }
}

#[cfg(test)]
mod tests {
    use super::image_pull_policy;
    use crate::kinds::common::testing::defaulted;
    use serde_json::json;

    #[test]
    fn pod_spec_defaults() {
        let pod = defaulted(
            "",
            "pods",
            json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}],
            "initContainers": [{"name": "i", "image": "busybox"}],
            "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}]}}),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["resources"], json!({}));
        assert_eq!(spec["initContainers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["secret"]["defaultMode"], 420);
        assert!(spec.get("priority").is_none());
    }

    #[test]
    fn image_pull_policy_rules() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("nginx:1.2"), "IfNotPresent");
        assert_eq!(image_pull_policy("registry:5000/nginx"), "Always");
        assert_eq!(image_pull_policy("registry:5000/nginx:1"), "IfNotPresent");
        assert_eq!(image_pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn explicit_values_are_kept() {
        let pod = defaulted(
            "",
            "pods",
            json!({"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "x", "imagePullPolicy": "Never"}]}}),
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
    }

    #[test]
    fn limits_become_requests_and_probes_default() {
        let pod = defaulted(
            "",
            "pods",
            json!({"spec": {"containers": [{"name": "c", "image": "x",
            "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}},
            "livenessProbe": {"httpGet": {"port": 80}}}]}}),
        );
        let c = &pod["spec"]["containers"][0];
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
        assert_eq!(c["livenessProbe"]["periodSeconds"], 10);
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/");
    }

    #[test]
    fn host_network_copies_host_port() {
        let pod = defaulted(
            "",
            "pods",
            json!({"spec": {"hostNetwork": true,
            "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 8080}]}]}}),
        );
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["hostPort"], 8080);
    }
}
