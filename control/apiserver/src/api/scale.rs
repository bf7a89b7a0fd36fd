//! The `scale` subresource: an `autoscaling/v1 Scale` view of a workload's
//! `spec.replicas`, readable and writable (kubectl scale, HPAs).

use std::sync::Arc;

use serde_json::{json, Value};

use super::read::fetch;
use super::write::{finish_update, manager, Updated};
use super::{decode_body, Api, Reply, Req, Target};
use crate::meta;
use crate::patch::{self, PatchType};
use crate::selector::LabelSelector;
use crate::status::{ApiError, ApiResult};
use crate::storage::Stored;

const MAX_RETRIES: usize = 8;

/// The Scale of a stored workload.
fn scale_of(obj: &Value) -> Value {
    let m = meta::meta(obj).cloned().unwrap_or_default();
    let selector = selector_of(obj);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"), "namespace": m.get("namespace"), "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"), "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// The workload's selector in label-query form; a ReplicationController's
/// is a plain label map, every other workload's a `LabelSelector`.
fn selector_of(obj: &Value) -> String {
    let selector = &obj["spec"]["selector"];
    let selector = match obj["kind"].as_str() {
        Some("ReplicationController") => json!({ "matchLabels": selector }),
        _ => selector.clone(),
    };
    LabelSelector::from_json(&selector)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

pub async fn get(api: &Arc<Api>, t: &Target) -> ApiResult<Reply> {
    let cur = fetch(api, t).await?;
    Ok(Reply::ok(scale_of(&cur.obj)))
}

pub async fn update(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    let body = decode_body(r)?;
    write_scale(api, t, r, |_| Ok(body.clone())).await
}

pub async fn patch(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    let pt = PatchType::from_content_type(&r.content_type)?;
    if pt == PatchType::Apply {
        return Err(ApiError::unsupported_media_type(&r.content_type));
    }
    write_scale(api, t, r, |scale| {
        // The patch applies to a Scale without resourceVersion, so the result
        // carries one only when the client's patch set it: only then is the
        // write pinned to that version. Otherwise a patch that loses a race
        // (to a status write, say) is retried on the new object, as in
        // Kubernetes, instead of answering 409.
        let mut base = scale.clone();
        if let Some(m) = base["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        patch::patch("Scale", pt, &base, &r.body)
    })
    .await
}

/// Reads the workload, computes the new Scale from its current one, and
/// writes `spec.replicas` back with the same optimistic concurrency as a
/// PUT of the workload.
async fn write_scale(
    api: &Arc<Api>,
    t: &Target,
    r: &Req,
    new_scale: impl Fn(&Value) -> ApiResult<Value>,
) -> ApiResult<Reply> {
    let name = t.name.as_deref().unwrap_or("");
    for _ in 0..MAX_RETRIES {
        let cur = fetch(api, t).await?;
        let scale = new_scale(&scale_of(&cur.obj))?;
        let replicas = check_scale(t, &scale, &cur)?;
        let mut obj = cur.obj.clone();
        obj["spec"]["replicas"] = json!(replicas);
        let main = Target {
            sub: None,
            ..t.clone()
        };
        match finish_update(api, &main, &cur, obj, r, &manager(r)).await? {
            (Updated::Written(o), _) => return Ok(Reply::ok(scale_of(&o))),
            (Updated::Lost, _) if meta::resource_version(&scale).is_some() => break,
            (Updated::Lost, _) => continue,
        }
    }
    Err(ApiError::conflict(t.info, name))
}

fn check_scale(t: &Target, scale: &Value, cur: &Stored) -> ApiResult<i64> {
    let name = t.name.as_deref().unwrap_or("");
    if let Some(rv) = meta::resource_version(scale) {
        if rv != cur.mod_revision.to_string() {
            return Err(ApiError::conflict(t.info, name));
        }
    }
    match scale["spec"]["replicas"].as_i64() {
        Some(n) if (0..=i32::MAX as i64).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            t.info,
            name,
            &[crate::admission::Cause {
                field: "spec.replicas".into(),
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {}: must be greater than or equal to 0",
                    scale["spec"]["replicas"]
                ),
            }],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_selector_reads_both_selector_shapes() {
        let rc = json!({"kind": "ReplicationController", "spec": {"selector": {"app": "web"}}});
        assert_eq!(selector_of(&rc), "app=web");
        let rs =
            json!({"kind": "ReplicaSet", "spec": {"selector": {"matchLabels": {"app": "web"}}}});
        assert_eq!(selector_of(&rs), "app=web");
    }
}
