//! DELETE and deletecollection (pod eviction, a delete guarded by
//! disruption budgets, is in `eviction.rs`).
//!
//! Kubernetes semantics: an object with finalizers (or a `Foreground` /
//! `Orphan` propagation policy, recorded as the `foregroundDeletion` /
//! `orphan` finalizer for the garbage collector) only gets a
//! deletionTimestamp and stays until its finalizers are removed; a pod on
//! a node gets its grace period so the agent can stop it; a namespace
//! turns Terminating, its contents are deleted, then it goes.

use std::sync::Arc;

use serde_json::{json, Value};

use super::output::Selectors;
use super::read::{fetch, list_objects, plain_list};
use super::{services, Api, Reply, Req, Target};
use crate::meta;
use crate::resources::{self, ResourceInfo};
use crate::status::{ApiError, ApiResult};
use crate::storage::Stored;

const MAX_RETRIES: usize = 8;

/// `DeleteOptions` from the body (kubectl) or the query (client libraries).
#[derive(Debug, Default)]
pub(super) struct DeleteOptions {
    pub(super) grace_period_s: Option<i64>,
    pub(super) propagation: Option<String>,
    pub(super) uid: Option<String>,
    pub(super) resource_version: Option<String>,
    pub(super) dry_run: bool,
}

fn options(r: &Req) -> ApiResult<DeleteOptions> {
    let body: Value = if r.body.is_empty() {
        json!({})
    } else if r.content_type.contains("protobuf") {
        crate::protobuf::decode_protobuf(&r.body)
            .map_err(|e| ApiError::bad_request(format!("DeleteOptions cannot be decoded: {e}")))?
    } else {
        serde_json::from_slice(&r.body)
            .map_err(|e| ApiError::bad_request(format!("DeleteOptions are not valid JSON: {e}")))?
    };
    let q = |k: &str| r.query.get(k).cloned();
    let grace = match body.get("gracePeriodSeconds").and_then(Value::as_i64) {
        Some(g) => Some(g),
        None => match q("gracePeriodSeconds") {
            Some(s) => Some(s.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("gracePeriodSeconds {s:?} is not an integer"))
            })?),
            None => None,
        },
    };
    let propagation = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| q("propagationPolicy"));
    if let Some(p) = &propagation {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy {p:?} is not one of Orphan, Background, Foreground"
            )));
        }
    }
    let dry = body["dryRun"]
        .as_array()
        .is_some_and(|a| a.iter().any(|d| d == "All"))
        || q("dryRun").is_some_and(|d| d == "All");
    Ok(DeleteOptions {
        grace_period_s: grace,
        propagation,
        uid: body["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
        dry_run: dry,
    })
}

pub async fn delete(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    let opts = options(r)?;
    let name = t.name.as_deref().unwrap_or("");
    for _ in 0..MAX_RETRIES {
        let cur = fetch(api, t).await?;
        check_preconditions(t.info, name, &cur, &opts)?;
        crate::admission::node_restriction::admit(
            r.user.as_ref(),
            t.info,
            None,
            crate::admission::node_restriction::Op::Delete(&cur.obj),
        )?;
        if let Some(reply) = delete_one(api, t.info, &cur, &opts).await? {
            return Ok(reply);
        }
    }
    Err(ApiError::conflict(t.info, name))
}

fn check_preconditions(
    info: &ResourceInfo,
    name: &str,
    cur: &Stored,
    opts: &DeleteOptions,
) -> ApiResult<()> {
    if let Some(uid) = &opts.uid {
        if uid != meta::uid(&cur.obj) {
            return Err(ApiError::uid_precondition(uid, meta::uid(&cur.obj)));
        }
    }
    if let Some(rv) = &opts.resource_version {
        if *rv != cur.mod_revision.to_string() {
            return Err(ApiError::conflict(info, name));
        }
    }
    Ok(())
}

