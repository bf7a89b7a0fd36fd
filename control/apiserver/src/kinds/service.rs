//! Services (core/v1): ports, cluster IPs, types and traffic policies; the
//! defaults (ClusterIP, TCP, targetPort = port, traffic policies by type);
//! an allocated cluster IP is for life; and the printer's EXTERNAL-IP and
//! `80:30080/TCP` ports.

use std::collections::HashSet;

use super::common::decode::decode;
use super::common::defaults::{existing, items, object_at, set_default};
use super::common::errs::{child, index, syntax, Errs};
use super::common::json::{at, get, int, list, map, spec, str_of, text};
use super::common::meta::{labels, NameRule};
use super::common::names::{dns1123_label, dns1123_subdomain, valid_ip};
use super::common::ports::{port_number, target_port, PROTOCOLS};
use super::common::table::{age, format_labels, lb_ingress, name, or_none, Col, AGE, NAME};
use super::common::update::{immutable_msg, set_once};
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Service;
use serde_json::{json, Value};

pub static SERVICES: KindOps = KindOps {
    group: "",
    resource: "services",
    admission: Some(Admission {
        name_rule: NameRule::Dns1035,
        namespaced: true,
        strict: decode::<Service>,
        defaults: Some(defaults),
        validate: |e, obj| service(e, spec(obj)),
        validate_update: Some(|e, new, old| service_update(e, spec(new), spec(old))),
    }),
    columns: COLUMNS,
    cells,
};

// ---- validation -------------------------------------------------------------

const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

fn service(e: &mut Errs, spec: &Value) {
    let ty = str_of(spec, "type").unwrap_or("ClusterIP");
    e.one_of("spec.type", get(spec, "type"), SERVICE_TYPES);
    let headless = str_of(spec, "clusterIP") == Some("None");
    let ports = list(spec, "ports");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        e.required("spec.ports", "");
    }
    service_ports(e, ports, ty);
    if ty == "ExternalName" {
        match str_of(spec, "externalName").filter(|s| !s.is_empty()) {
            None => e.required("spec.externalName", ""),
            Some(n) => syntax(
                e,
                "spec.externalName",
                n,
                dns1123_subdomain(n.trim_end_matches('.')),
            ),
        }
    }
    service_ips(e, spec);
    service_policies(e, spec, ty);
    labels(e, map(spec, "selector"), "spec.selector");
}

