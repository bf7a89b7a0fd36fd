//! The RollingUpdate strategy: the new ReplicaSet grows while the total
//! stays within `replicas + maxSurge`, and old ReplicaSets shrink only as
//! far as keeps `replicas - maxUnavailable` pods available.
//!
//! Availability is read from ReplicaSet status, capped at each
//! ReplicaSet's `spec.replicas`: right after a scale-down the status can
//! still count the pods being removed, and trusting it would let the next
//! step remove more than `maxUnavailable` allows.

use serde_json::Value;

use super::{Controller, State};
use crate::client::ClientResult;
use crate::reconcile::int_at;

/// An int-or-percent of `total` (`25%` of 10 is 3 when rounding up, 2
/// when down); anything unparsable counts as 0.
pub(super) fn resolve(v: &Value, total: i64, round_up: bool) -> i64 {
    if let Some(n) = v.as_i64() {
        return n.max(0);
    }
    let Some(pct) = v
        .as_str()
        .and_then(|s| s.strip_suffix('%'))
        .and_then(|p| p.parse::<i64>().ok())
    else {
        return 0;
    };
    let scaled = pct.max(0).saturating_mul(total.max(0));
    match round_up {
        true => (scaled + 99) / 100,
        false => scaled / 100,
    }
}

fn is_rolling(d: &Value) -> bool {
    d["spec"]["strategy"]["type"].as_str() != Some("Recreate")
}

/// (maxSurge, maxUnavailable) of a rolling Deployment; both zero would
/// never progress, so unavailable becomes 1 (Kubernetes' `ResolveFenceposts`).
fn fenceposts(d: &Value) -> (i64, i64) {
    let replicas = int_at(d, "/spec/replicas").max(0);
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let pct25 = Value::String("25%".into());
    let surge_v = ru
        .get("maxSurge")
        .filter(|v| !v.is_null())
        .unwrap_or(&pct25);
    let unavail_v = ru
        .get("maxUnavailable")
        .filter(|v| !v.is_null())
        .unwrap_or(&pct25);
    let surge = resolve(surge_v, replicas, true);
    let unavailable = resolve(unavail_v, replicas, false);
    match (surge, unavailable) {
        (0, 0) => (0, 1),
        other => other,
    }
}

/// Extra pods allowed above `replicas` (0 for Recreate).
pub(super) fn max_surge(d: &Value) -> i64 {
    match is_rolling(d) {
        true => fenceposts(d).0,
        false => 0,
    }
}

/// Pods that may be unavailable during a rollout, at most `replicas`.
pub(super) fn max_unavailable(d: &Value) -> i64 {
    let replicas = int_at(d, "/spec/replicas").max(0);
    if !is_rolling(d) || replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

/// The size the new ReplicaSet may grow to, given the other ReplicaSets'
/// total `others` (Kubernetes' `NewRSNewReplicas`).
pub(super) fn new_rs_replicas(d: &Value, others: i64, current: i64) -> i64 {
    let replicas = int_at(d, "/spec/replicas").max(0);
    if !is_rolling(d) {
        return replicas;
    }
    let max_total = replicas + max_surge(d);
    let total = others + current;
    if total >= max_total {
        return current;
    }
    current + (max_total - total).min((replicas - current).max(0))
}

/// Available pods of `rs` that can be relied on (see the module doc).
pub(super) fn available(rs: &Value) -> i64 {
    int_at(rs, "/status/availableReplicas")
        .min(int_at(rs, "/spec/replicas"))
        .max(0)
}

fn spec_total<'a>(rses: impl Iterator<Item = &'a Value>) -> i64 {
    rses.map(|rs| int_at(rs, "/spec/replicas")).sum()
}

impl Controller {
    /// One rolling step: grow the new ReplicaSet, else shrink old ones,
    /// else (complete) prune history.
    pub(super) async fn rollout_rolling(&self, st: &mut State) -> ClientResult<()> {
        self.sync_revision(st, true).await?;
        if self.reconcile_new_rs(st).await? || self.reconcile_old_rses(st).await? {
            return Ok(());
        }
        if super::status::is_complete(&st.d, &st.d["status"]) {
            self.cleanup(st).await?;
        }
        Ok(())
    }

