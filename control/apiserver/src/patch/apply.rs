//! Server-side apply and field ownership (`metadata.managedFields`).
//!
//! Every write records which manager set which fields (`FieldsV1`: `f:`
//! fields, `k:` list items by merge key, `v:` set members). An apply
//! merges the manager's configuration into the live object; a field it
//! sets to a different value than the one another manager owns is a
//! conflict (409) unless forced, in which case ownership moves. Fields the
//! manager applied before and no longer applies are removed when nobody
//! else owns them. This follows Kubernetes' structured-merge-diff.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::merge_keys::{list_strategy, ListStrategy};
use super::strategic::strategic_merge_patch;
use crate::meta;

/// One path element in FieldsV1 notation.
type Path = Vec<String>;
type FieldSet = BTreeSet<Path>;

#[derive(Debug, PartialEq)]
pub enum ApplyError {
    /// (field path, manager) pairs that conflict.
    Conflicts(Vec<(String, String)>),
    Invalid(String),
}

/// Top-level and metadata fields nobody owns (the server sets them).
fn ignored(path: &[String]) -> bool {
    match path {
        [a] if a == "f:apiVersion" || a == "f:kind" => true,
        [m, f, ..] if m == "f:metadata" => !matches!(
            f.as_str(),
            "f:labels" | "f:annotations" | "f:finalizers" | "f:ownerReferences"
        ),
        _ => false,
    }
}

/// Every owned path of `v` (leaves, plus keyed list items themselves).
fn field_set(kind: &str, v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    walk(kind, v, &mut vec![], &mut vec![], &mut out);
    out.retain(|p| !ignored(p));
    out
}

fn walk(kind: &str, v: &Value, names: &mut Vec<String>, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                names.push(k.clone());
                path.push(format!("f:{k}"));
                walk(kind, child, names, path, out);
                path.pop();
                names.pop();
            }
        }
        Value::Array(items) if !items.is_empty() && !path.is_empty() => {
            walk_list(kind, items, names, path, out)
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

fn walk_list(
    kind: &str,
    items: &[Value],
    names: &mut Vec<String>,
    path: &mut Path,
    out: &mut FieldSet,
) {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    match list_strategy(kind, &refs) {
        ListStrategy::MergeByKey(key) if items.iter().all(|i| i.get(key).is_some()) => {
            for item in items {
                path.push(item_key(key, &item[key]));
                out.insert(path.clone());
                walk(kind, item, names, path, out);
                path.pop();
            }
        }
        ListStrategy::MergeSet => {
            for item in items {
                path.push(format!("v:{item}"));
                out.insert(path.clone());
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

fn item_key(key: &str, value: &Value) -> String {
    let mut m = Map::new();
    m.insert(key.to_string(), value.clone());
    format!("k:{}", Value::Object(m))
}

/// The value at a FieldsV1 path, if present.
fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(v);
    };
    let child = if let Some(f) = first.strip_prefix("f:") {
        v.get(f)?
    } else if let Some(k) = first.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(k).ok()?;
        v.as_array()?
            .iter()
            .find(|i| want.iter().all(|(wk, wv)| i.get(wk) == Some(wv)))?
    } else if let Some(x) = first.strip_prefix("v:") {
        let want: Value = serde_json::from_str(x).ok()?;
        v.as_array()?.iter().find(|i| **i == want)?
    } else {
        return None;
    };
    value_at(child, rest)
}

/// Removes what a path names (a field, a keyed item or a set member).
fn remove_at(v: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if let Some(f) = first.strip_prefix("f:") {
        let Some(m) = v.as_object_mut() else { return };
        if rest.is_empty() {
            m.remove(f);
        } else if let Some(c) = m.get_mut(f) {
            remove_at(c, rest);
        }
        return;
    }
    let Some(items) = v.as_array_mut() else {
        return;
    };
    let pos = items
        .iter()
        .position(|i| value_at(&json!([i]), std::slice::from_ref(first)).is_some());
    if let Some(pos) = pos {
        if rest.is_empty() {
            items.remove(pos);
        } else {
            remove_at(&mut items[pos], rest);
        }
    }
}

/// FieldsV1 JSON from a set of paths.
fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut node = &mut root;
        for (i, el) in p.iter().enumerate() {
            let entry = node.entry(el.clone()).or_insert_with(|| json!({}));
            let m = entry.as_object_mut().expect("fields nodes are objects");
            if i + 1 == p.len() && (el.starts_with("k:")) {
                m.insert(".".into(), json!({}));
            }
            node = m;
        }
    }
    Value::Object(root)
}