/// Each port: a valid, unique name (required when there are several), a
/// number, a protocol, a targetPort that is a number or an IANA service
/// name, and a nodePort only where the type has node ports. Two ports may
/// not share a port and protocol, nor a nodePort and protocol (Kubernetes'
/// rules: the proxy could not tell their traffic apart).
fn service_ports(e: &mut Errs, ports: &[Value], ty: &str) {
    let mut names = HashSet::new();
    let mut port_protocols = HashSet::new();
    let mut node_ports = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = index("spec.ports", i);
        let protocol = str_of(p, "protocol").unwrap_or("TCP");
        if let Some(port) = get(p, "port").and_then(Value::as_i64) {
            if !port_protocols.insert((port, protocol)) {
                e.duplicate(&pp, &json!({"port": port, "protocol": protocol}));
            }
        }
        let node_port = get(p, "nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0);
        if let Some(n) = node_port {
            if !node_ports.insert((n, protocol)) {
                e.duplicate(&child(&pp, "nodePort"), &Value::from(n));
            }
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let pp = index("spec.ports", i);
        match str_of(p, "name").filter(|n| !n.is_empty()) {
            Some(name) => {
                syntax(e, &child(&pp, "name"), name, dns1123_label(name));
                if !names.insert(name) {
                    e.duplicate(&child(&pp, "name"), &Value::from(name));
                }
            }
            None if ports.len() > 1 => e.required(&child(&pp, "name"), ""),
            None => {}
        }
        match get(p, "port") {
            None => e.required(&child(&pp, "port"), ""),
            Some(v) => port_number(e, v, &child(&pp, "port")),
        }
        e.one_of(&child(&pp, "protocol"), get(p, "protocol"), PROTOCOLS);
        if let Some(tp) = get(p, "targetPort") {
            target_port(e, tp, &child(&pp, "targetPort"));
        }
        let node_port = get(p, "nodePort").filter(|v| v.as_i64() != Some(0));
        if let Some(np) = node_port {
            if ty == "ClusterIP" || ty == "ExternalName" {
                let detail = format!("may not be used when `type` is '{ty}'");
                e.forbidden(&child(&pp, "nodePort"), &detail);
            } else {
                port_number(e, np, &child(&pp, "nodePort"));
            }
        }
    }
}

fn service_ips(e: &mut Errs, spec: &Value) {
    if let Some(ip) = str_of(spec, "clusterIP").filter(|s| !s.is_empty() && *s != "None") {
        if !valid_ip(ip) {
            e.invalid(
                "spec.clusterIP",
                &Value::from(ip),
                "must be a valid IP address",
            );
        }
    }
    for (i, ip) in list(spec, "clusterIPs").iter().enumerate() {
        let s = ip.as_str().unwrap_or_default();
        if s != "None" && !valid_ip(s) {
            e.invalid(
                &index("spec.clusterIPs", i),
                ip,
                "must be a valid IP address",
            );
        }
    }
    for (i, ip) in list(spec, "externalIPs").iter().enumerate() {
        if !ip.as_str().is_some_and(valid_ip) {
            e.invalid(
                &index("spec.externalIPs", i),
                ip,
                "must be a valid IP address",
            );
        }
    }
}

fn service_policies(e: &mut Errs, spec: &Value, ty: &str) {
    let affinity = get(spec, "sessionAffinity");
    e.one_of("spec.sessionAffinity", affinity, &["None", "ClientIP"]);
    let families = ["SingleStack", "PreferDualStack", "RequireDualStack"];
    e.one_of(
        "spec.ipFamilyPolicy",
        get(spec, "ipFamilyPolicy"),
        &families,
    );
    for (i, f) in list(spec, "ipFamilies").iter().enumerate() {
        e.one_of(&index("spec.ipFamilies", i), Some(f), &["IPv4", "IPv6"]);
    }
    let internal = get(spec, "internalTrafficPolicy");
    e.one_of(
        "spec.internalTrafficPolicy",
        internal,
        &["Cluster", "Local"],
    );
    let external = get(spec, "externalTrafficPolicy").filter(|v| v.as_str() != Some(""));
    e.one_of(
        "spec.externalTrafficPolicy",
        external,
        &["Cluster", "Local"],
    );
    if external.is_some() && ty != "NodePort" && ty != "LoadBalancer" {
        e.invalid(
            "spec.externalTrafficPolicy",
            external.unwrap_or(&Value::Null),
            "may only be set for externally-accessible services",
        );
    }
}

/// An allocated cluster IP is for life; an update that omits it is left to
/// the server, which copies it from the stored object.
fn service_update(e: &mut Errs, new: &Value, old: &Value) {
    if str_of(new, "type") == Some("ExternalName") {
        return;
    }
    set_once_if_given(e, new, old, "clusterIP", "spec.clusterIP");
    let given = !list(new, "clusterIPs").is_empty();
    if given
        && !list(old, "clusterIPs").is_empty()
        && list(new, "clusterIPs") != list(old, "clusterIPs")
    {
        immutable_msg(e, "spec.clusterIPs", get(new, "clusterIPs"));
    }
}

fn set_once_if_given(e: &mut Errs, new: &Value, old: &Value, k: &str, path: &str) {
    if str_of(new, k).is_some_and(|s| !s.is_empty()) {
        set_once(e, new, old, k, path);
    }
}

// ---- defaults ----------------------------------------------------------------

fn defaults(obj: &mut Value) {
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

// ---- table -------------------------------------------------------------------

const COLUMNS: &[Col] = &[
    NAME,
    Col("Type", "string", false, "How the service is exposed."),
    Col("Cluster-IP", "string", false, "The service's cluster IP."),
    Col(
        "External-IP",
        "string",
        false,
        "External addresses of the service.",
    ),
    Col("Port(s)", "string", false, "Ports the service exposes."),
    AGE,
    Col("Selector", "string", true, "Pods this service routes to."),
];

fn cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    // The API server defaults an omitted type to ClusterIP.
    let ty = match text(svc, "spec.type") {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = list(svc, "spec.clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| text(svc, "spec.clusterIP"));
    vec![
        name(svc),
        json!(ty),
        json!(or_none(cluster_ip)),
        json!(external_ip(svc, ty)),
        json!(or_none(&format_ports(svc))),
        age(svc, now),
        json!(format_labels(at(svc, "spec.selector"))),
    ]
}

/// EXTERNAL-IP: external IPs, load-balancer ingress (or `<pending>`), or
/// the ExternalName target.
fn external_ip(svc: &Value, ty: &str) -> String {
    let external: Vec<&str> = list(svc, "spec.externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match ty {
        "ClusterIP" | "NodePort" => or_none(&external.join(",")),
        "LoadBalancer" => {
            let mut all = lb_ingress(list(svc, "status.loadBalancer.ingress"));
            all.extend(external.iter().map(|s| s.to_string()));
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(svc, "spec.externalName").to_string(),
        _ => "<unknown>".into(),
    }
}

/// `80/TCP,443:30443/TCP`.
fn format_ports(svc: &Value) -> String {
    let ports: Vec<String> = list(svc, "spec.ports")
        .iter()
        .map(|p| {
            let proto = match text(p, "protocol") {
                "" => "TCP",
                pr => pr,
            };
            match int(p, "nodePort") {
                n if n > 0 => format!("{}:{n}/{proto}", int(p, "port")),
                _ => format!("{}/{proto}", int(p, "port")),
            }
        })
        .collect();
    ports.join(",")
}

#[cfg(test)]
mod admission_tests {
    use crate::admission::validate_update;
    use crate::kinds::common::testing::{bad, defaulted, fields, meta, ok};
    use serde_json::{json, Value};

    #[test]
    fn services() {
        let svc = |spec: Value| json!({"metadata": meta("s"), "spec": spec});
        ok(
            "",
            "services",
            &svc(
                json!({"ports": [{"name": "a", "port": 80, "targetPort": "http"},
            {"name": "b", "port": 81, "targetPort": 8081}]}),
            ),
        );
        ok("", "services", &svc(json!({"clusterIP": "None"})));
        ok(
            "",
            "services",
            &svc(json!({"type": "ExternalName", "externalName": "db.example.com"})),
        );
        bad(
            "",
            "services",
            &svc(json!({})),
            "spec.ports",
            "FieldValueRequired",
        );
        bad(
            "",
            "services",
            &svc(json!({"ports": [{"port": 80}, {"name": "b", "port": 81}]})),
            "spec.ports[0].name",
            "FieldValueRequired",
        );
        bad(
            "",
            "services",
            &svc(json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]})),
            "spec.ports[1].name",
            "FieldValueDuplicate",
        );
        bad(
            "",
            "services",
            &svc(json!({"ports": [{"port": 0}]})),
            "spec.ports[0].port",
            "FieldValueInvalid",
        );
        bad(
            "",
            "services",
            &svc(json!({"type": "Fancy", "ports": [{"port": 1}]})),
            "spec.type",
            "FieldValueNotSupported",
        );
        bad(
            "",
            "services",
            &svc(json!({"ports": [{"port": 1, "targetPort": "Not_OK"}]})),
            "spec.ports[0].targetPort",
            "FieldValueInvalid",
        );
        bad(
            "",
            "services",
            &svc(json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]})),
            "spec.ports[1]",
            "FieldValueDuplicate",
        );
        ok(
            "",
            "services",
            &svc(
                json!({"ports": [{"name": "a", "port": 53, "protocol": "TCP"},
                {"name": "b", "port": 53, "protocol": "UDP"}]}),
            ),
        );
        bad(
            "",
            "services",
            &svc(json!({"type": "NodePort", "ports": [
                {"name": "a", "port": 80, "nodePort": 30080},
                {"name": "b", "port": 81, "nodePort": 30080}]})),
            "spec.ports[1].nodePort",
            "FieldValueDuplicate",
        );
        for name in [
            "a-very-long-port-name",
            "-web",
            "web-",
            "we--b",
            "8080",
            "Web",
        ] {
            bad(
                "",
                "services",
                &svc(json!({"ports": [{"port": 1, "targetPort": name}]})),
                "spec.ports[0].targetPort",
                "FieldValueInvalid",
            );
        }
        ok(
            "",
            "services",
            &svc(json!({"ports": [{"port": 1, "targetPort": "http-alt2"}]})),
        );
        bad(
            "",
            "services",
            &svc(json!({"ports": [{"port": 1, "nodePort": 30000}]})),
            "spec.ports[0].nodePort",
            "FieldValueForbidden",
        );
        bad(
            "",
            "services",
            &svc(json!({"type": "ExternalName"})),
            "spec.externalName",
            "FieldValueRequired",
        );
    }

    #[test]
    fn service_update_rules() {
        let old = json!({"metadata": meta("s"), "spec": {"clusterIP": "10.0.0.5", "ports": [{"port": 80}]}});
        let mut new = old.clone();
        new["spec"]["ports"][0]["port"] = json!(81);
        assert!(validate_update("", "services", &new, &old).is_empty());
        new["spec"]["clusterIP"] = json!("10.0.0.6");
        assert_eq!(
            fields(&validate_update("", "services", &new, &old)),
            vec!["spec.clusterIP FieldValueInvalid"]
        );
        new["spec"].as_object_mut().unwrap().remove("clusterIP");
        assert!(validate_update("", "services", &new, &old).is_empty());
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
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{cell, dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn service_rows() {
        let svc = json!({
            "metadata": meta("web"),
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "ports": [{"port": 80, "protocol": "TCP"},
                               {"port": 443, "nodePort": 30443, "protocol": "TCP"}],
                     "selector": {"app": "web"}}
        });
        assert_eq!(
            row_cells("services", &svc, now()),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80/TCP,443:30443/TCP"),
                json!("6s"),
                json!("app=web")
            ]
        );
        let lb = json!({"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "ports": [{"port": 53, "protocol": "UDP"}]}});
        assert_eq!(cell("services", &lb, "External-IP"), "<pending>");
        assert_eq!(cell("services", &lb, "Cluster-IP"), "<none>");
        assert_eq!(cell("services", &lb, "Port(s)"), "53/UDP");
        let mut lb2 = lb.clone();
        lb2["status"] =
            json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "a.example"}]}});
        assert_eq!(cell("services", &lb2, "External-IP"), "1.2.3.4,a.example");
        let ext = json!({"metadata": meta("e"), "spec": {"type": "ExternalName", "externalName": "db.example"}});
        assert_eq!(cell("services", &ext, "External-IP"), "db.example");
        assert_eq!(cell("services", &ext, "Port(s)"), "<none>");
        assert_eq!(cell("services", &ext, "Selector"), "<none>");
    }
}
