//! Bad input: every client mistake is a 4xx `Status` whose message names
//! the problem, and writes nothing; no request is answered 500 or panics
//! the server. A table of bad requests, then a fuzz of request decoding.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use support::{configmap, pod, TestServer};

const NS: &str = "/api/v1/namespaces";
const CMS: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";
const SVCS: &str = "/api/v1/namespaces/default/services";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

const JSON: &str = "application/json";
const YAML: &str = "application/yaml";
const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

fn deployment(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": app}},
                 "template": {"metadata": {"labels": {"app": app}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}}
    })
}

fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    })
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// `v` with the JSON pointer `at` set to `to` (objects created on the way).
fn with(mut v: Value, at: &str, to: Value) -> Value {
    let mut cur = &mut v;
    for seg in at.trim_start_matches('/').split('/') {
        cur = match cur {
            Value::Array(a) => &mut a[seg.parse::<usize>().unwrap()],
            other => &mut other[seg],
        };
    }
    *cur = to;
    v
}

/// One bad request and what it must be answered.
struct Row {
    what: &'static str,
    method: &'static str,
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
    code: u16,
    reason: &'static str,
    /// The message must contain this (naming the field or the problem).
    names: &'static str,
}

fn row(
    what: &'static str,
    method: &'static str,
    path: impl Into<String>,
    content_type: &'static str,
    body: impl Into<Vec<u8>>,
    (code, reason, names): (u16, &'static str, &'static str),
) -> Row {
    Row {
        what,
        method,
        path: path.into(),
        content_type,
        body: body.into(),
        code,
        reason,
        names,
    }
}

