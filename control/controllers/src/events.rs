//! Recording core/v1 Events ("Scheduled", "ScalingReplicaSet", ...), which
//! `kubectl describe` and `kubectl get events` show.
//!
//! Like client-go's recorder, a repeat of the same (object, reason, message,
//! source) bumps `count` and `lastTimestamp` on the existing Event instead
//! of creating a new one. Recording is best effort: a failure is logged and
//! never fails the caller's work.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::Resource;

use crate::client::is_status;
use keel_apimachinery::events::{event_name, EventKey};

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// The `involvedObject` reference of a typed object (kind and apiVersion
/// come from its type).
pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

/// Records an Event about `involved`.
pub async fn record(
    client: &kube::Client,
    involved: &ObjectReference,
    event_type: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = involved.namespace.as_deref().unwrap_or("default");
    let name = event_name(EventKey {
        object_name: involved.name.as_deref().unwrap_or_default(),
        object_uid: involved.uid.as_deref().unwrap_or_default(),
        field_path: involved.field_path.as_deref().unwrap_or_default(),
        reason,
        message,
        component,
    });
    let now = Time(Timestamp::now());
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    // Most events are new (a pod is scheduled once): create first, and
    // only on AlreadyExists read and bump the existing one.
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        involved_object: involved.clone(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some(event_type.to_string()),
        source: Some(EventSource {
            component: Some(component.to_string()),
            host: None,
        }),
        reporting_component: Some(component.to_string()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now.clone()),
        count: Some(1),
        ..Default::default()
    };
    match events.create(&PostParams::default(), &ev).await {
        Ok(_) => {}
        Err(e) if is_status(&e, 409) => bump(&events, &name, now, reason).await,
        Err(e) => tracing::debug!(error = %e, %reason, "event create failed"),
    }
}

/// Attempts at bumping an Event that concurrent repeats keep changing.
const BUMP_ATTEMPTS: usize = 5;

/// A repeat: count + 1 and a new lastTimestamp on the existing Event. The
/// update is pinned to the version read, so concurrent repeats retry
/// instead of losing an increment.
async fn bump(events: &Api<Event>, name: &str, now: Time, reason: &str) {
    for _ in 0..BUMP_ATTEMPTS {
        let mut ev = match events.get_opt(name).await {
            Ok(Some(ev)) => ev,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, %reason, "event lookup failed");
                return;
            }
        };
        ev.count = Some(ev.count.unwrap_or(1) + 1);
        ev.last_timestamp = Some(now.clone());
        match events.replace(name, &PostParams::default(), &ev).await {
            Ok(_) => return,
            Err(e) if is_status(&e, 409) => continue,
            Err(e) => {
                tracing::debug!(error = %e, %reason, "event update failed");
                return;
            }
        }
    }
}
