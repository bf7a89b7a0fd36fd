//! The disruption controller (Kubernetes' `pkg/controller/disruption`):
//! keeps each PodDisruptionBudget's status saying how many of its pods are
//! healthy, how many must be, and so how many may be evicted now.
//!
//! Why `disruptedPods`: the eviction API spends a disruption and records
//! the pod there before deleting it. Until this controller's cache shows
//! that pod terminating, the pod still looks healthy here; counting it as
//! healthy would hand the same disruption out again. So a recorded pod is
//! not healthy until it is gone or its record expires ([`DELETION_TIMEOUT`],
//! an eviction whose delete never happened).
//!
//! Why the scale lookup: a percentage (or maxUnavailable) is relative to
//! how many pods *should* exist, which only the pods' controllers know
//! (ReplicaSet, or the Deployment above it; StatefulSet;
//! ReplicationController). When that cannot
//! be found the budget fails safe: no disruption is allowed.
//!
//! Writes are compare-and-swap on the budget as cached: if the eviction API
//! changed it meanwhile the write is a 409 and the budget is recomputed
//! from the newer version, never overwriting a spent disruption.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};

use crate::cache::{key_of, next_change, Caches, Change, Informer};
use crate::reconcile::{
    controller_ref, enqueue_all, is_deleting, name, namespace, pod_is_ready, run_workers, uid,
    Reconciled, WorkQueue, RESYNC,
};
use crate::selector::LabelSelector;

const WORKERS: usize = 2;
/// How long an eviction's record in `disruptedPods` holds a pod out of
/// the healthy count while its deletion is not yet seen (Kubernetes: 2 min).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);
const CONDITION: &str = "DisruptionAllowed";

struct Controller {
    client: kube::Client,
    pdbs: Informer<PodDisruptionBudget>,
    pods: Informer<Pod>,
    replicasets: Informer<ReplicaSet>,
    deployments: Informer<Deployment>,
    statefulsets: Informer<StatefulSet>,
    replication_controllers: Informer<ReplicationController>,
}

/// Runs the disruption controller until the future is dropped.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Controller {
        client,
        pdbs: caches.get(),
        pods: caches.get(),
        replicasets: caches.get(),
        deployments: caches.get(),
        statefulsets: caches.get(),
        replication_controllers: caches.get(),
    });
    let queue = WorkQueue::new();
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.pdbs.wait_synced().await;
    ctl.pods.wait_synced().await;
    ctl.replicasets.wait_synced().await;
    ctl.deployments.wait_synced().await;
    ctl.statefulsets.wait_synced().await;
    ctl.replication_controllers.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

/// Budgets change themselves; a pod change concerns the budgets of its
/// namespace that select it. Scale changes are caught by the resync and by
/// the pod changes a scale change causes.
async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut pdb_rx = ctl.pdbs.subscribe();
    let mut pod_rx = ctl.pods.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut pdb_rx) => match c {
                Some(Change::Applied(b) | Change::Deleted(b)) => queue.add(&key_of(b.as_ref())),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.pdbs),
                None => return,
            },
            c = next_change(&mut pod_rx) => match c {
                Some(Change::Applied(p) | Change::Deleted(p)) => {
                    for b in ctl.budgets_of(&p) {
                        queue.add(&key_of(b.as_ref()));
                    }
                }
                Some(Change::Resync) => enqueue_all(&queue, &ctl.pdbs),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.pdbs),
        }
    }
}

/// A budget's selector; None (selects nothing) when absent or invalid. An
/// empty selector selects every pod of the namespace (policy/v1).
fn selector(pdb: &PodDisruptionBudget) -> Option<LabelSelector> {
    let s = pdb.spec.as_ref()?.selector.as_ref()?;
    LabelSelector::from_typed(s).ok()
}

/// What a budget's status should say, before it is merged into the object.
#[derive(Debug, PartialEq)]
struct Computed {
    current_healthy: i32,
    desired_healthy: i32,
    expected_pods: i32,
    disruptions_allowed: i32,
    disrupted: BTreeMap<String, Time>,
    /// Why the budget fails safe (no disruption allowed), if it does.
    failure: Option<String>,
    /// When the oldest kept `disruptedPods` record expires.
    recheck: Option<Duration>,
}

