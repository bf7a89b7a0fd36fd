//! Range reads with etcd's options: revision, limit, sort, keys/count only,
//! and revision filters.

use keel_proto::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    RangeRequest, RangeResponse,
};
use keel_proto::mvccpb::KeyValue;

use super::{check_key_range, Mvcc};
use crate::error::StoreError;

impl Mvcc {
    /// Answers a range request against this state. The header is left for
    /// the caller, which knows the cluster and member ids.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        check_key_range(&req.key, &req.range_end)?;
        let at = self.check_readable(req.revision)?;
        let mut kvs: Vec<&KeyValue> = self
            .live_in_range(&req.key, &req.range_end, at)
            .map(|kv| kv.as_ref())
            .collect();
        let count = kvs.len() as i64;
        kvs.retain(|kv| passes_filters(req, kv));
        sort(req, &mut kvs);
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        let kvs = if req.count_only {
            Vec::new()
        } else {
            kvs.into_iter()
                .map(|kv| {
                    let mut kv = kv.clone();
                    if req.keys_only {
                        kv.value.clear();
                    }
                    kv
                })
                .collect()
        };
        Ok(RangeResponse {
            header: None,
            kvs,
            more,
            count,
        })
    }
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
}

fn sort(req: &RangeRequest, kvs: &mut [&KeyValue]) {
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    if order == SortOrder::None && target != SortTarget::Key {
        order = SortOrder::Ascend;
    }
    if order == SortOrder::None {
        return; // already ascending by key
    }
    kvs.sort_by(|a, b| {
        let ord = match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        ord.then_with(|| a.key.cmp(&b.key))
    });
    if order == SortOrder::Descend {
        kvs.reverse();
    }
}