/// Paths from FieldsV1 JSON.
fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    collect(v, &mut vec![], &mut out);
    out
}

fn collect(v: &Value, path: &mut Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    if m.is_empty() && !path.is_empty() {
        out.insert(path.clone());
    }
    for (k, child) in m {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        path.push(k.clone());
        collect(child, path, out);
        path.pop();
    }
}

/// One `managedFields` entry, decoded.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    subresource: Option<String>,
    api_version: String,
    time: String,
    fields: FieldSet,
}

fn entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = meta::meta(obj)
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
    else {
        return vec![];
    };
    list.iter()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or("").to_string(),
            operation: e["operation"].as_str().unwrap_or("Update").to_string(),
            subresource: e["subresource"].as_str().map(str::to_string),
            api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
            time: e["time"].as_str().unwrap_or("").to_string(),
            fields: from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

fn store_entries(obj: &mut Value, list: Vec<Entry>) {
    let json: Vec<Value> = list
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields),
            });
            if let Some(s) = e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    let m = meta::meta_mut(obj);
    if json.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), Value::Array(json));
    }
}

fn api_version(obj: &Value) -> String {
    obj["apiVersion"].as_str().unwrap_or("").to_string()
}

/// Records that `manager` (an Update: PUT, PATCH, POST) set the fields that
/// differ between `old` and `new`; other managers lose those fields. An
/// empty manager records nothing (server-side apply records its own).
pub fn record_update(
    kind: &str,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    sub: Option<&str>,
) {
    if manager.is_empty() {
        return;
    }
    let mut list = old.map(entries).unwrap_or_default();
    let changed: FieldSet = field_set(kind, new)
        .into_iter()
        .filter(|p| in_scope(p, sub))
        .filter(|p| old.and_then(|o| value_at(o, p)) != value_at(new, p))
        .collect();
    if changed.is_empty() {
        store_entries(new, list);
        return;
    }
    for e in &mut list {
        e.fields.retain(|p| !changed.contains(p));
    }
    let sub_owned = sub.map(str::to_string);
    let av = api_version(new);
    match list
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == sub_owned)
    {
        Some(e) => {
            e.fields.extend(changed);
            e.time = meta::now_rfc3339();
        }
        None => list.push(Entry {
            manager: manager.to_string(),
            operation: "Update".into(),
            subresource: sub_owned,
            api_version: av,
            time: meta::now_rfc3339(),
            fields: changed,
        }),
    }
    store_entries(new, list);
}

/// Status writes own status; everything else owns the rest.
fn in_scope(p: &[String], sub: Option<&str>) -> bool {
    let is_status = p.first().is_some_and(|f| f == "f:status");
    (sub == Some("status")) == is_status
}

/// Makes `manager`'s Apply entry own exactly the fields of `config` (used
/// when an apply creates the object).
pub fn take_apply_ownership(kind: &str, obj: &mut Value, config: &Value, manager: &str) {
    let cfg = field_set(kind, config);
    let mut list: Vec<Entry> = entries(obj)
        .into_iter()
        .filter(|e| e.manager != manager)
        .collect();
    list.push(apply_entry(manager, api_version(obj), cfg));
    store_entries(obj, list);
}

fn apply_entry(manager: &str, api_version: String, fields: FieldSet) -> Entry {
    Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        subresource: None,
        api_version,
        time: meta::now_rfc3339(),
        fields,
    }
}

