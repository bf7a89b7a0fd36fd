//! Defaulting, after Kubernetes' `SetDefaults_*` functions
//! (`pkg/apis/*/v1/defaults.go`).
//!
//! Defaults are applied on the JSON itself rather than on a typed round trip,
//! so that fields keel does not model survive untouched. Every rule only fills
//! a field that is missing (or null), which is what makes the whole pass
//! idempotent. Values the server allocates (clusterIP, ipFamilies, nodePorts,
//! job selectors, pod priority) are deliberately not invented here.

use serde_json::{json, Map, Value};

/// Applies Kubernetes' defaults for `(group, resource)` to `obj` in place.
/// Unknown resources and non-object input are left alone.
pub fn apply_defaults(group: &str, resource: &str, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (group, resource) {
        ("", "pods") => pod(obj),
        ("", "services") => service(obj),
        ("", "namespaces") => namespace(obj),
        ("", "secrets") => secret(obj),
        ("", "endpoints") => endpoints(obj),
        ("", "persistentvolumes") => persistent_volume(obj),
        ("", "persistentvolumeclaims") => persistent_volume_claim(obj),
        ("", "limitranges") => limit_range(obj),
        ("", "nodes") => node(obj),
        ("", "replicationcontrollers") => replication_controller(obj),
        ("apps", "deployments") => deployment(obj),
        ("apps", "replicasets") => replica_set(obj),
        ("apps", "statefulsets") => stateful_set(obj),
        ("apps", "daemonsets") => daemon_set(obj),
        ("batch", "jobs") => job(obj),
        ("batch", "cronjobs") => cron_job(obj),
        ("autoscaling", "horizontalpodautoscalers") => hpa(obj),
        ("discovery.k8s.io", "endpointslices") => endpoint_slice(obj),
        ("networking.k8s.io", "networkpolicies") => network_policy(obj),
        _ => {}
    }
}

// ---- JSON helpers -------------------------------------------------------

/// Sets `obj[key] = value` when the field is missing or null.
fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        let slot = map.entry(key).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// The object at `obj[key]`, created empty when missing or null; `None` when
/// the field holds something other than an object (validation reports that).
fn object_at<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    set_default(obj, key, json!({}));
    obj.get_mut(key).filter(|v| v.is_object())
}

/// The existing object at `obj[key]`, without creating it.
fn existing<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    obj.get_mut(key).filter(|v| v.is_object())
}

/// The elements of the array at `obj[key]` (none when it is not an array).
fn items<'a>(obj: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    obj.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter(|v| v.is_object())
}

fn is_empty_map(v: Option<&Value>) -> bool {
    v.and_then(Value::as_object).is_none_or(Map::is_empty)
}

// ---- core/v1 pods ---------------------------------------------------------