fn j(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

const BAD: u16 = 400;
const INVALID: u16 = 422;

fn rows() -> Vec<Row> {
    let long_name = "a".repeat(254);
    let long_label = "a".repeat(64);
    let pod_named = |n: &str| j(pod(n, json!({})));
    let two_cs = json!([{"name": "c", "image": "a"}, {"name": "c", "image": "b"}]);
    let mut big = configmap("big", json!({}));
    big["data"] = json!({"k": "x".repeat(3 * 1024 * 1024 + 16)});
    let deep_yaml = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_yaml_map = "a:\n".to_string()
        + &(1..2_000)
            .map(|i| format!("{}a:\n", " ".repeat(i)))
            .collect::<String>();
    vec![
        // Decoding.
        row(
            "malformed JSON",
            "POST",
            CMS,
            JSON,
            r#"{"apiVersion": "v1", "kind": "#,
            (BAD, "BadRequest", "not valid JSON"),
        ),
        row(
            "JSON with trailing garbage",
            "POST",
            CMS,
            JSON,
            r#"{"kind":"ConfigMap"} x"#,
            (BAD, "BadRequest", "not valid JSON"),
        ),
        row(
            "malformed YAML",
            "POST",
            CMS,
            YAML,
            "apiVersion: v1\nkind: [ConfigMap\n  metadata: {",
            (BAD, "BadRequest", "not valid YAML"),
        ),
        row(
            "YAML with a tab indent",
            "POST",
            CMS,
            YAML,
            "apiVersion: v1\nmetadata:\n\tname: x\n",
            (BAD, "BadRequest", "YAML"),
        ),
        row(
            "body is not UTF-8 YAML",
            "POST",
            CMS,
            YAML,
            b"kind: \xff\xfe".to_vec(),
            (BAD, "BadRequest", "UTF-8"),
        ),
        row(
            "deeply nested YAML sequence",
            "POST",
            CMS,
            YAML,
            deep_yaml,
            (BAD, "BadRequest", ""),
        ),
        row(
            "deeply nested YAML mapping",
            "POST",
            CMS,
            YAML,
            deep_yaml_map,
            (BAD, "BadRequest", ""),
        ),
        row(
            "deeply nested JSON",
            "POST",
            CMS,
            JSON,
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            (BAD, "BadRequest", "not valid JSON"),
        ),
        row(
            "empty body",
            "POST",
            CMS,
            JSON,
            "",
            (BAD, "BadRequest", "empty"),
        ),
        row(
            "body is a list",
            "POST",
            CMS,
            JSON,
            "[1, 2]",
            (BAD, "BadRequest", "must be a ConfigMap object"),
        ),
        row(
            "body is a string",
            "POST",
            CMS,
            JSON,
            r#""ConfigMap""#,
            (BAD, "BadRequest", "must be a ConfigMap object"),
        ),
        row(
            "body is YAML scalar",
            "POST",
            CMS,
            YAML,
            "just a string",
            (BAD, "BadRequest", "must be a ConfigMap object"),
        ),
        row(
            "protobuf body",
            "POST",
            CMS,
            "application/vnd.kubernetes.protobuf",
            "k8s\0",
            (BAD, "BadRequest", "protobuf"),
        ),
        // apiVersion / kind / identity against the URL.
        row(
            "wrong apiVersion for the URL",
            "POST",
            DEPLOYS,
            JSON,
            j(with(deployment("d", "d"), "/apiVersion", json!("v1"))),
            (BAD, "BadRequest", "expected API version (apps/v1)"),
        ),
        row(
            "wrong group version",
            "POST",
            CMS,
            JSON,
            j(with(
                configmap("c", json!({})),
                "/apiVersion",
                json!("apps/v1"),
            )),
            (BAD, "BadRequest", "(apps/v1)"),
        ),
        row(
            "wrong kind",
            "POST",
            CMS,
            JSON,
            j(with(configmap("c", json!({})), "/kind", json!("Secret"))),
            (BAD, "BadRequest", "the kind in the data (Secret)"),
        ),
        row(
            "wrong kind without an apiVersion",
            "POST",
            CMS,
            JSON,
            j(json!({"kind": "Secret", "metadata": {"name": "c"}})),
            (BAD, "BadRequest", "the kind in the data (Secret)"),
        ),
        row(
            "kind of the wrong type",
            "POST",
            CMS,
            JSON,
            j(with(configmap("c", json!({})), "/kind", json!(7))),
            (BAD, "BadRequest", "Kind"),
        ),
        row(
            "namespace in body differs from URL",
            "POST",
            CMS,
            JSON,
            j(with(
                configmap("c", json!({})),
                "/metadata/namespace",
                json!("kube-system"),
            )),
            (BAD, "BadRequest", "namespace"),
        ),
        row(
            "name in body differs from URL on PUT",
            "PUT",
            format!("{CMS}/cm1"),
            JSON,
            j(configmap("other", json!({}))),
            (BAD, "BadRequest", "does not match the name on the URL"),
        ),
        row(
            "metadata is not an object",
            "POST",
            CMS,
            JSON,
            j(with(configmap("c", json!({})), "/metadata", json!("c"))),
            (BAD, "BadRequest", "metadata: expected an object"),
        ),
        row(
            "metadata is not an object on PUT",
            "PUT",
            format!("{CMS}/cm1"),
            JSON,
            j(with(
                configmap("cm1", json!({})),
                "/metadata",
                json!(["cm1"]),
            )),
            (BAD, "BadRequest", "metadata: expected an object"),
        ),
        row(
            "metadata is not an object in a merge patch",
            "PATCH",
            format!("{CMS}/cm1"),
            MERGE,
            j(json!({"metadata": "x"})),
            (BAD, "BadRequest", "metadata: expected an object"),
        ),
        row(
            "metadata.name of the wrong type on PUT",
            "PUT",
            format!("{CMS}/cm1"),
            JSON,
            j(with(
                configmap("cm1", json!({})),
                "/metadata/name",
                json!(7),
            )),
            (BAD, "BadRequest", "metadata.name"),
        ),
        row(
            "metadata.namespace of the wrong type",
            "POST",
            CMS,
            JSON,
            j(with(
                configmap("c", json!({})),
                "/metadata/namespace",
                json!({"a": 1}),
            )),
            (BAD, "BadRequest", "metadata.namespace"),
        ),
        row(
            "server-side apply of a list",
            "PATCH",
            format!("{CMS}/cm1?fieldManager=t"),
            APPLY,
            "- a\n- b\n",
            (BAD, "BadRequest", "ConfigMap"),
        ),
        row(
            "server-side apply with the wrong apiVersion",
            "PATCH",
            format!("{CMS}/cm1?fieldManager=t"),
            APPLY,
            "apiVersion: apps/v1\nkind: ConfigMap\nmetadata:\n  name: cm1\n",
            (BAD, "BadRequest", "apps/v1"),
        ),
        row(
            "server-side apply of another kind without apiVersion",
            "PATCH",
            format!("{CMS}/cm1?fieldManager=t"),
            APPLY,
            "kind: Secret\nmetadata:\n  name: cm1\ndata:\n  a: c\n",
            (BAD, "BadRequest", "the kind in the data (Secret)"),
        ),
        row(
            "server-side apply with another name",
            "PATCH",
            format!("{CMS}/cm1?fieldManager=t"),
            APPLY,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm2\n",
            (BAD, "BadRequest", "cm2"),
        ),
        row(
            "server-side apply with metadata a string",
            "PATCH",
            format!("{CMS}/cm1?fieldManager=t"),
            APPLY,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: cm1\n",
            (BAD, "BadRequest", "metadata"),
        ),
        row(
            "server-side apply creating with metadata a list",
            "PATCH",
            format!("{CMS}/new?fieldManager=t"),
            APPLY,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [new]\n",
            (BAD, "BadRequest", "metadata"),
        ),
        row(
            "metadata.name of the wrong type",
            "POST",
            CMS,
            JSON,
            j(with(
                configmap("c", json!({})),
                "/metadata/name",
                json!(["c"]),
            )),
            (BAD, "BadRequest", "name"),
        ),
        row(
            "resourceVersion set on create",
            "POST",
            CMS,
            JSON,
            j(with(
                configmap("c", json!({})),
                "/metadata/resourceVersion",
                json!("5"),
            )),
            (BAD, "BadRequest", "resourceVersion"),
        ),
        // Names.
        row(
            "pod name with uppercase",
            "POST",
            PODS,
            JSON,
            pod_named("Web"),
            (INVALID, "Invalid", "metadata.name"),
        ),
        row(
            "pod name with underscore",
            "POST",
            PODS,
            JSON,
            pod_named("a_b"),
            (INVALID, "Invalid", "metadata.name"),
        ),
        row(
            "pod name too long",
            "POST",
            PODS,
            JSON,
            pod_named(&long_name),
            (INVALID, "Invalid", "metadata.name"),
        ),
        row(
            "missing name",
            "POST",
            CMS,
            JSON,
            j(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})),
            (INVALID, "Invalid", "metadata.name"),
        ),
        row(
            "namespace name with uppercase",
            "POST",
            NS,
            JSON,
            j(namespace("Prod")),
            (INVALID, "Invalid", "metadata.name"),
        ),
        row(
            "namespace name with a dot",
            "POST",
            NS,
            JSON,
            j(namespace("a.b")),
            (INVALID, "Invalid", "metadata.name"),
        ),
        row(
            "namespace name too long",
            "POST",
            NS,
            JSON,
            j(namespace(&long_label)),
            (INVALID, "Invalid", "metadata.name"),
        ),
        row(
            "service name starting with a digit",
            "POST",
            SVCS,
            JSON,
            j(service("1web")),
            (INVALID, "Invalid", "metadata.name"),
        ),
        row(
            "service name with a dot",
            "POST",
            SVCS,
            JSON,
            j(service("web.x")),
            (INVALID, "Invalid", "metadata.name"),
        ),
        row(
            "service name too long",
            "POST",
            SVCS,
            JSON,
            j(service(&long_label)),
            (INVALID, "Invalid", "metadata.name"),
        ),
        row(
            "invalid label value",
            "POST",
            CMS,
            JSON,
            j(with(
                configmap("c", json!({})),
                "/metadata/labels",
                json!({"a": "has space"}),
            )),
            (INVALID, "Invalid", "metadata.labels"),
        ),
        // Specs.
        row(
            "duplicate container names",
            "POST",
            PODS,
            JSON,
            j(with(pod("dup", json!({})), "/spec/containers", two_cs)),
            (INVALID, "Invalid", "spec.containers[1].name"),
        ),
        row(
            "missing container image",
            "POST",
            PODS,
            JSON,
            j(with(
                pod("noimg", json!({})),
                "/spec/containers/0",
                json!({"name": "c"}),
            )),
            (INVALID, "Invalid", "spec.containers[0].image"),
        ),
        row(
            "container port out of range",
            "POST",
            PODS,
            JSON,
            j(with(
                pod("port", json!({})),
                "/spec/containers/0/ports",
                json!([{"containerPort": 70000}]),
            )),
            (
                INVALID,
                "Invalid",
                "spec.containers[0].ports[0].containerPort",
            ),
        ),
        row(
            "service port zero",
            "POST",
            SVCS,
            JSON,
            j(with(service("p0"), "/spec/ports/0/port", json!(0))),
            (INVALID, "Invalid", "spec.ports[0].port"),
        ),
        row(
            "deployment selector does not match template",
            "POST",
            DEPLOYS,
            JSON,
            j(with(
                deployment("mis", "a"),
                "/spec/template/metadata/labels",
                json!({"app": "b"}),
            )),
            (INVALID, "Invalid", "spec.template.metadata.labels"),
        ),
        row(
            "negative replicas",
            "POST",
            DEPLOYS,
            JSON,
            j(with(deployment("neg", "a"), "/spec/replicas", json!(-1))),
            (INVALID, "Invalid", "spec.replicas"),
        ),
        row(
            "replicas of the wrong type",
            "POST",
            DEPLOYS,
            JSON,
            j(with(
                deployment("typ", "a"),
                "/spec/replicas",
                json!("three"),
            )),
            (BAD, "BadRequest", "spec.replicas"),
        ),
        row(
            "replicas too large for int32",
            "POST",
            DEPLOYS,
            JSON,
            j(with(deployment("huge", "a"), "/spec/replicas", json!(1e30))),
            (BAD, "BadRequest", "spec.replicas"),
        ),
        row(
            "invalid object under dryRun",
            "POST",
            format!("{PODS}?dryRun=All"),
            JSON,
            pod_named("Dry"),
            (INVALID, "Invalid", "metadata.name"),
        ),
        // Immutable fields.
        row(
            "deployment spec.selector change",
            "PATCH",
            format!("{DEPLOYS}/web"),
            MERGE,
            j(
                json!({"spec": {"selector": {"matchLabels": {"app": "other"}},
                              "template": {"metadata": {"labels": {"app": "other"}}}}}),
            ),
            (INVALID, "Invalid", "spec.selector"),
        ),
        row(
            "pod container rename",
            "PATCH",
            format!("{PODS}/p1"),
            JSON_PATCH,
            j(json!([{"op": "replace", "path": "/spec/containers/0/name", "value": "d"}])),
            (INVALID, "Invalid", "spec.containers"),
        ),
        row(
            "pod container added",
            "PATCH",
            format!("{PODS}/p1"),
            STRATEGIC,
            j(json!({"spec": {"containers": [{"name": "extra", "image": "x"}]}})),
            (INVALID, "Invalid", "spec.containers"),
        ),
        row(
            "immutable configmap data change",
            "PATCH",
            format!("{CMS}/frozen"),
            MERGE,
            j(json!({"data": {"k": "v2"}})),
            (INVALID, "Invalid", "data"),
        ),
        row(
            "immutable configmap unfrozen",
            "PATCH",
            format!("{CMS}/frozen"),
            MERGE,
            j(json!({"immutable": false})),
            (INVALID, "Invalid", "immutable"),
        ),
        row(
            "service clusterIP change",
            "PATCH",
            format!("{SVCS}/svc"),
            MERGE,
            j(json!({"spec": {"clusterIP": "127.43.0.99", "clusterIPs": ["127.43.0.99"]}})),
            (INVALID, "Invalid", "spec.clusterIP"),
        ),
        row(
            "name change by patch",
            "PATCH",
            format!("{CMS}/cm1"),
            MERGE,
            j(json!({"metadata": {"name": "renamed"}})),
            (BAD, "BadRequest", "name"),
        ),
        row(
            "kind change by patch",
            "PATCH",
            format!("{CMS}/cm1"),
            MERGE,
            j(json!({"kind": "Secret"})),
            (BAD, "BadRequest", "kind"),
        ),
        // fieldValidation.
        row(
            "unknown field under Strict",
            "POST",
            format!("{DEPLOYS}?fieldValidation=Strict"),
            JSON,
            j(with(deployment("strict", "s"), "/spec/replicaz", json!(3))),
            (BAD, "BadRequest", "unknown field \"spec.replicaz\""),
        ),
        row(
            "nested unknown field under Strict",
            "POST",
            format!("{PODS}?fieldValidation=Strict"),
            JSON,
            j(with(
                pod("strict", json!({})),
                "/spec/containers/0/imagez",
                json!("x"),
            )),
            (BAD, "BadRequest", "spec.containers[0].imagez"),
        ),
        row(
            "unknown field under Strict on PUT",
            "PUT",
            format!("{CMS}/cm1?fieldValidation=Strict"),
            JSON,
            j(with(configmap("cm1", json!({})), "/datum", json!({}))),
            (BAD, "BadRequest", "unknown field \"datum\""),
        ),
        row(
            "unknown field under Strict on patch",
            "PATCH",
            format!("{CMS}/cm1?fieldValidation=Strict"),
            MERGE,
            j(json!({"datum": 1})),
            (BAD, "BadRequest", "unknown field \"datum\""),
        ),
        row(
            "bad fieldValidation value",
            "POST",
            format!("{CMS}?fieldValidation=Loose"),
            JSON,
            j(configmap("fv", json!({}))),
            (BAD, "BadRequest", "fieldValidation"),
        ),
        // Query parameters.
        row(
            "bad labelSelector",
            "GET",
            format!("{PODS}?labelSelector=app%20in%20(a"),
            "",
            "",
            (BAD, "BadRequest", ""),
        ),
        row(
            "bad labelSelector key",
            "GET",
            format!("{PODS}?labelSelector=-bad-%3Dx"),
            "",
            "",
            (BAD, "BadRequest", ""),
        ),
        row(
            "unsupported fieldSelector",
            "GET",
            format!("{PODS}?fieldSelector=spec.foo%3Dx"),
            "",
            "",
            (BAD, "BadRequest", "field label not supported: spec.foo"),
        ),
        row(
            "malformed fieldSelector",
            "GET",
            format!("{PODS}?fieldSelector=%3D%3D%3D"),
            "",
            "",
            (BAD, "BadRequest", ""),
        ),
        row(
            "negative limit",
            "GET",
            format!("{PODS}?limit=-1"),
            "",
            "",
            (BAD, "BadRequest", "limit"),
        ),
        row(
            "non-numeric limit",
            "GET",
            format!("{PODS}?limit=ten"),
            "",
            "",
            (BAD, "BadRequest", "limit"),
        ),
        row(
            "garbage continue",
            "GET",
            format!("{PODS}?limit=1&continue=garbage!"),
            "",
            "",
            (BAD, "BadRequest", "continue"),
        ),
        row(
            "continue of another resource",
            "GET",
            format!(
                "{PODS}?limit=1&continue={}",
                cont_for("/registry/secrets/default/x")
            ),
            "",
            "",
            (BAD, "BadRequest", "continue"),
        ),
        row(
            "bad resourceVersion on watch",
            "GET",
            format!("{PODS}?watch=true&resourceVersion=abc"),
            "",
            "",
            (BAD, "BadRequest", "resourceVersion"),
        ),
        row(
            "negative resourceVersion on watch",
            "GET",
            format!("{PODS}?watch=true&resourceVersion=-4"),
            "",
            "",
            (BAD, "BadRequest", "resourceVersion"),
        ),
        row(
            "bad timeoutSeconds on watch",
            "GET",
            format!("{PODS}?watch=true&timeoutSeconds=soon"),
            "",
            "",
            (BAD, "BadRequest", "timeoutSeconds"),
        ),
        row(
            "bad labelSelector on watch",
            "GET",
            format!("{PODS}?watch=true&labelSelector=%21%21"),
            "",
            "",
            (BAD, "BadRequest", ""),
        ),
        row(
            "bad labelSelector on deletecollection",
            "DELETE",
            format!("{CMS}?labelSelector=a%20notin%20"),
            "",
            "",
            (BAD, "BadRequest", ""),
        ),
        row(
            "bad propagationPolicy",
            "DELETE",
            format!("{CMS}/cm1?propagationPolicy=Eager"),
            "",
            "",
            (BAD, "BadRequest", "propagationPolicy"),
        ),
        row(
            "malformed DeleteOptions",
            "DELETE",
            format!("{CMS}/cm1"),
            JSON,
            "{not json",
            (BAD, "BadRequest", "DeleteOptions"),
        ),
        row(
            "bad gracePeriodSeconds",
            "DELETE",
            format!("{CMS}/cm1?gracePeriodSeconds=x"),
            "",
            "",
            (BAD, "BadRequest", "gracePeriodSeconds"),
        ),
        row(
            "delete precondition uid mismatch",
            "DELETE",
            format!("{CMS}/cm1"),
            JSON,
            j(json!({"kind": "DeleteOptions", "apiVersion": "v1",
                     "preconditions": {"uid": "not-the-uid"}})),
            (409, "Conflict", "Precondition failed"),
        ),
        // Patches.
        row(
            "unsupported patch content type",
            "PATCH",
            format!("{CMS}/cm1"),
            "text/plain",
            "{}",
            (415, "UnsupportedMediaType", "text/plain"),
        ),
        row(
            "patch sent as plain JSON",
            "PATCH",
            format!("{CMS}/cm1"),
            JSON,
            "{}",
            (415, "UnsupportedMediaType", "application/json"),
        ),
        row(
            "JSON patch removing a missing path",
            "PATCH",
            format!("{CMS}/cm1"),
            JSON_PATCH,
            j(json!([{"op": "remove", "path": "/metadata/nope"}])),
            (INVALID, "Invalid", "/metadata/nope"),
        ),
        row(
            "JSON patch test failing",
            "PATCH",
            format!("{CMS}/cm1"),
            JSON_PATCH,
            j(json!([{"op": "test", "path": "/data", "value": {"x": "y"}}])),
            (INVALID, "Invalid", "/data"),
        ),
        row(
            "JSON patch unknown op",
            "PATCH",
            format!("{CMS}/cm1"),
            JSON_PATCH,
            j(json!([{"op": "frobnicate", "path": "/data"}])),
            (BAD, "BadRequest", "frobnicate"),
        ),
        row(
            "JSON patch not a list",
            "PATCH",
            format!("{CMS}/cm1"),
            JSON_PATCH,
            j(json!({"op": "add"})),
            (BAD, "BadRequest", "list of operations"),
        ),
        row(
            "JSON patch malformed",
            "PATCH",
            format!("{CMS}/cm1"),
            JSON_PATCH,
            "[{",
            (BAD, "BadRequest", "not valid JSON"),
        ),
        row(
            "JSON patch replacing the whole object",
            "PATCH",
            format!("{CMS}/cm1"),
            JSON_PATCH,
            j(json!([{"op": "replace", "path": "", "value": 5}])),
            (BAD, "BadRequest", "ConfigMap"),
        ),
        row(
            "merge patch not an object",
            "PATCH",
            format!("{CMS}/cm1"),
            MERGE,
            "[1]",
            (BAD, "BadRequest", "merge patch must be a JSON object"),
        ),
        row(
            "merge patch malformed",
            "PATCH",
            format!("{CMS}/cm1"),
            MERGE,
            "{",
            (BAD, "BadRequest", "not valid JSON"),
        ),
        row(
            "strategic patch with a bad directive",
            "PATCH",
            format!("{DEPLOYS}/web"),
            STRATEGIC,
            j(json!({"spec": {"$patch": "explode"}})),
            (BAD, "BadRequest", "unknown $patch directive"),
        ),
        row(
            "strategic patch $patch on a list item",
            "PATCH",
            format!("{DEPLOYS}/web"),
            STRATEGIC,
            j(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "$patch": "zap"}]}}}})),
            (BAD, "BadRequest", "$patch"),
        ),
        row(
            "strategic patch $patch of the wrong type",
            "PATCH",
            format!("{DEPLOYS}/web"),
            STRATEGIC,
            j(json!({"metadata": {"$patch": 1}})),
            (BAD, "BadRequest", "$patch"),
        ),
        row(
            "strategic patch bad $setElementOrder",
            "PATCH",
            format!("{DEPLOYS}/web"),
            STRATEGIC,
            j(json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": "web"}}}})),
            (BAD, "BadRequest", "$setElementOrder/containers"),
        ),
        row(
            "strategic patch unknown directive key under Strict",
            "PATCH",
            format!("{DEPLOYS}/web?fieldValidation=Strict"),
            STRATEGIC,
            j(json!({"spec": {"$frobnicate/x": []}})),
            (BAD, "BadRequest", "unknown field \"spec.$frobnicate/x\""),
        ),
        row(
            "strategic patch not an object",
            "PATCH",
            format!("{DEPLOYS}/web"),
            STRATEGIC,
            "[]",
            (BAD, "BadRequest", ""),
        ),
        row(
            "server-side apply without fieldManager",
            "PATCH",
            format!("{CMS}/cm1"),
            APPLY,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\ndata:\n  a: b\n",
            (BAD, "BadRequest", "fieldManager"),
        ),
        row(
            "server-side apply of malformed YAML",
            "PATCH",
            format!("{CMS}/cm1?fieldManager=t"),
            APPLY,
            "kind: [",
            (BAD, "BadRequest", "YAML"),
        ),
        row(
            "server-side apply with the wrong kind",
            "PATCH",
            format!("{CMS}/cm1?fieldManager=t"),
            APPLY,
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: cm1\n",
            (BAD, "BadRequest", "Secret"),
        ),
        row(
            "server-side apply creating an invalid object",
            "PATCH",
            format!("{PODS}/Bad?fieldManager=t"),
            APPLY,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad\nspec:\n  containers: []\n",
            (INVALID, "Invalid", "metadata.name"),
        ),
        row(
            "patch of a missing object",
            "PATCH",
            format!("{CMS}/absent"),
            MERGE,
            "{}",
            (404, "NotFound", "\"absent\" not found"),
        ),
        // Concurrency and existence.
        row(
            "PUT with a stale resourceVersion",
            "PUT",
            format!("{CMS}/cm1"),
            JSON,
            j(with(
                configmap("cm1", json!({"x": "y"})),
                "/metadata/resourceVersion",
                json!("1"),
            )),
            (409, "Conflict", "the object has been modified"),
        ),
        row(
            "PUT with a garbage resourceVersion",
            "PUT",
            format!("{CMS}/cm1"),
            JSON,
            j(with(
                configmap("cm1", json!({"x": "y"})),
                "/metadata/resourceVersion",
                json!("abc"),
            )),
            (409, "Conflict", "cm1"),
        ),
        row(
            "create of an existing object",
            "POST",
            CMS,
            JSON,
            j(configmap("cm1", json!({}))),
            (409, "AlreadyExists", "\"cm1\" already exists"),
        ),
        row(
            "delete of a missing object",
            "DELETE",
            format!("{CMS}/absent"),
            "",
            "",
            (404, "NotFound", "\"absent\" not found"),
        ),
        row(
            "PUT of a missing object",
            "PUT",
            format!("{CMS}/absent"),
            JSON,
            j(configmap("absent", json!({}))),
            (404, "NotFound", "\"absent\" not found"),
        ),
        row(
            "unknown resource",
            "GET",
            "/api/v1/namespaces/default/foos",
            "",
            "",
            (404, "NotFound", "could not find the requested resource"),
        ),
        row(
            "unknown group",
            "POST",
            "/apis/nope.example.com/v1/namespaces/default/things",
            JSON,
            "{}",
            (404, "NotFound", "could not find the requested resource"),
        ),
        row(
            "unknown subresource",
            "GET",
            format!("{PODS}/p1/scale"),
            "",
            "",
            (404, "NotFound", "could not find the requested resource"),
        ),
        row(
            "dot-dot name",
            "GET",
            format!("{PODS}/.."),
            "",
            "",
            (BAD, "BadRequest", "\"..\""),
        ),
        row(
            "PUT on a collection",
            "PUT",
            CMS,
            JSON,
            j(configmap("x", json!({}))),
            (405, "MethodNotAllowed", "PUT"),
        ),
        row(
            "POST on an object",
            "POST",
            format!("{CMS}/cm1"),
            JSON,
            j(configmap("cm1", json!({}))),
            (405, "MethodNotAllowed", "POST"),
        ),
        row(
            "binding without a target",
            "POST",
            format!("{PODS}/p1/binding"),
            JSON,
            j(json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p1"}})),
            (INVALID, "Invalid", "target.name"),
        ),
        row(
            "binding decided for another instance of the pod",
            "POST",
            format!("{PODS}/p1/binding"),
            JSON,
            j(json!({"apiVersion": "v1", "kind": "Binding",
                     "metadata": {"name": "p1", "uid": "an-earlier-p1"},
                     "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}})),
            (409, "Conflict", "UID in precondition: an-earlier-p1"),
        ),
        row(
            "negative scale",
            "PUT",
            format!("{DEPLOYS}/web/scale"),
            JSON,
            j(json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                     "metadata": {"name": "web", "namespace": "default"},
                     "spec": {"replicas": -3}})),
            (INVALID, "Invalid", "spec.replicas"),
        ),
        // Namespaces.
        row(
            "create in a missing namespace",
            "POST",
            "/api/v1/namespaces/nope/configmaps",
            JSON,
            j(configmap("c", json!({}))),
            (404, "NotFound", "namespaces \"nope\" not found"),
        ),
        row(
            "create in a terminating namespace",
            "POST",
            "/api/v1/namespaces/doomed/configmaps",
            JSON,
            j(configmap("c", json!({}))),
            (403, "Forbidden", "being terminated"),
        ),
        // Size.
        row(
            "body over 3 MiB",
            "POST",
            CMS,
            JSON,
            j(big),
            (413, "RequestEntityTooLarge", "larger than the limit"),
        ),
    ]
}

/// Runs a test on its own runtime, then gives the store's threads (the
/// log fsync thread holds the database until the last handle is dropped)
/// a moment to close RocksDB before the test process exits: exiting while
/// it is open can abort in RocksDB's static destructors.
fn run(test: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(test);
    drop(rt);
    std::thread::sleep(Duration::from_millis(300));
}

/// Stops the server and its store before the runtime goes away, so no
/// store thread is left running at process exit.
async fn finish(s: TestServer) {
    let store = s.store.clone();
    drop(s);
    store.shutdown().await;
}

/// A well-formed continue token for `key` (keel's encoding).
fn cont_for(key: &str) -> String {
    use base64::Engine;
    let tok = json!({"rv": 1, "start": key}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok)
}

/// The objects the table's rows refer to.
async fn fixtures(s: &TestServer) {
    let mut frozen = configmap("frozen", json!({"k": "v"}));
    frozen["immutable"] = json!(true);
    let mut svc = service("svc");
    svc["spec"]["clusterIP"] = json!("127.43.0.11");
    let mut held = configmap("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    for (path, obj) in [
        (CMS, configmap("cm1", json!({"a": "b"}))),
        (CMS, frozen),
        (PODS, pod("p1", json!({"app": "web"}))),
        (DEPLOYS, deployment("web", "web")),
        (SVCS, svc),
        (NS, namespace("doomed")),
        ("/api/v1/namespaces/doomed/configmaps", held),
    ] {
        let r = s.post(path, &obj).await;
        assert_eq!(r.code, 201, "fixture {path}: {}", r.body);
    }
    let d = s.delete("/api/v1/namespaces/doomed").await;
    assert!(d.code == 200 || d.code == 202, "{}", d.body);
    // Let the namespace cleanup mark what it holds, so nothing moves the
    // revision while the table runs.
    let mut last = s.store.current_revision();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let now = s.store.current_revision();
        if now == last {
            return;
        }
        last = now;
    }
    panic!("the store revision never settled");
}