/// Applies `config` for `manager` to `live`. Err(Conflicts) lists the
/// fields another manager owns with a different value (unless `force`).
pub fn server_side_apply(
    kind: &str,
    live: &Value,
    config: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApplyError> {
    if !config.is_object() {
        return Err(ApplyError::Invalid(
            "an apply configuration must be an object".into(),
        ));
    }
    let cfg = field_set(kind, config);
    let mut list = entries(live);
    let conflicts = find_conflicts(&list, live, config, &cfg, manager);
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    let previous: FieldSet = list
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply")
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    list.retain(|e| !(e.manager == manager && e.operation == "Apply"));
    if force {
        for e in &mut list {
            e.fields
                .retain(|p| !cfg.contains(p) || value_at(live, p) == value_at(config, p));
        }
    }
    let mut merged = strategic_merge_patch(kind, live, config)
        .map_err(|e| ApplyError::Invalid(format!("invalid apply configuration: {e}")))?;
    let others: FieldSet = list.iter().flat_map(|e| e.fields.iter().cloned()).collect();
    for p in previous.difference(&cfg) {
        if !others.contains(p) && !others.iter().any(|o| o.starts_with(p)) {
            remove_at(&mut merged, p);
        }
    }
    list.push(apply_entry(manager, api_version(config), cfg));
    store_entries(&mut merged, list);
    Ok(merged)
}

fn find_conflicts(
    list: &[Entry],
    live: &Value,
    config: &Value,
    cfg: &FieldSet,
    manager: &str,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in list.iter().filter(|e| e.manager != manager) {
        for p in e.fields.intersection(cfg) {
            if value_at(live, p) != value_at(config, p) {
                out.push((dotted(p), e.manager.clone()));
            }
        }
    }
    out
}

/// `.spec.replicas` style text for messages.
fn dotted(p: &[String]) -> String {
    p.iter()
        .map(|e| match e.strip_prefix("f:") {
            Some(f) => format!(".{f}"),
            None => format!("[{}]", e),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                   {"name": "web", "image": image}]}}}})
    }

    #[test]
    fn fields_v1_round_trip() {
        let set = field_set("Deployment", &deploy(2, "nginx"));
        assert!(set.contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
        let item = vec![
            "f:spec".to_string(),
            "f:template".into(),
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"web\"}".into(),
        ];
        assert!(set.contains(&item));
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
        assert!(value_at(&deploy(2, "x"), &item).is_some());
    }

    #[test]
    fn apply_conflicts_with_another_manager_unless_forced() {
        let mut live = deploy(2, "nginx");
        take_apply_ownership("Deployment", &mut live, &deploy(2, "nginx"), "alice");
        let bob = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": "web"}, "spec": {"replicas": 5}});
        match server_side_apply("Deployment", &live, &bob, "bob", false) {
            Err(ApplyError::Conflicts(c)) => {
                assert_eq!(c, vec![(".spec.replicas".to_string(), "alice".to_string())])
            }
            other => panic!("{other:?}"),
        }
        let forced = server_side_apply("Deployment", &live, &bob, "bob", true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        let again = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "web"}, "spec": {"replicas": 7}});
        // alice lost replicas to bob, so her re-apply of the same value
        // conflicts now with bob.
        assert!(server_side_apply("Deployment", &forced, &again, "alice", false).is_err());
        // Same value as the owner: shared, no conflict.
        let same = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                          "metadata": {"name": "web"}, "spec": {"replicas": 5}});
        assert!(server_side_apply("Deployment", &forced, &same, "carol", false).is_ok());
    }

    #[test]
    fn apply_removes_fields_the_manager_dropped() {
        let mut cfg = deploy(2, "nginx");
        cfg["metadata"]["labels"]["tier"] = json!("front");
        let mut live = cfg.clone();
        take_apply_ownership("Deployment", &mut live, &cfg, "alice");
        let out =
            server_side_apply("Deployment", &live, &deploy(2, "nginx"), "alice", false).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    }

    #[test]
    fn updates_move_ownership() {
        let mut live = deploy(2, "nginx");
        take_apply_ownership("Deployment", &mut live, &deploy(2, "nginx"), "alice");
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(4);
        record_update(
            "Deployment",
            Some(&live),
            &mut scaled,
            "kubectl-scale",
            None,
        );
        let e = entries(&scaled);
        let scale = e.iter().find(|e| e.manager == "kubectl-scale").unwrap();
        assert!(scale
            .fields
            .contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
        let alice = e.iter().find(|e| e.manager == "alice").unwrap();
        assert!(!alice
            .fields
            .contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
    }
}
