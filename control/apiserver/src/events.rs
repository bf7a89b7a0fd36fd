//! Recording core/v1 Events for agents (the node service's RecordEvent:
//! "Pulled", "Started", "BackOff", ...), which `kubectl describe` and
//! `kubectl get events` show. The controllers record theirs through
//! keel-controllers' typed recorder; both name events alike
//! ([`keel_apimachinery::events`]).
//!
//! Like client-go's recorder, a repeat of the same (object, reason, message,
//! source) bumps `count` and `lastTimestamp` on the existing Event instead
//! of creating a new one. Recording is best effort:
//! a failure is logged and never fails the caller's work.

use serde_json::{json, Value};

use crate::client::{path, Client};
use crate::meta;

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// The `involvedObject` reference of `obj` (which carries kind and apiVersion).
pub fn object_ref(obj: &Value) -> Value {
    let m = &obj["metadata"];
    let mut r = json!({
        "kind": obj["kind"],
        "apiVersion": obj["apiVersion"],
        "name": m["name"],
        "uid": m["uid"],
    });
    if let Some(ns) = m["namespace"].as_str() {
        r["namespace"] = json!(ns);
    }
    if let Some(rv) = m["resourceVersion"].as_str() {
        r["resourceVersion"] = json!(rv);
    }
    r
}

/// Records an Event about `involved` (an object reference as from
/// [`object_ref`]).
pub async fn record(
    client: &Client,
    involved: &Value,
    event_type: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = involved["namespace"].as_str().unwrap_or("default");
    let name = event_name(involved, reason, message, component);
    let now = meta::now_rfc3339();
    // Most events are new (a pod is scheduled once): create first, and
    // only on AlreadyExists read and bump the existing one.
    let ev = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": event_type,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let coll = path("v1", "events", Some(ns), None);
    match client.create(&coll, &ev).await {
        Ok(_) => {}
        Err(e) if e.is_conflict() => bump(client, ns, &name, &now, reason).await,
        Err(e) => tracing::debug!(error = %e, %reason, "event create failed"),
    }
}

/// Attempts at bumping an Event that concurrent repeats keep changing.
const BUMP_ATTEMPTS: usize = 5;

/// A repeat: count + 1 and a new lastTimestamp on the existing Event. The
/// update is pinned to the version read, so concurrent repeats retry
/// instead of losing an increment.
async fn bump(client: &Client, ns: &str, name: &str, now: &str, reason: &str) {
    let uri = path("v1", "events", Some(ns), Some(name));
    for _ in 0..BUMP_ATTEMPTS {
        let mut ev = match client.get(&uri).await {
            Ok(Some(ev)) => ev,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, %reason, "event lookup failed");
                return;
            }
        };
        let count = ev["count"].as_i64().unwrap_or(1) + 1;
        ev["count"] = json!(count);
        ev["lastTimestamp"] = json!(now);
        match client.update(&uri, &ev).await {
            Ok(_) => return,
            Err(e) if e.is_conflict() => continue,
            Err(e) => {
                tracing::debug!(error = %e, %reason, "event update failed");
                return;
            }
        }
    }
}

fn event_name(involved: &Value, reason: &str, message: &str, component: &str) -> String {
    keel_apimachinery::events::event_name(keel_apimachinery::events::EventKey {
        object_name: involved["name"].as_str().unwrap_or_default(),
        object_uid: involved["uid"].as_str().unwrap_or_default(),
        field_path: involved["fieldPath"].as_str().unwrap_or_default(),
        reason,
        message,
        component,
    })
}