#[test]
fn bad_requests_are_4xx_statuses_that_name_the_problem_and_write_nothing() {
    run(table());
}

async fn table() {
    let s = TestServer::start().await;
    fixtures(&s).await;
    let mut failures = Vec::new();
    let rows = rows();
    for r in &rows {
        let before = s.store.current_revision();
        let reply = s.request(r.method, &r.path, r.content_type, &r.body).await;
        let after = s.store.current_revision();
        let b = &reply.body;
        let msg = b["message"].as_str().unwrap_or("");
        let mut wrong = Vec::new();
        if reply.code != r.code {
            wrong.push(format!("code {} (want {})", reply.code, r.code));
        }
        if b["kind"] != "Status" || b["status"] != "Failure" || b["code"] != r.code {
            wrong.push("not a Failure Status with the code".to_string());
        }
        if b["reason"] != r.reason {
            wrong.push(format!("reason {} (want {})", b["reason"], r.reason));
        }
        if msg.is_empty() || !msg.contains(r.names) {
            wrong.push(format!("message does not name {:?}", r.names));
        }
        if after != before {
            wrong.push(format!("the store moved from {before} to {after}"));
        }
        if !wrong.is_empty() {
            let shown: String = b.to_string().chars().take(400).collect();
            failures.push(format!(
                "{} ({} {}): {}\n    got: {shown}",
                r.what,
                r.method,
                r.path.chars().take(120).collect::<String>(),
                wrong.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    // The server is still whole.
    assert_eq!(s.get(&format!("{CMS}/cm1")).await.code, 200);
    finish(s).await;
}

#[test]
fn unknown_fields_warn_by_default_and_are_dropped_when_ignored() {
    run(field_validation_modes());
}

async fn field_validation_modes() {
    let s = TestServer::start().await;
    let bad = |name: &str| with(deployment(name, name), "/spec/replicaz", json!(3));
    let warn = s
        .post(&format!("{DEPLOYS}?fieldValidation=Warn"), &bad("w"))
        .await;
    assert_eq!(warn.code, 201, "{}", warn.body);
    let header: Vec<&str> = warn
        .headers
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        header
            .iter()
            .any(|h| h.starts_with("299 - ") && h.contains("unknown field \\\"spec.replicaz\\\"")),
        "{header:?}"
    );
    assert!(warn.body["spec"].get("replicaz").is_none(), "not stored");
    let default = s.post(DEPLOYS, &bad("d")).await;
    assert_eq!(default.code, 201);
    assert!(
        default.headers.get("warning").is_some(),
        "Warn is the default"
    );

    let ignore = s
        .post(&format!("{DEPLOYS}?fieldValidation=Ignore"), &bad("i"))
        .await;
    assert_eq!(ignore.code, 201, "{}", ignore.body);
    assert!(ignore.headers.get("warning").is_none());
    assert!(ignore.body["spec"].get("replicaz").is_none());
    let stored = s.get(&format!("{DEPLOYS}/i")).await;
    assert!(stored.body["spec"].get("replicaz").is_none(), "dropped");
    assert_eq!(stored.body["spec"]["replicas"], 1);
    finish(s).await;
}

// ---------------------------------------------------------------------
// Fuzz.

/// Keys a Kubernetes object or a patch might carry, plus directives.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "generateName",
    "labels",
    "annotations",
    "finalizers",
    "resourceVersion",
    "uid",
    "ownerReferences",
    "spec",
    "status",
    "data",
    "binaryData",
    "immutable",
    "replicas",
    "selector",
    "matchLabels",
    "matchExpressions",
    "template",
    "containers",
    "initContainers",
    "image",
    "ports",
    "containerPort",
    "port",
    "env",
    "volumes",
    "clusterIP",
    "type",
    "op",
    "path",
    "value",
    "from",
    "$patch",
    "$retainKeys",
    "$setElementOrder/containers",
    "$deleteFromPrimitiveList/finalizers",
    "$setElementOrder/ports",
    "",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "\\PC{0,12}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(1e308)),
        Just(json!(-9223372036854775808i64)),
        prop::sample::select(
            &[
                "replace",
                "delete",
                "merge",
                "v1",
                "apps/v1",
                "Pod",
                "ConfigMap",
                "Deployment",
                "add",
                "remove",
                "move",
                "copy",
                "test",
                "/spec",
                "/metadata/name",
                "/",
                "-",
                "~1",
                "c",
                "web",
                "default",
                "",
            ][..]
        )
        .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        "[\\u{0}-\\u{10FFFF}]{0,8}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer inside `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        _ => {}
    }
}

fn valid_objects() -> Vec<Value> {
    let mut svc = service("fz-s");
    svc["spec"]["clusterIP"] = json!("127.43.0.20");
    vec![
        configmap("fz-c", json!({"a": "b"})),
        pod("fz-p", json!({"app": "fz"})),
        deployment("fz-d", "fz"),
        svc,
    ]
}

/// Edits to a valid object: (which field, new value, new key) triples, how
/// to apply them, and a nesting depth.
type Edits = (Vec<(prop::sample::Index, Value, String)>, usize, usize);

fn edits() -> impl Strategy<Value = Edits> {
    (
        prop::collection::vec((any::<prop::sample::Index>(), json_value(), key()), 0..3),
        0usize..4,
        0usize..200,
    )
}

/// `obj` with a few of its fields replaced by random values, random keys
/// added next to them, or its spec replaced by deep nesting.
fn mutate(mut obj: Value, (edits, how, depth): Edits) -> Value {
    for (ix, val, k) in edits {
        let mut ps = Vec::new();
        pointers(&obj, String::new(), &mut ps);
        if ps.is_empty() {
            break;
        }
        let p = ix.get(&ps).clone();
        if how == 0 {
            let parent = p.rsplit_once('/').map_or("", |(a, _)| a).to_string();
            if let Some(Value::Object(m)) = obj.pointer_mut(&parent) {
                m.insert(k, val);
            }
        } else if let Some(slot) = obj.pointer_mut(&p) {
            *slot = val;
        }
    }
    if how == 2 {
        if let Some(slot) = obj.pointer_mut("/spec") {
            let mut nested = json!({});
            for i in 0..depth {
                nested = match i % 3 {
                    0 => json!({"$patch": "replace", "containers": [nested]}),
                    1 => json!({"template": nested, "$retainKeys": ["template"]}),
                    _ => json!([nested]),
                };
            }
            *slot = nested;
        }
    }
    obj
}

fn mutated() -> impl Strategy<Value = Value> {
    (prop::sample::select(valid_objects()), edits()).prop_map(|(o, e)| mutate(o, e))
}

/// Collection and object paths of [`valid_objects`], in order.
const TARGETS: [(&str, &str); 4] = [
    (CMS, "/api/v1/namespaces/default/configmaps/fz-c"),
    (PODS, "/api/v1/namespaces/default/pods/fz-p"),
    (DEPLOYS, "/apis/apps/v1/namespaces/default/deployments/fz-d"),
    (SVCS, "/api/v1/namespaces/default/services/fz-s"),
];

const QUERIES: &[&str] = &[
    "",
    "fieldValidation=Strict",
    "fieldValidation=Ignore",
    "fieldManager=fuzz",
    "dryRun=All",
    "fieldValidation=Strict&dryRun=All",
];

fn with_query(path: &str, q: &str) -> String {
    match (q.is_empty(), path.contains('?')) {
        (true, _) => path.to_string(),
        (false, true) => format!("{path}&{q}"),
        (false, false) => format!("{path}?{q}"),
    }
}

/// A mutated object sent where its kind belongs: created under a new name,
/// replaced, or patched with each patch type.
fn targeted() -> impl Strategy<Value = Fuzzed> {
    (
        0usize..4,
        edits(),
        0usize..6,
        0u8..40,
        prop::sample::select(QUERIES),
    )
        .prop_map(|(k, e, verb, n, q)| {
            let mut obj = valid_objects()[k].clone();
            let (coll, named) = TARGETS[k];
            let (method, path, ct) = match verb {
                0 | 1 => {
                    obj["metadata"]["name"] = json!(format!("fz-new-{n}"));
                    (
                        "POST",
                        coll.to_string(),
                        if verb == 0 { JSON } else { YAML },
                    )
                }
                2 => ("PUT", named.to_string(), JSON),
                3 => ("PATCH", named.to_string(), MERGE),
                4 => ("PATCH", named.to_string(), STRATEGIC),
                _ => (
                    "PATCH",
                    format!("{named}?fieldManager=fuzz&force=true"),
                    APPLY,
                ),
            };
            let body = mutate(obj, e).to_string().into_bytes();
            (method, with_query(&path, q), ct, body)
        })
}

/// A JSON pointer into one of the valid objects, or a random one.
fn pointer() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0usize..4, any::<prop::sample::Index>()).prop_map(|(k, ix)| {
            let mut ps = vec![String::new(), "/-".to_string()];
            pointers(&valid_objects()[k], String::new(), &mut ps);
            ix.get(&ps).clone()
        }),
        1 => "\\PC{0,16}",
    ]
}

