//! Admission as a whole: every kind decodes, unknown kinds and odd input are
//! refused without a panic, and defaulted objects stay valid.

use super::*;
use crate::kinds::common::testing::{meta, ok};
use serde_json::json;

#[test]
fn every_listed_resource_decodes_a_minimal_object() {
    let cases = [
        ("", "namespaces", "v1", "Namespace"),
        ("", "nodes", "v1", "Node"),
        ("", "pods", "v1", "Pod"),
        ("", "services", "v1", "Service"),
        ("", "endpoints", "v1", "Endpoints"),
        ("", "configmaps", "v1", "ConfigMap"),
        ("", "secrets", "v1", "Secret"),
        ("", "serviceaccounts", "v1", "ServiceAccount"),
        ("", "persistentvolumes", "v1", "PersistentVolume"),
        ("", "persistentvolumeclaims", "v1", "PersistentVolumeClaim"),
        ("", "resourcequotas", "v1", "ResourceQuota"),
        ("", "limitranges", "v1", "LimitRange"),
        ("", "replicationcontrollers", "v1", "ReplicationController"),
        ("apps", "replicasets", "apps/v1", "ReplicaSet"),
        ("apps", "statefulsets", "apps/v1", "StatefulSet"),
        ("apps", "daemonsets", "apps/v1", "DaemonSet"),
        ("batch", "jobs", "batch/v1", "Job"),
        ("batch", "cronjobs", "batch/v1", "CronJob"),
        (
            "autoscaling",
            "horizontalpodautoscalers",
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
        ),
        ("autoscaling", "scale", "autoscaling/v1", "Scale"),
        (
            "coordination.k8s.io",
            "leases",
            "coordination.k8s.io/v1",
            "Lease",
        ),
        (
            "networking.k8s.io",
            "ingresses",
            "networking.k8s.io/v1",
            "Ingress",
        ),
        (
            "networking.k8s.io",
            "networkpolicies",
            "networking.k8s.io/v1",
            "NetworkPolicy",
        ),
        (
            "policy",
            "poddisruptionbudgets",
            "policy/v1",
            "PodDisruptionBudget",
        ),
        ("policy", "evictions", "policy/v1", "Eviction"),
    ];
    for (group, resource, api_version, kind) in cases {
        let obj = json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"name": "x"}, "zzz": 1});
        assert_eq!(
            unknown_fields(group, resource, &obj),
            Ok(vec!["zzz".to_string()]),
            "{group}/{resource}"
        );
    }
}

#[test]
fn resources_with_required_top_level_fields() {
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
        "involvedObject": {"kind": "Pod"}});
    assert_eq!(unknown_fields("", "events", &ev), Ok(vec![]));
    let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e"}, "eventTime": "2024-01-01T00:00:00.000000Z"});
    assert_eq!(unknown_fields("events.k8s.io", "events", &ev), Ok(vec![]));
    let es = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "e"}, "addressType": "IPv4", "endpoints": []});
    assert_eq!(
        unknown_fields("discovery.k8s.io", "endpointslices", &es),
        Ok(vec![])
    );
}

#[test]
fn unknown_resource_is_an_error() {
    assert!(unknown_fields("apps", "widgets", &json!({})).is_err());
    assert!(unknown_fields("nope.io", "pods", &json!({})).is_err());
}

#[test]
fn non_object_input_is_an_error_not_a_panic() {
    for v in [json!(null), json!(1), json!("x"), json!([1, 2])] {
        assert!(unknown_fields("", "pods", &v).is_err());
    }
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

#[test]
fn unknown_resource_and_odd_input() {
    assert!(!validate("x", "y", &json!({})).is_empty());
    for v in [
        json!(null),
        json!(1),
        json!({"metadata": 5, "spec": []}),
        json!({"spec": {"containers": "x"}}),
    ] {
        for (g, r) in [
            ("", "pods"),
            ("apps", "deployments"),
            ("", "services"),
            ("batch", "cronjobs"),
        ] {
            assert!(!validate(g, r, &v).is_empty());
            let _ = validate_update(g, r, &v, &json!([]));
        }
    }
}

#[test]
fn defaulted_objects_stay_valid() {
    let tpl = json!({"metadata": {"labels": {"app": "a"}},
        "spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80}],
            "resources": {"limits": {"cpu": "1"}}, "livenessProbe": {"httpGet": {"port": 80}}}],
            "volumes": [{"name": "v"}]}});
    let sel = json!({"matchLabels": {"app": "a"}});
    let cases = [
        (
            "",
            "pods",
            json!({"metadata": meta("p"), "spec": tpl["spec"].clone()}),
        ),
        (
            "apps",
            "deployments",
            json!({"metadata": meta("d"), "spec": {"selector": sel, "template": tpl}}),
        ),
        (
            "apps",
            "statefulsets",
            json!({"metadata": meta("s"), "spec": {"selector": sel, "template": tpl}}),
        ),
        (
            "apps",
            "daemonsets",
            json!({"metadata": meta("d"), "spec": {"selector": sel, "template": tpl}}),
        ),
        (
            "",
            "services",
            json!({"metadata": meta("s"), "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
        ),
        ("", "namespaces", json!({"metadata": {"name": "n"}})),
        (
            "",
            "secrets",
            json!({"metadata": meta("s"), "stringData": {"a": "b"}}),
        ),
    ];
    for (g, r, mut obj) in cases {
        apply_defaults(g, r, &mut obj);
        ok(g, r, &obj);
    }
}
