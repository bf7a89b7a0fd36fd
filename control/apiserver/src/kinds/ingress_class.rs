//! IngressClasses (networking.k8s.io/v1): a required controller, fixed
//! once created; the row with the controller and the parameters reference.

use super::common::decode::decode;
use super::common::errs::{required_str, Errs};
use super::common::json::{at, spec, text};
use super::common::meta::NameRule;
use super::common::table::{age, name, Col, AGE, NAME};
use super::common::update::immutable;
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::networking::v1::IngressClass;
use serde_json::{json, Value};

pub static INGRESS_CLASSES: KindOps = KindOps {
    group: "networking.k8s.io",
    resource: "ingressclasses",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: false,
        strict: decode::<IngressClass>,
        defaults: None,
        validate: |e, ic| validate(e, spec(ic)),
        validate_update: Some(validate_update),
    }),
    columns: COLUMNS,
    cells,
};

fn validate(e: &mut Errs, spec: &Value) {
    if let Some(c) = required_str(e, spec, "controller", "spec") {
        if c.len() > 250 {
            e.invalid(
                "spec.controller",
                &Value::from(c),
                "must be no more than 250 characters",
            );
        }
    }
}

/// Kubernetes fixes the controller once the class exists.
fn validate_update(e: &mut Errs, new: &Value, old: &Value) {
    immutable(e, spec(new), spec(old), "controller", "spec.controller");
}

const COLUMNS: &[Col] = &[
    NAME,
    Col(
        "Controller",
        "string",
        false,
        "Controller that handles this class.",
    ),
    Col(
        "Parameters",
        "string",
        false,
        "Reference to class parameters.",
    ),
    AGE,
];

fn cells(ic: &Value, now: Timestamp) -> Vec<Value> {
    let params = match at(ic, "spec.parameters") {
        Some(p) if p.is_object() => {
            let group = match text(p, "apiGroup") {
                "" => String::new(),
                g => format!(".{g}"),
            };
            format!("{}{group}/{}", text(p, "kind"), text(p, "name"))
        }
        _ => "<none>".into(),
    };
    vec![
        name(ic),
        json!(text(ic, "spec.controller")),
        json!(params),
        age(ic, now),
    ]
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, ok};
    use serde_json::json;

    #[test]
    fn ingress_classes_need_a_controller() {
        let ic = json!({"metadata": {"name": "keel"}, "spec": {"controller": "keel.dev/ingress"}});
        ok("networking.k8s.io", "ingressclasses", &ic);
        let none = json!({"metadata": {"name": "keel"}, "spec": {}});
        bad(
            "networking.k8s.io",
            "ingressclasses",
            &none,
            "spec.controller",
            "FieldValueRequired",
        );
    }
}
