//! Transactions: compares, then the chosen branch of put, delete-range,
//! range and nested txn ops, all under one new revision.
//!
//! Like etcd, the whole path through nested txns is decided from the state
//! before the transaction, every op on it is validated, and only then is
//! anything written; a rejected txn changes nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use keel_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    response_op::Response,
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RequestOp,
    ResponseOp, TxnRequest, TxnResponse,
};
use keel_proto::mvccpb::KeyValue;

use super::{check_key_range, make_event, Change, KeyRange, Mvcc, RevEvent, Revision, Version};
use crate::error::StoreError;

/// Limits a txn must respect, etcd's defaults.
#[derive(Debug, Clone, Copy)]
pub struct TxnLimits {
    pub max_ops: usize,
}

impl Default for TxnLimits {
    fn default() -> Self {
        TxnLimits { max_ops: 128 }
    }
}

impl Mvcc {
    /// Applies `req` atomically. Returns the response (headers unset), the
    /// changes to persist and the events to publish.
    pub fn txn(
        &mut self,
        req: &TxnRequest,
        limits: TxnLimits,
    ) -> Result<(TxnResponse, Vec<Change>, Vec<RevEvent>), StoreError> {
        check_txn(req, limits)?;
        let path = self.decide(req);
        self.check_path(req, &path, &mut 0)?;
        let mut w = Writer::new(self);
        let resp = w.exec_txn(req, &path, &mut 0);
        let (changes, events) = w.finish();
        Ok((resp, changes, events))
    }

    /// Which branch every (nested) txn takes, in pre-order.
    fn decide(&self, req: &TxnRequest) -> Vec<bool> {
        let mut path = Vec::new();
        self.decide_into(req, &mut path);
        path
    }

    fn decide_into(&self, req: &TxnRequest, path: &mut Vec<bool>) {
        let ok = req.compare.iter().all(|c| self.compare(c));
        path.push(ok);
        let ops = if ok { &req.success } else { &req.failure };
        for op in ops {
            if let Some(Request::RequestTxn(t)) = &op.request {
                self.decide_into(t, path);
            }
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
        let result = CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal);
        let at = self.current_rev;
        let kvs: Vec<Option<&KeyValue>> = if c.range_end.is_empty() {
            vec![self.get_at(&c.key, at).map(|kv| kv.as_ref())]
        } else {
            self.live_in_range(&c.key, &c.range_end, at)
                .map(|kv| Some(kv.as_ref()))
                .collect()
        };
        // A range compare holds when it holds for every key in the range.
        kvs.into_iter()
            .all(|kv| compare_one(kv, target, result, c.target_union.as_ref()))
    }

    /// State-dependent checks on the chosen path (leases, ignore_*).
    fn check_path(
        &self,
        req: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<(), StoreError> {
        let ok = path[*pos];
        *pos += 1;
        for op in if ok { &req.success } else { &req.failure } {
            match &op.request {
                Some(Request::RequestPut(p)) => self.check_put(p)?,
                Some(Request::RequestRange(r)) => {
                    self.check_readable(r.revision)?;
                }
                Some(Request::RequestTxn(t)) => self.check_path(t, path, pos)?,
                _ => {}
            }
        }
        Ok(())
    }

    pub(crate) fn check_put(&self, p: &PutRequest) -> Result<(), StoreError> {
        if (p.ignore_value || p.ignore_lease) && self.get_at(&p.key, self.current_rev).is_none() {
            return Err(StoreError::KeyNotFound);
        }
        if p.lease != 0 && !self.leases.contains_key(&p.lease) {
            return Err(StoreError::LeaseNotFound);
        }
        Ok(())
    }
}

fn compare_one(
    kv: Option<&KeyValue>,
    target: CompareTarget,
    result: CompareResult,
    value: Option<&TargetUnion>,
) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match (target, value) {
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => match kv {
            Some(kv) => kv.value.as_slice().cmp(v.as_slice()),
            None => return false, // etcd: a value compare on a missing key fails
        },
        (CompareTarget::Version, Some(TargetUnion::Version(v))) => {
            kv.map_or(0, |k| k.version).cmp(v)
        }
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => {
            kv.map_or(0, |k| k.create_revision).cmp(v)
        }
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => {
            kv.map_or(0, |k| k.mod_revision).cmp(v)
        }
        (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => kv.map_or(0, |k| k.lease).cmp(v),
        _ => return false,
    };
    match result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
        CompareResult::NotEqual => ord != Ordering::Equal,
    }
}

