//! ResourceQuota admission (Kubernetes' `ResourceQuota` admission plugin):
//! a create that would take a namespace past a quota's `spec.hard` is
//! refused with 403 `exceeded quota: q, requested: pods=1, used: pods=2,
//! limited: pods=2`, and nothing is written.
//!
//! Usage is counted from the namespace's current objects, not trusted from
//! `status.used`, so a quota created a moment ago or a controller that
//! lags cannot let too much in. Concurrency: the new object and every
//! quota it is charged against are written in one store transaction that
//! also compares each quota's revision; two creates that counted the same
//! usage cannot both commit, the loser counts again. The charge and the
//! object are atomic, so no charge is ever left without its object.
//!
//! Reads: the quotas and the objects they count are read from this
//! replica's applied state, and the write is guarded (see
//! [`super::reads`]): it commits only if the namespace's quotas are still
//! exactly those read (none created, changed or deleted since the read
//! revision), else the quotas are counted again from linearizable reads.
//! The counted objects need no guard of their own: they are read after the
//! quotas, so at a revision no older than each quota's last change, and an
//! object created after that read which counts toward a quota was charged
//! against it by its own create (whose guard made sure it saw the quota),
//! which changed the quota's revision and fails this write. Objects
//! deleted since the read only make the count too high, and a 403 from a
//! local read is confirmed from linearizable reads before it is answered.
//! Dry runs read linearizably.
//! Remaining gap: updates (a PVC resize, a pod resize) are not charged;
//! only creates are admitted against quota.

use serde_json::{json, Value};

use super::reads::{self, Reads};
use crate::meta;
use crate::resources::{self, ResourceInfo};
use crate::status::{ApiError, ApiResult};
use crate::storage::{Guard, Objects, Stored};
use keel_apimachinery::quota::{self as q, Usage};

/// Attempts at charging quotas that keep changing under us before the
/// create is answered 409.
const MAX_ATTEMPTS: usize = 16;

fn quotas_info() -> &'static ResourceInfo {
    resources::find("", "v1", "resourcequotas").expect("resourcequotas are served")
}

/// How a guarded create ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// Written at this revision.
    Written(i64),
    /// `key` already exists; nothing was written.
    Exists,
    /// One of the caller's guards no longer holds: what the caller admitted
    /// from is gone, so it must admit again (from linearizable reads).
    Stale,
}

/// Creates `obj` at `key` charged against the quotas of its namespace,
/// the quotas read as `reads` says, provided `guards` (what the caller's
/// own admission read) still hold. 403 when a quota would be exceeded;
/// 409 when the quotas kept changing.
///
/// A failed write (a charged quota changed, a guard failed, the key
/// exists) is followed by a linearizable look: Exists if the key is there,
/// Stale if a caller's guard no longer reads the same, else the quotas are
/// counted again from linearizable reads.
pub async fn create(
    objects: &Objects,
    info: &ResourceInfo,
    key: &str,
    obj: &Value,
    guards: Vec<Guard>,
    reads: Reads,
) -> ApiResult<Created> {
    let mut guards = guards;
    let mut reads = reads;
    let mut last = String::new();
    for _ in 0..MAX_ATTEMPTS {
        let (charged, own) = charges(objects, info, obj, reads).await?;
        let mut all = guards.clone();
        all.extend(own);
        if let Some(rev) = objects.create_with(key, obj, &charged, &all).await? {
            return Ok(Created::Written(rev));
        }
        if objects.get(key).await?.is_some() {
            return Ok(Created::Exists);
        }
        if !reads::still_hold(objects, &mut guards).await? {
            return Ok(Created::Stale);
        }
        reads = Reads::Linearizable;
        if let Some(q) = charged.first() {
            last = meta::name(&q.obj).to_string();
        }
    }
    Err(ApiError::conflict(quotas_info(), &last))
}

