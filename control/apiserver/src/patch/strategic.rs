//! Kubernetes strategic merge patch (`application/strategic-merge-patch+json`).
//!
//! This follows `k8s.io/apimachinery/pkg/util/strategicpatch` as the API
//! server applies it (`StrategicMergeMapPatch`), because kubectl computes its
//! patches against that behaviour: `kubectl apply`, `edit`, `set image` and
//! `rollout restart` send partial lists plus `$setElementOrder` and expect the
//! server to merge and order them exactly as upstream does.
//!
//! Semantics, per JSON object of the patch:
//! - keys merge recursively; `null` deletes a key;
//! - `$patch: replace` replaces the object, `$patch: delete` empties it (as
//!   upstream does: the key stays, holding `{}`), `$patch: merge` is the default;
//! - `$retainKeys: [..]` drops the original's keys not listed (used for unions
//!   such as a deployment's `spec.strategy` or a volume's source);
//! - lists follow the field's tag in [`super::merge_keys`]: merged by key,
//!   merged as an ordered set of primitives, or replaced atomically;
//! - inside keyed lists, `{"$patch": "delete", key: v}` removes the item and
//!   `{"$patch": "replace"}` makes the patch's items the whole list;
//! - `$deleteFromPrimitiveList/<field>: [..]` removes values from a list;
//! - `$setElementOrder/<field>: [..]` orders the merged list.
//!
//! Merged lists are ordered as upstream orders them: the patch's items keep
//! the patch's (or `$setElementOrder`'s) relative order, the original's other
//! items keep theirs, and the two are interleaved by the original's order. A
//! consequence worth knowing: an item that is new to the list is placed before
//! the original items that do not appear in the patch, so a bare patch adding
//! one container or finalizer puts it first, exactly like Kubernetes does.
//!
//! Where upstream would copy a patch value verbatim (a key absent from the
//! original, a replaced list or map) this implementation still applies it to
//! an empty value, so directive keys and `null`s never reach the result.

use std::fmt;

use serde_json::{Map, Value};

use super::merge_keys::{self, ListStrategy, MapStrategy};

/// Marks an object (or a keyed list item) with `replace`, `delete` or `merge`.
const PATCH: &str = "$patch";
/// Lists the keys an object keeps; the others are dropped from the original.
const RETAIN_KEYS: &str = "$retainKeys";
/// Prefix of the parallel key ordering the list named after the `/`.
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
/// Prefix of the parallel key listing primitives to remove from a list.
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

type JsonMap = Map<String, Value>;

/// A patch that cannot be applied; the message names the field path and the
/// offending directive or value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError(pub String);

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatchError {}

type Result<T> = std::result::Result<T, PatchError>;

/// Applies a strategic merge patch to `original` for an object of Kubernetes
/// kind `kind` (e.g. "Deployment", "Pod", "Service", "ConfigMap"...; unknown
/// kinds: lists are replaced atomically, maps merge like JSON merge patch).
pub fn strategic_merge_patch(kind: &str, original: &Value, patch: &Value) -> Result<Value> {
    let Value::Object(patch) = patch else {
        return Err(PatchError(format!(
            "a strategic merge patch must be a JSON object, got {}",
            type_name(patch)
        )));
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        Value::Null => JsonMap::new(),
        other => {
            return Err(PatchError(format!(
                "the patched object must be a JSON object, got {}",
                type_name(other)
            )))
        }
    };
    let mut patcher = Patcher {
        kind,
        path: Vec::new(),
    };
    let merged = patcher.merge_map(Some(original), patch)?;
    Ok(Value::Object(merged.unwrap_or_default()))
}

/// What a key of a patch object means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key<'a> {
    /// An ordinary field.
    Field,
    /// `$patch` or `$retainKeys`: handled before the fields.
    ObjectDirective,
    /// `$setElementOrder/<field>`.
    SetOrder(&'a str),
    /// `$deleteFromPrimitiveList/<field>`.
    DeleteFrom(&'a str),
}

/// The `$patch` value of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectDirective {
    Merge,
    Replace,
    Delete,
}

/// What identifies a list item when lists are merged or ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ident<'k> {
    /// Primitive sets: the item itself.
    Whole,
    /// Keyed lists: the value of the merge key.
    Key(&'k str),
}

impl Ident<'_> {
    fn of(self, item: &Value) -> Option<&Value> {
        match self {
            Ident::Whole => Some(item),
            Ident::Key(key) => item.get(key),
        }
    }

    /// The identities of `items`, in order; items without one are skipped.
    fn all(self, items: &[Value]) -> Vec<Value> {
        items
            .iter()
            .filter_map(|item| self.of(item).cloned())
            .collect()
    }
}

/// Walks a patch, tracking the field path so that list strategies can be
/// looked up and errors can say where they happened.
struct Patcher<'p> {
    kind: &'p str,
    /// Field names from the root; list indices are not part of it.
    path: Vec<&'p str>,
}

impl<'p> Patcher<'p> {
    fn err(&self, message: impl fmt::Display) -> PatchError {
        if self.path.is_empty() {
            PatchError(message.to_string())
        } else {
            PatchError(format!("{}: {message}", self.path.join(".")))
        }
    }

    /// Runs `f` with `field` appended to the path.
    fn in_field<T>(&mut self, field: &'p str, f: impl FnOnce(&mut Self) -> T) -> T {
        self.path.push(field);
        let out = f(self);
        self.path.pop();
        out
    }