/// JSON Patch documents with random operations.
fn json_patch_ops() -> impl Strategy<Value = Value> {
    let op = (
        prop::sample::select(&["add", "remove", "replace", "move", "copy", "test", "bogus"][..]),
        pointer(),
        json_value(),
        pointer(),
    )
        .prop_map(
            |(op, path, value, from)| json!({"op": op, "path": path, "value": value, "from": from}),
        );
    prop::collection::vec(op, 0..4).prop_map(Value::Array)
}

/// Bytes of a body: random, structured-but-wrong JSON, or deep nesting.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..256),
        3 => json_value().prop_map(|v| v.to_string().into_bytes()),
        5 => mutated().prop_map(|v| v.to_string().into_bytes()),
        1 => mutated().prop_map(|v| {
            // Valid JSON cut short or with a byte flipped.
            let mut b = v.to_string().into_bytes();
            let n = b.len();
            b.truncate(n / 2 + 1);
            b
        }),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(|b| [&b"k8s\0"[..], &b].concat()),
        1 => (1usize..3000, prop::sample::select(&["[", "{\"a\":", "- ", "a:\n  "][..]))
            .prop_map(|(n, open)| open.repeat(n).into_bytes()),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "default",
                "pods",
                "configmaps",
                "deployments",
                "services",
                "namespaces",
                "status",
                "scale",
                "binding",
                "eviction",
                "log",
                "fz-c",
                "fz-d",
                "..",
                ".",
                "",
                "%2e%2e",
                "%00",
                "api",
                "apis",
                "v1",
                "apps",
            ][..]
        )
        .prop_map(str::to_string),
        "\\PC{0,10}".prop_map(|s| percent(&s)),
    ]
}

fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One fuzzed request: method, path, content type, body.
type Fuzzed = (&'static str, String, &'static str, Vec<u8>);

fn request() -> impl Strategy<Value = Fuzzed> {
    let content_types = prop::sample::select(
        &[
            JSON,
            YAML,
            MERGE,
            JSON_PATCH,
            STRATEGIC,
            APPLY,
            "application/apply-patch+json",
            "application/vnd.kubernetes.protobuf",
            "",
            "text/plain",
        ][..],
    );
    let write_paths = prop::sample::select(
        &[
            CMS,
            PODS,
            DEPLOYS,
            SVCS,
            NS,
            "/api/v1/namespaces/default/configmaps/fz-c",
            "/api/v1/namespaces/default/pods/fz-p",
            "/api/v1/namespaces/default/pods/fz-p/status",
            "/api/v1/namespaces/default/pods/fz-p/binding",
            "/api/v1/namespaces/default/pods/fz-p/eviction",
            "/apis/apps/v1/namespaces/default/deployments/fz-d",
            "/apis/apps/v1/namespaces/default/deployments/fz-d/scale",
            "/apis/apps/v1/namespaces/default/deployments/fz-d/status",
            "/api/v1/namespaces/default/services/fz-s",
            "/api/v1/namespaces/fz-ns",
        ][..],
    );
    let queries = prop::sample::select(
        &[
            "",
            "?fieldValidation=Strict",
            "?fieldValidation=Ignore",
            "?fieldManager=fuzz",
            "?fieldManager=fuzz&force=true",
            "?dryRun=All",
        ][..],
    );
    // DELETE only where nothing exists: a deleted `default` namespace
    // would turn the rest of the run into 404s.
    let methods = prop::sample::select(&["POST", "PUT", "PATCH", "PATCH"][..]);
    let list_param = prop::sample::select(
        &[
            "labelSelector",
            "fieldSelector",
            "limit",
            "continue",
            "resourceVersion",
        ][..],
    );
    prop_oneof![
        6 => targeted(),
        1 => (prop::sample::select(&["", "?gracePeriodSeconds=x", "?propagationPolicy=Foreground",
                                     "?dryRun=All"][..]), body())
            .prop_map(|(q, b)| ("DELETE", format!("{CMS}/fz-absent{q}"), JSON, b)),
        1 => body().prop_map(|b| ("DELETE", format!("{CMS}?labelSelector=none%3Dnone"), JSON, b)),
        2 => (0usize..4, json_patch_ops()).prop_map(|(k, ops)| {
            ("PATCH", TARGETS[k].1.to_string(), JSON_PATCH, ops.to_string().into_bytes())
        }),
        3 => (methods, write_paths, queries, content_types, body())
            .prop_map(|(m, p, q, ct, b)| (m, format!("{p}{q}"), ct, b)),
        2 => (
            prop::sample::select(&["GET", "POST", "PUT", "PATCH"][..]),
            prop::collection::vec(segment(), 0..7),
            prop::sample::select(&["/api/v1", "/apis/apps/v1", "/apis", ""][..]),
            body(),
        )
            .prop_map(|(m, segs, root, b)| (m, format!("{root}/{}", segs.join("/")), JSON, b)),
        2 => (list_param, "\\PC{0,30}", prop::sample::select(&[CMS, PODS, DEPLOYS, "/api/v1/pods"][..]))
            .prop_map(|(k, v, p)| ("GET", format!("{p}?{k}={}&limit=5", percent(&v)), "", vec![])),
    ]
}

