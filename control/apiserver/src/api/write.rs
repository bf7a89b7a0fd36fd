//! POST (create), PUT (update), PATCH and pod binding.
//!
//! Every write runs the same admission: the URL decides apiVersion, kind,
//! namespace and name; unknown fields are rejected (Strict), warned about
//! (Warn) or dropped (Ignore); defaults are applied; validation failures
//! are 422 with field paths. Nothing is written unless all of it passes.
//! Updates are compare-and-swap on the revision read: a stale
//! resourceVersion is 409, and a lost race without one is retried.

use std::sync::Arc;

use serde_json::{json, Value};

use super::read::fetch;
use super::{decode_body, service_accounts, services, Api, Reply, Req, Target};
use crate::admission::node_restriction::Op as NodeOp;
use crate::admission::quota::Created;
use crate::admission::reads::Reads;
use crate::admission::{self, Cause};
use crate::meta;
use crate::patch::{self, apply, PatchType};
use crate::resources::{ResourceInfo, Sub};
use crate::status::{ApiError, ApiResult};
use crate::storage::Stored;

/// Attempts at a write that keeps losing compare-and-swap races before the
/// request is answered 409 (only when the client set no resourceVersion).
const MAX_RETRIES: usize = 8;

/// Admissions of one create whose reads changed before its write, before
/// it is answered 409 (the first may be from a lagging replica's state).
const MAX_ADMISSIONS: usize = 4;

/// The field manager named by the request; without one, Kubernetes names
/// it after the user agent's program (`kubectl/v1.33 ...` → `kubectl`).
pub fn manager(r: &Req) -> String {
    if let Some(m) = r.query.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    let program = r.user_agent.split('/').next().unwrap_or("").trim();
    if program.is_empty() {
        "unknown".to_string()
    } else {
        program.chars().take(128).collect()
    }
}

fn dry_run(r: &Req) -> bool {
    r.query.get("dryRun").is_some_and(|d| d == "All")
}

/// apiVersion and kind must be the URL's. A body that leaves either out
/// gets the URL's, as Kubernetes' decoder defaults the group, version and
/// kind from the request (typed clients such as Python's `kubernetes` send
/// neither); one that states a different one is a 400.
fn check_kind(info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
    let Some(fields) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "the body must be a {} object, not {}",
            info.kind,
            short(obj)
        )));
    };
    let given = |f: &str| match fields.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::bad_request(format!(
            "couldn't get version/kind: Object '{}' must be a string, not {}",
            if f == "kind" { "Kind" } else { f },
            short(other)
        ))),
    };
    let (av, kind) = (given("apiVersion")?, given("kind")?);
    if let Some(av) = av.filter(|av| *av != info.api_version()) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            info.api_version()
        )));
    }
    if let Some(kind) = kind.filter(|k| k != info.kind) {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            info.kind
        )));
    }
    fields.insert("apiVersion".into(), json!(info.api_version()));
    fields.insert("kind".into(), json!(info.kind));
    Ok(())
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(200).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// Decode errors, not silently replaced: metadata must be an object and
/// its name and namespace strings.
fn check_metadata_types(t: &Target, obj: &Value) -> ApiResult<()> {
    if let Some(md) = obj.get("metadata").filter(|m| !m.is_null()) {
        let field = |f: &str| md.get(f).filter(|v| !v.is_null() && !v.is_string());
        let wrong = match md {
            Value::Object(_) => ["name", "namespace"]
                .into_iter()
                .find_map(|f| field(f).map(|v| (format!("metadata.{f}"), "a string", v))),
            other => Some(("metadata".to_string(), "an object", other)),
        };
        if let Some((path, want, got)) = wrong {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {path}: expected {want}, got {}",
                t.info.kind,
                t.info.version,
                t.info.kind,
                short(got)
            )));
        }
    }
    Ok(())
}

