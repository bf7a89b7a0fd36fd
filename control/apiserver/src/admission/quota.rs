//! ResourceQuota admission (Kubernetes' `ResourceQuota` admission plugin):
//! a create that would take a namespace past a quota's `spec.hard` is
//! refused with 403 `exceeded quota: q, requested: pods=1, used: pods=2,
//! limited: pods=2`, and nothing is written.
//!
//! Usage is counted from the namespace's current objects (a linearizable
//! list), not trusted from `status.used`, so a quota created a moment ago
//! or a controller that lags cannot let too much in. Concurrency: the new
//! object and every quota it is charged against are written in one store
//! transaction that also compares each quota's revision; two creates that
//! counted the same usage cannot both commit, the loser counts again. The
//! charge and the object are atomic, so no charge is ever left without its
//! object. Remaining gap: updates (a PVC resize, a pod resize) are not
//! charged; only creates are admitted against quota.

use serde_json::{json, Value};

use crate::meta;
use crate::resources::{self, ResourceInfo};
use crate::status::{ApiError, ApiResult};
use crate::storage::{Objects, Stored};
use keel_apimachinery::quota::{self as q, Usage};

/// Attempts at charging quotas that keep changing under us before the
/// create is answered 409.
const MAX_ATTEMPTS: usize = 16;

fn quotas_info() -> &'static ResourceInfo {
    resources::find("", "v1", "resourcequotas").expect("resourcequotas are served")
}

/// Creates `obj` at `key` charged against the quotas of its namespace.
/// Ok(None) when `key` already exists (as [`Objects::create`]); 403 when a
/// quota would be exceeded; 409 when the quotas kept changing.
pub async fn create(
    objects: &Objects,
    info: &ResourceInfo,
    key: &str,
    obj: &Value,
) -> ApiResult<Option<i64>> {
    let mut last = String::new();
    for _ in 0..MAX_ATTEMPTS {
        let charged = charges(objects, info, obj).await?;
        if charged.is_empty() {
            return objects.create(key, obj).await;
        }
        if let Some(rev) = objects.create_with(key, obj, &charged).await? {
            return Ok(Some(rev));
        }
        if objects.get(key).await?.is_some() {
            return Ok(None);
        }
        last = meta::name(&charged[0].obj).to_string();
    }
    Err(ApiError::conflict(quotas_info(), &last))
}

/// The admission check alone (for dry runs): Ok when `obj` fits every quota.
pub async fn check(objects: &Objects, info: &ResourceInfo, obj: &Value) -> ApiResult<()> {
    charges(objects, info, obj).await.map(|_| ())
}

/// The quotas `obj` is charged against, each with `status.used` raised by
/// what it charges (to be written with the object); 403 when one would be
/// exceeded or demands requests the pod does not state.
async fn charges(objects: &Objects, info: &ResourceInfo, obj: &Value) -> ApiResult<Vec<Stored>> {
    let Some(ns) = obj["metadata"]["namespace"]
        .as_str()
        .filter(|_| info.namespaced)
    else {
        return Ok(vec![]);
    };
    let quotas = objects
        .list(&quotas_info().prefix(Some(ns)), None, 0, 0)
        .await?
        .items;
    if quotas.is_empty() {
        return Ok(vec![]);
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
            current = Some(namespace_objects(objects, info, ns).await?);
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
    Ok(out)
}

fn scopes(quota: &Value) -> Vec<&str> {
    quota["spec"]["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Every object of `info`'s kind in `ns`, read linearizably.
async fn namespace_objects(
    objects: &Objects,
    info: &ResourceInfo,
    ns: &str,
) -> ApiResult<Vec<Value>> {
    let page = objects.list(&info.prefix(Some(ns)), None, 0, 0).await?;
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
