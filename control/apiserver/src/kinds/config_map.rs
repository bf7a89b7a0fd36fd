//! ConfigMaps (core/v1): data keys are file names when mounted and the total
//! has to fit in etcd; an immutable ConfigMap keeps its data; the DATA
//! column counts entries.

use super::common::decode::decode;
use super::common::errs::{key, syntax, Errs};
use super::common::json::{count, map};
use super::common::meta::NameRule;
use super::common::names::config_key;
use super::common::table::{age, name, Col, AGE, NAME};
use super::common::update::immutable_data;
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{json, Value};

pub static CONFIG_MAPS: KindOps = KindOps {
    group: "",
    resource: "configmaps",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<ConfigMap>,
        defaults: None,
        validate: config_map,
        validate_update: Some(|e, new, old| immutable_data(e, new, old, &["data", "binaryData"])),
    }),
    columns: COLUMNS,
    cells,
};

pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// Data keys are file names when mounted; the total has to fit in etcd.
fn config_map(e: &mut Errs, obj: &Value) {
    let mut total = 0;
    for section in ["data", "binaryData"] {
        for (k, v) in map(obj, section).into_iter().flatten() {
            syntax(e, &key(section, k), k, config_key(k));
            total += v.as_str().map_or(0, str::len);
        }
    }
    let binary = map(obj, "binaryData");
    for k in map(obj, "data").into_iter().flatten().map(|(k, _)| k) {
        if binary.is_some_and(|b| b.contains_key(k)) {
            e.invalid(
                &key("data", k),
                &Value::from(k.as_str()),
                "duplicate of key present in binaryData",
            );
        }
    }
    if total > MAX_CONFIG_BYTES {
        e.too_long("", MAX_CONFIG_BYTES);
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col("Data", "string", false, "Number of data entries."),
    AGE,
];

fn cells(cm: &Value, now: Timestamp) -> Vec<Value> {
    let n = count(cm, "data") + count(cm, "binaryData");
    vec![name(cm), json!(n), age(cm, now)]
}

#[cfg(test)]
mod admission_tests {
    use super::MAX_CONFIG_BYTES;
    use crate::admission::validate_update;
    use crate::kinds::common::testing::{bad, fields, meta, ok};
    use serde_json::{json, Value};

    #[test]
    fn config_maps() {
        let cm = |data: Value| json!({"metadata": meta("c"), "data": data});
        ok(
            "",
            "configmaps",
            &cm(json!({"app.properties": "x", "KEY_1": "y"})),
        );
        bad(
            "",
            "configmaps",
            &cm(json!({"bad/key": "x"})),
            "data[bad/key]",
            "FieldValueInvalid",
        );
        bad(
            "",
            "configmaps",
            &cm(json!({"..x": "x"})),
            "data[..x]",
            "FieldValueInvalid",
        );
        bad(
            "",
            "configmaps",
            &cm(json!({"a": "x".repeat(MAX_CONFIG_BYTES + 1)})),
            "",
            "FieldValueTooLong",
        );
    }

    #[test]
    fn config_map_update_rules() {
        let cm =
            |v: &str, imm: bool| json!({"metadata": meta("c"), "immutable": imm, "data": {"k": v}});
        assert!(validate_update("", "configmaps", &cm("2", false), &cm("1", false)).is_empty());
        assert_eq!(
            fields(&validate_update(
                "",
                "configmaps",
                &cm("2", true),
                &cm("1", true)
            )),
            vec!["data FieldValueForbidden"]
        );
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn config_map_row() {
        let cm = json!({"metadata": meta("c"), "data": {"a": "1"}, "binaryData": {"b": "AA=="}});
        assert_eq!(
            row_cells("configmaps", &cm, now()),
            vec![json!("c"), json!(2), json!("6s")]
        );
    }
}