impl Controller {
    fn budgets_of(&self, pod: &Pod) -> Vec<Arc<PodDisruptionBudget>> {
        let labels = pod.metadata.labels.as_ref();
        self.pdbs.filter_in(namespace(&pod.metadata), |b| {
            selector(b).is_some_and(|s| s.matches_labels(labels))
        })
    }

    async fn reconcile(&self, key: &str) -> Reconciled<kube::Error> {
        let Some(pdb) = self.pdbs.get_key(key) else {
            return Ok(None);
        };
        let pods = match selector(&pdb) {
            Some(s) => self.pods.filter_in(namespace(&pdb.metadata), |p| {
                s.matches_labels(p.metadata.labels.as_ref())
            }),
            None => vec![],
        };
        let pods: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
        let expected = self.expected_scale(&pdb, &pods);
        let computed = compute(&pdb, &pods, expected, Timestamp::now());
        let recheck = computed.recheck;
        self.write_status(&pdb, computed).await?;
        Ok(recheck)
    }

    /// The sum of `spec.replicas` over the distinct controllers of `pods`,
    /// when the budget needs it (a percentage or maxUnavailable).
    fn expected_scale(
        &self,
        pdb: &PodDisruptionBudget,
        pods: &[&Pod],
    ) -> Option<Result<i32, String>> {
        let spec = pdb.spec.as_ref()?;
        let needs = spec.max_unavailable.is_some()
            || matches!(spec.min_available, Some(IntOrString::String(_)));
        needs.then(|| {
            let mut seen: HashMap<String, i32> = HashMap::new();
            for p in pods {
                let (owner_uid, replicas) = self.scale_of(p)?;
                seen.insert(owner_uid, replicas);
            }
            Ok(seen.values().sum())
        })
    }

    /// (uid, spec.replicas) of the workload that scales `pod`: its
    /// ReplicaSet, or the Deployment controlling that; its StatefulSet or
    /// ReplicationController.
    fn scale_of(&self, pod: &Pod) -> Result<(String, i32), String> {
        let pod_name = name(&pod.metadata);
        let ns = namespace(&pod.metadata);
        let r = controller_ref(&pod.metadata)
            .ok_or_else(|| format!("found no controller ref for pod {pod_name:?}"))?;
        let missing = || format!("found no controllers for pod {pod_name:?}");
        match r.kind.as_str() {
            "ReplicaSet" => {
                let rs = self
                    .replicasets
                    .get(Some(ns), &r.name)
                    .filter(|rs| uid(&rs.metadata) == r.uid)
                    .ok_or_else(missing)?;
                if let Some(d) = controller_ref(&rs.metadata).filter(|d| d.kind == "Deployment") {
                    let dep = self
                        .deployments
                        .get(Some(ns), &d.name)
                        .filter(|x| uid(&x.metadata) == d.uid)
                        .ok_or_else(missing)?;
                    let replicas = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    return Ok((d.uid.clone(), replicas));
                }
                let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                Ok((r.uid.clone(), replicas))
            }
            "StatefulSet" => {
                let sts = self
                    .statefulsets
                    .get(Some(ns), &r.name)
                    .filter(|s| uid(&s.metadata) == r.uid)
                    .ok_or_else(missing)?;
                let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                Ok((r.uid.clone(), replicas))
            }
            "ReplicationController" => {
                let rc = self
                    .replication_controllers
                    .get(Some(ns), &r.name)
                    .filter(|c| uid(&c.metadata) == r.uid)
                    .ok_or_else(missing)?;
                let replicas = rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                Ok((r.uid.clone(), replicas))
            }
            _ => Err(missing()),
        }
    }

