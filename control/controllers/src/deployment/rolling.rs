//! The RollingUpdate strategy: the new ReplicaSet grows while the total
//! stays within `replicas + maxSurge`, and old ReplicaSets shrink only as
//! far as keeps `replicas - maxUnavailable` pods available.
//!
//! Availability is read from ReplicaSet status, capped at each
//! ReplicaSet's `spec.replicas`: right after a scale-down the status can
//! still count the pods being removed, and trusting it would let the next
//! step remove more than `maxUnavailable` allows.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{d_replicas, rs_available_replicas, rs_replicas, Controller, State};

/// The default of both maxSurge and maxUnavailable.
const DEFAULT_FENCEPOST: &str = "25%";

/// An int-or-percent of `total` (`25%` of 10 is 3 when rounding up, 2
/// when down); anything unparsable counts as 0.
pub(super) fn resolve(v: &IntOrString, total: i64, round_up: bool) -> i64 {
    let s = match v {
        IntOrString::Int(n) => return i64::from(*n).max(0),
        IntOrString::String(s) => s,
    };
    let Some(pct) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
        return 0;
    };
    let scaled = pct.max(0).saturating_mul(total.max(0));
    match round_up {
        true => (scaled + 99) / 100,
        false => scaled / 100,
    }
}

/// Not Recreate (RollingUpdate is the default strategy).
pub(super) fn is_rolling(d: &Deployment) -> bool {
    let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
    strategy.and_then(|s| s.type_.as_deref()) != Some("Recreate")
}

/// (maxSurge, maxUnavailable) of a rolling Deployment; both zero would
/// never progress, so unavailable becomes 1 (Kubernetes' `ResolveFenceposts`).
fn fenceposts(d: &Deployment) -> (i64, i64) {
    let replicas = d_replicas(d);
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let default = IntOrString::String(DEFAULT_FENCEPOST.into());
    let surge_v = ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&default);
    let unavail_v = ru
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&default);
    let surge = resolve(surge_v, replicas, true);
    let unavailable = resolve(unavail_v, replicas, false);
    match (surge, unavailable) {
        (0, 0) => (0, 1),
        other => other,
    }
}

/// Extra pods allowed above `replicas` (0 for Recreate).
pub(super) fn max_surge(d: &Deployment) -> i64 {
    match is_rolling(d) {
        true => fenceposts(d).0,
        false => 0,
    }
}

/// Pods that may be unavailable during a rollout, at most `replicas`.
pub(super) fn max_unavailable(d: &Deployment) -> i64 {
    let replicas = d_replicas(d);
    if !is_rolling(d) || replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

/// The size the new ReplicaSet may grow to, given the other ReplicaSets'
/// total `others` (Kubernetes' `NewRSNewReplicas`).
pub(super) fn new_rs_replicas(d: &Deployment, others: i64, current: i64) -> i64 {
    let replicas = d_replicas(d);
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
pub(super) fn available(rs: &ReplicaSet) -> i64 {
    rs_available_replicas(rs).min(rs_replicas(rs)).max(0)
}

fn spec_total<'a>(rses: impl Iterator<Item = &'a ReplicaSet>) -> i64 {
    rses.map(rs_replicas).sum()
}

impl Controller {
    /// One rolling step: grow the new ReplicaSet, else shrink old ones,
    /// else (complete) prune history.
    pub(super) async fn rollout_rolling(&self, st: &mut State) -> kube::Result<()> {
        self.sync_revision(st, true).await?;
        if self.reconcile_new_rs(st).await? || self.reconcile_old_rses(st).await? {
            return Ok(());
        }
        if super::status::is_complete(&st.d, st.d.status.as_ref()) {
            self.cleanup(st).await?;
        }
        Ok(())
    }

    /// Moves the new ReplicaSet toward `replicas` within the surge limit;
    /// true when it was scaled.
    pub(super) async fn reconcile_new_rs(&self, st: &mut State) -> kube::Result<bool> {
        let want = st.replicas();
        let others = spec_total(st.old.iter());
        let Some(rs) = st.new_rs.as_mut() else {
            return Ok(false);
        };
        let current = rs_replicas(rs);
        let target = match current.cmp(&want) {
            std::cmp::Ordering::Equal => return Ok(false),
            std::cmp::Ordering::Greater => want,
            std::cmp::Ordering::Less => new_rs_replicas(&st.d, others, current),
        };
        self.scale_rs(&st.d, rs, target).await
    }

    /// Shrinks old ReplicaSets as far as availability allows, unhealthy
    /// replicas first; true when any was scaled.
    async fn reconcile_old_rses(&self, st: &mut State) -> kube::Result<bool> {
        if spec_total(st.old.iter()) == 0 {
            return Ok(false);
        }
        let min_available = st.replicas() - max_unavailable(&st.d);
        let new_unavailable = st
            .new_rs
            .as_ref()
            .map_or(0, |rs| rs_replicas(rs) - available(rs));
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
    async fn cleanup_unhealthy(&self, st: &mut State, max: i64) -> kube::Result<i64> {
        let mut total = 0;
        for rs in st.old.iter_mut() {
            if total >= max {
                break;
            }
            let spec = rs_replicas(rs);
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
    async fn scale_down_old(&self, st: &mut State, min_available: i64) -> kube::Result<i64> {
        let available_now: i64 = st.all().map(available).sum();
        let budget = available_now - min_available;
        let mut total = 0;
        for rs in st.old.iter_mut() {
            if total >= budget {
                break;
            }
            let spec = rs_replicas(rs);
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
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus,
        RollingUpdateDeployment,
    };

    fn int(n: i32) -> IntOrString {
        IntOrString::Int(n)
    }

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    fn with_strategy(replicas: i32, strategy: DeploymentStrategy) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(strategy),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }

    fn d(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        with_strategy(
            replicas,
            DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            },
        )
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let x = d(10, pct("25%"), pct("25%"));
        assert_eq!((max_surge(&x), max_unavailable(&x)), (3, 2));
        let x = d(4, int(0), int(0));
        assert_eq!((max_surge(&x), max_unavailable(&x)), (0, 1));
        let x = d(2, int(1), int(5));
        assert_eq!(max_unavailable(&x), 2);
        let recreate = DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        };
        let r = with_strategy(3, recreate);
        assert_eq!((max_surge(&r), max_unavailable(&r)), (0, 0));
        assert_eq!(resolve(&pct("x%"), 10, true), 0);
    }

    #[test]
    fn new_replica_set_grows_within_the_surge() {
        let x = d(4, int(1), int(1));
        assert_eq!(new_rs_replicas(&x, 4, 0), 1);
        assert_eq!(new_rs_replicas(&x, 3, 1), 2);
        assert_eq!(new_rs_replicas(&x, 5, 0), 0);
        assert_eq!(new_rs_replicas(&x, 0, 3), 4);
    }

    #[test]
    fn availability_is_capped_by_spec() {
        let rs = ReplicaSet {
            spec: Some(ReplicaSetSpec {
                replicas: Some(3),
                ..ReplicaSetSpec::default()
            }),
            status: Some(ReplicaSetStatus {
                available_replicas: Some(4),
                ..ReplicaSetStatus::default()
            }),
            ..ReplicaSet::default()
        };
        assert_eq!(available(&rs), 3);
    }
}
