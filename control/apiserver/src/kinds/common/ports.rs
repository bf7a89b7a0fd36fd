//! Ports as pods, services, endpoints, ingresses and network policies spell
//! them: numbers in range, known protocols, and target ports given by number
//! or by container-port name.

use super::errs::{syntax, Errs};
use super::names::iana_svc_name;
use serde_json::Value;

pub const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

pub fn port_number(e: &mut Errs, v: &Value, path: &str) {
    if !v.as_i64().is_some_and(|n| (1..=65535).contains(&n)) {
        e.invalid(path, v, "must be between 1 and 65535, inclusive");
    }
}

/// targetPort is a port number or the name of a container port.
pub fn target_port(e: &mut Errs, tp: &Value, path: &str) {
    match tp {
        Value::String(s) => syntax(e, path, s, iana_svc_name(s)),
        v => port_number(e, v, path),
    }
}
