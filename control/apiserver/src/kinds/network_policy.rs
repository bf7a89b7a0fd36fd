//! NetworkPolicies (networking.k8s.io/v1): the pod selector, policy types,
//! ports and peers (selectors or an IP block, not both); ports default to
//! TCP and policy types to what the rules cover; the POD-SELECTOR column.

use super::common::decode::decode;
use super::common::defaults::{existing, items, set_default};
use super::common::errs::{child, index, Errs};
use super::common::json::{at, get, int_of, list, spec, str_of};
use super::common::label_selector::label_selector;
use super::common::meta::NameRule;
use super::common::names::valid_cidr;
use super::common::ports::{target_port, PROTOCOLS};
use super::common::table::{age, format_selector, name, Col, AGE, NAME};
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};

pub static NETWORK_POLICIES: KindOps = KindOps {
    group: "networking.k8s.io",
    resource: "networkpolicies",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<NetworkPolicy>,
        defaults: Some(defaults),
        validate: |e, obj| network_policy(e, spec(obj)),
        validate_update: None,
    }),
    columns: COLUMNS,
    cells,
};

fn network_policy(e: &mut Errs, spec: &Value) {
    match get(spec, "podSelector") {
        Some(sel) => label_selector(e, sel, "spec.podSelector"),
        None => e.required("spec.podSelector", ""),
    }
    for (i, t) in list(spec, "policyTypes").iter().enumerate() {
        e.one_of(
            &index("spec.policyTypes", i),
            Some(t),
            &["Ingress", "Egress"],
        );
    }
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in list(spec, dir).iter().enumerate() {
            let rp = index(&child("spec", dir), i);
            network_policy_ports(e, list(rule, "ports"), &child(&rp, "ports"));
            for (j, peer) in list(rule, peers).iter().enumerate() {
                network_policy_peer(e, peer, &index(&child(&rp, peers), j));
            }
        }
    }
}

fn network_policy_ports(e: &mut Errs, ports: &[Value], path: &str) {
    for (i, p) in ports.iter().enumerate() {
        let pp = index(path, i);
        e.one_of(&child(&pp, "protocol"), get(p, "protocol"), PROTOCOLS);
        if let Some(port) = get(p, "port") {
            target_port(e, port, &child(&pp, "port"));
        }
        if let Some(end) = int_of(p, "endPort") {
            let start = int_of(p, "port");
            if start.is_none_or(|s| end < s) {
                e.invalid(
                    &child(&pp, "endPort"),
                    &Value::from(end),
                    "must be greater than or equal to `port`",
                );
            }
        }
    }
}

fn network_policy_peer(e: &mut Errs, peer: &Value, path: &str) {
    let set = ["podSelector", "namespaceSelector", "ipBlock"]
        .iter()
        .filter(|k| get(peer, k).is_some())
        .count();
    if set == 0 {
        e.required(path, "must specify a peer");
    }
    if let Some(block) = get(peer, "ipBlock") {
        if get(peer, "podSelector").is_some() || get(peer, "namespaceSelector").is_some() {
            e.forbidden(path, "may not specify both ipBlock and another peer");
        }
        let cidr = str_of(block, "cidr").unwrap_or_default();
        if !valid_cidr(cidr) {
            e.invalid(
                &child(path, "ipBlock.cidr"),
                &Value::from(cidr),
                "must be a valid CIDR",
            );
        }
        for (i, x) in list(block, "except").iter().enumerate() {
            if !x.as_str().is_some_and(valid_cidr) {
                e.invalid(
                    &index(&child(path, "ipBlock.except"), i),
                    x,
                    "must be a valid CIDR",
                );
            }
        }
    }
    for k in ["podSelector", "namespaceSelector"] {
        if let Some(sel) = get(peer, k) {
            label_selector(e, sel, &child(path, k));
        }
    }
}

/// A policy always covers ingress; it covers egress only when it has egress
/// rules, so an ingress-only policy does not cut off outbound traffic.
fn defaults(obj: &mut Value) {
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

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Pod-Selector",
        "string",
        false,
        "Pods the policy applies to.",
    ),
    AGE,
];

fn cells(np: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(np),
        json!(format_selector(at(np, "spec.podSelector"))),
        age(np, now),
    ]
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, defaulted, meta};
    use serde_json::json;

    #[test]
    fn network_policy_peers() {
        let np = json!({"metadata": meta("n"), "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}});
        bad(
            "networking.k8s.io",
            "networkpolicies",
            &np,
            "spec.ingress[0].from[0].ipBlock.cidr",
            "FieldValueInvalid",
        );
    }

    #[test]
    fn network_policy_defaults() {
        let np = defaulted(
            "networking.k8s.io",
            "networkpolicies",
            json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}}),
        );
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{cell, dated_meta as meta};
    use serde_json::json;

    #[test]
    fn network_policy_selector() {
        let np = json!({"metadata": meta("deny"), "spec": {"podSelector": {}}});
        assert_eq!(cell("networkpolicies", &np, "Pod-Selector"), "<none>");
    }
}