#[test]
fn fuzzed_requests_are_never_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let s = TestServer::start().await;
        for (path, obj) in [
            (CMS, valid_objects()[0].clone()),
            (PODS, valid_objects()[1].clone()),
            (DEPLOYS, valid_objects()[2].clone()),
            (SVCS, valid_objects()[3].clone()),
        ] {
            assert_eq!(s.post(path, &obj).await.code, 201);
        }
        s
    });
    let mut runner = TestRunner::new(Config {
        cases: 600,
        failure_persistence: None,
        ..Config::default()
    });
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let result = runner.run(&request(), |(method, path, ct, body)| {
        let reply = rt.block_on(s.request(method, &path, ct, &body));
        *seen.lock().unwrap().entry(reply.code).or_default() += 1;
        prop_assert!(
            reply.code < 500,
            "{method} {path} ({ct}) body {:?}: {} {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>(),
            reply.code,
            reply.body
        );
        if reply.code >= 400 {
            prop_assert_eq!(&reply.body["kind"], "Status", "{} {}", method, path);
            prop_assert!(reply.body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The cases reach past decoding: some are admitted, some are refused
    // by validation rather than by the decoder.
    let seen = seen.into_inner().unwrap();
    eprintln!("response codes: {seen:?}");
    for code in [200, 201, 400, 404, 422] {
        assert!(seen.contains_key(&code), "no {code} among {seen:?}");
    }
    rt.block_on(async {
        let r = s.get(CMS).await;
        assert_eq!(r.code, 200, "the server still answers: {}", r.body);
        let p = s.post(NS, &namespace("after-fuzz")).await;
        assert_eq!(p.code, 201, "{}", p.body);
        finish(s).await;
    });
    drop(rt);
    std::thread::sleep(Duration::from_millis(300));
}
