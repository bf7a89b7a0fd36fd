//! Objects as JSON in raft-store, through the [`Store`] API only.
//!
//! Guarantees: every read is linearizable (read-index) unless a revision is
//! given or it says it is local; every write is a compare-and-swap on the
//! key's mod revision, so two writers from the same resourceVersion cannot
//! both win. A create may also carry [`Guard`]s: what admission read, which
//! the write checks is still so (a local read then decides as a
//! linearizable one would, or the write fails).
//! `metadata.resourceVersion` is never stored: it is the key's mod revision,
//! filled in on the way out.

use keel_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel_proto::etcdserverpb::request_op::Request;
use keel_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keel_proto::mvccpb::KeyValue;
use keel_store::Store;
use serde_json::Value;

use std::sync::Arc;
use std::time::Instant;

use crate::metrics::Metrics;
use crate::status::{ApiError, ApiResult};

/// One stored object with its revisions.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: String,
    pub obj: Value,
    pub mod_revision: i64,
}

/// A page of a list, read at one revision.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Stored>,
    /// The store revision the page was read at.
    pub revision: i64,
    /// The key after which the next page starts, if more keys remain.
    pub more_after: Option<String>,
}

/// A [`Page`] of objects as stored (no resourceVersion in them yet).
#[derive(Debug)]
pub struct RawPage {
    pub kvs: Vec<KeyValue>,
    pub revision: i64,
    pub more_after: Option<String>,
}

#[derive(Clone)]
pub struct Objects {
    store: Store,
    metrics: Arc<Metrics>,
    /// When not 0, local reads read at this revision: a replica that has
    /// applied nothing newer (see [`Objects::lagging_at`]).
    local_cap: i64,
}

/// What a read under one key prefix saw, for a write to check that it is
/// still so when it commits: no key under the prefix was created or
/// changed after `revision` (a range compare: every live key's mod
/// revision is below `revision + 1`; an empty range holds), and every key
/// read is still there at the mod revision read (a deleted key fails its
/// compare). Together: the prefix holds at commit exactly what was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub prefix: String,
    /// The revision the prefix was read at.
    pub revision: i64,
    /// Each key read with its mod revision.
    pub keys: Vec<(String, i64)>,
}

impl Guard {
    /// The guard of `page`, read under `prefix` in full (no limit).
    pub fn of(prefix: &str, page: &Page) -> Guard {
        Guard {
            prefix: prefix.to_string(),
            revision: page.revision,
            keys: page
                .items
                .iter()
                .map(|s| (s.key.clone(), s.mod_revision))
                .collect(),
        }
    }

    /// Whether `other` (a later read of the same prefix) saw the same keys
    /// at the same mod revisions.
    pub fn same_keys(&self, other: &Guard) -> bool {
        self.prefix == other.prefix && self.keys == other.keys
    }

    fn compares(&self) -> impl Iterator<Item = Compare> + '_ {
        let range = Compare {
            result: CompareResult::Less as i32,
            target: CompareTarget::Mod as i32,
            key: self.prefix.as_bytes().to_vec(),
            target_union: Some(TargetUnion::ModRevision(self.revision.saturating_add(1))),
            range_end: prefix_end(&self.prefix),
        };
        let keys = self.keys.iter().map(|(k, rev)| mod_equals(k, *rev));
        std::iter::once(range).chain(keys)
    }
}

/// The end of the key range holding every key that starts with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Decodes a stored value, stamping its resourceVersion.
pub fn decode(kv: &KeyValue) -> ApiResult<Stored> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!(
            "stored object {} is not JSON: {e}",
            String::from_utf8_lossy(&kv.key)
        ))
    })?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(Stored {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        obj,
        mod_revision: kv.mod_revision,
    })
}

pub fn set_resource_version(obj: &mut Value, revision: i64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}