/// Ok(None) when the compare-and-swap lost (retry).
pub(super) async fn delete_one(
    api: &Api,
    info: &ResourceInfo,
    cur: &Stored,
    opts: &DeleteOptions,
) -> ApiResult<Option<Reply>> {
    let mut obj = cur.obj.clone();
    let mut fins = meta::finalizers(&obj);
    // The latest policy wins (Kubernetes: one propagation finalizer at a time).
    match opts.propagation.as_deref() {
        Some("Foreground") => {
            fins.retain(|f| f != "orphan");
            add_finalizer(&mut fins, "foregroundDeletion");
        }
        Some("Orphan") => {
            fins.retain(|f| f != "foregroundDeletion");
            add_finalizer(&mut fins, "orphan");
        }
        _ => {}
    }
    if info.resource == "namespaces" {
        add_finalizer(&mut fins, "kubernetes");
    }
    let grace = pod_grace(info, &obj, opts);
    if fins.is_empty() && grace == 0 {
        if opts.dry_run {
            return Ok(Some(Reply::ok(obj)));
        }
        let Some(_) = api.objects.delete(&cur.key, cur.mod_revision).await? else {
            return Ok(None);
        };
        if info.resource == "services" {
            services::release(&api.objects, &cur.key, &obj).await;
        }
        return Ok(Some(Reply::ok(obj)));
    }
    let was_deleting = meta::is_deleting(&obj);
    let cur_grace = obj["metadata"]["deletionGracePeriodSeconds"].as_i64();
    if was_deleting && meta::finalizers(&obj) == fins && cur_grace.is_some_and(|g| grace >= g) {
        return Ok(Some(Reply::json(202, obj))); // already terminating, no sooner
    }
    mark_deleting(info, &mut obj, &fins, grace);
    if opts.dry_run {
        return Ok(Some(Reply::json(202, obj)));
    }
    let Some(rev) = api.objects.update(&cur.key, &obj, cur.mod_revision).await? else {
        return Ok(None);
    };
    crate::storage::set_resource_version(&mut obj, rev);
    if info.resource == "namespaces" && !was_deleting {
        spawn_namespace_cleanup(
            api,
            meta::name(&obj).to_string(),
            meta::uid(&obj).to_string(),
        );
    }
    Ok(Some(Reply::json(202, obj)))
}

fn add_finalizer(fins: &mut Vec<String>, f: &str) {
    if !fins.iter().any(|x| x == f) {
        fins.push(f.to_string());
    }
}

/// Seconds a pod gets to stop: only pods already on a node and not
/// finished have one (Kubernetes deletes unscheduled pods at once).
fn pod_grace(info: &ResourceInfo, obj: &Value, opts: &DeleteOptions) -> i64 {
    if info.resource != "pods" {
        return 0;
    }
    let on_node = obj["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        obj["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if !on_node || finished {
        return 0;
    }
    let default = obj["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(30);
    opts.grace_period_s.unwrap_or(default).max(0)
}

/// Sets the finalizers and, on the first delete or one with a shorter
/// grace period (Kubernetes lets a later delete only shorten it), the
/// deletionTimestamp and deletionGracePeriodSeconds.
fn mark_deleting(info: &ResourceInfo, obj: &mut Value, fins: &[String], grace_s: i64) {
    meta::set_finalizers(obj, fins);
    let m = meta::meta_mut(obj);
    let sooner = m
        .get("deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|g| grace_s < g);
    if !m.contains_key("deletionTimestamp") || sooner {
        let at = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(grace_s))
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let at = jiff::Timestamp::from_second(at.as_second()).unwrap_or(at);
        m.insert("deletionTimestamp".into(), json!(at.to_string()));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace_s));
    }
    if info.resource == "namespaces" {
        obj["status"]["phase"] = json!("Terminating");
    }
}

pub async fn delete_collection(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    let opts = options(r)?;
    let sel = Selectors::from_query(t.info, &r.query)?;
    let prefix = t.info.prefix(t.namespace.as_deref());
    let listed = list_objects(api, &prefix, &sel, 0, None).await?;
    let mut deleted = Vec::new();
    for obj in listed.objects()? {
        let key = t.info.key(
            t.namespace
                .as_deref()
                .or(obj["metadata"]["namespace"].as_str()),
            meta::name(&obj),
        );
        for _ in 0..MAX_RETRIES {
            let Some(cur) = api.objects.get(&key).await? else {
                break;
            };
            if let Some(reply) = delete_one(api, t.info, &cur, &opts).await? {
                if let super::Reply::Json { body, .. } = reply {
                    deleted.push(body);
                }
                break;
            }
        }
    }
    Ok(Reply::ok(plain_list(t, deleted, listed.revision)))
}