/// The namespace and name in the body must agree with the URL; the URL's
/// namespace is filled in when the body has none.
fn check_identity(t: &Target, obj: &mut Value, url_name: Option<&str>) -> ApiResult<()> {
    check_metadata_types(t, obj)?;
    let m = meta::meta_mut(obj);
    match (&t.namespace, m.get("namespace").and_then(Value::as_str)) {
        (Some(url), Some(body)) if !body.is_empty() && body != url => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ))
        }
        (Some(url), _) => {
            m.insert("namespace".into(), json!(url));
        }
        (None, _) => {
            m.remove("namespace");
        }
    }
    if t.info.namespaced && t.namespace.is_none() {
        return Err(ApiError::bad_request(format!(
            "{} are namespaced: the request must name a namespace",
            t.info.qualified()
        )));
    }
    if let Some(n) = url_name {
        let body = m.get("name").and_then(Value::as_str).unwrap_or("");
        if body.is_empty() {
            m.insert("name".into(), json!(n));
        } else if body != n {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body}) does not match the name on the URL ({n})"
            )));
        }
    }
    Ok(())
}

/// `fieldValidation`: unknown fields are an error (Strict), a warning
/// (Warn, the default) or silently dropped (Ignore); in every accepted case
/// they are not stored, as Kubernetes decodes into its typed structs.
fn field_validation(info: &ResourceInfo, obj: &mut Value, r: &Req) -> ApiResult<Vec<String>> {
    let mode = r
        .query
        .get("fieldValidation")
        .map_or("Warn", String::as_str);
    if !matches!(mode, "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation {mode:?} is not one of Strict, Warn, Ignore"
        )));
    }
    let cannot = |msg: String| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {msg}",
            info.kind, info.version, info.kind
        ))
    };
    let unknown = admission::unknown_fields(info.group, info.resource, obj).map_err(cannot)?;
    if unknown.is_empty() {
        return Ok(vec![]);
    }
    let texts: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field \"{p}\""))
        .collect();
    if mode == "Strict" {
        return Err(cannot(format!(
            "strict decoding error: {}",
            texts.join(", ")
        )));
    }
    for p in &unknown {
        remove_path(obj, p);
    }
    Ok(if mode == "Warn" { texts } else { vec![] })
}

/// Removes `a.b[0].c` from `obj`.
fn remove_path(obj: &mut Value, path: &str) {
    let mut segs: Vec<Seg> = Vec::new();
    for part in path.split('.') {
        let (field, idx) = match part.find('[') {
            Some(i) => (&part[..i], Some(&part[i..])),
            None => (part, None),
        };
        if !field.is_empty() {
            segs.push(Seg::Field(field.to_string()));
        }
        for ix in idx.unwrap_or("").split('[').filter(|s| !s.is_empty()) {
            if let Ok(n) = ix.trim_end_matches(']').parse() {
                segs.push(Seg::Index(n));
            }
        }
    }
    remove_segs(obj, &segs);
}

enum Seg {
    Field(String),
    Index(usize),
}

fn remove_segs(v: &mut Value, segs: &[Seg]) {
    match (segs, v) {
        ([Seg::Field(f)], Value::Object(m)) => {
            m.remove(f);
        }
        ([Seg::Field(f), rest @ ..], Value::Object(m)) => {
            if let Some(c) = m.get_mut(f) {
                remove_segs(c, rest);
            }
        }
        ([Seg::Index(i), rest @ ..], Value::Array(a)) if !rest.is_empty() => {
            if let Some(c) = a.get_mut(*i) {
                remove_segs(c, rest);
            }
        }
        _ => {}
    }
}

/// The status an object starts with: clients cannot create objects with a
/// status of their choosing (nodes excepted: the agent reports it).
fn initial_status(info: &ResourceInfo, obj: &mut Value) {
    if !info.has(Sub::Status) || info.resource == "nodes" {
        return;
    }
    let status = match info.resource {
        "pods" => json!({"phase": "Pending"}),
        "namespaces" => json!({"phase": "Active"}),
        "persistentvolumes" | "persistentvolumeclaims" => json!({"phase": "Pending"}),
        "services" => json!({"loadBalancer": {}}),
        _ => json!({}),
    };
    obj["status"] = status;
}

fn invalid(info: &ResourceInfo, obj: &Value, causes: Vec<Cause>) -> ApiResult<()> {
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(info, meta::name(obj), &causes))
}

