//! Object metadata: the name syntax of each kind, the namespace a namespaced
//! object needs (and a cluster-scoped one may not have), labels,
//! annotations, owner references and finalizers on create; and the identity
//! fields no update may change.

use super::errs::{child, index, key, required_str, syntax, Errs};
use super::json::{get, list, map, str_of};
use super::names::{
    dns1035_label, dns1123_label, dns1123_subdomain, label_value, path_segment, qualified_name,
};
use super::update::immutable_msg;
use serde_json::{Map, Value};

/// Which syntax an object's name must follow.
#[derive(Clone, Copy)]
pub enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    /// Any name usable as one URL path segment.
    PathSegment,
}

const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn name_msgs(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Subdomain => dns1123_subdomain(name),
        NameRule::Label => dns1123_label(name),
        NameRule::Dns1035 => dns1035_label(name),
        NameRule::PathSegment => path_segment(name),
    }
}

pub fn object_meta(e: &mut Errs, obj: &Value, rule: NameRule, namespaced: bool) {
    let null = Value::Null;
    let meta = obj.get("metadata").unwrap_or(&null);
    match str_of(meta, "name").filter(|n| !n.is_empty()) {
        Some(name) => syntax(e, "metadata.name", name, name_msgs(rule, name)),
        None => e.required("metadata.name", "name or generateName is required"),
    }
    let namespace = str_of(meta, "namespace").filter(|n| !n.is_empty());
    match (namespaced, namespace) {
        (true, Some(ns)) => syntax(e, "metadata.namespace", ns, dns1123_label(ns)),
        (true, None) => e.required("metadata.namespace", ""),
        (false, Some(_)) => e.forbidden("metadata.namespace", "not allowed on this type"),
        (false, None) => {}
    }
    labels(e, map(meta, "labels"), "metadata.labels");
    annotations(e, map(meta, "annotations"), "metadata.annotations");
    owner_references(e, list(meta, "ownerReferences"));
    for (i, f) in list(meta, "finalizers").iter().enumerate() {
        let name = f.as_str().unwrap_or_default();
        syntax(
            e,
            &index("metadata.finalizers", i),
            name,
            qualified_name(name),
        );
    }
}

pub fn labels(e: &mut Errs, labels: Option<&Map<String, Value>>, path: &str) {
    for (k, v) in labels.into_iter().flatten() {
        syntax(e, path, k, qualified_name(k));
        let value = v.as_str().unwrap_or_default();
        syntax(e, &key(path, k), value, label_value(value));
    }
}

pub fn annotations(e: &mut Errs, annotations: Option<&Map<String, Value>>, path: &str) {
    let mut total = 0;
    for (k, v) in annotations.into_iter().flatten() {
        syntax(e, path, k, qualified_name(&k.to_lowercase()));
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > MAX_ANNOTATIONS_BYTES {
        e.too_long(path, MAX_ANNOTATIONS_BYTES);
    }
}

fn owner_references(e: &mut Errs, refs: &[Value]) {
    for (i, r) in refs.iter().enumerate() {
        let path = index("metadata.ownerReferences", i);
        for k in ["apiVersion", "kind", "name", "uid"] {
            required_str(e, r, k, &path);
        }
    }
}

/// Identity in metadata. uid and creationTimestamp are compared only when
/// the update carries them, since the server copies them from the old object.
pub fn meta_update(e: &mut Errs, new: &Value, old: &Value) {
    let null = Value::Null;
    let (nm, om) = (
        new.get("metadata").unwrap_or(&null),
        old.get("metadata").unwrap_or(&null),
    );
    for k in ["name", "namespace", "uid", "creationTimestamp"] {
        let n = str_of(nm, k).filter(|s| !s.is_empty());
        let o = str_of(om, k).filter(|s| !s.is_empty());
        if n.is_some() && n != o {
            immutable_msg(e, &child("metadata", k), get(nm, k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MAX_ANNOTATIONS_BYTES;
    use crate::admission::validate_update;
    use crate::kinds::common::testing::{bad, c, fields, meta, ok, pod};
    use serde_json::json;

    #[test]
    fn name_rules() {
        ok("", "pods", &pod(json!({"containers": [c("a")]})));
        bad(
            "",
            "pods",
            &json!({"metadata": {"namespace": "d"}, "spec": {"containers": [c("a")]}}),
            "metadata.name",
            "FieldValueRequired",
        );
        bad(
            "",
            "pods",
            &json!({"metadata": meta("Bad_Name"), "spec": {"containers": [c("a")]}}),
            "metadata.name",
            "FieldValueInvalid",
        );
        ok("", "namespaces", &json!({"metadata": {"name": "team-a"}}));
        bad(
            "",
            "namespaces",
            &json!({"metadata": {"name": "a.b"}}),
            "metadata.name",
            "FieldValueInvalid",
        );
        bad(
            "",
            "namespaces",
            &json!({"metadata": {"name": "a", "namespace": "x"}}),
            "metadata.namespace",
            "FieldValueForbidden",
        );
        let svc = |n: &str| json!({"metadata": meta(n), "spec": {"ports": [{"port": 80}]}});
        ok("", "services", &svc("web"));
        bad(
            "",
            "services",
            &svc("1web"),
            "metadata.name",
            "FieldValueInvalid",
        );
        bad(
            "",
            "configmaps",
            &json!({"metadata": {"name": "x"}}),
            "metadata.namespace",
            "FieldValueRequired",
        );
    }

    #[test]
    fn label_and_annotation_rules() {
        let mut p = pod(json!({"containers": [c("a")]}));
        p["metadata"]["labels"] = json!({"app.kubernetes.io/name": "web", "ok": ""});
        p["metadata"]["annotations"] = json!({"example.com/Note": "anything at all"});
        ok("", "pods", &p);
        p["metadata"]["labels"] = json!({"bad key!": "v"});
        bad("", "pods", &p, "metadata.labels", "FieldValueInvalid");
        p["metadata"]["labels"] = json!({"k": "-bad"});
        bad("", "pods", &p, "metadata.labels[k]", "FieldValueInvalid");
        p["metadata"]["labels"] = json!({"k": "x".repeat(64)});
        bad("", "pods", &p, "metadata.labels[k]", "FieldValueInvalid");
        p["metadata"]["labels"] = json!({});
        p["metadata"]["annotations"] = json!({"a": "x".repeat(MAX_ANNOTATIONS_BYTES)});
        bad("", "pods", &p, "metadata.annotations", "FieldValueTooLong");
    }

    #[test]
    fn identity_update_rules() {
        let cm =
            |v: &str, imm: bool| json!({"metadata": meta("c"), "immutable": imm, "data": {"k": v}});
        let mut renamed = cm("1", false);
        renamed["metadata"]["name"] = json!("other");
        assert_eq!(
            fields(&validate_update(
                "",
                "configmaps",
                &renamed,
                &cm("1", false)
            )),
            vec!["metadata.name FieldValueInvalid"]
        );
    }
}
