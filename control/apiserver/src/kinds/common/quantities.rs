//! Quantities in validation: ResourceLists (every quantity well-formed and
//! non-negative) and the int-or-percent fields of rolling updates and
//! disruption budgets.

use super::errs::{key, Errs};
use crate::quantity::quantity_nanos;
use serde_json::{Map, Value};

/// Validates a ResourceList: every quantity well-formed and non-negative.
pub fn resource_list(e: &mut Errs, list: Option<&Map<String, Value>>, path: &str) {
    for (name, q) in list.into_iter().flatten() {
        let field = key(path, name);
        match q.as_str().and_then(quantity_nanos) {
            None => e.invalid(
                &field,
                q,
                "quantities must match the regular expression \
                 '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ),
            Some(n) if n < 0 => e.invalid(&field, q, "must be greater than or equal to 0"),
            Some(_) => {}
        }
    }
}

/// Int-or-string fields that take a count or a percentage (maxSurge, ...).
/// Returns whether the value is zero, for the "not both zero" rules.
pub fn int_or_percent(e: &mut Errs, v: Option<&Value>, path: &str) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(-1);
            if n < 0 {
                e.invalid(path, &Value::from(n), "must be greater than or equal to 0");
            }
            n == 0
        }
        Some(Value::String(s)) => match s.strip_suffix('%').map(str::parse::<u32>) {
            Some(Ok(p)) => p == 0,
            _ => {
                e.invalid(
                    path,
                    &Value::from(s.as_str()),
                    "a valid percent string must be a \
                    numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used \
                    for validation is '[0-9]+%')",
                );
                false
            }
        },
        Some(other) => {
            e.invalid(path, other, "must be an integer or percentage");
            false
        }
    }
}

/// Percent values above 100% make no sense for "unavailable" budgets.
pub fn at_most_100_percent(e: &mut Errs, v: Option<&Value>, path: &str) {
    let pct = v.and_then(Value::as_str).and_then(|s| s.strip_suffix('%'));
    if let Some(p) = pct.and_then(|p| p.parse::<u32>().ok()).filter(|p| *p > 100) {
        let value = Value::from(format!("{p}%"));
        e.invalid(path, &value, "must not be greater than 100%");
    }
}