/// Create-time metadata the server owns.
fn stamp_new(obj: &mut Value) -> ApiResult<()> {
    let m = meta::meta_mut(obj);
    if m.get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    m.remove("resourceVersion");
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
    m.insert("generation".into(), json!(1));
    Ok(())
}

/// Namespaced objects need a namespace that exists and is not terminating.
async fn check_namespace(api: &Api, t: &Target) -> ApiResult<()> {
    let Some(ns) = t.namespace.as_deref() else {
        return Ok(());
    };
    let info = crate::resources::find("", "v1", "namespaces").expect("namespaces are served");
    // Kubernetes checks from its cache and looks a miss up in the store:
    // the local read is free, the linearizable one only when it misses (a
    // namespace created a moment ago through another replica).
    let key = info.key(None, ns);
    let found = match api.objects.get_local(&key).await? {
        Some(n) => Some(n),
        None => api.objects.get(&key).await?,
    };
    let Some(n) = found else {
        return Err(ApiError::not_found(info, ns));
    };
    if meta::is_deleting(&n.obj) {
        return Err(ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            t.info.qualified(),
            meta::name(&n.obj)
        )));
    }
    Ok(())
}

/// RBAC objects may grant only what their writer holds
/// ([`crate::auth::escalation`]).
async fn escalation(api: &Api, t: &Target, r: &Req, obj: &Value) -> ApiResult<()> {
    if t.info.group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    let ns = t.namespace.as_deref().unwrap_or("");
    crate::auth::escalation::admit(&api.objects, r.user.as_ref(), t.info.resource, ns, obj).await
}

pub async fn create(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    let body = decode_body(r)?;
    let mgr = manager(r);
    let (obj, mut warnings) = create_object(api, t, body, r, Owner::Update(&mgr)).await?;
    warnings.extend(super::not_enforced::on_create(api, t, &obj).await);
    Ok(Reply::Json {
        code: 201,
        body: obj,
        warnings,
    })
}

/// Who is recorded as owning the fields of a new object.
#[derive(Clone, Copy)]
enum Owner<'a> {
    Update(&'a str),
    /// Server-side apply: the manager and its configuration.
    Apply(&'a str, &'a Value),
}

/// Admits and stores a new object; shared by POST and server-side apply.
///
/// Admission first reads what it decides by from this replica's applied
/// state, and the write checks that it still holds (see
/// [`admission::reads`]); when it did not, admission runs again from the
/// body as sent, reading linearizably. Dry runs read linearizably at once.
async fn create_object(
    api: &Arc<Api>,
    t: &Target,
    obj: Value,
    r: &Req,
    owner: Owner<'_>,
) -> ApiResult<(Value, Vec<String>)> {
    let mut reads = if dry_run(r) {
        Reads::Linearizable
    } else {
        Reads::Local
    };
    for _ in 0..MAX_ADMISSIONS {
        if let Some(done) = admit_and_store(api, t, obj.clone(), r, owner, reads).await? {
            return Ok(done);
        }
        reads = Reads::Linearizable;
    }
    let mut e = ApiError::conflict(t.info, meta::name(&obj));
    e.message = format!(
        "Operation cannot be fulfilled on {} \"{}\": the LimitRanges of its namespace kept changing while it was admitted; please try again",
        t.info.qualified(),
        meta::name(&obj)
    );
    Err(e)
}

