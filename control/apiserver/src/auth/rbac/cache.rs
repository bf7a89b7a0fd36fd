//! The RBAC objects under a key prefix, decoded once and reused until the
//! prefix changes in this replica's applied state.
//!
//! The authorizer reads every ClusterRole and ClusterRoleBinding (and a
//! namespace's Roles and RoleBindings) on each request of a user outside
//! `system:masters`. Decoding them is most of that cost; checking whether
//! the prefix changed is a local range read that returns no values (how
//! many keys there are, and whether one changed after the newest mod
//! revision cached). A change is seen by the first request that reads the
//! prefix after this replica applied it, exactly as without the cache: the
//! check reads the same applied state an uncached read would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::status::ApiResult;
use crate::storage::Objects;

/// Prefixes remembered before the cache starts over (one per namespace
/// with Roles or RoleBindings read, plus the two cluster-wide ones).
const MAX_PREFIXES: usize = 4096;

/// What one prefix held when it was read.
#[derive(Clone)]
struct Entry {
    count: usize,
    max_mod_revision: i64,
    objects: Arc<Vec<Value>>,
}

/// Decoded RBAC objects per key prefix; clones share one cache.
#[derive(Clone, Default)]
pub struct Cache {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Cache {
    /// Every object under `prefix` in this replica's applied state, in key
    /// order (as [`Objects::list_local`]).
    pub async fn list(&self, objects: &Objects, prefix: &str) -> ApiResult<Arc<Vec<Value>>> {
        let cached = self.lock().get(prefix).cloned();
        if let Some(e) = cached {
            if !objects
                .changed_locally(prefix, e.count, e.max_mod_revision)
                .await?
            {
                return Ok(e.objects);
            }
        }
        let page = objects.list_local_page(prefix).await?;
        let entry = Entry {
            count: page.items.len(),
            max_mod_revision: page.items.iter().map(|s| s.mod_revision).max().unwrap_or(0),
            objects: Arc::new(page.items.into_iter().map(|s| s.obj).collect()),
        };
        let out = entry.objects.clone();
        let mut entries = self.lock();
        if entries.len() >= MAX_PREFIXES && !entries.contains_key(prefix) {
            entries.clear();
        }
        entries.insert(prefix.to_string(), entry);
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic elsewhere while holding the lock leaves whole entries.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
