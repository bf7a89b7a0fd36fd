//! A list+watch cache of one collection (client-go's reflector and store),
//! the "watch → cache" half of every controller.
//!
//! Guarantees: the cache is always some consistent revision of the
//! collection (a list, then every watch event in order); after a 410 or a
//! broken watch it lists again and reports the difference, so subscribers
//! never miss a change. A subscriber that falls behind gets
//! [`Change::Resync`] and must reconcile everything it owns.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;

use crate::client::Client;

/// What changed in the cache.
#[derive(Debug, Clone)]
pub enum Change {
    /// Created or updated (the new object).
    Applied(Value),
    /// Deleted (the last known object).
    Deleted(Value),
    /// The subscriber lagged or the cache was rebuilt: look at everything.
    Resync,
}

/// The cache key of an object: `namespace/name`, or `name` when cluster-scoped.
pub fn key_of(obj: &Value) -> String {
    let m = &obj["metadata"];
    let name = m["name"].as_str().unwrap_or_default();
    match m["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

struct Inner {
    cache: RwLock<BTreeMap<String, Value>>,
    changes: broadcast::Sender<Change>,
    synced: watch::Sender<bool>,
    task: Mutex<Option<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
        }
    }
}

/// Cheap to clone; the watch task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Informer {
    inner: Arc<Inner>,
}

impl Informer {
    /// Starts listing and watching `collection` (e.g. `/api/v1/pods`) with
    /// the extra `query` (selectors, may be empty).
    pub fn spawn(client: Client, collection: &str, query: &str) -> Informer {
        let (changes, _) = broadcast::channel(4096);
        let (synced, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            cache: RwLock::new(BTreeMap::new()),
            changes,
            synced,
            task: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        let (collection, query) = (collection.to_string(), query.to_string());
        let task = tokio::spawn(async move { run(client, collection, query, weak).await });
        if let Ok(mut t) = inner.task.lock() {
            *t = Some(task.abort_handle());
        }
        Informer { inner }
    }

    /// Resolves once the first list is in the cache.
    pub async fn wait_synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn get(&self, key: &str) -> Option<Value> {
        self.inner.cache.read().ok()?.get(key).cloned()
    }

    pub fn list(&self) -> Vec<Value> {
        match self.inner.cache.read() {
            Ok(c) => c.values().cloned().collect(),
            Err(_) => vec![],
        }
    }

    /// Objects for which `keep` holds.
    pub fn filter(&self, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        match self.inner.cache.read() {
            Ok(c) => c.values().filter(|v| keep(v)).cloned().collect(),
            Err(_) => vec![],
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }
}

async fn run(client: Client, collection: String, query: String, weak: Weak<Inner>) {
    loop {
        let rv = match relist(&client, &collection, &query, &weak).await {
            Some(rv) => rv,
            None if weak.strong_count() == 0 => return,
            None => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if !watch_from(&client, &collection, &query, rv, &weak).await {
            return;
        }
    }
}

/// Lists and replaces the cache, announcing the differences. `None` on failure.
async fn relist(
    client: &Client,
    collection: &str,
    query: &str,
    weak: &Weak<Inner>,
) -> Option<String> {
    let uri = match query {
        "" => collection.to_string(),
        q => format!("{collection}?{q}"),
    };
    let list = match client.list(&uri).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(%collection, error = %e, "informer list failed");
            return None;
        }
    };
    let rv = list["metadata"]["resourceVersion"].as_str()?.to_string();
    let kind = list["kind"]
        .as_str()
        .unwrap_or_default()
        .trim_end_matches("List")
        .to_string();
    let api_version = list["apiVersion"].as_str().unwrap_or_default().to_string();
    let mut fresh = BTreeMap::new();
    for mut item in list["items"].as_array().cloned().unwrap_or_default() {
        // List items carry no kind; controllers read it (ownerReferences).
        item["kind"] = Value::String(kind.clone());
        item["apiVersion"] = Value::String(api_version.clone());
        fresh.insert(key_of(&item), item);
    }
    let inner = weak.upgrade()?;
    let old = match inner.cache.write() {
        Ok(mut c) => std::mem::replace(&mut *c, fresh.clone()),
        Err(_) => return None,
    };
    for (k, v) in &old {
        if !fresh.contains_key(k) {
            let _ = inner.changes.send(Change::Deleted(v.clone()));
        }
    }
    for (k, v) in &fresh {
        if old.get(k) != Some(v) {
            let _ = inner.changes.send(Change::Applied(v.clone()));
        }
    }
    inner.synced.send_replace(true);
    Some(rv)
}

/// Applies watch events until the watch ends; false when the informer is gone.
async fn watch_from(
    client: &Client,
    collection: &str,
    query: &str,
    mut rv: String,
    weak: &Weak<Inner>,
) -> bool {
    loop {
        let stream = match client.watch(collection, query, &rv).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%collection, error = %e, "informer watch failed; listing again");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return weak.strong_count() > 0;
            }
        };
        tokio::pin!(stream);
        while let Some(ev) = stream.next().await {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            if let Some(v) = ev.object["metadata"]["resourceVersion"].as_str() {
                rv = v.to_string();
            }
            match ev.kind.as_str() {
                "ADDED" | "MODIFIED" => apply(&inner, ev.object, false),
                "DELETED" => apply(&inner, ev.object, true),
                "BOOKMARK" => {}
                _ => return true, // ERROR (e.g. 410): list again
            }
        }
        if weak.strong_count() == 0 {
            return false;
        }
    }
}

fn apply(inner: &Inner, obj: Value, deleted: bool) {
    let key = key_of(&obj);
    if let Ok(mut c) = inner.cache.write() {
        if deleted {
            c.remove(&key);
        } else {
            c.insert(key, obj.clone());
        }
    }
    let change = match deleted {
        true => Change::Deleted(obj),
        false => Change::Applied(obj),
    };
    let _ = inner.changes.send(change);
}

/// Receives the next change, turning a lag into [`Change::Resync`]; `None`
/// when the informer is gone.
pub async fn next_change(rx: &mut broadcast::Receiver<Change>) -> Option<Change> {
    match rx.recv().await {
        Ok(c) => Some(c),
        Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::Resync),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys() {
        assert_eq!(
            key_of(&json!({"metadata": {"name": "a", "namespace": "ns"}})),
            "ns/a"
        );
        assert_eq!(key_of(&json!({"metadata": {"name": "n1"}})), "n1");
    }
}