/// One admission of a new object and its write; None when what admission
/// read changed before the write (nothing was written).
async fn admit_and_store(
    api: &Arc<Api>,
    t: &Target,
    mut obj: Value,
    r: &Req,
    owner: Owner<'_>,
    reads: Reads,
) -> ApiResult<Option<(Value, Vec<String>)>> {
    let info = t.info;
    check_kind(info, &mut obj)?;
    check_identity(t, &mut obj, None)?;
    let warnings = field_validation(info, &mut obj, r)?;
    let generate = meta::str_field(&obj, "generateName")
        .filter(|g| !g.is_empty())
        .map(str::to_string);
    if meta::name(&obj).is_empty() {
        if let Some(g) = &generate {
            meta::meta_mut(&mut obj).insert("name".into(), json!(meta::generated_name(g)));
        }
    }
    stamp_new(&mut obj)?;
    initial_status(info, &mut obj);
    if info.group == "certificates.k8s.io" {
        super::csr::stamp_requester(&mut obj, r.user.as_ref());
    }
    if info.group.is_empty() && info.resource == "persistentvolumeclaims" {
        super::default_class::assign(&api.objects, &mut obj).await?;
    }
    if info.group == "networking.k8s.io" && info.resource == "ingresses" {
        super::default_class::assign_ingress(&api.objects, &mut obj).await?;
    }
    admission::apply_defaults(info.group, info.resource, &mut obj);
    let limits = admission::limit_range::admit(&api.objects, info, &mut obj, reads).await?;
    admission::fill_zero_values(info.group, info.resource, &mut obj);
    invalid(
        info,
        &obj,
        admission::validate(info.group, info.resource, &obj),
    )?;
    escalation(api, t, r, &obj).await?;
    admission::node_restriction::admit(r.user.as_ref(), info, t.sub, NodeOp::Create(&obj))?;
    check_namespace(api, t).await?;
    service_accounts::admit_pod(api, t, &mut obj).await?;
    match owner {
        Owner::Update(m) => apply::record_update(info.kind, None, &mut obj, m, None),
        Owner::Apply(m, config) => apply::take_apply_ownership(info.kind, &mut obj, config, m),
    }
    if dry_run(r) {
        admission::quota::check(&api.objects, info, &obj).await?;
        return Ok(Some((obj, warnings)));
    }
    let guards: Vec<_> = limits.into_iter().collect();
    for _ in 0..MAX_RETRIES {
        let key = info.key(t.namespace.as_deref(), meta::name(&obj));
        let claims = match info.resource {
            "services" => {
                services::allocate(&api.objects, api.cfg.service_range, info, &key, &mut obj)
                    .await?
            }
            _ => vec![],
        };
        // Charged against the namespace's quotas in the same write.
        let created =
            admission::quota::create(&api.objects, info, &key, &obj, guards.clone(), reads).await;
        if let Ok(Created::Written(rev)) = created {
            crate::storage::set_resource_version(&mut obj, rev);
            return Ok(Some((obj, warnings)));
        }
        if !claims.is_empty() {
            services::release(&api.objects, &key, &obj).await;
        }
        if created? == Created::Stale {
            return Ok(None);
        }
        match &generate {
            Some(g) if meta::str_field(&obj, "name").is_some_and(|n| n.starts_with(g.as_str())) => {
                meta::meta_mut(&mut obj).insert("name".into(), json!(meta::generated_name(g)));
            }
            _ => break,
        }
    }
    Err(ApiError::already_exists(info, meta::name(&obj)))
}

/// How an update ended.
pub enum Updated {
    Written(Value),
    /// The compare-and-swap lost to another writer.
    Lost,
}

