//! Nodes (core/v1): pod CIDRs and taints; allocatable defaults to capacity;
//! a pod CIDR, once set, stays; and the node row (Ready or NotReady, roles,
//! addresses, versions).

use std::collections::BTreeSet;

use super::common::decode::decode;
use super::common::defaults::{existing, set_default};
use super::common::errs::{child, index, syntax, Errs};
use super::common::json::{at, get, list, spec, str_of, text};
use super::common::meta::NameRule;
use super::common::names::{qualified_name, valid_cidr};
use super::common::table::{age, name, or_none, Col, AGE, NAME};
use super::common::update::set_once;
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

pub static NODES: KindOps = KindOps {
    group: "",
    resource: "nodes",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: false,
        strict: decode::<Node>,
        defaults: Some(defaults),
        validate: |e, obj| node(e, spec(obj)),
        validate_update: Some(|e, new, old| {
            set_once(e, spec(new), spec(old), "podCIDR", "spec.podCIDR");
        }),
    }),
    columns: COLUMNS,
    cells,
};

fn node(e: &mut Errs, spec: &Value) {
    if let Some(cidr) = str_of(spec, "podCIDR").filter(|s| !s.is_empty()) {
        if !valid_cidr(cidr) {
            e.invalid("spec.podCIDR", &Value::from(cidr), "must be a valid CIDR");
        }
    }
    for (i, c) in list(spec, "podCIDRs").iter().enumerate() {
        if !c.as_str().is_some_and(valid_cidr) {
            e.invalid(&index("spec.podCIDRs", i), c, "must be a valid CIDR");
        }
    }
    for (i, t) in list(spec, "taints").iter().enumerate() {
        let p = index("spec.taints", i);
        match str_of(t, "key").filter(|k| !k.is_empty()) {
            Some(k) => syntax(e, &child(&p, "key"), k, qualified_name(k)),
            None => e.required(&child(&p, "key"), ""),
        }
        match get(t, "effect") {
            None => e.required(&child(&p, "effect"), ""),
            ef => e.one_of(
                &child(&p, "effect"),
                ef,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ),
        }
    }
}

/// Allocatable defaults to capacity so schedulers always have a figure.
fn defaults(obj: &mut Value) {
    let Some(status) = existing(obj, "status") else {
        return;
    };
    if let Some(capacity) = status.get("capacity").cloned() {
        set_default(status, "allocatable", capacity);
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col("Status", "string", false, "The status of the node"),
    Col("Roles", "string", false, "The roles of the node"),
    AGE,
    Col(
        "Version",
        "string",
        false,
        "Kubelet version reported by the node.",
    ),
    Col(
        "Internal-IP",
        "string",
        true,
        "The node's internal address.",
    ),
    Col(
        "External-IP",
        "string",
        true,
        "The node's external address.",
    ),
    Col("OS-Image", "string", true, "OS image reported by the node."),
    Col(
        "Kernel-Version",
        "string",
        true,
        "Kernel version reported by the node.",
    ),
    Col(
        "Container-Runtime",
        "string",
        true,
        "Container runtime version reported by the node.",
    ),
];

fn cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let info = |f: &str| -> Value {
        match text(node, &format!("status.nodeInfo.{f}")) {
            "" => json!("<unknown>"),
            v => json!(v),
        }
    };
    vec![
        name(node),
        json!(node_status(node)),
        json!(node_roles(node)),
        age(node, now),
        json!(text(node, "status.nodeInfo.kubeletVersion")),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

/// Ready / NotReady / Unknown, plus SchedulingDisabled when cordoned.
fn node_status(node: &Value) -> String {
    let ready = list(node, "status.conditions")
        .iter()
        .rev()
        .find(|c| text(c, "type") == "Ready");
    let mut status = match ready {
        Some(c) if text(c, "status") == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if at(node, "spec.unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Roles from `node-role.kubernetes.io/<role>` and `kubernetes.io/role`.
fn node_roles(node: &Value) -> String {
    let Some(labels) = at(node, "metadata.labels").and_then(Value::as_object) else {
        return "<none>".into();
    };
    let roles: BTreeSet<&str> = labels
        .iter()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) if !role.is_empty() => Some(role),
            _ if k == "kubernetes.io/role" => v.as_str().filter(|r| !r.is_empty()),
            _ => None,
        })
        .collect();
    or_none(&roles.into_iter().collect::<Vec<_>>().join(","))
}

fn node_address(node: &Value, ty: &str) -> String {
    list(node, "status.addresses")
        .iter()
        .find(|a| text(a, "type") == ty)
        .map_or_else(|| "<none>".into(), |a| text(a, "address").to_string())
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::defaulted;
    use serde_json::json;

    #[test]
    fn node_defaults() {
        let node = defaulted("", "nodes", json!({"status": {"capacity": {"cpu": "4"}}}));
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "4"}));
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{ago, cell, now, row_cells};
    use serde_json::json;

    #[test]
    fn node_rows() {
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": ago(3 * 86400),
                         "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.5"}],
                       "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian"}}
        });
        assert_eq!(
            row_cells("nodes", &node, now()),
            vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker"),
                json!("3d"),
                json!("v1.33.0"),
                json!("192.168.1.5"),
                json!("<none>"),
                json!("Debian"),
                json!("<unknown>"),
                json!("<unknown>")
            ]
        );
        let bare = json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(cell("nodes", &bare, "Status"), "NotReady");
        assert_eq!(cell("nodes", &bare, "Roles"), "<none>");
        assert_eq!(cell("nodes", &json!({}), "Status"), "Unknown");
    }
}
