//! Recording core/v1 Events ("Scheduled", "ScalingReplicaSet", ...), which
//! `kubectl describe` and `kubectl get events` show.
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

/// `<object name>.<hash of what makes the event the same>`: repeats map to
/// one Event object, as client-go's aggregation does.
fn event_name(involved: &Value, reason: &str, message: &str, component: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        involved["uid"].as_str().unwrap_or_default(),
        involved["fieldPath"].as_str().unwrap_or_default(),
        reason,
        message,
        component,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    // A name is at most 253 characters; the hash keeps it unique.
    let obj = involved["name"].as_str().unwrap_or("object");
    let keep = obj
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|end| *end <= 253 - 1 - hex.len())
        .last()
        .unwrap_or(0);
    format!("{}.{hex}", &obj[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_event_same_name_other_reason_other_name() {
        let o = json!({"kind": "Pod", "name": "p", "uid": "u1", "namespace": "d"});
        let a = event_name(&o, "Scheduled", "m", "keel-scheduler");
        assert_eq!(a, event_name(&o, "Scheduled", "m", "keel-scheduler"));
        assert_ne!(a, event_name(&o, "Failed", "m", "keel-scheduler"));
        assert!(a.starts_with("p."));
    }

    #[test]
    fn names_of_long_objects_stay_within_253_characters() {
        let long = "x".repeat(253);
        let o = json!({"kind": "Pod", "name": long, "uid": "u1"});
        let n = event_name(&o, "Scheduled", "m", "s");
        assert_eq!(n.len(), 253, "{n}");
        assert!(n.starts_with("xxx") && n.contains('.'));
    }
}