    /// Merges patch object `patch` into `original` (`None`: absent). Returns
    /// `None` when nothing is left to store (a delete of an absent object).
    fn merge_map(
        &mut self,
        original: Option<JsonMap>,
        patch: &'p JsonMap,
    ) -> Result<Option<JsonMap>> {
        match self.object_directive(patch)? {
            // Upstream keeps the key and empties the object.
            ObjectDirective::Delete => Ok(original.map(|_| JsonMap::new())),
            ObjectDirective::Replace => self.merge_fields(JsonMap::new(), patch).map(Some),
            ObjectDirective::Merge => self
                .merge_fields(original.unwrap_or_default(), patch)
                .map(Some),
        }
    }

    fn object_directive(&self, patch: &JsonMap) -> Result<ObjectDirective> {
        match patch.get(PATCH) {
            None => Ok(ObjectDirective::Merge),
            Some(Value::String(s)) => match s.as_str() {
                "merge" => Ok(ObjectDirective::Merge),
                "replace" => Ok(ObjectDirective::Replace),
                "delete" => Ok(ObjectDirective::Delete),
                other => Err(self.err(format!("unknown $patch directive {other:?}"))),
            },
            Some(other) => Err(self.err(format!("$patch must be a string, got {other}"))),
        }
    }

    /// Applies every key of `patch` to `out`. Order matters and is upstream's:
    /// `$retainKeys` prunes first, ordered lists are merged next, then the
    /// other fields, and primitive deletions last.
    fn merge_fields(&mut self, mut out: JsonMap, patch: &'p JsonMap) -> Result<JsonMap> {
        self.retain_keys(&mut out, patch)?;
        let ordered = self.apply_element_orders(&mut out, patch)?;
        for (key, value) in patch {
            if self.classify(key)? == Key::Field && !ordered.contains(&key.as_str()) {
                self.merge_field(&mut out, key, value)?;
            }
        }
        self.apply_primitive_deletions(&mut out, patch)?;
        Ok(out)
    }

