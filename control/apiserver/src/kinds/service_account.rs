//! ServiceAccounts (core/v1): referenced secret names; the SECRETS column.

use super::common::decode::decode;
use super::common::errs::{child, index, syntax, Errs};
use super::common::json::{count, list, str_of};
use super::common::meta::NameRule;
use super::common::names::dns1123_subdomain;
use super::common::table::{age, name, Col, AGE, NAME};
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{json, Value};

pub static SERVICE_ACCOUNTS: KindOps = KindOps {
    group: "",
    resource: "serviceaccounts",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<ServiceAccount>,
        defaults: None,
        validate: service_account,
        validate_update: None,
    }),
    columns: COLUMNS,
    cells,
};

fn service_account(e: &mut Errs, obj: &Value) {
    for (i, s) in list(obj, "secrets").iter().enumerate() {
        if let Some(name) = str_of(s, "name").filter(|n| !n.is_empty()) {
            syntax(
                e,
                &child(&index("secrets", i), "name"),
                name,
                dns1123_subdomain(name),
            );
        }
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col("Secrets", "string", false, "Number of referenced secrets."),
    AGE,
];

fn cells(sa: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(sa), json!(count(sa, "secrets")), age(sa, now)]
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn service_account_row() {
        let sa = json!({"metadata": meta("default")});
        assert_eq!(
            row_cells("serviceaccounts", &sa, now()),
            vec![json!("default"), json!(0), json!("6s")]
        );
    }
}
