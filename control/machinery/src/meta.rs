//! ObjectMeta on JSON objects: the fields the API server owns (uid,
//! timestamps, generation) and the helpers that read them without panics.

use jiff::Timestamp;
use rand::Rng;
use serde_json::{json, Map, Value};

/// RFC 3339 to the second, as Kubernetes writes `metav1.Time`.
pub fn now_rfc3339() -> String {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// RFC 3339 with microseconds, as Kubernetes writes `metav1.MicroTime`
/// (Lease renew times).
pub fn now_rfc3339_micro() -> String {
    Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// The metadata map, created if absent or not a map.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let m = obj.as_object_mut().expect("made an object above");
    let entry = m.entry("metadata").or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("made an object above")
}

pub fn str_field<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj)?.get(field)?.as_str()
}

pub fn name(obj: &Value) -> &str {
    str_field(obj, "name").unwrap_or("")
}

pub fn uid(obj: &Value) -> &str {
    str_field(obj, "uid").unwrap_or("")
}

pub fn resource_version(obj: &Value) -> Option<&str> {
    str_field(obj, "resourceVersion").filter(|s| !s.is_empty())
}

pub fn is_deleting(obj: &Value) -> bool {
    str_field(obj, "deletionTimestamp").is_some()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn set_finalizers(obj: &mut Value, f: &[String]) {
    let m = meta_mut(obj);
    if f.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(f));
    }
}

/// `generateName` plus five random characters from Kubernetes' alphabet
/// (no vowels, no look-alikes).
pub fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    let base: String = prefix.chars().take(63 - 5).collect();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{base}{suffix}")
}

/// Everything but `status` and `metadata`: what a change to bumps
/// `metadata.generation`.
pub fn spec_part(obj: &Value) -> Value {
    match obj.as_object() {
        Some(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "status" | "metadata"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        None => Value::Null,
    }
}

/// Equal apart from resourceVersion and managedFields timestamps: an update
/// that changes nothing is not written (no new revision), as Kubernetes.
pub fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        v
    };
    strip(a) == strip(b)
}

pub fn labels(obj: &Value) -> Option<&Value> {
    meta(obj)?.get("labels")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_keep_the_prefix_and_length_limit() {
        let n = generated_name("web-");
        assert!(n.starts_with("web-") && n.len() == 9, "{n}");
        let long = generated_name(&"a".repeat(100));
        assert_eq!(long.len(), 63);
    }

    #[test]
    fn timestamps_are_whole_seconds() {
        let t = now_rfc3339();
        assert!(t.ends_with('Z') && !t.contains('.'), "{t}");
        assert!(parse_time(&t).is_some());
    }

    #[test]
    fn meta_mut_repairs_garbage() {
        let mut v = json!({"metadata": 5});
        meta_mut(&mut v).insert("name".into(), json!("x"));
        assert_eq!(name(&v), "x");
        let mut s = json!("not an object");
        meta_mut(&mut s);
        assert!(s["metadata"].is_object());
    }
}

#[cfg(test)]
mod micro_time_tests {
    #[test]
    fn micro_time_has_six_fraction_digits() {
        let s = super::now_rfc3339_micro();
        let frac = s.split('.').nth(1).expect("a fraction");
        assert_eq!(frac.len(), 7, "{s}");
        assert!(frac.ends_with('Z'));
        assert!(s.parse::<jiff::Timestamp>().is_ok(), "{s}");
    }
}
