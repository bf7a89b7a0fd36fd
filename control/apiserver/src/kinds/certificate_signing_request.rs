//! CertificateSigningRequests (certificates.k8s.io/v1): the request must be
//! a PKCS#10 PEM whose signature verifies and whose subject the signer's
//! rules allow ([`keel_apimachinery::csr`]); the spec never changes; the
//! Approved and Denied conditions exclude each other and, once set, stay;
//! a certificate is issued only to an approved request. The columns are
//! kubectl's: SIGNERNAME, REQUESTOR, REQUESTEDDURATION, CONDITION.

use super::common::decode::decode;
use super::common::duration::human_secs;
use super::common::errs::{index, required_str, Errs};
use super::common::json::{get, int_of, list, spec, text};
use super::common::meta::NameRule;
use super::common::table::{age, name, Col, AGE, NAME};
use super::{Admission, KindOps};
use base64::Engine;
use jiff::Timestamp;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use keel_apimachinery::csr;
use serde_json::{json, Value};

pub static CERTIFICATE_SIGNING_REQUESTS: KindOps = KindOps {
    group: "certificates.k8s.io",
    resource: "certificatesigningrequests",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: false,
        strict: decode::<CertificateSigningRequest>,
        defaults: None,
        validate: |e, obj| {
            request(e, spec(obj));
            status(e, obj);
        },
        validate_update: Some(update),
    }),
    columns: COLUMNS,
    cells,
};

/// Usages Kubernetes knows (`KeyUsage` in certificates/v1).
const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

fn request(e: &mut Errs, spec: &Value) {
    let signer = required_str(e, spec, "signerName", "spec");
    if let Some(s) = signer {
        if !s.contains('/') {
            e.invalid(
                "spec.signerName",
                &json!(s),
                "must be a fully qualified domain and path of the form 'example.com/signer-name'",
            );
        }
    }
    if let Some(n) = int_of(spec, "expirationSeconds") {
        if n < csr::MIN_EXPIRATION_S {
            e.invalid(
                "spec.expirationSeconds",
                &json!(n),
                &format!(
                    "may not specify a duration less than {}s",
                    csr::MIN_EXPIRATION_S
                ),
            );
        }
    }
    let usages: Vec<String> = list(spec, "usages")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if usages.is_empty() {
        e.required("spec.usages", "");
    }
    for (i, u) in usages.iter().enumerate() {
        if !USAGES.contains(&u.as_str()) {
            e.not_supported(&index("spec.usages", i), &json!(u), USAGES);
        }
    }
    let Some(b64) = required_str(e, spec, "request", "spec") else {
        return;
    };
    let Ok(pem) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        e.invalid("spec.request", &json!("<bytes>"), "is not base64");
        return;
    };
    let parsed = match csr::parse_pem(&pem) {
        Ok(p) => p,
        Err(why) => {
            e.invalid("spec.request", &json!("<bytes>"), &why);
            return;
        }
    };
    if let Some(s) = signer {
        if let Err(why) = csr::check_signer(s, &parsed, &usages) {
            e.invalid("spec.request", &json!("<bytes>"), &why);
        }
    }
}

fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    list(obj, "status.conditions")
        .iter()
        .find(|c| text(c, "type") == ty)
}

fn status(e: &mut Errs, obj: &Value) {
    let conds = list(obj, "status.conditions");
    for (i, c) in conds.iter().enumerate() {
        let ty = text(c, "type");
        let path = index("status.conditions", i);
        if ty.is_empty() {
            e.required(&format!("{path}.type"), "");
        }
        if conds[..i].iter().any(|p| text(p, "type") == ty) {
            e.duplicate(&format!("{path}.type"), &json!(ty));
        }
        if ["Approved", "Denied"].contains(&ty) && text(c, "status") != "True" {
            e.not_supported(&format!("{path}.status"), &c["status"], &["True"]);
        }
    }
    let approved = condition(obj, "Approved").is_some();
    if approved && condition(obj, "Denied").is_some() {
        e.invalid(
            "status.conditions",
            &json!("Approved, Denied"),
            "Approved and Denied conditions are mutually exclusive",
        );
    }
    if !text(obj, "status.certificate").is_empty() && !approved {
        e.forbidden(
            "status.certificate",
            "a certificate may only be issued to an approved request",
        );
    }
}