/// Merges what a client sent with what the server owns, admits the result
/// and writes it if it changed. `sub` Status takes only the status from
/// `new`; the main resource keeps the stored status.
pub async fn finish_update(
    api: &Api,
    t: &Target,
    cur: &Stored,
    mut new: Value,
    r: &Req,
    manager: &str,
) -> ApiResult<(Updated, Vec<String>)> {
    let info = t.info;
    check_kind(info, &mut new)?;
    check_identity(t, &mut new, t.name.as_deref())?;
    let warnings = field_validation(info, &mut new, r)?;
    // Server-side apply (no manager here) computed managedFields itself.
    let mut out = merge_owned(info, t.sub, &cur.obj, new, manager.is_empty());
    if info.resource == "services" {
        services::carry_over(&cur.obj, &mut out);
    }
    admission::apply_defaults(info.group, info.resource, &mut out);
    admission::fill_zero_values(info.group, info.resource, &mut out);
    let causes = admission::validate_update(info.group, info.resource, &out, &cur.obj);
    invalid(info, &out, causes)?;
    escalation(api, t, r, &out).await?;
    let op = NodeOp::Update {
        new: &out,
        old: &cur.obj,
    };
    admission::node_restriction::admit(r.user.as_ref(), info, t.sub, op)?;
    bump_generation(&cur.obj, &mut out);
    if meta::same_object(&out, &cur.obj) {
        return Ok((Updated::Written(cur.obj.clone()), warnings));
    }
    let sub = t.sub.map(|s| s.name());
    apply::record_update(info.kind, Some(&cur.obj), &mut out, manager, sub);
    if dry_run(r) {
        return Ok((Updated::Written(out), warnings));
    }
    // The last finalizer went: the object goes, unless it still has a
    // grace period to run (a pod its agent is stopping; the agent's own
    // grace-0 delete removes it).
    let graceful = out["metadata"]["deletionGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|g| g > 0);
    if meta::is_deleting(&out) && meta::finalizers(&out).is_empty() && !graceful {
        return finalize(api, cur, out).await.map(|u| (u, warnings));
    }
    match api.objects.update(&cur.key, &out, cur.mod_revision).await? {
        Some(rev) => {
            crate::storage::set_resource_version(&mut out, rev);
            Ok((Updated::Written(out), warnings))
        }
        None => Ok((Updated::Lost, warnings)),
    }
}

/// The last finalizer is gone from an object being deleted: delete it.
async fn finalize(api: &Api, cur: &Stored, out: Value) -> ApiResult<Updated> {
    match api.objects.delete(&cur.key, cur.mod_revision).await? {
        Some(_) => {
            if out["kind"] == "Service" {
                services::release(&api.objects, &cur.key, &out).await;
            }
            Ok(Updated::Written(out))
        }
        None => Ok(Updated::Lost),
    }
}

/// Fields the server owns come from the stored object: identity, deletion
/// state, and status or spec depending on the subresource written.
fn merge_owned(
    info: &ResourceInfo,
    sub: Option<Sub>,
    old: &Value,
    mut new: Value,
    keep_managed_fields: bool,
) -> Value {
    if sub == Some(Sub::Status) {
        let mut out = old.clone();
        out["status"] = new.get("status").cloned().unwrap_or(json!({}));
        return out;
    }
    if sub == Some(Sub::Approval) {
        return super::csr::merge_approval(old, &new);
    }
    let old_meta = meta::meta(old).cloned().unwrap_or_default();
    let m = meta::meta_mut(&mut new);
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "managedFields",
    ] {
        if f == "managedFields" && keep_managed_fields {
            continue;
        }
        match old_meta.get(f) {
            Some(v) => m.insert(f.into(), v.clone()),
            None => m.remove(f),
        };
    }
    if info.has(Sub::Status) {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                new.as_object_mut().map(|o| o.remove("status"));
            }
        }
    }
    new
}

/// A change outside status and metadata is a new generation.
fn bump_generation(old: &Value, new: &mut Value) {
    if meta::spec_part(old) == meta::spec_part(new) {
        return;
    }
    let g = meta::meta(old)
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    meta::meta_mut(new).insert("generation".into(), json!(g + 1));
}

/// A resourceVersion the client pinned (in the body or a patch).
fn precondition(obj: &Value, cur: &Stored) -> Option<bool> {
    let rv = meta::resource_version(obj)?;
    Some(rv == cur.mod_revision.to_string())
}

pub async fn update(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    let body = decode_body(r)?;
    let name = t.name.as_deref().unwrap_or("");
    for _ in 0..MAX_RETRIES {
        let cur = fetch(api, t).await?;
        let pinned = precondition(&body, &cur);
        if pinned == Some(false) {
            return Err(ApiError::conflict(t.info, name));
        }
        match finish_update(api, t, &cur, body.clone(), r, &manager(r)).await? {
            (Updated::Written(obj), warnings) => {
                return Ok(Reply::Json {
                    code: 200,
                    body: obj,
                    warnings,
                })
            }
            (Updated::Lost, _) if pinned.is_some() => break,
            (Updated::Lost, _) => continue,
        }
    }
    Err(ApiError::conflict(t.info, name))
}