    /// Writes the status when it changed. A 409 (the eviction API spent a
    /// disruption meanwhile) is returned: the key is reconciled again from
    /// the newer budget.
    async fn write_status(&self, pdb: &PodDisruptionBudget, c: Computed) -> kube::Result<()> {
        let status = merge(pdb, c, Timestamp::now());
        if pdb.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut updated = pdb.clone();
        updated.status = Some(status);
        let api: Api<PodDisruptionBudget> =
            Api::namespaced(self.client.clone(), namespace(&pdb.metadata));
        match api
            .replace_status(name(&pdb.metadata), &PostParams::default(), &updated)
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// An int-or-percent against `total`, rounded up (Kubernetes'
/// `GetScaledValueFromIntOrPercent(.., roundUp=true)`); Err when malformed.
fn scaled(v: &IntOrString, total: i32) -> Result<i32, String> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let scaled = (pct * i64::from(total) + 99).div_euclid(100);
            Ok(i32::try_from(scaled).unwrap_or(i32::MAX))
        }
    }
}

/// (expectedPods, desiredHealthy) from the spec, the pods and the scale.
fn expected_and_desired(
    pdb: &PodDisruptionBudget,
    pods: usize,
    scale: Option<Result<i32, String>>,
) -> Result<(i32, i32), String> {
    let spec = pdb.spec.as_ref();
    let pods = i32::try_from(pods).unwrap_or(i32::MAX);
    if let Some(max) = spec.and_then(|s| s.max_unavailable.as_ref()) {
        let expected = scale.unwrap_or(Ok(pods))?;
        let max = scaled(max, expected)?;
        return Ok((expected, (expected - max).max(0)));
    }
    match spec.and_then(|s| s.min_available.as_ref()) {
        Some(IntOrString::Int(n)) => Ok((pods, *n)),
        Some(pct) => {
            let expected = scale.unwrap_or(Ok(pods))?;
            Ok((expected, scaled(pct, expected)?))
        }
        None => Ok((pods, 0)),
    }
}

/// The budget's numbers from its pods at `now` (Kubernetes' `trySync`).
fn compute(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    scale: Option<Result<i32, String>>,
    now: Timestamp,
) -> Computed {
    let (disrupted, recheck) = live_disruptions(pdb, pods, now);
    let healthy = pods
        .iter()
        .filter(|p| {
            !is_deleting(&p.metadata)
                && pod_is_ready(p)
                && !disrupted.contains_key(name(&p.metadata))
        })
        .count();
    let current_healthy = i32::try_from(healthy).unwrap_or(i32::MAX);
    let (expected_pods, desired_healthy, failure) =
        match expected_and_desired(pdb, pods.len(), scale) {
            Ok((e, d)) => (e, d, None),
            Err(why) => (0, 0, Some(why)),
        };
    let allowed = current_healthy - desired_healthy;
    let disruptions_allowed = if failure.is_some() || expected_pods <= 0 || allowed <= 0 {
        0
    } else {
        allowed
    };
    Computed {
        current_healthy,
        desired_healthy,
        expected_pods,
        disruptions_allowed,
        disrupted,
        failure,
        recheck,
    }
}

/// The `disruptedPods` records still standing: the pod exists, is not yet
/// terminating, and the record is younger than [`DELETION_TIMEOUT`].
fn live_disruptions(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Duration>) {
    let recorded = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref());
    let by_name: HashMap<&str, &Pod> = pods.iter().map(|p| (name(&p.metadata), *p)).collect();
    let timeout = SignedDuration::try_from(DELETION_TIMEOUT).unwrap_or(SignedDuration::ZERO);
    let mut kept = BTreeMap::new();
    let mut recheck: Option<Duration> = None;
    for (pod_name, at) in recorded.into_iter().flatten() {
        let Some(pod) = by_name.get(pod_name.as_str()) else {
            continue;
        };
        if is_deleting(&pod.metadata) {
            continue;
        }
        let expires = at.0.checked_add(timeout).unwrap_or(at.0);
        if expires <= now {
            continue;
        }
        let left = Duration::try_from(expires.duration_since(now)).unwrap_or_default();
        recheck = Some(recheck.map_or(left, |r| r.min(left)));
        kept.insert(pod_name.clone(), at.clone());
    }
    (kept, recheck)
}