fn update(e: &mut Errs, new: &Value, old: &Value) {
    if get(new, "spec") != get(old, "spec") {
        e.forbidden("spec", "a CertificateSigningRequest's spec is immutable");
    }
    for ty in ["Approved", "Denied"] {
        if condition(old, ty).is_some() && condition(new, ty).is_none() {
            e.forbidden(
                "status.conditions",
                &format!("the {ty} condition may not be removed"),
            );
        }
    }
    let old_cert = text(old, "status.certificate");
    if !old_cert.is_empty() && text(new, "status.certificate") != old_cert {
        e.forbidden(
            "status.certificate",
            "an issued certificate may not be changed",
        );
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    AGE,
    Col(
        "SignerName",
        "string",
        false,
        "The signer the request is for.",
    ),
    Col("Requestor", "string", false, "Who created the request."),
    Col(
        "RequestedDuration",
        "string",
        false,
        "The validity the request asks for.",
    ),
    Col(
        "Condition",
        "string",
        false,
        "Approved, Denied or Failed, and Issued once signed.",
    ),
];

fn cells(c: &Value, now: Timestamp) -> Vec<Value> {
    let duration = match int_of(spec(c), "expirationSeconds") {
        Some(s) => human_secs(s),
        None => "<none>".to_string(),
    };
    vec![
        name(c),
        age(c, now),
        json!(text(c, "spec.signerName")),
        json!(text(c, "spec.username")),
        json!(duration),
        json!(condition_text(c)),
    ]
}

/// kubectl's CONDITION: the condition types in order, `Issued` once a
/// certificate is there, `Pending` when neither.
fn condition_text(c: &Value) -> String {
    let mut out: Vec<&str> = list(c, "status.conditions")
        .iter()
        .map(|c| text(c, "type"))
        .filter(|t| !t.is_empty())
        .collect();
    if !text(c, "status.certificate").is_empty() {
        out.push("Issued");
    }
    if out.is_empty() {
        return "Pending".into();
    }
    out.join(",")
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, ok};
    use base64::Engine;
    use serde_json::{json, Value};

    const G: &str = "certificates.k8s.io";
    const R: &str = "certificatesigningrequests";

    fn pem(cn: &str, org: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(request: &str, signer: &str) -> Value {
        let b64 = base64::engine::general_purpose::STANDARD.encode(request);
        json!({"metadata": {"name": "c"}, "spec": {"request": b64, "signerName": signer,
               "usages": ["digital signature", "client auth"]}})
    }

    #[test]
    fn node_requests_must_name_a_node() {
        let signer = keel_apimachinery::csr::KUBELET_CLIENT_SIGNER;
        ok(G, R, &csr(&pem("system:node:n1", "system:nodes"), signer));
        let c = bad(
            G,
            R,
            &csr(&pem("alice", "system:nodes"), signer),
            "spec.request",
            "FieldValueInvalid",
        );
        assert!(c.message.contains("system:node:"), "{}", c.message);
    }

    #[test]
    fn garbage_requests_are_refused() {
        let c = bad(
            G,
            R,
            &csr("not a pem", "kubernetes.io/kube-apiserver-client"),
            "spec.request",
            "FieldValueInvalid",
        );
        assert!(c.message.contains("PEM"), "{}", c.message);
        let mut no_signer = csr(&pem("a", "b"), "x");
        no_signer["spec"]
            .as_object_mut()
            .unwrap()
            .remove("signerName");
        bad(G, R, &no_signer, "spec.signerName", "FieldValueRequired");
    }

    #[test]
    fn certificates_need_approval() {
        let mut c = csr(&pem("alice", "dev"), keel_apimachinery::csr::CLIENT_SIGNER);
        c["status"] = json!({"certificate": "Y2VydA=="});
        bad(G, R, &c, "status.certificate", "FieldValueForbidden");
        c["status"]["conditions"] = json!([{"type": "Approved", "status": "True"},
                                           {"type": "Denied", "status": "True"}]);
        bad(G, R, &c, "status.conditions", "FieldValueInvalid");
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{cell, dated_meta as meta};
    use serde_json::json;

    #[test]
    fn condition_column() {
        let mut c = json!({"metadata": meta("c"), "spec": {"username": "system:bootstrap:abcdef"}});
        assert_eq!(
            cell("certificatesigningrequests", &c, "Condition"),
            "Pending"
        );
        c["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}],
                             "certificate": "eA=="});
        assert_eq!(
            cell("certificatesigningrequests", &c, "Condition"),
            "Approved,Issued"
        );
        assert_eq!(
            cell("certificatesigningrequests", &c, "Requestor"),
            "system:bootstrap:abcdef"
        );
    }
}