pub async fn patch(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    let pt = PatchType::from_content_type(&r.content_type)?;
    if pt == PatchType::Apply {
        return server_side_apply(api, t, r).await;
    }
    let name = t.name.as_deref().unwrap_or("");
    for _ in 0..MAX_RETRIES {
        let cur = fetch(api, t).await?;
        let patched = patch::patch(t.info.kind, pt, &cur.obj, &r.body)?;
        let pinned = precondition(&patched, &cur);
        if pinned == Some(false) {
            return Err(ApiError::conflict(t.info, name));
        }
        match finish_update(api, t, &cur, patched, r, &manager(r)).await? {
            (Updated::Written(obj), warnings) => {
                return Ok(Reply::Json {
                    code: 200,
                    body: obj,
                    warnings,
                })
            }
            (Updated::Lost, _) => continue,
        }
    }
    Err(ApiError::conflict(t.info, name))
}

/// `application/apply-patch+yaml`: creates the object when absent (201),
/// otherwise merges the configuration with field ownership; a field owned
/// by another manager with a different value is a 409 unless `force`.
async fn server_side_apply(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    let mut config = decode_body(r)?;
    check_kind(t.info, &mut config)?;
    check_metadata_types(t, &config)?;
    let mgr = r
        .query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request("fieldManager is required for apply requests"))?;
    let force = super::route::flag(&r.query, "force");
    let name = t.name.as_deref().unwrap_or("");
    for _ in 0..MAX_RETRIES {
        let cur = match fetch(api, t).await {
            Ok(c) => c,
            Err(e) if e.code == 404 && t.sub.is_none() => {
                let mut obj = config.clone();
                check_identity(t, &mut obj, t.name.as_deref())?;
                let owner = Owner::Apply(&mgr, &config);
                let (obj, warnings) = create_object(api, t, obj, r, owner).await?;
                return Ok(Reply::Json {
                    code: 201,
                    body: obj,
                    warnings,
                });
            }
            Err(e) => return Err(e),
        };
        let merged = apply::server_side_apply(t.info.kind, &cur.obj, &config, &mgr, force)
            .map_err(|e| apply_error(t, e))?;
        match finish_update(api, t, &cur, merged, r, "").await? {
            (Updated::Written(obj), warnings) => {
                return Ok(Reply::Json {
                    code: 200,
                    body: obj,
                    warnings,
                })
            }
            (Updated::Lost, _) => continue,
        }
    }
    Err(ApiError::conflict(t.info, name))
}

fn apply_error(t: &Target, e: apply::ApplyError) -> ApiError {
    match e {
        apply::ApplyError::Conflicts(list) => {
            let causes: Vec<Value> = list
                .iter()
                .map(|(field, mgr)| {
                    json!({"reason": "FieldManagerConflict", "field": field,
                           "message": format!("conflict with \"{mgr}\"")})
                })
                .collect();
            let text: Vec<String> = list
                .iter()
                .map(|(f, m)| format!("conflict with \"{m}\": {f}"))
                .collect();
            let mut err = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    list.len(),
                    if list.len() == 1 { "" } else { "s" },
                    text.join(", ")
                ),
            );
            err.details = Some(json!({"name": t.name, "group": t.info.group,
                                      "kind": t.info.resource, "causes": causes}));
            err
        }
        apply::ApplyError::Invalid(m) => ApiError::bad_request(m),
    }
}

