//! Reading a StatefulSet's spec with Kubernetes' defaults applied, so the
//! rest of the controller never handles an absent field (the API server
//! defaults them on write; a missing one here means an object from
//! elsewhere, read the way the API server would have defaulted it).

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `spec`, or an empty one (the API never stores a set without it).
fn spec(set: &StatefulSet) -> Option<&StatefulSetSpec> {
    set.spec.as_ref()
}

/// `spec.replicas` (default 1), never negative.
pub(super) fn replicas(set: &StatefulSet) -> i32 {
    spec(set).and_then(|s| s.replicas).unwrap_or(1).max(0)
}

/// `spec.ordinals.start` (default 0): the first pod is `<set>-<start>`.
pub(super) fn start_ordinal(set: &StatefulSet) -> i32 {
    spec(set)
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

/// `spec.minReadySeconds` (default 0).
pub(super) fn min_ready_s(set: &StatefulSet) -> i64 {
    i64::from(
        spec(set)
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
            .max(0),
    )
}

/// `spec.podManagementPolicy` is Parallel: pods are created and deleted
/// without waiting for their predecessors (Kubernetes' "burst").
pub(super) fn is_parallel(set: &StatefulSet) -> bool {
    spec(set).and_then(|s| s.pod_management_policy.as_deref()) == Some("Parallel")
}

/// `spec.updateStrategy.type` is OnDelete (the default is RollingUpdate).
pub(super) fn is_on_delete(set: &StatefulSet) -> bool {
    spec(set)
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete")
}

/// `spec.updateStrategy.rollingUpdate.partition` (0 when absent) if
/// `rollingUpdate` is set: ordinals below it keep the current revision.
pub(super) fn partition(set: &StatefulSet) -> Option<i32> {
    spec(set)
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .map(|r| r.partition.unwrap_or(0).max(0))
}

/// `spec.updateStrategy.rollingUpdate.maxUnavailable` as a pod count for
/// `replicas` pods: a percentage rounds up, and it is at least 1
/// (Kubernetes' `getStatefulSetMaxUnavailable`).
pub(super) fn max_unavailable(set: &StatefulSet, replicas: i32) -> i32 {
    let value = spec(set)
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.as_ref());
    let n = match value {
        None => 1,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => percent_of(s, replicas).unwrap_or(1),
    };
    n.max(1)
}

/// `pct%` of `total`, rounded up; None when `pct` is not `<int>%`.
fn percent_of(pct: &str, total: i32) -> Option<i32> {
    let p: i64 = pct.strip_suffix('%')?.parse().ok()?;
    let scaled = (p * i64::from(total) + 99).div_euclid(100);
    Some(i32::try_from(scaled.max(0)).unwrap_or(i32::MAX))
}

/// `spec.serviceName` ("" when absent).
pub(super) fn service_name(set: &StatefulSet) -> &str {
    spec(set)
        .and_then(|s| s.service_name.as_deref())
        .unwrap_or_default()
}

/// `spec.revisionHistoryLimit` (default 10).
pub(super) fn history_limit(set: &StatefulSet) -> i32 {
    spec(set)
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
}

/// `spec.template` (an empty one when the spec is absent).
pub(super) fn template(set: &StatefulSet) -> PodTemplateSpec {
    spec(set).map(|s| s.template.clone()).unwrap_or_default()
}

/// `spec.volumeClaimTemplates`.
pub(super) fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    spec(set)
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or_default()
}

/// The claim retention policy as (whenDeleted, whenScaled) is Delete.
pub(super) fn delete_claims_when(set: &StatefulSet) -> (bool, bool) {
    let policy = spec(set).and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let is_delete = |v: Option<&String>| v.map(String::as_str) == Some("Delete");
    (
        is_delete(policy.and_then(|p| p.when_deleted.as_ref())),
        is_delete(policy.and_then(|p| p.when_scaled.as_ref())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unavailable_scales_percentages_up_and_is_at_least_one() {
        assert_eq!(percent_of("50%", 3), Some(2));
        assert_eq!(percent_of("10%", 5), Some(1));
        assert_eq!(percent_of("0%", 5), Some(0));
        assert_eq!(percent_of("x", 5), None);
        let mut set = StatefulSet::default();
        assert_eq!(max_unavailable(&set, 4), 1);
        set.spec = Some(StatefulSetSpec {
            update_strategy: Some(k8s_openapi::api::apps::v1::StatefulSetUpdateStrategy {
                rolling_update: Some(
                    k8s_openapi::api::apps::v1::RollingUpdateStatefulSetStrategy {
                        max_unavailable: Some(IntOrString::String("0%".into())),
                        partition: None,
                    },
                ),
                type_: None,
            }),
            ..StatefulSetSpec::default()
        });
        assert_eq!(max_unavailable(&set, 4), 1);
        assert_eq!(replicas(&set), 1);
    }
}