/// Appends the stored object `value` (under `key`) to `out` as the API
/// serves it: with `metadata.resourceVersion` = `revision`.
///
/// Without parsing the object into a tree: the stored bytes are checked to
/// be JSON (a walk that allocates nothing) and `"resourceVersion":"<rev>"`
/// is spliced in as the first field of the top-level `metadata`. The
/// result means exactly what [`decode`] + serialization gives (only the
/// position of that one field differs, which JSON readers ignore). Bytes
/// of any other shape (no `metadata` object, a stored resourceVersion, an
/// escaped key on the way) take the parse-and-serialize path.
pub fn write_object(out: &mut Vec<u8>, key: &[u8], value: &[u8], revision: i64) -> ApiResult<()> {
    let not_json = |e: serde_json::Error| {
        ApiError::internal(format!(
            "stored object {} is not JSON: {e}",
            String::from_utf8_lossy(key)
        ))
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(value).map_err(not_json)?;
    match splice::metadata_body(value) {
        Some((at, empty)) => {
            out.extend_from_slice(&value[..at]);
            out.extend_from_slice(b"\"resourceVersion\":\"");
            out.extend_from_slice(revision.to_string().as_bytes());
            out.extend_from_slice(if empty { b"\"" } else { b"\"," });
            out.extend_from_slice(&value[at..]);
        }
        None => {
            let mut obj: Value = serde_json::from_slice(value).map_err(not_json)?;
            set_resource_version(&mut obj, revision);
            serde_json::to_writer(&mut *out, &obj)
                .map_err(|e| ApiError::internal(format!("encoding object: {e}")))?;
        }
    }
    Ok(())
}

/// A byte-level walk of stored JSON (already known to be valid) that finds
/// where the top-level `metadata` object's fields start.
mod splice {
    fn ws(v: &[u8], mut i: usize) -> usize {
        while v.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        i
    }

    /// The end (after the closing quote) of the string opening at `i`.
    fn string_end(v: &[u8], mut i: usize) -> Option<usize> {
        i += 1;
        loop {
            match v.get(i)? {
                b'"' => return Some(i + 1),
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
    }

    /// The end of the value starting at `i`.
    fn value_end(v: &[u8], i: usize) -> Option<usize> {
        match v.get(i)? {
            b'"' => string_end(v, i),
            b'{' | b'[' => {
                let (mut depth, mut j) = (0usize, i);
                loop {
                    match v.get(j)? {
                        b'"' => {
                            j = string_end(v, j)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            }
            _ => {
                let mut j = i;
                while v
                    .get(j)
                    .is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
                {
                    j += 1;
                }
                Some(j)
            }
        }
    }

    /// Calls `f(key, value_start)` for each field of the object opening at
    /// `i` until it returns `Some(Some(_))`. Some(None): the object ended
    /// without a find; None: the walk gave up (an escaped key, or `f` gave
    /// up by returning None).
    fn fields<T>(
        v: &[u8],
        i: usize,
        mut f: impl FnMut(&[u8], usize) -> Option<Option<T>>,
    ) -> Option<Option<T>> {
        if v.get(i) != Some(&b'{') {
            return None;
        }
        let mut i = ws(v, i + 1);
        if v.get(i) == Some(&b'}') {
            return Some(None);
        }
        loop {
            if v.get(i) != Some(&b'"') {
                return None;
            }
            let end = string_end(v, i)?;
            let key = &v[i + 1..end - 1];
            if key.contains(&b'\\') {
                return None;
            }
            let colon = ws(v, end);
            if v.get(colon) != Some(&b':') {
                return None;
            }
            let start = ws(v, colon + 1);
            if let Some(found) = f(key, start)? {
                return Some(Some(found));
            }
            i = ws(v, value_end(v, start)?);
            match v.get(i)? {
                b',' => i = ws(v, i + 1),
                b'}' => return Some(None),
                _ => return None,
            }
        }
    }

    /// Where the fields of the top-level `metadata` object start and
    /// whether it has none; None when there is no such object, it already
    /// holds a resourceVersion, or the walk cannot tell.
    pub fn metadata_body(v: &[u8]) -> Option<(usize, bool)> {
        let found = fields(v, ws(v, 0), |key, start| {
            if key != b"metadata" {
                return Some(None);
            }
            let has_rv = fields(v, start, |k, _| {
                Some((k == b"resourceVersion").then_some(()))
            })?;
            let empty = v.get(ws(v, start + 1)) == Some(&b'}');
            has_rv.is_none().then_some(Some((start + 1, empty)))
        });
        found.flatten()
    }
}

/// The bytes stored for an object: without its resourceVersion (copied
/// without it only when it has one: a new object has none).
fn encode(obj: &Value) -> ApiResult<Vec<u8>> {
    let has_rv = obj
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .is_some();
    let bytes = if has_rv {
        let mut o = obj.clone();
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        serde_json::to_vec(&o)
    } else {
        serde_json::to_vec(obj)
    };
    bytes.map_err(|e| ApiError::internal(format!("encoding object: {e}")))
}

fn mod_equals(key: &str, revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(TargetUnion::ModRevision(revision)),
        range_end: vec![],
    }
}

fn put_op(key: &str, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            ..Default::default()
        })),
    }
}

impl Objects {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Objects {
        Objects {
            store,
            metrics,
            local_cap: 0,
        }
    }

    /// These objects as a replica that has applied nothing after
    /// `revision` sees them: every local read reads at `revision` (0 = the
    /// replica's applied state). For tests of what guards a local read: a
    /// lagging follower cannot be made to lag on cue.
    pub fn lagging_at(mut self, revision: i64) -> Objects {
        self.local_cap = revision;
        self
    }

    /// A replicated write, timed for `/metrics`.
    async fn write(&self, txn: TxnRequest) -> ApiResult<Option<i64>> {
        let started = Instant::now();
        let resp = self.store.txn(txn).await?;
        self.metrics.observe_store_write(started.elapsed());
        Ok(resp
            .succeeded
            .then(|| resp.header.map_or(0, |h| h.revision)))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A linearizable read of one object.
    pub async fn get(&self, key: &str) -> ApiResult<Option<Stored>> {
        self.get_with(key, false).await
    }

    /// A read of this replica's applied state: may miss the newest writes.
    /// For checks that fall back to [`Objects::get`] when they would fail.
    pub async fn get_local(&self, key: &str) -> ApiResult<Option<Stored>> {
        self.get_with(key, true).await
    }

    /// Every object under `prefix` in this replica's applied state (no
    /// read-index round trip): for the authorizer, which reads on every
    /// request and, like kube-apiserver's informer cache, may lag a write
    /// made through another replica by a moment.
    pub async fn list_local(&self, prefix: &str) -> ApiResult<Vec<Value>> {
        let page = self.list_local_page(prefix).await?;
        Ok(page.items.into_iter().map(|s| s.obj).collect())
    }

    /// Every object under `prefix` in this replica's applied state, with
    /// the revision it was read at (for a [`Guard`]).
    pub async fn list_local_page(&self, prefix: &str) -> ApiResult<Page> {
        let raw = self.range_page(prefix, None, 0, 0, true).await?;
        Ok(Page {
            items: raw.kvs.iter().map(decode).collect::<ApiResult<Vec<_>>>()?,
            revision: raw.revision,
            more_after: raw.more_after,
        })
    }

    /// Whether, in this replica's applied state, `prefix` no longer holds
    /// `count` keys none of which changed after `max_mod_revision` (a key
    /// created or changed since shows as a newer mod revision, one deleted
    /// as a smaller count). Reads no values: for caches of what a prefix
    /// holds.
    pub async fn changed_locally(
        &self,
        prefix: &str,
        count: usize,
        max_mod_revision: i64,
    ) -> ApiResult<bool> {
        let resp = self
            .store
            .range(RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix),
                serializable: true,
                revision: self.local_cap,
                keys_only: true,
                limit: 1,
                min_mod_revision: max_mod_revision.saturating_add(1),
                ..Default::default()
            })
            .await?;
        Ok(!resp.kvs.is_empty() || resp.count != count as i64)
    }

    async fn get_with(&self, key: &str, serializable: bool) -> ApiResult<Option<Stored>> {
        let resp = self
            .store
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                serializable,
                revision: if serializable { self.local_cap } else { 0 },
                ..Default::default()
            })
            .await?;
        resp.kvs.first().map(decode).transpose()
    }

    /// Up to `limit` objects (0 = all) under `prefix` with keys after
    /// `after`, read at `revision` (0 = a fresh linearizable read).
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        revision: i64,
        limit: i64,
    ) -> ApiResult<Page> {
        let raw = self.list_raw(prefix, after, revision, limit).await?;
        Ok(Page {
            items: raw.kvs.iter().map(decode).collect::<ApiResult<Vec<_>>>()?,
            revision: raw.revision,
            more_after: raw.more_after,
        })
    }

    /// [`Objects::list`] with the objects left as stored (for lists and
    /// watches that serve them without looking inside, see
    /// [`write_object`]).
    pub async fn list_raw(
        &self,
        prefix: &str,
        after: Option<&str>,
        revision: i64,
        limit: i64,
    ) -> ApiResult<RawPage> {
        self.range_page(prefix, after, revision, limit, false).await
    }

    /// A page under `prefix`; `local` reads this replica's applied state
    /// (at the local cap, if set) without a read-index round.
    async fn range_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        revision: i64,
        limit: i64,
        local: bool,
    ) -> ApiResult<RawPage> {
        let revision = if local && revision == 0 {
            self.local_cap
        } else {
            revision
        };
        let key = match after {
            Some(a) => {
                let mut k = a.as_bytes().to_vec();
                k.push(0);
                k
            }
            None => prefix.as_bytes().to_vec(),
        };
        let resp = self
            .store
            .range(RangeRequest {
                key,
                range_end: prefix_end(prefix),
                revision,
                limit,
                serializable: local,
                ..Default::default()
            })
            .await?;
        let read_at = if revision > 0 {
            revision
        } else {
            resp.header.as_ref().map_or(0, |h| h.revision)
        };
        let more_after = if resp.more {
            resp.kvs
                .last()
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        } else {
            None
        };
        Ok(RawPage {
            kvs: resp.kvs,
            revision: read_at,
            more_after,
        })
    }

    /// Creates `key` if absent. Ok(None) when it already exists.
    pub async fn create(&self, key: &str, obj: &Value) -> ApiResult<Option<i64>> {
        let txn = TxnRequest {
            compare: vec![mod_equals(key, 0)],
            success: vec![put_op(key, encode(obj)?)],
            failure: vec![],
        };
        self.write(txn).await
    }

    /// Creates `key` if absent and, in the same transaction, replaces each
    /// of `updates` if its mod revision is still the one it was read at
    /// (quota admission charges a quota's `status.used` with the create, so
    /// a lost race can neither over-admit nor leave a charge without its
    /// object), provided every one of `guards` still holds (what admission
    /// read is still what the store holds). Ok(None) when any compare
    /// failed: nothing was written.
    pub async fn create_with(
        &self,
        key: &str,
        obj: &Value,
        updates: &[Stored],
        guards: &[Guard],
    ) -> ApiResult<Option<i64>> {
        let mut compare = vec![mod_equals(key, 0)];
        compare.extend(guards.iter().flat_map(Guard::compares));
        let mut success = vec![put_op(key, encode(obj)?)];
        for u in updates {
            compare.push(mod_equals(&u.key, u.mod_revision));
            success.push(put_op(&u.key, encode(&u.obj)?));
        }
        let txn = TxnRequest {
            compare,
            success,
            failure: vec![],
        };
        self.write(txn).await
    }

    /// Replaces `key` if its mod revision is still `expected`. Ok(None) on
    /// a lost race (the caller answers 409 or retries).
    pub async fn update(&self, key: &str, obj: &Value, expected: i64) -> ApiResult<Option<i64>> {
        assert!(expected > 0, "update of {key} needs the revision it read");
        let txn = TxnRequest {
            compare: vec![mod_equals(key, expected)],
            success: vec![put_op(key, encode(obj)?)],
            failure: vec![],
        };
        self.write(txn).await
    }

    /// Deletes `key` if its mod revision is still `expected`.
    pub async fn delete(&self, key: &str, expected: i64) -> ApiResult<Option<i64>> {
        let txn = TxnRequest {
            compare: vec![mod_equals(key, expected)],
            success: vec![RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        };
        self.write(txn).await
    }

    /// Reads a raw value outside `/registry` (cluster bootstrap data).
    pub async fn get_raw(&self, key: &str) -> ApiResult<Option<Vec<u8>>> {
        let resp = self
            .store
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs.into_iter().next().map(|kv| kv.value))
    }

    /// Writes a raw value only if the key is absent; returns what is stored
    /// afterwards (first writer wins across replicas).
    pub async fn put_raw_if_absent(&self, key: &str, value: Vec<u8>) -> ApiResult<Vec<u8>> {
        let txn = TxnRequest {
            compare: vec![mod_equals(key, 0)],
            success: vec![put_op(key, value)],
            failure: vec![],
        };
        self.write(txn).await?;
        self.get_raw(key)
            .await?
            .ok_or_else(|| ApiError::internal(format!("{key} vanished after being written")))
    }

    /// Claims a raw key: true if this call created it.
    pub async fn claim_raw(&self, key: &str, value: Vec<u8>) -> ApiResult<bool> {
        let txn = TxnRequest {
            compare: vec![mod_equals(key, 0)],
            success: vec![put_op(key, value)],
            failure: vec![],
        };
        Ok(self.write(txn).await?.is_some())
    }

    /// Deletes a raw key if it still holds `value` (a claim by its owner).
    pub async fn release_raw(&self, key: &str, value: &[u8]) -> ApiResult<()> {
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Value as i32,
                key: key.as_bytes().to_vec(),
                target_union: Some(TargetUnion::Value(value.to_vec())),
                range_end: vec![],
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        };
        self.write(txn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_covers_the_prefix() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    fn served(value: &str, rev: i64) -> Value {
        let mut out = Vec::new();
        write_object(&mut out, b"/k", value.as_bytes(), rev).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    /// What the tree path serves: the reference for the splice.
    fn decoded(value: &str, rev: i64) -> Value {
        let kv = KeyValue {
            key: b"/k".to_vec(),
            value: value.as_bytes().to_vec(),
            mod_revision: rev,
            ..Default::default()
        };
        decode(&kv).unwrap().obj
    }

    #[test]
    fn spliced_objects_mean_what_decoded_ones_do() {
        for v in [
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"a":"b"}},"spec":{"x":[1,{"y":"}"}]}}"#,
            r#"{"metadata":{},"z":1}"#,
            r#" { "a" : "q\"}" , "metadata" : { "name" : "n" } } "#,
            r#"{"a":[{"metadata":{}}],"b":-1.5e3,"c":null,"d":true,"metadata":{"name":"x\\"}}"#,
            r#"{"metadata":{"name":"n","resourceVersion":"3"}}"#,
            r#"{"metadata":{"\u0072esourceVersion":"3"}}"#,
            r#"{"metadata":"not an object"}"#,
            r#"{"name":"no metadata"}"#,
            r#"["an","array"]"#,
            r#"{"\u006detadata":{"name":"n"}}"#,
        ] {
            assert_eq!(served(v, 42), decoded(v, 42), "{v}");
        }
    }

    #[test]
    fn splice_puts_the_revision_first_in_metadata() {
        let mut out = Vec::new();
        write_object(&mut out, b"/k", br#"{"metadata":{"name":"p"}}"#, 7).unwrap();
        assert_eq!(out, br#"{"metadata":{"resourceVersion":"7","name":"p"}}"#);
        out.clear();
        write_object(&mut out, b"/k", br#"{"metadata":{}}"#, 7).unwrap();
        assert_eq!(out, br#"{"metadata":{"resourceVersion":"7"}}"#);
    }

    #[test]
    fn stored_garbage_is_an_error_not_garbage_served() {
        let mut out = Vec::new();
        let err = write_object(&mut out, b"/k", br#"{"metadata":{"#, 7).unwrap_err();
        assert_eq!(err.code, 500);
    }

    #[test]
    fn resource_version_is_not_stored() {
        let obj = serde_json::json!({"metadata": {"name": "x", "resourceVersion": "7"}});
        let bytes = encode(&obj).unwrap();
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(back["metadata"].get("resourceVersion").is_none());
    }
}