    fn classify<'k>(&self, key: &'k str) -> Result<Key<'k>> {
        if key == PATCH || key == RETAIN_KEYS {
            return Ok(Key::ObjectDirective);
        }
        if let Some(rest) = key.strip_prefix(SET_ELEMENT_ORDER) {
            return self.directive_field(key, rest).map(Key::SetOrder);
        }
        if let Some(rest) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            return self.directive_field(key, rest).map(Key::DeleteFrom);
        }
        Ok(Key::Field)
    }

    /// The field named after the `/` of a parallel-list directive key.
    fn directive_field<'k>(&self, key: &str, rest: &'k str) -> Result<&'k str> {
        match rest.strip_prefix('/') {
            Some(field) if !field.is_empty() => Ok(field),
            _ => Err(self.err(format!(
                "malformed directive {key:?}: expected <directive>/<field>"
            ))),
        }
    }

    /// Applies `$retainKeys`: every non-null field the patch sets must be
    /// listed, and the original's unlisted keys are dropped.
    fn retain_keys(&self, out: &mut JsonMap, patch: &JsonMap) -> Result<()> {
        let Some(list) = patch.get(RETAIN_KEYS) else {
            return Ok(());
        };
        let keep: Vec<&str> = list
            .as_array()
            .and_then(|items| items.iter().map(Value::as_str).collect())
            .ok_or_else(|| {
                self.err(format!("$retainKeys must be a list of strings, got {list}"))
            })?;
        for (key, value) in patch {
            if !value.is_null()
                && self.classify(key)? == Key::Field
                && !keep.contains(&key.as_str())
            {
                return Err(self.err(format!(
                    "field {key:?} is set but not listed in $retainKeys"
                )));
            }
        }
        out.retain(|key, _| keep.contains(&key.as_str()));
        Ok(())
    }

    /// Applies every `$setElementOrder/<field>` of `patch`, merging the field's
    /// patch list along the way. Returns the fields that are done.
    fn apply_element_orders(
        &mut self,
        out: &mut JsonMap,
        patch: &'p JsonMap,
    ) -> Result<Vec<&'p str>> {
        let mut done = Vec::new();
        for (key, order) in patch {
            let Key::SetOrder(field) = self.classify(key)? else {
                continue;
            };
            let Value::Array(order) = order else {
                return Err(self.err(format!("{key} must be a list, got {order}")));
            };
            let patch_list = patch.get(field);
            if self.in_field(field, |p| p.order_field(out, field, order, patch_list))? {
                done.push(field);
            }
        }
        Ok(done)
    }

    /// Merges and orders one list. Returns false for atomic lists: ordering a
    /// replaced list is meaningless, so the directive is ignored for them.
    fn order_field(
        &mut self,
        out: &mut JsonMap,
        field: &str,
        order: &[Value],
        patch_list: Option<&'p Value>,
    ) -> Result<bool> {
        let ident = match merge_keys::list_strategy(self.kind, &self.path) {
            ListStrategy::Atomic => return Ok(false),
            ListStrategy::MergeSet => Ident::Whole,
            ListStrategy::MergeByKey(key) => Ident::Key(key),
        };
        let order = self.order_ids(order, ident)?;
        let patch_list = match patch_list {
            None => None,
            Some(Value::Array(items)) => Some(items.as_slice()),
            Some(other) => return Err(self.not_a_list(other)),
        };
        let original = match out.remove(field) {
            None => None,
            Some(Value::Array(items)) => Some(items),
            Some(other) => return Err(self.not_a_list(&other)),
        };
        if let Some(items) = patch_list {
            self.check_order(items, &order, ident)?;
        }
        let server_order = ident.all(original.as_deref().unwrap_or_default());
        let merged = match (original, patch_list) {
            (None, None) => return Ok(true),
            (Some(original), None) => original,
            (original, Some(items)) => self.merge_list(original.unwrap_or_default(), items)?,
        };
        let ordered = normalize(merged, &order, &server_order, ident);
        out.insert(field.to_owned(), Value::Array(ordered));
        Ok(true)
    }

    fn not_a_list(&self, found: &Value) -> PatchError {
        self.err(format!(
            "$setElementOrder applies to a list, found {}",
            type_name(found)
        ))
    }

    /// The identities a `$setElementOrder` list names.
    fn order_ids(&self, order: &[Value], ident: Ident<'_>) -> Result<Vec<Value>> {
        order
            .iter()
            .map(|item| {
                ident.of(item).cloned().ok_or_else(|| {
                    self.err(format!("$setElementOrder item {item} lacks the merge key"))
                })
            })
            .collect()
    }

    /// Upstream's consistency check: the patch's items (deletions aside) must
    /// appear in `$setElementOrder`, in the same relative order.
    fn check_order(&self, items: &[Value], order: &[Value], ident: Ident<'_>) -> Result<()> {
        let mut remaining = order.iter();
        let listed = items
            .iter()
            .filter(|item| item.get(PATCH).is_none())
            .filter_map(|item| ident.of(item));
        for id in listed {
            if !remaining.any(|o| same(o, id)) {
                return Err(self.err(format!(
                    "the order of the patch list doesn't match its $setElementOrder list (item {id})"
                )));
            }
        }
        Ok(())
    }

    /// Removes the values of every `$deleteFromPrimitiveList/<field>` from the
    /// field's list. A missing list stays missing.
    fn apply_primitive_deletions(&self, out: &mut JsonMap, patch: &JsonMap) -> Result<()> {
        for (key, values) in patch {
            let Key::DeleteFrom(field) = self.classify(key)? else {
                continue;
            };
            let Value::Array(values) = values else {
                return Err(self.err(format!("{key} must be a list, got {values}")));
            };
            let Some(Value::Array(list)) = out.get_mut(field) else {
                continue;
            };
            if list.iter().any(is_composite) {
                return Err(self.err(format!("{key}: {field} is not a list of primitives")));
            }
            list.retain(|item| !values.iter().any(|v| same(v, item)));
        }
        Ok(())
    }

    /// Merges one ordinary field of a patch object into `out`.
    fn merge_field(&mut self, out: &mut JsonMap, key: &'p str, patch: &'p Value) -> Result<()> {
        let current = out.remove(key);
        if patch.is_null() {
            return Ok(());
        }
        if let Some(merged) = self.in_field(key, |p| p.merge_value(current, patch))? {
            out.insert(key.to_owned(), merged);
        }
        Ok(())
    }

    /// Merges `patch` into `current` (`None`: absent). Values of different
    /// types are replaced, as upstream does.
    fn merge_value(&mut self, current: Option<Value>, patch: &'p Value) -> Result<Option<Value>> {
        Ok(match (current, patch) {
            (Some(Value::Object(current)), Value::Object(patch)) => {
                let current = match merge_keys::map_strategy(self.kind, &self.path) {
                    MapStrategy::Merge => Some(current),
                    MapStrategy::Replace => None,
                };
                self.merge_map(current, patch)?.map(Value::Object)
            }
            (_, Value::Object(patch)) => self.merge_map(None, patch)?.map(Value::Object),
            (Some(Value::Array(current)), Value::Array(patch)) => {
                Some(Value::Array(self.merge_list(current, patch)?))
            }
            (_, Value::Array(patch)) => Some(Value::Array(self.merge_list(Vec::new(), patch)?)),
            (_, scalar) => Some(scalar.clone()),
        })
    }

    /// Merges list `patch` into `current` by the field's strategy.
    fn merge_list(&mut self, current: Vec<Value>, patch: &'p [Value]) -> Result<Vec<Value>> {
        match merge_keys::list_strategy(self.kind, &self.path) {
            ListStrategy::Atomic => self.fresh_items(patch),
            ListStrategy::MergeSet => self.merge_set(current, patch),
            ListStrategy::MergeByKey(key) => self.merge_by_key(current, patch, key),
        }
    }

    /// The patch's items applied to nothing: a replaced list.
    fn fresh_items(&mut self, items: &'p [Value]) -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.extend(self.merge_value(None, item)?);
        }
        Ok(out)
    }

    /// Merges primitive lists as an ordered set (union without duplicates).
    fn merge_set(&self, current: Vec<Value>, patch: &[Value]) -> Result<Vec<Value>> {
        if let Some(bad) = current.iter().chain(patch).find(|v| is_composite(v)) {
            return Err(self.err(format!("cannot merge {bad} into a list of primitives")));
        }
        let mut merged: Vec<Value> = Vec::with_capacity(current.len() + patch.len());
        for item in current.iter().chain(patch) {
            if !merged.iter().any(|m| same(m, item)) {
                merged.push(item.clone());
            }
        }
        Ok(normalize(merged, patch, &current, Ident::Whole))
    }

    /// Merges lists of objects matched by the value of `key`.
    fn merge_by_key(
        &mut self,
        current: Vec<Value>,
        patch: &'p [Value],
        key: &'static str,
    ) -> Result<Vec<Value>> {
        if let Some(bad) = current.iter().chain(patch).find(|v| !v.is_object()) {
            return Err(self.err(format!(
                "items of a list merged by {key:?} must be objects, got {bad}"
            )));
        }
        let (current, items, replace) = self.list_item_directives(current, patch, key)?;
        if replace {
            return self.fresh_items_of(&items);
        }
        let server_order = Ident::Key(key).all(&current);
        let mut merged = current;
        for item in &items {
            self.merge_item(&mut merged, item, key)?;
        }
        let patch_order: Vec<Value> = items.iter().filter_map(|i| i.get(key).cloned()).collect();
        Ok(normalize(
            merged,
            &patch_order,
            &server_order,
            Ident::Key(key),
        ))
    }

    /// Applies the `$patch` items of a keyed list: deletions are removed from
    /// `current`, `replace` is reported. Returns the remaining plain items.
    fn list_item_directives(
        &self,
        mut current: Vec<Value>,
        patch: &'p [Value],
        key: &str,
    ) -> Result<(Vec<Value>, Vec<&'p JsonMap>, bool)> {
        let (mut plain, mut replace) = (Vec::new(), false);
        for item in patch.iter().filter_map(Value::as_object) {
            match item.get(PATCH).map(|d| (d, d.as_str())) {
                None => plain.push(item),
                Some((_, Some("delete"))) => {
                    let id = item.get(key).ok_or_else(|| {
                        self.err(format!(
                            "$patch: delete item {} lacks merge key {key:?}",
                            Value::Object(item.clone())
                        ))
                    })?;
                    current.retain(|c| !c.get(key).is_some_and(|v| same(v, id)));
                }
                Some((_, Some("replace"))) => replace = true,
                Some((_, Some("merge"))) => {
                    return Err(self.err("$patch: merge is not supported on list items"));
                }
                Some((d, _)) => {
                    return Err(self.err(format!("unknown $patch directive {d} on a list item")))
                }
            }
        }
        Ok((current, plain, replace))
    }

    fn fresh_items_of(&mut self, items: &[&'p JsonMap]) -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.extend(self.merge_map(None, item)?.map(Value::Object));
        }
        Ok(out)
    }

    /// Merges one plain patch item into the first item with the same key
    /// value, or appends it.
    fn merge_item(&mut self, merged: &mut Vec<Value>, item: &'p JsonMap, key: &str) -> Result<()> {
        let Some(id) = item.get(key) else {
            return Err(self.err(format!(
                "{} does not contain declared merge key {key:?}",
                Value::Object(item.clone())
            )));
        };
        let found = merged
            .iter()
            .position(|m| m.get(key).is_some_and(|v| same(v, id)));
        match found {
            Some(at) => {
                let Value::Object(existing) = std::mem::take(&mut merged[at]) else {
                    return Err(self.err("list item is not an object"));
                };
                merged[at] =
                    Value::Object(self.merge_map(Some(existing), item)?.unwrap_or_default());
            }
            None => merged.extend(self.merge_map(None, item)?.map(Value::Object)),
        }
        Ok(())
    }
}

