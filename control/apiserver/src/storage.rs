//! Objects as JSON in raft-store, through the [`Store`] API only.
//!
//! Guarantees: every read is linearizable (read-index) unless a revision is
//! given; every write is a compare-and-swap on the key's mod revision, so
//! two writers from the same resourceVersion cannot both win.
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

#[derive(Clone)]
pub struct Objects {
    store: Store,
    metrics: Arc<Metrics>,
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

/// The bytes stored for an object: without its resourceVersion.
fn encode(obj: &Value) -> ApiResult<Vec<u8>> {
    let mut o = obj.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&o).map_err(|e| ApiError::internal(format!("encoding object: {e}")))
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
        Objects { store, metrics }
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
        let resp = self
            .store
            .range(RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix),
                serializable: true,
                ..Default::default()
            })
            .await?;
        resp.kvs
            .iter()
            .map(|kv| decode(kv).map(|s| s.obj))
            .collect()
    }

    async fn get_with(&self, key: &str, serializable: bool) -> ApiResult<Option<Stored>> {
        let resp = self
            .store
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                serializable,
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
                ..Default::default()
            })
            .await?;
        let read_at = if revision > 0 {
            revision
        } else {
            resp.header.as_ref().map_or(0, |h| h.revision)
        };
        let items = resp.kvs.iter().map(decode).collect::<ApiResult<Vec<_>>>()?;
        let more_after = if resp.more {
            items.last().map(|s| s.key.clone())
        } else {
            None
        };
        Ok(Page {
            items,
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
    /// object). Ok(None) when any compare failed: nothing was written.
    pub async fn create_with(
        &self,
        key: &str,
        obj: &Value,
        updates: &[Stored],
    ) -> ApiResult<Option<i64>> {
        let mut compare = vec![mod_equals(key, 0)];
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

    #[test]
    fn resource_version_is_not_stored() {
        let obj = serde_json::json!({"metadata": {"name": "x", "resourceVersion": "7"}});
        let bytes = encode(&obj).unwrap();
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(back["metadata"].get("resourceVersion").is_none());
    }
}