/// The admission check alone (for dry runs, so from linearizable reads):
/// Ok when `obj` fits every quota.
pub async fn check(objects: &Objects, info: &ResourceInfo, obj: &Value) -> ApiResult<()> {
    charges(objects, info, obj, Reads::Linearizable)
        .await
        .map(|_| ())
}

/// [`charges_from`] as `reads` says; a refusal from a local read is
/// confirmed from linearizable reads before it is answered.
async fn charges(
    objects: &Objects,
    info: &ResourceInfo,
    obj: &Value,
    reads: Reads,
) -> ApiResult<(Vec<Stored>, Option<Guard>)> {
    match charges_from(objects, info, obj, reads).await {
        Err(e) if e.code == 403 && reads == Reads::Local => {
            charges_from(objects, info, obj, Reads::Linearizable).await
        }
        done => done,
    }
}

/// The quotas `obj` is charged against, each with `status.used` raised by
/// what it charges (to be written with the object), and the guard of the
/// namespace's quotas (None for cluster-scoped kinds); 403 when one would
/// be exceeded or demands requests the pod does not state.
async fn charges_from(
    objects: &Objects,
    info: &ResourceInfo,
    obj: &Value,
    reads: Reads,
) -> ApiResult<(Vec<Stored>, Option<Guard>)> {
    let Some(ns) = obj["metadata"]["namespace"]
        .as_str()
        .filter(|_| info.namespaced)
    else {
        return Ok((vec![], None));
    };
    let (page, guard) = reads::list(objects, &quotas_info().prefix(Some(ns)), reads).await?;
    let quotas = page.items;
    if quotas.is_empty() {
        return Ok((vec![], Some(guard)));
    }
    let requested = q::usage(info.group, info.resource, obj);
    let mut current: Option<Vec<Value>> = None;
    let mut out = Vec::new();
    for quota in quotas {
        if !q::scopes_match(&scopes(&quota.obj), info.resource, obj) {
            continue;
        }
        let hard = q::parse_list(&quota.obj["spec"]["hard"]);
        if info.resource == "pods" && info.group.is_empty() {
            if let Some(missing) = q::missing_constraints(obj, hard.keys().map(String::as_str)) {
                let why = format!("failed quota: {}: {missing}", meta::name(&quota.obj));
                return Err(forbidden(info, obj, &why));
            }
        }
        let charged: Usage = requested
            .iter()
            .filter(|(k, _)| hard.contains_key(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if charged.is_empty() {
            continue;
        }
        if current.is_none() {
            current = Some(namespace_objects(objects, info, ns, reads).await?);
        }
        let used = used_by(
            current.as_deref().unwrap_or_default(),
            info,
            &quota.obj,
            &charged,
        );
        exceeded(info, obj, &quota.obj, &charged, &used, &hard)?;
        out.push(with_used(quota, &charged, &used));
    }
    Ok((out, Some(guard)))
}

fn scopes(quota: &Value) -> Vec<&str> {
    quota["spec"]["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Every object of `info`'s kind in `ns`, read as `reads` says (after
/// the quotas: a local read is never older than the quotas read before it,
/// see the module docs for why it needs no guard of its own).
async fn namespace_objects(
    objects: &Objects,
    info: &ResourceInfo,
    ns: &str,
    reads: Reads,
) -> ApiResult<Vec<Value>> {
    let (page, _) = reads::list(objects, &info.prefix(Some(ns)), reads).await?;
    Ok(page.items.into_iter().map(|s| s.obj).collect())
}

/// What the objects the quota covers use of the names in `charged`.
fn used_by(current: &[Value], info: &ResourceInfo, quota: &Value, charged: &Usage) -> Usage {
    let scopes = scopes(quota);
    let mut used: Usage = charged.keys().map(|k| (k.clone(), 0)).collect();
    for o in current
        .iter()
        .filter(|o| q::scopes_match(&scopes, info.resource, o))
    {
        for (k, v) in q::usage(info.group, info.resource, o) {
            if let Some(u) = used.get_mut(&k) {
                *u += v;
            }
        }
    }
    used
}

/// 403 naming the quota and, for each exceeded name only, what was
/// requested, used and allowed.
fn exceeded(
    info: &ResourceInfo,
    obj: &Value,
    quota: &Value,
    charged: &Usage,
    used: &Usage,
    hard: &Usage,
) -> ApiResult<()> {
    let over: Vec<&String> = charged
        .iter()
        .filter(|(k, v)| used.get(*k).copied().unwrap_or(0) + **v > hard[*k])
        .map(|(k, _)| k)
        .collect();
    if over.is_empty() {
        return Ok(());
    }
    let mask = |u: &Usage| -> Usage {
        over.iter()
            .map(|k| ((*k).clone(), u.get(*k).copied().unwrap_or(0)))
            .collect()
    };
    let why = format!(
        "exceeded quota: {}, requested: {}, used: {}, limited: {}",
        meta::name(quota),
        q::pretty(&mask(charged)),
        q::pretty(&mask(used)),
        q::pretty(&mask(hard)),
    );
    Err(forbidden(info, obj, &why))
}

/// The quota with `status.hard` from its spec and `status.used` raised to
/// `used + charged` for the charged names (other names keep what the
/// controller last wrote).
fn with_used(mut quota: Stored, charged: &Usage, used: &Usage) -> Stored {
    let hard = quota.obj["spec"]["hard"].clone();
    let status = &mut quota.obj["status"];
    if !status.is_object() {
        *status = json!({});
    }
    status["hard"] = hard;
    if !status["used"].is_object() {
        status["used"] = json!({});
    }
    for (k, v) in charged {
        let total = used.get(k).copied().unwrap_or(0) + v;
        status["used"][k] = json!(q::format_quantity(k, total));
    }
    quota
}

/// `pods "p" is forbidden: <why>`, as Kubernetes' admission words it.
pub(crate) fn forbidden(info: &ResourceInfo, obj: &Value, why: &str) -> ApiError {
    let name = meta::name(obj);
    let mut e = ApiError::forbidden(format!(
        "{} \"{name}\" is forbidden: {why}",
        info.qualified()
    ));
    e.details = Some(json!({"name": name, "group": info.group, "kind": info.resource}));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceInfo {
        resources::find("", "v1", "pods").unwrap()
    }

    fn pod(name: &str, cpu: Option<&str>) -> Value {
        let resources = match cpu {
            Some(c) => json!({"requests": {"cpu": c}}),
            None => json!({}),
        };
        json!({"metadata": {"name": name, "namespace": "d"},
               "spec": {"containers": [{"name": "c", "resources": resources}]},
               "status": {"phase": "Running"}})
    }

    #[test]
    fn the_message_names_only_what_is_exceeded() {
        let quota = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2", "requests.cpu": "4"}}});
        let hard = q::parse_list(&quota["spec"]["hard"]);
        let p = pod("p3", Some("1"));
        let charged: Usage = q::usage("", "pods", &p)
            .into_iter()
            .filter(|(k, _)| hard.contains_key(k))
            .collect();
        let current = vec![pod("p1", Some("1")), pod("p2", Some("1"))];
        let used = used_by(&current, pods(), &quota, &charged);
        let e = exceeded(pods(), &p, &quota, &charged, &used, &hard).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"p3\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        );
        let stored = Stored {
            key: "k".into(),
            obj: quota.clone(),
            mod_revision: 3,
        };
        let one = vec![pod("p1", Some("1"))];
        let used = used_by(&one, pods(), &quota, &charged);
        assert!(exceeded(pods(), &p, &quota, &charged, &used, &hard).is_ok());
        let charged_quota = with_used(stored, &charged, &used);
        assert_eq!(
            charged_quota.obj["status"],
            json!({"hard": {"pods": "2", "requests.cpu": "4"}, "used": {"pods": "2", "requests.cpu": "2"}})
        );
    }
}