/// Structural checks that need no state: op count, keys, duplicates.
pub fn check_txn(req: &TxnRequest, limits: TxnLimits) -> Result<(), StoreError> {
    if req.success.len() > limits.max_ops || req.failure.len() > limits.max_ops {
        return Err(StoreError::TooManyOps);
    }
    for c in &req.compare {
        if c.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        if c.target_union.is_none() {
            return Err(StoreError::Invalid("compare has no target value".into()));
        }
    }
    for ops in [&req.success, &req.failure] {
        for op in ops {
            check_op(op, limits)?;
        }
        check_intervals(ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, limits: TxnLimits) -> Result<(), StoreError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_key_range(&r.key, &r.range_end),
        Some(Request::RequestPut(p)) => check_put_shape(p),
        Some(Request::RequestDeleteRange(d)) => check_key_range(&d.key, &d.range_end),
        Some(Request::RequestTxn(t)) => check_txn(t, limits),
        None => Err(StoreError::Invalid("empty request op in txn".into())),
    }
}

pub(crate) fn check_put_shape(p: &PutRequest) -> Result<(), StoreError> {
    if p.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(StoreError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(StoreError::LeaseProvided);
    }
    Ok(())
}

/// etcd's rule: within one branch (nested txns included) a key is put at
/// most once and no delete range covers a put key.
fn check_intervals(ops: &[RequestOp]) -> Result<(), StoreError> {
    let (puts, deletes) = collect_writes(ops)?;
    for (key, end) in &deletes {
        let range = KeyRange::new(key, end);
        if puts.iter().any(|p| range.contains(p)) {
            return Err(StoreError::DuplicateKey);
        }
    }
    Ok(())
}

type Writes = (BTreeSet<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);

fn collect_writes(ops: &[RequestOp]) -> Result<Writes, StoreError> {
    let mut puts = BTreeSet::new();
    let mut deletes = Vec::new();
    for op in ops {
        match &op.request {
            Some(Request::RequestPut(p)) if !puts.insert(p.key.clone()) => {
                return Err(StoreError::DuplicateKey);
            }
            Some(Request::RequestDeleteRange(d)) => {
                deletes.push((d.key.clone(), d.range_end.clone()))
            }
            Some(Request::RequestTxn(t)) => {
                let (sp, sd) = collect_writes(&t.success)?;
                let (fp, fd) = collect_writes(&t.failure)?;
                for k in sp.union(&fp) {
                    if puts.contains(k) {
                        return Err(StoreError::DuplicateKey);
                    }
                }
                puts.extend(sp.into_iter().chain(fp));
                deletes.extend(sd.into_iter().chain(fd));
            }
            _ => {}
        }
    }
    Ok((puts, deletes))
}

