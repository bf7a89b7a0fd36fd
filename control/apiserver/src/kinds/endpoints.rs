//! Endpoints (core/v1): valid addresses and named, unique ports (shared with
//! EndpointSlices); ports default to TCP; the ENDPOINTS column's first three
//! `ip:port` pairs.

use std::collections::HashSet;

use super::common::decode::decode;
use super::common::defaults::{items, set_default};
use super::common::errs::{child, index, required_str, syntax, Errs};
use super::common::json::{get, int, list, str_of, text};
use super::common::meta::NameRule;
use super::common::names::{dns1123_label, valid_ip};
use super::common::ports::{port_number, PROTOCOLS};
use super::common::table::{age, name, truncated, Col, AGE, NAME};
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Endpoints;
use serde_json::{json, Value};

pub static ENDPOINTS: KindOps = KindOps {
    group: "",
    resource: "endpoints",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<Endpoints>,
        defaults: Some(defaults),
        validate: endpoints,
        validate_update: None,
    }),
    columns: COLUMNS,
    cells,
};

fn endpoints(e: &mut Errs, obj: &Value) {
    for (i, subset) in list(obj, "subsets").iter().enumerate() {
        let sp = index("subsets", i);
        for key in ["addresses", "notReadyAddresses"] {
            for (j, a) in list(subset, key).iter().enumerate() {
                let ap = index(&child(&sp, key), j);
                if let Some(ip) = required_str(e, a, "ip", &ap) {
                    if !valid_ip(ip) {
                        e.invalid(
                            &child(&ap, "ip"),
                            &Value::from(ip),
                            "must be a valid IP address",
                        );
                    }
                }
            }
        }
        endpoint_ports(e, list(subset, "ports"), &child(&sp, "ports"));
    }
}

/// Ports of Endpoints and EndpointSlices: named when several, unique names.
pub fn endpoint_ports(e: &mut Errs, ports: &[Value], path: &str) {
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = index(path, i);
        let name = str_of(p, "name").unwrap_or_default();
        if name.is_empty() && ports.len() > 1 {
            e.required(&child(&pp, "name"), "");
        }
        if !name.is_empty() {
            syntax(e, &child(&pp, "name"), name, dns1123_label(name));
        }
        if !names.insert(name) {
            e.duplicate(&child(&pp, "name"), &Value::from(name));
        }
        if let Some(v) = get(p, "port") {
            port_number(e, v, &child(&pp, "port"));
        }
        e.one_of(&child(&pp, "protocol"), get(p, "protocol"), PROTOCOLS);
    }
}

fn defaults(obj: &mut Value) {
    for subset in items(obj, "subsets") {
        for p in items(subset, "ports") {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Endpoints",
        "string",
        false,
        "Addresses and ports of the endpoints.",
    ),
    AGE,
];

fn cells(ep: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(ep), json!(format_endpoints(ep)), age(ep, now)]
}

/// First three `ip:port` pairs (bare IPs for port-less subsets) and a
/// `+ N more...` tail.
fn format_endpoints(ep: &Value) -> String {
    let subsets = list(ep, "subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut items = Vec::new();
    for ss in subsets {
        let addrs: Vec<&str> = list(ss, "addresses")
            .iter()
            .map(|a| text(a, "ip"))
            .collect();
        let ports = list(ss, "ports");
        if ports.is_empty() {
            items.extend(addrs.iter().map(|a| a.to_string()));
        }
        for p in ports {
            items.extend(addrs.iter().map(|a| join_host_port(a, int(p, "port"))));
        }
    }
    truncated(&items, 3, "")
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, defaulted, meta};
    use serde_json::json;

    #[test]
    fn endpoints_addresses() {
        let ep = json!({"metadata": meta("e"), "subsets": [{"addresses": [{"ip": "nope"}]}]});
        bad(
            "",
            "endpoints",
            &ep,
            "subsets[0].addresses[0].ip",
            "FieldValueInvalid",
        );
    }

    #[test]
    fn endpoints_defaults() {
        let ep = defaulted(
            "",
            "endpoints",
            json!({"subsets": [{"ports": [{"port": 80}]}]}),
        );
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{cell, dated_meta as meta};
    use serde_json::json;

    #[test]
    fn endpoints_row() {
        let ep = json!({"metadata": meta("web"), "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "fd00::4"}],
            "ports": [{"port": 80}]}]});
        assert_eq!(
            cell("endpoints", &ep, "Endpoints"),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."
        );
        let none = json!({"metadata": meta("x")});
        assert_eq!(cell("endpoints", &none, "Endpoints"), "<none>");
    }
}
