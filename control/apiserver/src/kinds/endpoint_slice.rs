//! EndpointSlices (discovery.k8s.io/v1): an address type, at most 1000
//! endpoints of 1 to 100 addresses of that type, and ports as Endpoints
//! have them; ports default to TCP; the address type never changes.

use super::common::decode::decode;
use super::common::defaults::{items, set_default};
use super::common::errs::{child, index, Errs};
use super::common::json::{at, get, list, text};
use super::common::meta::NameRule;
use super::common::names::dns1123_subdomain;
use super::common::table::{age, name, truncated, Col, AGE, NAME};
use super::common::update::immutable;
use super::endpoints::endpoint_ports;
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};

pub static ENDPOINT_SLICES: KindOps = KindOps {
    group: "discovery.k8s.io",
    resource: "endpointslices",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<EndpointSlice>,
        defaults: Some(defaults),
        validate: endpoint_slice,
        validate_update: Some(|e, new, old| {
            immutable(e, new, old, "addressType", "addressType");
        }),
    }),
    columns: COLUMNS,
    cells,
};

fn endpoint_slice(e: &mut Errs, obj: &Value) {
    let ty = get(obj, "addressType");
    match ty {
        None => e.required("addressType", ""),
        Some(_) => e.one_of("addressType", ty, &["IPv4", "IPv6", "FQDN"]),
    }
    let endpoints = list(obj, "endpoints");
    if endpoints.len() > 1000 {
        e.too_long("endpoints", 1000);
    }
    let ty = ty.and_then(Value::as_str).unwrap_or_default();
    for (i, ep) in endpoints.iter().enumerate() {
        let p = index("endpoints", i);
        let addrs = list(ep, "addresses");
        if addrs.is_empty() || addrs.len() > 100 {
            e.invalid(
                &child(&p, "addresses"),
                &Value::from(addrs.len()),
                "must contain between 1 and 100 addresses",
            );
        }
        for (j, a) in addrs.iter().enumerate() {
            let s = a.as_str().unwrap_or_default();
            let ok = match ty {
                "IPv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => dns1123_subdomain(s).is_empty(),
            };
            if !ok {
                let detail = format!("must be a valid {ty} address");
                e.invalid(&index(&child(&p, "addresses"), j), a, &detail);
            }
        }
    }
    endpoint_ports(e, list(obj, "ports"), "ports");
}

fn defaults(obj: &mut Value) {
    for p in items(obj, "ports") {
        set_default(p, "protocol", json!("TCP"));
        set_default(p, "name", json!(""));
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "AddressType",
        "string",
        false,
        "Type of address carried by this slice.",
    ),
    Col("Ports", "string", false, "Ports exposed by this slice."),
    Col("Endpoints", "string", false, "Addresses of the endpoints."),
    AGE,
];

fn cells(es: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = list(es, "ports")
        .iter()
        .map(
            |p| match (at(p, "port").and_then(Value::as_i64), text(p, "name")) {
                (Some(n), _) => n.to_string(),
                (None, "") => "*".into(),
                (None, n) => n.to_string(),
            },
        )
        .collect();
    let addrs: Vec<String> = list(es, "endpoints")
        .iter()
        .flat_map(|e| list(e, "addresses").iter().filter_map(Value::as_str))
        .map(str::to_string)
        .collect();
    vec![
        name(es),
        json!(text(es, "addressType")),
        json!(truncated(&ports, 3, "<unset>")),
        json!(truncated(&addrs, 3, "<unset>")),
        age(es, now),
    ]
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{defaulted, meta, ok};
    use serde_json::json;

    #[test]
    fn endpoint_slices() {
        let es = json!({"metadata": meta("e"), "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}],
            "ports": [{"port": 80}]});
        ok("discovery.k8s.io", "endpointslices", &es);
    }

    #[test]
    fn endpoint_slice_defaults() {
        let es = defaulted(
            "discovery.k8s.io",
            "endpointslices",
            json!({"ports": [{"port": 80}]}),
        );
        assert_eq!(es["ports"][0]["protocol"], "TCP");
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{cell, dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn endpoint_slice_row() {
        let none = json!({"metadata": meta("x")});
        let es = json!({"metadata": meta("web-abc"), "addressType": "IPv4",
                        "ports": [{"port": 80, "name": "http"}, {"name": "x"}],
                        "endpoints": [{"addresses": ["10.0.0.1"]}]});
        assert_eq!(
            row_cells("endpointslices", &es, now()),
            vec![
                json!("web-abc"),
                json!("IPv4"),
                json!("80,x"),
                json!("10.0.0.1"),
                json!("6s")
            ]
        );
        assert_eq!(cell("endpointslices", &none, "Endpoints"), "<unset>");
    }
}