/// Upstream's `normalizeElementOrder`: the items named in `patch_order` are
/// sorted by it, the others by `server_order`, and the two runs are then
/// interleaved by `server_order`.
fn normalize(
    merged: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    ident: Ident<'_>,
) -> Vec<Value> {
    let rank = |order: &[Value], item: &Value| ident.of(item).and_then(|id| position(order, id));
    let (mut from_patch, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| rank(patch_order, item).is_some());
    from_patch.sort_by_key(|item| rank(patch_order, item).unwrap_or(usize::MAX));
    server_only.sort_by_key(|item| rank(server_order, item).unwrap_or(usize::MAX));
    interleave(server_only, from_patch, |item| rank(server_order, item))
}

/// Upstream's `mergeSortedSlice`: takes a server-only item first only when
/// both heads are in the original and the server item came first there; any
/// item new to the list is therefore taken as soon as it is at the head.
fn interleave(
    server_only: Vec<Value>,
    from_patch: Vec<Value>,
    rank: impl Fn(&Value) -> Option<usize>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(server_only.len() + from_patch.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!((rank(l), rank(r)), (Some(a), Some(b)) if a < b),
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
    out
}

/// Index of the first identity equal to `id`.
fn position(order: &[Value], id: &Value) -> Option<usize> {
    order.iter().position(|o| same(o, id))
}

/// JSON equality where numbers compare by value (`80` equals `80.0`), like
/// upstream's comparison of decoded `float64`s.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn is_composite(value: &Value) -> bool {
    value.is_object() || value.is_array()
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(kind: &str, original: Value, patch: Value) -> Value {
        match strategic_merge_patch(kind, &original, &patch) {
            Ok(v) => v,
            Err(e) => panic!("patch {patch} failed: {e}"),
        }
    }

    fn fail(kind: &str, original: Value, patch: Value) -> String {
        match strategic_merge_patch(kind, &original, &patch) {
            Ok(v) => panic!("patch {patch} should fail, gave {v}"),
            Err(e) => e.to_string(),
        }
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "finalizers": ["example.com/a", "example.com/b"]},
            "spec": {
                "replicas": 2,
                "paused": true,
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
                },
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "web",
                            "image": "nginx:1.25",
                            "ports": [{"containerPort": 80}, {"containerPort": 443}],
                            "env": [{"name": "A", "value": "1"}]
                        }],
                        "volumes": [{"name": "data", "emptyDir": {}}]
                    }
                }
            }
        })
    }

    fn pod_spec(obj: &Value) -> &Value {
        &obj["spec"]["template"]["spec"]
    }

    // --- kubectl traffic -------------------------------------------------

    #[test]
    fn kubectl_set_image_changes_only_the_image() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [{"image": "nginx:1.27", "name": "web"}]
        }}}});
        let got = apply("Deployment", deployment(), patch);
        let mut want = deployment();
        want["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.27");
        assert_eq!(got, want);
    }

    #[test]
    fn kubectl_apply_edit_merges_ports_and_env() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [{
                "name": "web",
                "image": "nginx:1.27",
                "$setElementOrder/ports": [{"containerPort": 80}],
                "ports": [{"$patch": "delete", "containerPort": 443}],
                "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                "env": [{"name": "B", "value": "2"}]
            }]
        }}}});
        let got = apply("Deployment", deployment(), patch);
        assert_eq!(
            pod_spec(&got)["containers"],
            json!([{
                "name": "web",
                "image": "nginx:1.27",
                "ports": [{"containerPort": 80}],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
            }])
        );
        assert_eq!(
            pod_spec(&got)["volumes"],
            pod_spec(&deployment())["volumes"]
        );
    }

    #[test]
    fn kubectl_apply_drops_finalizer_and_switches_strategy() {
        let patch = json!({
            "metadata": {
                "$deleteFromPrimitiveList/finalizers": ["example.com/b"],
                "$setElementOrder/finalizers": ["example.com/a"]
            },
            "spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}
        });
        let got = apply("Deployment", deployment(), patch);
        assert_eq!(got["metadata"]["finalizers"], json!(["example.com/a"]));
        assert_eq!(got["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(got["spec"]["replicas"], json!(2));
    }

    #[test]
    fn kubectl_apply_switches_volume_source() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/volumes": [{"name": "data"}],
            "volumes": [{
                "$retainKeys": ["configMap", "name"],
                "configMap": {"name": "web-config"},
                "emptyDir": null,
                "name": "data"
            }]
        }}}});
        let got = apply("Deployment", deployment(), patch);
        assert_eq!(
            pod_spec(&got)["volumes"],
            json!([{"name": "data", "configMap": {"name": "web-config"}}])
        );
    }

    #[test]
    fn null_deletes_and_rollout_restart_adds_annotation() {
        let got = apply(
            "Deployment",
            deployment(),
            json!({"spec": {"paused": null}}),
        );
        assert!(got["spec"].get("paused").is_none());
        let restart = json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"
        }}}}});
        let got = apply("Deployment", got, restart);
        assert_eq!(
            got["spec"]["template"]["metadata"],
            json!({
                "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"}
            })
        );
        assert_eq!(pod_spec(&got), pod_spec(&deployment()));
    }

    // --- maps --------------------------------------------------------------

    #[test]
    fn maps_merge_recursively_and_unknown_kinds_replace_lists() {
        let original =
            json!({"data": {"a": "1", "b": "2"}, "spec": {"items": [1, 2], "x": {"y": 1}}});
        let patch = json!({"data": {"b": null, "c": "3", "gone": null}, "spec": {"items": [3], "x": {"z": 2}}});
        let got = apply("Widget", original, patch);
        assert_eq!(
            got,
            json!({"data": {"a": "1", "c": "3"}, "spec": {"items": [3], "x": {"y": 1, "z": 2}}})
        );
    }

    #[test]
    fn patch_replace_on_map_replaces_it() {
        let original = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}});
        let got = apply("ConfigMap", original, patch);
        assert_eq!(got, json!({"metadata": {"labels": {"c": "3"}}}));
    }

    #[test]
    fn patch_delete_on_map_empties_it_like_upstream() {
        let original = json!({"metadata": {"labels": {"a": "1"}}, "data": {"k": "v"}});
        let got = apply(
            "ConfigMap",
            original.clone(),
            json!({"data": {"$patch": "delete"}}),
        );
        assert_eq!(got, json!({"metadata": {"labels": {"a": "1"}}, "data": {}}));
        let got = apply(
            "ConfigMap",
            original.clone(),
            json!({"other": {"$patch": "delete"}}),
        );
        assert_eq!(got, original);
        let got = apply("ConfigMap", original, json!({"$patch": "delete"}));
        assert_eq!(got, json!({}));
    }

    #[test]
    fn patch_merge_on_map_is_the_default() {
        let original = json!({"data": {"a": "1"}});
        let got = apply(
            "ConfigMap",
            original,
            json!({"data": {"$patch": "merge", "b": "2"}}),
        );
        assert_eq!(got, json!({"data": {"a": "1", "b": "2"}}));
    }

    #[test]
    fn values_of_another_type_are_replaced() {
        let original = json!({"spec": {"a": {"x": 1}, "b": [1], "c": "s"}});
        let patch = json!({"spec": {"a": "flat", "b": {"k": null, "v": 1}, "c": [1]}});
        let got = apply("Widget", original, patch);
        assert_eq!(got, json!({"spec": {"a": "flat", "b": {"v": 1}, "c": [1]}}));
    }

    #[test]
    fn replace_strategy_maps_are_replaced() {
        let original = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}}});
        let patch = json!({"spec": {"selector": {"matchExpressions": []}}});
        let got = apply("PodDisruptionBudget", original.clone(), patch.clone());
        assert_eq!(got, json!({"spec": {"selector": {"matchExpressions": []}}}));
        let got = apply("Deployment", original, patch);
        assert_eq!(
            got,
            json!({"spec": {"selector": {"matchLabels": {"a": "1"}, "matchExpressions": []}}})
        );
    }

    #[test]
    fn retain_keys_requires_listed_fields() {
        let original = json!({"spec": {"strategy": {"type": "RollingUpdate"}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}});
        let msg = fail("Deployment", original, patch);
        assert!(
            msg.contains("$retainKeys") && msg.contains("rollingUpdate"),
            "{msg}"
        );
    }

    // --- keyed lists ---------------------------------------------------------

    #[test]
    fn keyed_lists_merge_by_key_and_new_items_go_first() {
        let original = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let patch = json!({"spec": {"containers": [{"name": "c", "image": "z"}, {"name": "a", "image": "x2"}]}});
        let got = apply("Pod", original, patch);
        assert_eq!(
            got["spec"]["containers"],
            json!([
                {"name": "c", "image": "z"},
                {"name": "a", "image": "x2"},
                {"name": "b", "image": "y"}
            ])
        );
    }

    #[test]
    fn new_item_follows_its_predecessor_in_the_patch() {
        let original =
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "i"}, {"name": "d"}]}});
        let got = apply("Pod", original, patch);
        assert_eq!(
            got["spec"]["containers"],
            json!([{"name": "a"}, {"name": "b", "image": "i"}, {"name": "d"}, {"name": "c"}])
        );
    }

    #[test]
    fn keyed_list_delete_and_replace_items() {
        let original = json!({"spec": {"containers": [
            {"name": "a"}, {"name": "b"}, {"name": "a", "image": "dup"}, {"name": "c"}
        ]}});
        let patch = json!({"spec": {"containers": [{"$patch": "delete", "name": "a"}, {"$patch": "delete", "name": "zz"}]}});
        let got = apply("Pod", original.clone(), patch);
        assert_eq!(
            got["spec"]["containers"],
            json!([{"name": "b"}, {"name": "c"}])
        );

        let patch =
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "n", "env": null}]}});
        let got = apply("Pod", original.clone(), patch);
        assert_eq!(got["spec"]["containers"], json!([{"name": "n"}]));

        let patch = json!({"spec": {"containers": [{"$patch": "replace"}]}});
        let got = apply("Pod", original, patch);
        assert_eq!(got["spec"]["containers"], json!([]));
    }

    #[test]
    fn empty_patch_list_leaves_a_merged_list_alone() {
        let original = json!({"spec": {"containers": [{"name": "a"}]}});
        let got = apply("Pod", original.clone(), json!({"spec": {"containers": []}}));
        assert_eq!(got, original);
    }

    #[test]
    fn same_field_name_uses_the_key_of_its_place() {
        let original = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let patch = json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}});
        let got = apply("Service", original, patch);
        assert_eq!(
            got["spec"]["ports"],
            json!([{"port": 80, "name": "http"}, {"port": 443, "name": "https", "targetPort": 8443}])
        );
        let original = json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}]}});
        let patch = json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80.0, "protocol": "TCP"}]}]}});
        let got = apply("Pod", original, patch);
        assert_eq!(
            got["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80.0, "name": "http", "protocol": "TCP"}])
        );
    }

    #[test]
    fn cronjob_pod_template_is_merged_by_key() {
        let original = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "job", "image": "a", "env": [{"name": "X", "value": "1"}]}]
        }}}}}});
        let patch = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "job", "env": [{"name": "Y", "value": "2"}]}]
        }}}}}});
        let got = apply("CronJob", original, patch);
        assert_eq!(
            got["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
            json!([{"name": "job", "image": "a", "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}]}])
        );
    }

    #[test]
    fn status_conditions_merge_by_type() {
        let original = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}
        ], "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        let patch = json!({"status": {
            "$setElementOrder/conditions": [{"type": "Ready"}, {"type": "MemoryPressure"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "Hostname", "address": "n1"}]
        }});
        let got = apply("Node", original, patch);
        assert_eq!(
            got["status"],
            json!({
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}],
                "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.1"}]
            })
        );
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let original = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}});
        let patch = json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": true}]}});
        let got = apply("ConfigMap", original, patch);
        assert_eq!(
            got["metadata"]["ownerReferences"],
            json!([{"uid": "1", "name": "a", "controller": true}])
        );
    }

    #[test]
    fn atomic_lists_are_replaced() {
        let original = json!({"spec": {"containers": [{"name": "a", "args": ["x", "y"], "command": ["sh"]}], "tolerations": [{"key": "k"}]}});
        let patch = json!({"spec": {"containers": [{"name": "a", "args": ["z"]}], "tolerations": [{"key": "j"}]}});
        let got = apply("Pod", original, patch);
        assert_eq!(
            got["spec"],
            json!({"containers": [{"name": "a", "args": ["z"], "command": ["sh"]}], "tolerations": [{"key": "j"}]})
        );
    }

    // --- primitive sets -------------------------------------------------------

    #[test]
    fn finalizers_merge_as_a_set() {
        let original = json!({"metadata": {"finalizers": ["a", "b"]}});
        let got = apply(
            "ConfigMap",
            original,
            json!({"metadata": {"finalizers": ["b", "c", "c"]}}),
        );
        assert_eq!(got["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let original = json!({"metadata": {"finalizers": ["a", "b"]}});
        let got = apply(
            "ConfigMap",
            original,
            json!({"metadata": {"finalizers": ["z"]}}),
        );
        assert_eq!(got["metadata"]["finalizers"], json!(["z", "a", "b"]));
    }

    #[test]
    fn delete_from_primitive_list() {
        let original = json!({"metadata": {"finalizers": ["a", "b", "c"]}, "spec": {"containers": [{"name": "x", "args": ["1", "2"]}]}});
        let patch = json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "nope"]},
            "spec": {"containers": [{"name": "x", "$deleteFromPrimitiveList/args": ["1"]}]}
        });
        let got = apply("Pod", original, patch);
        assert_eq!(got["metadata"]["finalizers"], json!(["a", "c"]));
        assert_eq!(got["spec"]["containers"][0]["args"], json!(["2"]));
        let got = apply(
            "Pod",
            json!({}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(got, json!({"metadata": {}}));
    }

    // --- $setElementOrder ------------------------------------------------------

    #[test]
    fn set_element_order_places_server_only_items_like_upstream() {
        let names = |v: &Value| -> Vec<Value> {
            v["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].clone())
                .collect()
        };
        let original = json!({"spec": {"containers": [
            {"name": "1"}, {"name": "2"}, {"name": "7"}, {"name": "9"}, {"name": "8"}, {"name": "3"}, {"name": "4"}
        ]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [
            {"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}
        ]}});
        let got = apply("Pod", original, patch);
        assert_eq!(
            names(&got),
            vec![
                json!("2"),
                json!("1"),
                json!("7"),
                json!("9"),
                json!("8"),
                json!("4"),
                json!("3")
            ]
        );

        let original = json!({"spec": {"containers": [{"name": "1"}, {"name": "3"}, {"name": "4"}, {"name": "2"}, {"name": "9"}]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "4"}, {"name": "2"}, {"name": "3"}, {"name": "1"}]}});
        let got = apply("Pod", original, patch);
        assert_eq!(
            names(&got),
            vec![json!("4"), json!("2"), json!("3"), json!("1"), json!("9")]
        );
    }

    #[test]
    fn set_element_order_on_primitives_and_new_items() {
        let original = json!({"metadata": {"finalizers": ["1", "4", "2"]}});
        let patch = json!({"metadata": {"$setElementOrder/finalizers": ["3", "1", "2"], "finalizers": ["3"]}});
        let got = apply("Pod", original, patch);
        assert_eq!(got["metadata"]["finalizers"], json!(["3", "1", "4", "2"]));

        let original =
            json!({"spec": {"containers": [{"name": "1"}, {"name": "2", "image": "x"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "3"}, {"name": "1"}, {"name": "2"}],
            "containers": [{"name": "3", "image": "new"}]
        }});
        let got = apply("Pod", original, patch);
        assert_eq!(
            got["spec"]["containers"],
            json!([{"name": "3", "image": "new"}, {"name": "1"}, {"name": "2", "image": "x"}])
        );
    }

    #[test]
    fn set_element_order_keeps_duplicates_together() {
        let original = json!({"metadata": {"finalizers": ["1", "2", "3", "2", "4"]}});
        let patch = json!({"metadata": {"$setElementOrder/finalizers": ["2", "1", "4", "3", "2"]}});
        let got = apply("Pod", original, patch);
        assert_eq!(
            got["metadata"]["finalizers"],
            json!(["2", "2", "1", "4", "3"])
        );
    }

    #[test]
    fn set_element_order_for_a_new_list_and_atomic_lists() {
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "b"}, {"name": "a", "$setElementOrder/env": [{"name": "E"}], "env": [{"name": "E", "value": null}]}],
            "$setElementOrder/tolerations": [{"key": "x"}],
            "tolerations": [{"key": "x"}]
        }});
        let got = apply("Pod", json!({}), patch);
        assert_eq!(
            got,
            json!({"spec": {"containers": [{"name": "b"}, {"name": "a", "env": [{"name": "E"}]}], "tolerations": [{"key": "x"}]}})
        );
    }

    #[test]
    fn set_element_order_must_agree_with_the_patch_list() {
        let original =
            json!({"spec": {"containers": [{"name": "1"}, {"name": "3"}, {"name": "2"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
            "containers": [{"name": "3", "image": "x"}, {"name": "1", "image": "y"}]
        }});
        let msg = fail("Pod", original, patch);
        assert!(
            msg.contains("$setElementOrder") && msg.contains("spec.containers"),
            "{msg}"
        );
    }

    // --- errors ------------------------------------------------------------------

    #[test]
    fn bad_patches_are_errors() {
        let d = deployment();
        let cases = [
            (json!([1, 2]), "JSON object"),
            (json!("x"), "JSON object"),
            (json!(null), "JSON object"),
            (json!({"spec": {"$patch": "explode"}}), "$patch"),
            (json!({"spec": {"$patch": 1}}), "$patch"),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"$patch": "nuke", "name": "web"}]}}}}),
                "$patch",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"$patch": "merge", "name": "web"}]}}}}),
                "$patch",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}}),
                "merge key",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
                "merge key",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": ["web"]}}}}),
                "objects",
            ),
            (
                json!({"spec": {"template": {"spec": {"$setElementOrder/containers": {"name": "web"}}}}}),
                "$setElementOrder/containers",
            ),
            (
                json!({"spec": {"template": {"spec": {"$setElementOrder/containers": ["web"]}}}}),
                "merge key",
            ),
            (
                json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
                "$retainKeys",
            ),
            (
                json!({"spec": {"strategy": {"$retainKeys": ["type", 3]}}}),
                "$retainKeys",
            ),
            (
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
                "$deleteFromPrimitiveList/finalizers",
            ),
            (
                json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
                "$deleteFromPrimitiveList",
            ),
            (
                json!({"metadata": {"$setElementOrder/": ["a"]}}),
                "$setElementOrder",
            ),
            (
                json!({"metadata": {"finalizers": [{"a": 1}]}}),
                "primitives",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "$deleteFromPrimitiveList/ports": [80]}]}}}}),
                "primitives",
            ),
        ];
        for (patch, needle) in cases {
            let msg = fail("Deployment", d.clone(), patch.clone());
            assert!(
                msg.contains(needle),
                "patch {patch}: {msg:?} lacks {needle:?}"
            );
        }
        let msg = fail("Deployment", json!([1]), json!({}));
        assert!(msg.contains("JSON object"), "{msg}");
    }

    #[test]
    fn errors_name_the_field_path() {
        let msg = fail(
            "Deployment",
            deployment(),
            json!({"spec": {"strategy": {"$patch": "explode"}}}),
        );
        assert!(msg.starts_with("spec.strategy:"), "{msg}");
    }

    // --- hygiene -----------------------------------------------------------------

    #[test]
    fn directives_and_nulls_never_reach_new_values() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "sidecar",
            "$setElementOrder/env": [{"name": "A"}],
            "env": [{"name": "A", "value": "1"}, {"$patch": "delete", "name": "B"}],
            "$deleteFromPrimitiveList/args": ["x"],
            "resources": {"$patch": "replace", "limits": {"cpu": "1", "memory": null}},
            "securityContext": {"$patch": "delete"},
            "livenessProbe": null
        }], "affinity": {"$retainKeys": ["nodeAffinity"], "nodeAffinity": {}}}}}});
        let got = apply("Deployment", deployment(), patch);
        assert_eq!(
            pod_spec(&got)["containers"][0],
            json!({"name": "sidecar", "env": [{"name": "A", "value": "1"}], "resources": {"limits": {"cpu": "1"}}})
        );
        assert_eq!(pod_spec(&got)["affinity"], json!({"nodeAffinity": {}}));
        assert!(!got.to_string().contains('$'), "{got}");
    }

    #[test]
    fn null_original_is_an_empty_object() {
        let got = apply(
            "ConfigMap",
            Value::Null,
            json!({"data": {"a": "1", "b": null}}),
        );
        assert_eq!(got, json!({"data": {"a": "1"}}));
    }

    #[test]
    fn odd_inputs_never_panic() {
        let odd = [
            json!(null),
            json!(1),
            json!("s"),
            json!([]),
            json!([null, 1, "x", [], {}]),
            json!({}),
            json!({"$patch": "replace"}),
            json!({"$patch": "delete", "name": "web"}),
            json!([{"$patch": "replace"}, {"name": "web"}]),
            json!({"$retainKeys": []}),
            json!({"$setElementOrder/x": [{"name": "web"}], "x": {}}),
            json!([{"name": "web", "$patch": "delete"}, {"name": 1}]),
        ];
        let fields: &[&[&str]] = &[
            &["spec", "template", "spec", "containers"],
            &["spec", "template", "spec", "containers", "0", "ports"],
            &["metadata", "finalizers"],
            &["metadata"],
            &["spec", "strategy"],
            &["spec", "template", "spec", "$setElementOrder/containers"],
            &["spec", "template", "spec", "$setElementOrder/volumes"],
            &["metadata", "$deleteFromPrimitiveList/finalizers"],
            &["spec", "$retainKeys"],
        ];
        for path in fields {
            for value in &odd {
                let patch = nest(path, value.clone());
                for original in [deployment(), json!({}), nest(path, json!("scalar"))] {
                    let _ = strategic_merge_patch("Deployment", &original, &patch);
                }
            }
        }
    }

    #[test]
    fn random_patches_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..3000 {
            let patch = random_value(&mut seed, 5);
            let original = random_value(&mut seed, 5);
            for kind in ["Deployment", "Pod", "Widget"] {
                let _ = strategic_merge_patch(kind, &original, &patch);
                let _ = strategic_merge_patch(kind, &deployment(), &patch);
            }
        }
    }

    /// A small xorshift generator over a vocabulary rich in directives, merge
    /// keys and tagged field names, so that random patches hit the edge cases.
    fn random_value(seed: &mut u64, depth: u32) -> Value {
        const KEYS: &[&str] = &[
            "spec",
            "template",
            "containers",
            "name",
            "ports",
            "containerPort",
            "env",
            "metadata",
            "finalizers",
            "strategy",
            "$patch",
            "$retainKeys",
            "$setElementOrder/containers",
            "$setElementOrder/finalizers",
            "$deleteFromPrimitiveList/finalizers",
            "$setElementOrder",
            "volumes",
        ];
        const SCALARS: &[&str] = &["web", "delete", "replace", "merge", "name", "x"];
        match (depth, pick(seed, 6)) {
            (0, _) | (_, 0) => json!(SCALARS[pick(seed, SCALARS.len())]),
            (_, 1) => json!(pick(seed, 3)),
            (_, 2) => Value::Null,
            (_, 3) => Value::Array(
                (0..pick(seed, 4))
                    .map(|_| random_value(seed, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..pick(seed, 5))
                    .map(|_| {
                        let key = KEYS[pick(seed, KEYS.len())].to_owned();
                        (key, random_value(seed, depth - 1))
                    })
                    .collect(),
            ),
        }
    }

    fn pick(seed: &mut u64, n: usize) -> usize {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed % n as u64) as usize
    }

    /// Builds `{path[0]: {path[1]: ... value}}`; a numeric segment wraps the
    /// rest in a one-item list with a merge key.
    fn nest(path: &[&str], value: Value) -> Value {
        path.iter().rev().fold(value, |inner, seg| {
            if seg.parse::<usize>().is_ok() {
                let mut item = inner.as_object().cloned().unwrap_or_default();
                item.insert("name".into(), json!("web"));
                json!([item])
            } else {
                json!({ *seg: inner })
            }
        })
    }
}