/// Writes one revision's changes into the state as ops execute, so reads
/// later in the same txn see earlier writes (as in etcd).
pub(crate) struct Writer<'a> {
    mvcc: &'a mut Mvcc,
    main: i64,
    sub: i64,
    changes: Vec<Change>,
    events: Vec<RevEvent>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(mvcc: &'a mut Mvcc) -> Self {
        let main = mvcc.current_rev + 1;
        Writer {
            mvcc,
            main,
            sub: 0,
            changes: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The revision was bumped by the first write; hands over its results.
    pub(crate) fn finish(self) -> (Vec<Change>, Vec<RevEvent>) {
        (self.changes, self.events)
    }

    fn exec_txn(&mut self, req: &TxnRequest, path: &[bool], pos: &mut usize) -> TxnResponse {
        let ok = path[*pos];
        *pos += 1;
        let ops = if ok { &req.success } else { &req.failure };
        let responses = ops
            .iter()
            .map(|op| ResponseOp {
                response: Some(self.exec_op(op, path, pos)),
            })
            .collect();
        TxnResponse {
            header: None,
            succeeded: ok,
            responses,
        }
    }

    fn exec_op(&mut self, op: &RequestOp, path: &[bool], pos: &mut usize) -> Response {
        match op.request.as_ref().expect("checked by check_op") {
            Request::RequestRange(r) => {
                let resp = self
                    .mvcc
                    .range(r)
                    .expect("readability checked by check_path");
                Response::ResponseRange(resp)
            }
            Request::RequestPut(p) => Response::ResponsePut(self.put(p)),
            Request::RequestDeleteRange(d) => Response::ResponseDeleteRange(self.delete_range(d)),
            Request::RequestTxn(t) => Response::ResponseTxn(self.exec_txn(t, path, pos)),
        }
    }

    fn next_rev(&mut self) -> Revision {
        let rev = Revision::new(self.main, self.sub);
        self.sub += 1;
        // Reads later in this txn see this revision, as in etcd.
        self.mvcc.current_rev = self.main;
        rev
    }

    pub(crate) fn put(&mut self, p: &PutRequest) -> PutResponse {
        let rev = self.next_rev();
        let prev = self.mvcc.get_at(&p.key, self.main).cloned();
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease,
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(self.main, |k| k.create_revision),
            mod_revision: self.main,
            version: prev.as_ref().map_or(1, |k| k.version + 1),
            value,
            lease,
        };
        self.record(rev, &p.key, Some(kv), prev.as_deref().cloned());
        PutResponse {
            header: None,
            prev_kv: if p.prev_kv {
                prev.map(|k| (*k).clone())
            } else {
                None
            },
        }
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let keys: Vec<Vec<u8>> = self
            .mvcc
            .live_in_range(&d.key, &d.range_end, self.main)
            .map(|kv| kv.key.clone())
            .collect();
        let mut prev_kvs = Vec::new();
        for key in &keys {
            if let Some(prev) = self.delete_key(key) {
                if d.prev_kv {
                    prev_kvs.push(prev);
                }
            }
        }
        DeleteRangeResponse {
            header: None,
            deleted: keys.len() as i64,
            prev_kvs,
        }
    }

    /// Writes a tombstone for a live key; returns the deleted version.
    pub(crate) fn delete_key(&mut self, key: &[u8]) -> Option<KeyValue> {
        let prev = self.mvcc.get_at(key, self.main)?.as_ref().clone();
        let rev = self.next_rev();
        self.record(rev, key, None, Some(prev.clone()));
        Some(prev)
    }

    fn record(&mut self, rev: Revision, key: &[u8], kv: Option<KeyValue>, prev: Option<KeyValue>) {
        let m = &mut *self.mvcc;
        if let Some(old) = prev.as_ref().filter(|p| p.lease != 0) {
            if let Some(l) = m.leases.get_mut(&old.lease) {
                l.keys.remove(key);
            }
        }
        if let Some(new) = kv.as_ref().filter(|k| k.lease != 0) {
            if let Some(l) = m.leases.get_mut(&new.lease) {
                l.keys.insert(key.to_vec());
            }
        }
        let versions = m.keys.entry(key.to_vec()).or_default();
        debug_assert!(
            versions.last().is_none_or(|v| v.rev < rev),
            "revisions grow per key"
        );
        // A key written twice in one revision would break per-revision
        // uniqueness; check_intervals rules it out for client txns.
        debug_assert!(versions.last().is_none_or(|v| v.rev.main < rev.main));
        versions.push(Version {
            rev,
            kv: kv.clone().map(Arc::new),
        });
        m.by_rev.insert(rev, key.to_vec());
        self.events.push(make_event(rev, key, kv.as_ref(), prev));
        self.changes.push(Change::Put {
            rev,
            key: key.to_vec(),
            kv,
        });
    }
}