/// Deletes everything in a terminating namespace, then the namespace.
/// Runs on the replica that accepted the delete, for up to 30 s; if that
/// replica dies first, or a pod takes longer to stop, the namespace
/// controller (`controllers/namespace.rs`, on the lease holder) finishes it.
fn spawn_namespace_cleanup(api: &Api, ns: String, uid: String) {
    let objects = api.objects.clone();
    tokio::spawn(async move {
        for _ in 0..60 {
            match empty_namespace(&objects, &ns, &uid).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(namespace = %ns, error = %e.message, "namespace cleanup"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    });
}

/// One pass of namespace deletion for the namespace controller: deletes
/// what is left in the terminating namespace `ns`; Ok(true) when nothing
/// is left to do (the namespace is gone, or is not terminating, e.g. was
/// created again).
pub async fn finish_namespace(api: &Api, ns: &str) -> ApiResult<bool> {
    let nsinfo = resources::find("", "v1", "namespaces").expect("namespaces are served");
    match api.objects.get(&nsinfo.key(None, ns)).await? {
        None => Ok(true),
        Some(cur) if !meta::is_deleting(&cur.obj) => Ok(true),
        Some(cur) => empty_namespace(&api.objects, ns, meta::uid(&cur.obj)).await,
    }
}

/// The namespace `ns` as stored, if it is still the terminating instance
/// `uid` (a namespace created again under the same name is not ours).
async fn terminating_namespace(
    objects: &crate::storage::Objects,
    ns: &str,
    uid: &str,
) -> ApiResult<Option<Stored>> {
    let nsinfo = resources::find("", "v1", "namespaces").expect("namespaces are served");
    Ok(objects
        .get(&nsinfo.key(None, ns))
        .await?
        .filter(|cur| meta::uid(&cur.obj) == uid && meta::is_deleting(&cur.obj)))
}

/// One pass over the terminating namespace `ns` with uid `uid`: deletes
/// what is left; Ok(true) once that namespace is gone (or replaced by a
/// new one, which is left alone). Pods on a node get their grace period
/// (their agent stops them and removes them); everything else without
/// finalizers goes at once.
async fn empty_namespace(
    objects: &crate::storage::Objects,
    ns: &str,
    uid: &str,
) -> ApiResult<bool> {
    if terminating_namespace(objects, ns, uid).await?.is_none() {
        return Ok(true);
    }
    let mut left = 0;
    for info in resources::RESOURCES.iter().filter(|r| r.namespaced) {
        let page = objects.list(&info.prefix(Some(ns)), None, 0, 0).await?;
        for s in page.items {
            left += 1;
            let grace = pod_grace(info, &s.obj, &DeleteOptions::default());
            if !meta::is_deleting(&s.obj) && meta::finalizers(&s.obj).is_empty() && grace == 0 {
                if objects.delete(&s.key, s.mod_revision).await?.is_some()
                    && info.resource == "services"
                {
                    services::release(objects, &s.key, &s.obj).await;
                }
            } else if !meta::is_deleting(&s.obj) {
                let mut o = s.obj.clone();
                mark_deleting(info, &mut o, &meta::finalizers(&s.obj), grace);
                objects.update(&s.key, &o, s.mod_revision).await?;
            }
        }
    }
    if left > 0 {
        return Ok(false);
    }
    let Some(cur) = terminating_namespace(objects, ns, uid).await? else {
        return Ok(true);
    };
    let fins: Vec<String> = meta::finalizers(&cur.obj)
        .into_iter()
        .filter(|f| f != "kubernetes")
        .collect();
    if fins.is_empty() {
        // Compare-and-swap on the revision just read: a lost race is
        // another pass (or a change), not success.
        return Ok(objects.delete(&cur.key, cur.mod_revision).await?.is_some());
    }
    if fins == meta::finalizers(&cur.obj) {
        // Only other finalizers hold it: nothing to write on this pass.
        return Ok(false);
    }
    let mut o = cur.obj.clone();
    meta::set_finalizers(&mut o, &fins);
    objects.update(&cur.key, &o, cur.mod_revision).await?;
    Ok(false)
}