/// `POST pods/{name}/binding`: assigns a pod to a node, once.
pub async fn bind(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    let body = decode_body(r)?;
    let node = body["target"]["name"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            t.info,
            t.name.as_deref().unwrap_or(""),
            &[Cause {
                field: "target.name".into(),
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
            }],
        ));
    }
    let name = t.name.as_deref().unwrap_or("");
    for _ in 0..MAX_RETRIES {
        let cur = fetch(api, t).await?;
        let bound = cur.obj["spec"]["nodeName"].as_str().unwrap_or("");
        if !bound.is_empty() {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{bound}\""),
            ));
        }
        if meta::is_deleting(&cur.obj) {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        // A Binding names the pod instance it was decided for: a pod
        // deleted and recreated under the same name is not bound by it.
        let want_uid = body["metadata"]["uid"].as_str().unwrap_or("");
        if !want_uid.is_empty() && want_uid != meta::uid(&cur.obj) {
            return Err(ApiError::uid_precondition(want_uid, meta::uid(&cur.obj)));
        }
        let mut obj = cur.obj.clone();
        obj["spec"]["nodeName"] = json!(node);
        set_scheduled(&mut obj);
        match api.objects.update(&cur.key, &obj, cur.mod_revision).await? {
            Some(_) => {
                return Ok(Reply::json(
                    201,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            None => continue,
        }
    }
    Err(ApiError::conflict(t.info, name))
}

/// A binding also records PodScheduled=True in the same write, as
/// Kubernetes' binding handler does (replacing an earlier
/// PodScheduled=False from failed attempts).
fn set_scheduled(pod: &mut Value) {
    let cond = json!({"type": "PodScheduled", "status": "True",
        "lastProbeTime": null, "lastTransitionTime": meta::now_rfc3339()});
    let conds = &mut pod["status"]["conditions"];
    if !conds.is_array() {
        *conds = json!([]);
    }
    if let Some(list) = conds.as_array_mut() {
        list.retain(|c| c["type"] != "PodScheduled");
        list.insert(0, cond);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_path_handles_nested_lists() {
        let mut v = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "imagez": "x"}]}}}, "x": 1});
        remove_path(&mut v, "spec.template.spec.containers[0].imagez");
        remove_path(&mut v, "x");
        remove_path(&mut v, "spec.nothing[3].here");
        assert_eq!(
            v,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}})
        );
    }

    #[test]
    fn kind_checks_name_the_problem() {
        let info = crate::resources::find("apps", "v1", "deployments").unwrap();
        let mut wrong_version = json!({"apiVersion": "v1", "kind": "Deployment"});
        let e = check_kind(info, &mut wrong_version).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message.contains("expected API version (apps/v1)"),
            "{}",
            e.message
        );
        let mut wrong_kind = json!({"kind": "ReplicaSet"});
        let e = check_kind(info, &mut wrong_kind).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message.contains("the kind in the data (ReplicaSet)"),
            "{}",
            e.message
        );
        assert_eq!(check_kind(info, &mut json!([1])).unwrap_err().code, 400);
        let e = check_kind(info, &mut json!({"kind": 7})).unwrap_err();
        assert!(
            e.message.contains("'Kind' must be a string"),
            "{}",
            e.message
        );
    }

    #[test]
    fn missing_kind_and_version_come_from_the_url() {
        let info = crate::resources::find("apps", "v1", "deployments").unwrap();
        for body in [
            json!({"metadata": {"name": "d"}}),
            json!({"apiVersion": "apps/v1", "metadata": {"name": "d"}}),
            json!({"kind": "Deployment", "metadata": {"name": "d"}}),
            json!({"apiVersion": "", "kind": null, "metadata": {"name": "d"}}),
        ] {
            let mut obj = body.clone();
            check_kind(info, &mut obj).unwrap_or_else(|e| panic!("{body}: {}", e.message));
            assert_eq!(obj["apiVersion"], "apps/v1", "{body}");
            assert_eq!(obj["kind"], "Deployment", "{body}");
            assert_eq!(obj["metadata"]["name"], "d");
        }
        let core = crate::resources::find("", "v1", "namespaces").unwrap();
        let mut ns = json!({"metadata": {"name": "x"}});
        check_kind(core, &mut ns).unwrap();
        assert_eq!(ns["apiVersion"], "v1");
        assert_eq!(ns["kind"], "Namespace");
    }

    #[test]
    fn generation_moves_with_spec_only() {
        let old =
            json!({"metadata": {"generation": 3}, "spec": {"replicas": 1}, "status": {"x": 1}});
        let mut same = json!({"metadata": {"generation": 3, "labels": {"a": "b"}}, "spec": {"replicas": 1}, "status": {"x": 2}});
        bump_generation(&old, &mut same);
        assert_eq!(same["metadata"]["generation"], 3);
        let mut changed = json!({"metadata": {"generation": 3}, "spec": {"replicas": 2}});
        bump_generation(&old, &mut changed);
        assert_eq!(changed["metadata"]["generation"], 4);
    }
}