/// The status `c` says, keeping the condition's transition time when its
/// status did not change.
fn merge(pdb: &PodDisruptionBudget, c: Computed, now: Timestamp) -> PodDisruptionBudgetStatus {
    let old = pdb.status.as_ref();
    let (status, reason, message) = match (&c.failure, c.disruptions_allowed > 0) {
        (Some(why), _) => ("False", "SyncFailed", why.clone()),
        (None, true) => ("True", "SufficientPods", String::new()),
        (None, false) => ("False", "InsufficientPods", String::new()),
    };
    let previous = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|x| x.type_ == CONDITION));
    let since = previous
        .filter(|p| p.status == status)
        .map_or_else(|| Time(now), |p| p.last_transition_time.clone());
    let condition = Condition {
        type_: CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: pdb.metadata.generation,
    };
    let mut conditions: Vec<Condition> = old
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|x| x.type_ != CONDITION)
        .collect();
    conditions.push(condition);
    PodDisruptionBudgetStatus {
        current_healthy: c.current_healthy,
        desired_healthy: c.desired_healthy,
        expected_pods: c.expected_pods,
        disruptions_allowed: c.disruptions_allowed,
        disrupted_pods: (!c.disrupted.is_empty()).then_some(c.disrupted),
        observed_generation: pdb.metadata.generation,
        conditions: Some(conditions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(n: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(n.into()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn pdb(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("b".into()),
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                ..PodDisruptionBudgetSpec::default()
            }),
            status: None,
        }
    }

    fn now() -> Timestamp {
        "2026-01-01T00:10:00Z".parse().unwrap()
    }

    #[test]
    fn integer_min_available_needs_no_scale() {
        let pods = [pod("a", true), pod("b", true), pod("c", false)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let c = compute(&pdb(Some(IntOrString::Int(1)), None), &refs, None, now());
        assert_eq!(
            (
                c.current_healthy,
                c.desired_healthy,
                c.expected_pods,
                c.disruptions_allowed
            ),
            (2, 1, 3, 1)
        );
        let s = merge(&pdb(Some(IntOrString::Int(1)), None), c, now());
        let cond = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("True", "SufficientPods")
        );
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn percentages_scale_with_the_controller_rounding_up() {
        let pods = [pod("a", true), pod("b", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let b = pdb(Some(IntOrString::String("50%".into())), None);
        let c = compute(&b, &refs, Some(Ok(3)), now());
        assert_eq!(
            (c.expected_pods, c.desired_healthy, c.disruptions_allowed),
            (3, 2, 0)
        );
        let b = pdb(None, Some(IntOrString::String("34%".into())));
        let c = compute(&b, &refs, Some(Ok(3)), now());
        // 34% of 3 rounds up to 2 unavailable: 1 must stay healthy.
        assert_eq!((c.desired_healthy, c.disruptions_allowed), (1, 1));
    }

    #[test]
    fn no_controller_fails_safe() {
        let pods = [pod("a", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let b = pdb(None, Some(IntOrString::Int(1)));
        let c = compute(
            &b,
            &refs,
            Some(Err("found no controller ref".into())),
            now(),
        );
        assert_eq!(c.disruptions_allowed, 0);
        let s = merge(&b, c, now());
        let cond = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "SyncFailed")
        );
    }

    #[test]
    fn recorded_disruptions_are_not_healthy_until_gone_or_expired() {
        let pods = [pod("a", true), pod("b", true), pod("c", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let mut b = pdb(Some(IntOrString::Int(2)), None);
        let recent: Timestamp = "2026-01-01T00:09:30Z".parse().unwrap();
        let old: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        b.status = Some(PodDisruptionBudgetStatus {
            disrupted_pods: Some(BTreeMap::from([
                ("a".to_string(), Time(recent)),
                ("b".to_string(), Time(old)),
                ("gone".to_string(), Time(recent)),
            ])),
            ..PodDisruptionBudgetStatus::default()
        });
        let c = compute(&b, &refs, None, now());
        assert_eq!(c.disrupted.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!((c.current_healthy, c.disruptions_allowed), (2, 0));
        assert_eq!(c.recheck, Some(Duration::from_secs(90)));
        let s = merge(&b, c, now());
        assert_eq!(s.conditions.as_ref().unwrap()[0].reason, "InsufficientPods");
    }
}
