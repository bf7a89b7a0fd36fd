//! `POST pods/{name}/eviction`: a graceful delete that honours the pod's
//! PodDisruptionBudget (Kubernetes' `pkg/registry/core/pod/storage/eviction.go`).
//!
//! Guarantees: a pod covered by a budget is only deleted after the budget's
//! `status.disruptionsAllowed` was decremented (and the pod recorded in
//! `status.disruptedPods`) by a compare-and-swap on the budget, so two
//! concurrent evictions can never both spend the last allowed disruption.
//! A refused eviction is 429 TooManyRequests with a `DisruptionBudget`
//! cause, which `kubectl drain` retries. Pods that are not running
//! (pending, finished) or already terminating are evicted without
//! consulting a budget, as in Kubernetes. `dryRun=All` checks everything
//! and writes nothing.

use std::sync::Arc;

use serde_json::{json, Value};

use super::delete::{delete_one, DeleteOptions};
use super::read::fetch;
use super::{decode_body, Api, Reply, Req, Target};
use crate::meta;
use crate::resources::{self, ResourceInfo};
use crate::selector::LabelSelector;
use crate::status::{ApiError, ApiResult};
use crate::storage::Stored;

/// Attempts at the budget's compare-and-swap (or the pod's delete) before
/// the eviction is answered 429 for the client to retry.
const MAX_RETRIES: usize = 8;
/// Kubernetes refuses evictions when this many are still unconfirmed by
/// the disruption controller.
const MAX_DISRUPTED_PODS: usize = 2000;
/// Kubernetes' words for a refused eviction.
const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// What the eviction decided about the pod's budget.
enum Verdict {
    /// No budget applies: delete.
    Free,
    /// Spend one disruption of this budget (already updated), then delete.
    Spend(Stored),
}

pub async fn evict(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    let body = decode_body(r)?;
    // A missing kind is the URL's (typed clients omit it), as for writes.
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
    if !body.is_object() || !matches!(kind, "" | "Eviction") {
        return Err(ApiError::bad_request(
            "the body of an eviction must be a policy/v1 Eviction",
        ));
    }
    let name = t.name.as_deref().unwrap_or("");
    let named = body["metadata"]["name"].as_str().unwrap_or("");
    if !named.is_empty() && named != name {
        return Err(ApiError::bad_request(format!(
            "name in URL does not match name in Eviction object: {name} != {named}"
        )));
    }
    let opts = options(&body, r);
    let mut verdict = None;
    for _ in 0..MAX_RETRIES {
        let cur = fetch(api, t).await?;
        check_uid(&cur, &opts)?;
        crate::admission::node_restriction::admit(
            r.user.as_ref(),
            t.info,
            t.sub,
            crate::admission::node_restriction::Op::Evict(&cur.obj),
        )?;
        if let Some(v) = decide(api, &cur, &opts).await? {
            verdict = Some(v);
            break;
        }
    }
    let Some(verdict) = verdict else {
        return Err(too_many(
            "the pod's disruption budget kept changing; try again",
            None,
        ));
    };
    if let Verdict::Spend(pdb) = &verdict {
        tracing::debug!(
            pod = name,
            budget = meta::name(&pdb.obj),
            "eviction spends a disruption"
        );
    }
    delete_pod(api, t, &opts).await
}

/// `deleteOptions` of the Eviction, plus `?dryRun=All`.
fn options(body: &Value, r: &Req) -> DeleteOptions {
    let d = &body["deleteOptions"];
    let dry = d["dryRun"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "All"))
        || r.query.get("dryRun").is_some_and(|x| x == "All");
    DeleteOptions {
        grace_period_s: d["gracePeriodSeconds"].as_i64(),
        uid: d["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: d["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
        dry_run: dry,
        ..Default::default()
    }
}

fn check_uid(cur: &Stored, opts: &DeleteOptions) -> ApiResult<()> {
    match &opts.uid {
        Some(uid) if uid != meta::uid(&cur.obj) => {
            Err(ApiError::uid_precondition(uid, meta::uid(&cur.obj)))
        }
        _ => Ok(()),
    }
}