    /// Moves the new ReplicaSet toward `replicas` within the surge limit;
    /// true when it was scaled.
    pub(super) async fn reconcile_new_rs(&self, st: &mut State) -> ClientResult<bool> {
        let want = st.replicas();
        let others = spec_total(st.old.iter());
        let Some(rs) = st.new_rs.as_mut() else {
            return Ok(false);
        };
        let current = int_at(rs, "/spec/replicas");
        let target = match current.cmp(&want) {
            std::cmp::Ordering::Equal => return Ok(false),
            std::cmp::Ordering::Greater => want,
            std::cmp::Ordering::Less => new_rs_replicas(&st.d, others, current),
        };
        self.scale_rs(&st.d, rs, target).await
    }

    /// Shrinks old ReplicaSets as far as availability allows, unhealthy
    /// replicas first; true when any was scaled.
    async fn reconcile_old_rses(&self, st: &mut State) -> ClientResult<bool> {
        if spec_total(st.old.iter()) == 0 {
            return Ok(false);
        }
        let min_available = st.replicas() - max_unavailable(&st.d);
        let new_unavailable = st
            .new_rs
            .as_ref()
            .map_or(0, |rs| int_at(rs, "/spec/replicas") - available(rs));
        let max_scaled_down = spec_total(st.all()) - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let cleaned = self.cleanup_unhealthy(st, max_scaled_down).await?;
        let scaled = self.scale_down_old(st, min_available).await?;
        Ok(cleaned + scaled > 0)
    }

    /// Removes old replicas that are not available anyway (they cost no
    /// availability), oldest ReplicaSet first, at most `max`.
    async fn cleanup_unhealthy(&self, st: &mut State, max: i64) -> ClientResult<i64> {
        let mut total = 0;
        for rs in st.old.iter_mut() {
            if total >= max {
                break;
            }
            let spec = int_at(rs, "/spec/replicas");
            let unhealthy = spec - available(rs);
            if spec == 0 || unhealthy <= 0 {
                continue;
            }
            let n = (max - total).min(unhealthy);
            self.scale_rs(&st.d, rs, spec - n).await?;
            total += n;
        }
        Ok(total)
    }

    /// Removes available old replicas down to `min_available` overall.
    async fn scale_down_old(&self, st: &mut State, min_available: i64) -> ClientResult<i64> {
        let available_now: i64 = st.all().map(available).sum();
        let budget = available_now - min_available;
        let mut total = 0;
        for rs in st.old.iter_mut() {
            if total >= budget {
                break;
            }
            let spec = int_at(rs, "/spec/replicas");
            if spec == 0 {
                continue;
            }
            let n = spec.min(budget - total);
            self.scale_rs(&st.d, rs, spec - n).await?;
            total += n;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(replicas: i64, surge: Value, unavailable: Value) -> Value {
        json!({"spec": {"replicas": replicas, "strategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}})
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let x = d(10, json!("25%"), json!("25%"));
        assert_eq!((max_surge(&x), max_unavailable(&x)), (3, 2));
        let x = d(4, json!(0), json!(0));
        assert_eq!((max_surge(&x), max_unavailable(&x)), (0, 1));
        let x = d(2, json!(1), json!(5));
        assert_eq!(max_unavailable(&x), 2);
        let r = json!({"spec": {"replicas": 3, "strategy": {"type": "Recreate"}}});
        assert_eq!((max_surge(&r), max_unavailable(&r)), (0, 0));
        assert_eq!(resolve(&json!("x%"), 10, true), 0);
    }

    #[test]
    fn new_replica_set_grows_within_the_surge() {
        let x = d(4, json!(1), json!(1));
        assert_eq!(new_rs_replicas(&x, 4, 0), 1);
        assert_eq!(new_rs_replicas(&x, 3, 1), 2);
        assert_eq!(new_rs_replicas(&x, 5, 0), 0);
        assert_eq!(new_rs_replicas(&x, 0, 3), 4);
    }

    #[test]
    fn availability_is_capped_by_spec() {
        let rs = json!({"spec": {"replicas": 3}, "status": {"availableReplicas": 4}});
        assert_eq!(available(&rs), 3);
    }
}
