//! Secrets (core/v1): keys, size, and the keys built-in types promise;
//! `stringData` folds into `data` and the type defaults to Opaque; the type
//! never changes and an immutable Secret keeps its data.

use super::common::decode::decode;
use super::common::defaults::{object_at, set_default};
use super::common::errs::{key, syntax, Errs};
use super::common::json::{count, map, str_of, text};
use super::common::meta::NameRule;
use super::common::names::config_key;
use super::common::table::{age, name, Col, AGE, NAME};
use super::common::update::{immutable, immutable_data};
use super::config_map::MAX_CONFIG_BYTES;
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{json, Value};

pub static SECRETS: KindOps = KindOps {
    group: "",
    resource: "secrets",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<Secret>,
        defaults: Some(defaults),
        validate: secret,
        validate_update: Some(secret_update),
    }),
    columns: COLUMNS,
    cells,
};

fn secret(e: &mut Errs, obj: &Value) {
    let mut total = 0;
    for section in ["data", "stringData"] {
        for (k, v) in map(obj, section).into_iter().flatten() {
            syntax(e, &key(section, k), k, config_key(k));
            let len = v.as_str().map_or(0, str::len);
            // `data` is base64: count decoded bytes.
            total += if section == "data" { len / 4 * 3 } else { len };
        }
    }
    if total > MAX_CONFIG_BYTES {
        e.too_long("data", MAX_CONFIG_BYTES);
    }
    secret_type_keys(e, obj);
}

/// Built-in secret types promise certain keys to their consumers.
fn secret_type_keys(e: &mut Errs, obj: &Value) {
    let has = |k: &str| {
        ["data", "stringData"]
            .iter()
            .any(|s| map(obj, s).is_some_and(|m| m.contains_key(k)))
    };
    let needed: &[&str] = match str_of(obj, "type").unwrap_or_default() {
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/service-account-token" => {
            let ann = obj.pointer("/metadata/annotations/kubernetes.io~1service-account.name");
            if ann.and_then(Value::as_str).is_none_or(str::is_empty) {
                e.required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                );
            }
            &[]
        }
        _ => &[],
    };
    for k in needed.iter().filter(|k| !has(k)) {
        e.required(&key("data", k), "");
    }
}

/// An immutable Secret keeps its data, and no Secret changes its type.
fn secret_update(e: &mut Errs, new: &Value, old: &Value) {
    immutable_data(e, new, old, &["data", "stringData"]);
    immutable(e, new, old, "type", "type");
}

/// Secrets default to Opaque, and `stringData` is folded into `data` (base64)
/// the way the API server's conversion does: `stringData` is write-only and
/// never stored.
fn defaults(obj: &mut Value) {
    set_default(obj, "type", json!("Opaque"));
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    let Some(data) = object_at(obj, "data").and_then(Value::as_object_mut) else {
        return;
    };
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default().as_bytes().to_vec();
        let encoded = k8s_openapi::ByteString(text);
        if let Ok(encoded) = serde_json::to_value(encoded) {
            data.insert(key, encoded);
        }
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col("Type", "string", false, "The secret type."),
    Col("Data", "string", false, "Number of data entries."),
    AGE,
];

fn cells(s: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(s),
        json!(text(s, "type")),
        json!(count(s, "data")),
        age(s, now),
    ]
}

#[cfg(test)]
mod admission_tests {
    use crate::admission::validate_update;
    use crate::kinds::common::testing::{bad, defaulted, fields, meta, ok};
    use serde_json::json;

    #[test]
    fn secrets() {
        let secret = json!({"metadata": meta("s"), "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        bad(
            "",
            "secrets",
            &secret,
            "data[tls.key]",
            "FieldValueRequired",
        );
        ok(
            "",
            "secrets",
            &json!({"metadata": meta("s"), "type": "Opaque", "data": {"k": "eA=="}}),
        );
    }

    #[test]
    fn secret_update_rules() {
        let s = |t: &str| json!({"metadata": meta("s"), "type": t});
        assert_eq!(
            fields(&validate_update("", "secrets", &s("a/b"), &s("Opaque"))),
            vec!["type FieldValueInvalid"]
        );
    }

    #[test]
    fn secret_defaults_and_string_data() {
        let s = defaulted(
            "",
            "secrets",
            json!({"stringData": {"k": "hello"}, "data": {"a": "eA=="}}),
        );
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"], json!({"a": "eA==", "k": "aGVsbG8="}));
        assert!(s.get("stringData").is_none());
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn secret_row() {
        let s = json!({"metadata": meta("s"), "type": "Opaque", "data": {"k": "dg=="}});
        assert_eq!(
            row_cells("secrets", &s, now()),
            vec![json!("s"), json!("Opaque"), json!(1), json!("6s")]
        );
    }
}
