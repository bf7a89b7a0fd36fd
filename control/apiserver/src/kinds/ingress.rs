//! Ingresses (networking.k8s.io/v1): class, rules, paths and backends
//! (a service by name and port, or a resource), TLS hosts; the HOSTS,
//! ADDRESS and PORTS row.

use super::common::decode::decode;
use super::common::errs::{child, index, required_str, syntax, Errs};
use super::common::json::{get, list, spec, str_of, text};
use super::common::meta::NameRule;
use super::common::names::{dns1035_label, dns1123_subdomain, iana_svc_name};
use super::common::ports::port_number;
use super::common::table::{age, lb_ingress, name, text_or, Col, AGE, NAME};
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::{json, Value};

pub static INGRESSES: KindOps = KindOps {
    group: "networking.k8s.io",
    resource: "ingresses",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<Ingress>,
        defaults: None,
        validate: |e, obj| ingress(e, spec(obj)),
        validate_update: None,
    }),
    columns: COLUMNS,
    cells,
};

fn ingress(e: &mut Errs, spec: &Value) {
    if let Some(class) = str_of(spec, "ingressClassName") {
        syntax(e, "spec.ingressClassName", class, dns1123_subdomain(class));
    }
    if let Some(b) = get(spec, "defaultBackend") {
        ingress_backend(e, b, "spec.defaultBackend");
    }
    let rules = list(spec, "rules");
    if rules.is_empty() && get(spec, "defaultBackend").is_none() {
        e.invalid(
            "spec",
            &Value::from("object"),
            "either `defaultBackend` or `rules` must be specified",
        );
    }
    for (i, rule) in rules.iter().enumerate() {
        let p = index("spec.rules", i);
        if let Some(host) = str_of(rule, "host").filter(|h| !h.is_empty()) {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            syntax(e, &child(&p, "host"), host, dns1123_subdomain(bare));
        }
        for (j, path) in rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            ingress_path(e, path, &index(&child(&p, "http.paths"), j));
        }
    }
    for (i, tls) in list(spec, "tls").iter().enumerate() {
        for (j, h) in list(tls, "hosts").iter().enumerate() {
            let host = h.as_str().unwrap_or_default();
            let bare = host.strip_prefix("*.").unwrap_or(host);
            syntax(
                e,
                &index(&child(&index("spec.tls", i), "hosts"), j),
                host,
                dns1123_subdomain(bare),
            );
        }
    }
}

fn ingress_path(e: &mut Errs, path: &Value, p: &str) {
    let ty = get(path, "pathType");
    match ty {
        None => e.required(&child(p, "pathType"), "pathType must be specified"),
        Some(_) => e.one_of(
            &child(p, "pathType"),
            ty,
            &["Exact", "Prefix", "ImplementationSpecific"],
        ),
    }
    let prefix_like = matches!(ty.and_then(Value::as_str), Some("Exact" | "Prefix"));
    if let Some(s) = str_of(path, "path") {
        if (prefix_like || !s.is_empty()) && !s.starts_with('/') {
            e.invalid(
                &child(p, "path"),
                &Value::from(s),
                "must be an absolute path",
            );
        }
    } else if prefix_like {
        e.invalid(
            &child(p, "path"),
            &Value::from(""),
            "must be an absolute path",
        );
    }
    match get(path, "backend") {
        Some(b) => ingress_backend(e, b, &child(p, "backend")),
        None => e.required(&child(p, "backend"), ""),
    }
}

/// Exactly one of service or resource; a service needs a name and a port
/// given by number or by name.
fn ingress_backend(e: &mut Errs, b: &Value, path: &str) {
    let service = get(b, "service");
    match (service, get(b, "resource")) {
        (Some(_), Some(_)) => e.invalid(
            path,
            &Value::from("object"),
            "cannot set both resource and service backends",
        ),
        (None, None) => e.invalid(
            path,
            &Value::from("object"),
            "resource or service backend is required",
        ),
        _ => {}
    }
    let Some(svc) = service else {
        return;
    };
    let sp = child(path, "service");
    if let Some(name) = required_str(e, svc, "name", &sp) {
        syntax(e, &child(&sp, "name"), name, dns1035_label(name));
    }
    let port = svc.get("port").unwrap_or(&Value::Null);
    let pp = child(&sp, "port");
    match (
        get(port, "number"),
        str_of(port, "name").filter(|n| !n.is_empty()),
    ) {
        (Some(_), Some(_)) => e.invalid(
            &pp,
            &Value::from("object"),
            "cannot set both port name & port number",
        ),
        (Some(n), None) => port_number(e, n, &child(&pp, "number")),
        (None, Some(n)) => syntax(e, &child(&pp, "name"), n, iana_svc_name(n)),
        (None, None) => e.required(&pp, "port name or number is required"),
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Class",
        "string",
        false,
        "The IngressClass that handles this ingress.",
    ),
    Col(
        "Hosts",
        "string",
        false,
        "Hosts that incoming requests are matched against.",
    ),
    Col("Address", "string", false, "Load-balancer ingress points."),
    Col("Ports", "string", false, "Ports the ingress listens on."),
    AGE,
];

fn cells(ing: &Value, now: Timestamp) -> Vec<Value> {
    let ports = if list(ing, "spec.tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(ing),
        json!(text_or(ing, "spec.ingressClassName", "<none>")),
        json!(ingress_hosts(list(ing, "spec.rules"))),
        json!(lb_ingress(list(ing, "status.loadBalancer.ingress")).join(",")),
        json!(ports),
        age(ing, now),
    ]
}

/// The first three rule hosts, `*` when no rule names one, and a
/// `+ N more...` tail counted over rules, as Kubernetes prints it.
fn ingress_hosts(rules: &[Value]) -> String {
    let mut hosts = Vec::new();
    let mut more = false;
    for r in rules {
        if hosts.len() == 3 {
            more = true;
            break;
        }
        match text(r, "host") {
            "" => {}
            h => hosts.push(h),
        }
    }
    if hosts.is_empty() {
        return "*".into();
    }
    let shown = hosts.join(",");
    if more {
        format!("{shown} + {} more...", rules.len().saturating_sub(3))
    } else {
        shown
    }
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, meta, ok};
    use serde_json::json;

    #[test]
    fn ingresses() {
        let ing = json!({"metadata": meta("i"), "spec": {"rules": [{"host": "*.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
        ok("networking.k8s.io", "ingresses", &ing);
        let mut ing2 = ing.clone();
        ing2["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!("rel");
        bad(
            "networking.k8s.io",
            "ingresses",
            &ing2,
            "spec.rules[0].http.paths[0].path",
            "FieldValueInvalid",
        );
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn ingress_row() {
        let ing = json!({"metadata": meta("i"),
                         "spec": {"ingressClassName": "nginx", "tls": [{}],
                                  "rules": [{"host": "a.example"}, {}, {"host": "b.example"}, {"host": "c"}, {"host": "d"}]},
                         "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}});
        assert_eq!(
            row_cells("ingresses", &ing, now()),
            vec![
                json!("i"),
                json!("nginx"),
                json!("a.example,b.example,c + 2 more..."),
                json!("1.2.3.4"),
                json!("80, 443"),
                json!("6s")
            ]
        );
    }
}