fn pod(obj: &mut Value) {
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
fn template(spec: &mut Value) {
    if let Some(ps) = existing(spec, "template").and_then(|t| existing(t, "spec")) {
        pod_spec(ps);
    }
}

// ---- other core/v1 --------------------------------------------------------

fn service(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if spec.get("sessionAffinity") == Some(&json!("ClientIP")) {
        if let Some(ip) =
            object_at(spec, "sessionAffinityConfig").and_then(|c| object_at(c, "clientIP"))
        {
            set_default(ip, "timeoutSeconds", json!(10800));
        }
    }
    for p in items(spec, "ports") {
        set_default(p, "protocol", json!("TCP"));
        service_target_port(p);
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
}

/// An unset (or zero / empty) targetPort means "the same as port".
fn service_target_port(p: &mut Value) {
    let unset = matches!(p.get("targetPort"), None | Some(Value::Null))
        || p.get("targetPort") == Some(&json!(0))
        || p.get("targetPort") == Some(&json!(""));
    if unset {
        if let Some(port) = p.get("port").cloned() {
            p["targetPort"] = port;
        }
    }
}

/// Namespaces carry their own name as a label (so selectors can pick them),
/// start Active, and get the `kubernetes` finalizer on creation.
///
/// Kubernetes adds that finalizer in PrepareForCreate rather than in defaults
/// because it may later be removed (namespace finalization). So it is only
/// added when `status.phase` is still unset, i.e. on an object that has not
/// been through defaulting yet; a stored or finalizing namespace keeps its list.
fn namespace(obj: &mut Value) {
    if let Some(name) = obj.pointer("/metadata/name").cloned() {
        if let Some(labels) = object_at(obj, "metadata").and_then(|m| object_at(m, "labels")) {
            labels["kubernetes.io/metadata.name"] = name;
        }
    }
    let fresh = obj.pointer("/status/phase").is_none_or(Value::is_null);
    if fresh {
        if let Some(spec) = object_at(obj, "spec") {
            set_default(spec, "finalizers", json!(["kubernetes"]));
        }
    }
    if let Some(status) = object_at(obj, "status") {
        set_default(status, "phase", json!("Active"));
    }
}

/// Secrets default to Opaque, and `stringData` is folded into `data` (base64)
/// the way the API server's conversion does: `stringData` is write-only and
/// never stored.
fn secret(obj: &mut Value) {
    set_default(obj, "type", json!("Opaque"));
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    let Some(data) = object_at(obj, "data").and_then(Value::as_object_mut) else {
        return;
    };
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default().as_bytes().to_vec();
        let encoded = k8s_openapi::ByteString(text);
        if let Ok(encoded) = serde_json::to_value(encoded) {
            data.insert(key, encoded);
        }
    }
}

fn endpoints(obj: &mut Value) {
    for subset in items(obj, "subsets") {
        for p in items(subset, "ports") {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

fn persistent_volume(obj: &mut Value) {
    if let Some(spec) = existing(obj, "spec") {
        set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = object_at(obj, "status") {
        set_default(status, "phase", json!("Pending"));
    }
}

fn persistent_volume_claim(obj: &mut Value) {
    if let Some(spec) = existing(obj, "spec") {
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = object_at(obj, "status") {
        set_default(status, "phase", json!("Pending"));
    }
}

/// Container limit ranges: a missing default limit is the max, a missing
/// default request is the default limit, then the min (SetDefaults_LimitRangeItem).
fn limit_range(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    for item in items(spec, "limits") {
        if item.get("type") != Some(&json!("Container")) {
            continue;
        }
        fill_missing(item, "default", "max");
        fill_missing(item, "defaultRequest", "default");
        fill_missing(item, "defaultRequest", "min");
    }
}

/// Copies each resource of `item[from]` into `item[to]` unless already there.
fn fill_missing(item: &mut Value, to: &str, from: &str) {
    let Some(source) = item.get(from).and_then(Value::as_object).cloned() else {
        return;
    };
    if let Some(target) = object_at(item, to).and_then(Value::as_object_mut) {
        for (name, qty) in source {
            target.entry(name).or_insert(qty);
        }
    }
}

/// Allocatable defaults to capacity so schedulers always have a figure.
fn node(obj: &mut Value) {
    let Some(status) = existing(obj, "status") else {
        return;
    };
    if let Some(capacity) = status.get("capacity").cloned() {
        set_default(status, "allocatable", capacity);
    }
}

/// RCs predate required selectors: selector and labels default to the
/// template's labels.
fn replication_controller(obj: &mut Value) {
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let Some(labels) = template_labels.filter(|l| !is_empty_map(Some(l))) {
        if let Some(spec) = existing(obj, "spec") {
            if is_empty_map(spec.get("selector")) {
                spec["selector"] = labels.clone();
            }
        }
        if let Some(meta) = object_at(obj, "metadata") {
            if is_empty_map(meta.get("labels")) {
                meta["labels"] = labels;
            }
        }
    }
    if let Some(spec) = existing(obj, "spec") {
        set_default(spec, "replicas", json!(1));
        template(spec);
    }
}

// ---- apps/v1 --------------------------------------------------------------

fn deployment(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    if let Some(strategy) = object_at(spec, "strategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type") == Some(&json!("RollingUpdate")) {
            if let Some(ru) = object_at(strategy, "rollingUpdate") {
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
        }
    }
    template(spec);
}

fn replica_set(obj: &mut Value) {
    if let Some(spec) = existing(obj, "spec") {
        set_default(spec, "replicas", json!(1));
        template(spec);
    }
}

fn stateful_set(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(strategy) = object_at(spec, "updateStrategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type") == Some(&json!("RollingUpdate")) {
            if let Some(ru) = object_at(strategy, "rollingUpdate") {
                set_default(ru, "partition", json!(0));
            }
        }
    }
    if let Some(policy) = object_at(spec, "persistentVolumeClaimRetentionPolicy") {
        set_default(policy, "whenDeleted", json!("Retain"));
        set_default(policy, "whenScaled", json!("Retain"));
    }
    for claim in items(spec, "volumeClaimTemplates") {
        persistent_volume_claim(claim);
    }
    template(spec);
}

fn daemon_set(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(strategy) = object_at(spec, "updateStrategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type") == Some(&json!("RollingUpdate")) {
            if let Some(ru) = object_at(strategy, "rollingUpdate") {
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
        }
    }
    template(spec);
}

// ---- batch/v1 -------------------------------------------------------------

fn job(obj: &mut Value) {
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let Some(labels) = template_labels.filter(|l| !is_empty_map(Some(l))) {
        if let Some(meta) = object_at(obj, "metadata") {
            if is_empty_map(meta.get("labels")) {
                meta["labels"] = labels;
            }
        }
    }
    if let Some(spec) = existing(obj, "spec") {
        job_spec(spec);
    }
}

fn job_spec(spec: &mut Value) {
    let unset = |v: Option<&Value>| v.is_none_or(Value::is_null);
    if unset(spec.get("completions")) && unset(spec.get("parallelism")) {
        spec["completions"] = json!(1);
    }
    set_default(spec, "parallelism", json!(1));
    let backoff = if unset(spec.get("backoffLimitPerIndex")) {
        json!(6)
    } else {
        json!(i32::MAX)
    };
    set_default(spec, "backoffLimit", backoff);
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let replacement = if unset(spec.get("podFailurePolicy")) {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set_default(spec, "podReplacementPolicy", json!(replacement));
    template(spec);
}

/// CronJob defaults; the job template only gets pod defaults, as upstream
/// (job defaults apply when the controller creates the Job).
fn cron_job(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    set_default(spec, "concurrencyPolicy", json!("Allow"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "successfulJobsHistoryLimit", json!(3));
    set_default(spec, "failedJobsHistoryLimit", json!(1));
    let job = existing(spec, "jobTemplate").and_then(|t| existing(t, "spec"));
    if let Some(job_spec) = job {
        template(job_spec);
    }
}

// ---- autoscaling, discovery, networking ------------------------------------

/// HPA v2: one replica minimum, CPU at 80% when no metric is given, and the
/// documented scale-up/scale-down behaviour when `behavior` is present.
fn hpa(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    set_default(spec, "minReplicas", json!(1));
    let no_metrics = spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_metrics {
        spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    }
    if let Some(behavior) = existing(spec, "behavior") {
        hpa_rules(
            behavior,
            "scaleUp",
            0,
            json!([
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15}
            ]),
        );
        hpa_rules(
            behavior,
            "scaleDown",
            300,
            json!([
                {"type": "Percent", "value": 100, "periodSeconds": 15}
            ]),
        );
    }
}

fn hpa_rules(behavior: &mut Value, key: &str, window: i32, policies: Value) {
    if let Some(rules) = object_at(behavior, key) {
        set_default(rules, "stabilizationWindowSeconds", json!(window));
        set_default(rules, "selectPolicy", json!("Max"));
        set_default(rules, "policies", policies);
    }
}

fn endpoint_slice(obj: &mut Value) {
    for p in items(obj, "ports") {
        set_default(p, "protocol", json!("TCP"));
        set_default(p, "name", json!(""));
    }
}

/// A policy always covers ingress; it covers egress only when it has egress
/// rules, so an ingress-only policy does not cut off outbound traffic.
fn network_policy(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    for dir in ["ingress", "egress"] {
        for rule in items(spec, dir) {
            for p in items(rule, "ports") {
                set_default(p, "protocol", json!("TCP"));
            }
        }
    }
    let has_egress = spec
        .get("egress")
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty());
    let types = if has_egress {
        json!(["Ingress", "Egress"])
    } else {
        json!(["Ingress"])
    };
    let no_types = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_types {
        spec["policyTypes"] = types;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(group: &str, resource: &str, mut obj: Value) -> Value {
        apply_defaults(group, resource, &mut obj);
        let once = obj.clone();
        apply_defaults(group, resource, &mut obj);
        assert_eq!(
            obj, once,
            "defaults are not idempotent for {group}/{resource}"
        );
        obj
    }

    fn pod_template(containers: Value) -> Value {
        json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": containers}})
    }

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

    #[test]
    fn deployment_defaults() {
        let d = defaulted(
            "apps",
            "deployments",
            json!({"spec": {"template":
            pod_template(json!([{"name": "c", "image": "x"}]))}}),
        );
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        let d = defaulted(
            "apps",
            "deployments",
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert!(d["spec"]["strategy"].get("rollingUpdate").is_none());
    }

    #[test]
    fn replica_set_and_rc_defaults() {
        let rs = defaulted("apps", "replicasets", json!({"spec": {}}));
        assert_eq!(rs["spec"]["replicas"], 1);
        let rc = defaulted(
            "",
            "replicationcontrollers",
            json!({"spec": {"template":
            pod_template(json!([{"name": "c", "image": "x"}]))}}),
        );
        assert_eq!(rc["spec"]["selector"], json!({"app": "a"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "a"}));
        assert_eq!(rc["spec"]["replicas"], 1);
    }

    #[test]
    fn stateful_set_defaults() {
        let s = defaulted(
            "apps",
            "statefulsets",
            json!({"spec": {
            "volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}]}}),
        );
        let spec = &s["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(
            spec["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
    }

    #[test]
    fn daemon_set_defaults() {
        let d = defaulted("apps", "daemonsets", json!({"spec": {}}));
        assert_eq!(
            d["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    }

    #[test]
    fn service_defaults() {
        let s = defaulted(
            "",
            "services",
            json!({"spec": {"ports": [{"port": 80},
            {"port": 81, "targetPort": "web", "protocol": "UDP"}]}}),
        );
        let spec = &s["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(
            spec["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(spec["ports"][1]["targetPort"], "web");
        assert!(spec.get("clusterIP").is_none());
        assert!(spec.get("ipFamilyPolicy").is_none());
        assert!(spec.get("externalTrafficPolicy").is_none());
        let lb = defaulted(
            "",
            "services",
            json!({"spec": {"type": "LoadBalancer",
            "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}}),
        );
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(
            lb["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
        let ext = defaulted("", "services", json!({"spec": {"type": "ExternalName"}}));
        assert!(ext["spec"].get("internalTrafficPolicy").is_none());
    }

    #[test]
    fn job_and_cron_job_defaults() {
        let j = defaulted(
            "batch",
            "jobs",
            json!({"spec": {"template":
            pod_template(json!([{"name": "c", "image": "x"}]))}}),
        );
        let spec = &j["spec"];
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(j["metadata"]["labels"], json!({"app": "a"}));
        let j = defaulted("batch", "jobs", json!({"spec": {"parallelism": 3}}));
        assert!(j["spec"].get("completions").is_none());
        let c = defaulted(
            "batch",
            "cronjobs",
            json!({"spec": {"schedule": "* * * * *",
            "jobTemplate": {"spec": {"template": pod_template(json!([{"name": "c", "image": "x"}]))}}}}),
        );
        let spec = &c["spec"];
        assert_eq!(spec["concurrencyPolicy"], "Allow");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["successfulJobsHistoryLimit"], 3);
        assert_eq!(spec["failedJobsHistoryLimit"], 1);
        assert_eq!(
            spec["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
            "ClusterFirst"
        );
        assert!(spec["jobTemplate"]["spec"].get("backoffLimit").is_none());
    }

    #[test]
    fn namespace_defaults() {
        let ns = defaulted("", "namespaces", json!({"metadata": {"name": "team"}}));
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team"
        );
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        let finalizing = defaulted(
            "",
            "namespaces",
            json!({"metadata": {"name": "team"},
            "spec": {}, "status": {"phase": "Terminating"}}),
        );
        assert!(finalizing["spec"].get("finalizers").is_none());
    }

    #[test]
    fn secret_defaults_and_string_data() {
        let s = defaulted(
            "",
            "secrets",
            json!({"stringData": {"k": "hello"}, "data": {"a": "eA=="}}),
        );
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"], json!({"a": "eA==", "k": "aGVsbG8="}));
        assert!(s.get("stringData").is_none());
    }

    #[test]
    fn storage_defaults() {
        let pvc = defaulted("", "persistentvolumeclaims", json!({"spec": {}}));
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");
        let pv = defaulted("", "persistentvolumes", json!({"spec": {}}));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    }

    #[test]
    fn misc_defaults() {
        let hpa = defaulted(
            "autoscaling",
            "horizontalpodautoscalers",
            json!({"spec": {"maxReplicas": 3, "behavior": {}}}),
        );
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert_eq!(
            hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            300
        );
        let np = defaulted(
            "networking.k8s.io",
            "networkpolicies",
            json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}}),
        );
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
        let lr = defaulted(
            "",
            "limitranges",
            json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}}]}}),
        );
        assert_eq!(lr["spec"]["limits"][0]["default"], json!({"cpu": "2"}));
        assert_eq!(
            lr["spec"]["limits"][0]["defaultRequest"],
            json!({"cpu": "2", "memory": "1Mi"})
        );
        let node = defaulted("", "nodes", json!({"status": {"capacity": {"cpu": "4"}}}));
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "4"}));
        let ep = defaulted(
            "",
            "endpoints",
            json!({"subsets": [{"ports": [{"port": 80}]}]}),
        );
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        let es = defaulted(
            "discovery.k8s.io",
            "endpointslices",
            json!({"ports": [{"port": 80}]}),
        );
        assert_eq!(es["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn odd_input_does_not_panic() {
        for v in [
            json!(null),
            json!([1]),
            json!({"spec": 5}),
            json!({"spec": {"containers": "x",
            "template": [1], "ports": {"a": 1}}}),
        ] {
            for (g, r) in [
                ("", "pods"),
                ("apps", "deployments"),
                ("", "services"),
                ("", "namespaces"),
                ("", "secrets"),
                ("batch", "jobs"),
                ("x", "y"),
            ] {
                let mut obj = v.clone();
                apply_defaults(g, r, &mut obj);
            }
        }
    }
}