/// Ok(None) when the budget's compare-and-swap lost (look again).
async fn decide(api: &Api, pod: &Stored, opts: &DeleteOptions) -> ApiResult<Option<Verdict>> {
    if ignores_budgets(&pod.obj) {
        return Ok(Some(Verdict::Free));
    }
    let mut budgets = covering_budgets(api, &pod.obj).await?;
    let pdb = match budgets.len() {
        0 => return Ok(Some(Verdict::Free)),
        1 => budgets.remove(0),
        _ => {
            return Err(ApiError::internal(
                "Internal error occurred: This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ))
        }
    };
    if unhealthy_may_go(&pod.obj, &pdb.obj) {
        return Ok(Some(Verdict::Free));
    }
    let spent = spend(&pdb.obj, meta::name(&pod.obj))?;
    if opts.dry_run {
        return Ok(Some(Verdict::Spend(pdb)));
    }
    match api
        .objects
        .update(&pdb.key, &spent, pdb.mod_revision)
        .await?
    {
        Some(_) => Ok(Some(Verdict::Spend(Stored { obj: spent, ..pdb }))),
        None => Ok(None),
    }
}

/// Pending, finished or terminating pods hold nothing up: a budget
/// protects running pods only.
fn ignores_budgets(pod: &Value) -> bool {
    meta::is_deleting(pod)
        || matches!(
            pod["status"]["phase"].as_str(),
            None | Some("Pending" | "Succeeded" | "Failed")
        )
}

/// The budgets in the pod's namespace whose selector matches it (a budget
/// without a selector selects nothing; an empty one selects every pod).
async fn covering_budgets(api: &Api, pod: &Value) -> ApiResult<Vec<Stored>> {
    let info = pdb_info();
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let page = api.objects.list(&info.prefix(Some(ns)), None, 0, 0).await?;
    Ok(page
        .items
        .into_iter()
        .filter(|b| {
            let sel = &b.obj["spec"]["selector"];
            !sel.is_null()
                && LabelSelector::from_json(sel).is_ok_and(|s| s.matches(meta::labels(pod)))
        })
        .collect())
}

fn pdb_info() -> &'static ResourceInfo {
    resources::find("policy", "v1", "poddisruptionbudgets").expect("PDBs are served")
}

fn pod_is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// An unready pod does not count as healthy, so evicting it costs the
/// budget nothing: always with `AlwaysAllow`, and with the default
/// `IfHealthyBudget` when the budget is currently met.
fn unhealthy_may_go(pod: &Value, pdb: &Value) -> bool {
    if pod_is_ready(pod) {
        return false;
    }
    let s = &pdb["status"];
    match pdb["spec"]["unhealthyPodEvictionPolicy"].as_str() {
        Some("AlwaysAllow") => true,
        _ => {
            let desired = s["desiredHealthy"].as_i64().unwrap_or(0);
            desired > 0 && s["currentHealthy"].as_i64().unwrap_or(0) >= desired
        }
    }
}

/// The budget after spending one disruption on `pod_name`; 429 when it has
/// none to spend (or has not been processed since its last change).
fn spend(pdb: &Value, pod_name: &str) -> ApiResult<Value> {
    let name = meta::name(pdb);
    let s = &pdb["status"];
    let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(0);
    if s["observedGeneration"].as_i64().unwrap_or(0) < generation {
        let cause = format!("The disruption budget {name} is still being processed by the server.");
        return Err(too_many(REFUSED, Some(&cause)));
    }
    let allowed = s["disruptionsAllowed"].as_i64().unwrap_or(0);
    if allowed < 0 {
        return Err(forbidden(name, "pdb disruptions allowed is negative"));
    }
    let disrupted = s["disruptedPods"].as_object().map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(forbidden(
            name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        let cause = format!(
            "The disruption budget {name} needs {} healthy pods and has {} currently",
            s["desiredHealthy"].as_i64().unwrap_or(0),
            s["currentHealthy"].as_i64().unwrap_or(0)
        );
        return Err(too_many(REFUSED, Some(&cause)));
    }
    let mut out = pdb.clone();
    out["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if !out["status"]["disruptedPods"].is_object() {
        out["status"]["disruptedPods"] = json!({});
    }
    out["status"]["disruptedPods"][pod_name] = json!(meta::now_rfc3339());
    Ok(out)
}

/// 429 TooManyRequests, with a `DisruptionBudget` cause when one refused.
fn too_many(message: &str, cause: Option<&str>) -> ApiError {
    let mut e = ApiError::new(429, "TooManyRequests", message);
    let causes: Vec<Value> = cause
        .map(|c| json!({"reason": "DisruptionBudget", "message": c}))
        .into_iter()
        .collect();
    e.details = Some(json!({"causes": causes}));
    e
}

fn forbidden(pdb_name: &str, why: &str) -> ApiError {
    let mut e = ApiError::forbidden(format!(
        "poddisruptionbudget.policy \"{pdb_name}\" is forbidden: {why}"
    ));
    e.details = Some(json!({"name": pdb_name, "group": "policy", "kind": "poddisruptionbudget"}));
    e
}

/// Deletes the pod gracefully (the budget, if any, is already charged).
async fn delete_pod(api: &Arc<Api>, t: &Target, opts: &DeleteOptions) -> ApiResult<Reply> {
    let name = t.name.as_deref().unwrap_or("");
    for _ in 0..MAX_RETRIES {
        let cur = fetch(api, t).await?;
        check_uid(&cur, opts)?;
        if delete_one(api, t.info, &cur, opts).await?.is_some() {
            return Ok(Reply::json(
                201,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ));
        }
    }
    Err(ApiError::conflict(t.info, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(allowed: i64, observed: i64, generation: i64) -> Value {
        json!({"metadata": {"name": "b", "generation": generation},
               "spec": {"minAvailable": 2},
               "status": {"disruptionsAllowed": allowed, "observedGeneration": observed,
                          "currentHealthy": 2, "desiredHealthy": 2, "expectedPods": 2}})
    }

    #[test]
    fn no_disruption_left_is_429_with_a_budget_cause() {
        let e = spend(&pdb(0, 1, 1), "p").unwrap_err();
        assert_eq!((e.code, e.reason), (429, "TooManyRequests"));
        assert_eq!(e.message, REFUSED);
        let cause = &e.details.unwrap()["causes"][0];
        assert_eq!(cause["reason"], "DisruptionBudget");
        assert_eq!(
            cause["message"],
            "The disruption budget b needs 2 healthy pods and has 2 currently"
        );
    }

    #[test]
    fn an_unobserved_budget_is_429() {
        let e = spend(&pdb(1, 1, 2), "p").unwrap_err();
        assert_eq!(e.code, 429);
        assert!(e.details.unwrap()["causes"][0]["message"]
            .as_str()
            .unwrap()
            .contains("still being processed"));
    }

    #[test]
    fn spending_decrements_and_records_the_pod() {
        let out = spend(&pdb(2, 1, 1), "p").unwrap();
        assert_eq!(out["status"]["disruptionsAllowed"], 1);
        assert!(out["status"]["disruptedPods"]["p"].is_string());
    }

    #[test]
    fn only_running_pods_consult_budgets() {
        for phase in ["Pending", "Succeeded", "Failed"] {
            assert!(ignores_budgets(&json!({"status": {"phase": phase}})));
        }
        assert!(!ignores_budgets(&json!({"status": {"phase": "Running"}})));
        assert!(ignores_budgets(
            &json!({"metadata": {"deletionTimestamp": "x"},
                                        "status": {"phase": "Running"}})
        ));
    }

    #[test]
    fn unready_pods_go_when_the_budget_is_met() {
        let pod = json!({"status": {"phase": "Running"}});
        assert!(unhealthy_may_go(&pod, &pdb(0, 1, 1)));
        let mut short = pdb(0, 1, 1);
        short["status"]["currentHealthy"] = json!(1);
        assert!(!unhealthy_may_go(&pod, &short));
        short["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        assert!(unhealthy_may_go(&pod, &short));
    }
}
