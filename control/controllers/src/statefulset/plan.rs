//! What one sync of a StatefulSet does, decided from the caches without
//! side effects (Kubernetes' `updateStatefulSet`), so every rule is
//! unit-tested and the caller only carries the steps out.
//!
//! Pods are slotted by ordinal: `replicas` are the ordinals the set wants
//! (`start .. start+replicas`), `condemned` the others it still has. A
//! sync, in phases:
//! 1. the wanted ordinals in ascending order: a failed pod is deleted (to
//!    be recreated), a missing one is created at its revision, a pending
//!    one gets its missing claims, identity labels and claim owners are
//!    repaired; with OrderedReady, the first pod created, terminating or
//!    not Running+Ready+available ends the sync (its successors wait);
//! 2. the condemned pods' claims get the owners the retention policy asks;
//! 3. the condemned pods are deleted from the highest ordinal down; with
//!    OrderedReady one at a time, each waiting for the one before it to
//!    be gone, and only while every other pod is healthy;
//! 4. RollingUpdate: pods not at the update revision are deleted (to be
//!    recreated at it) from the highest ordinal down to the partition,
//!    keeping at most maxUnavailable pods unavailable. OnDelete stops
//!    before this: only pods deleted by someone else are updated.
//!
//! With Parallel management, nothing waits on readiness and a phase's
//! steps run concurrently.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;

use super::claims::{claim_names, refs_match, stale_claim, Claims};
use super::identity::{missing_identity_labels, ordinal_in, pod_revision};
use super::spec;
use crate::reconcile::{is_deleting, name, pod_available_in, pod_is_ready, pod_phase};

/// What a sync reads.
pub(super) struct Input<'a> {
    pub set: &'a StatefulSet,
    /// The pods the set controls.
    pub pods: &'a [Arc<Pod>],
    /// The names of the current and the update revision.
    pub current: &'a str,
    pub update: &'a str,
    /// The namespace's claims by name.
    pub claims: &'a Claims,
    pub now: Timestamp,
}

/// One write.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    /// Delete the pod (pinned to its uid).
    Delete(Arc<Pod>),
    /// Create the pod at `ordinal`, its missing claims first, from the
    /// update revision (`at_update`) or the current one.
    Create { ordinal: i32, at_update: bool },
    /// Create the missing claims of this pending pod at `ordinal`.
    CreateClaims(Arc<Pod>, i32),
    /// Add these identity labels to the pod.
    Label(Arc<Pod>, BTreeMap<String, String>),
    /// Give the claims of the pod at `ordinal` the owners the retention
    /// policy asks (`scaled_down`: the pod is condemned).
    ClaimOwners {
        pod: Arc<Pod>,
        ordinal: i32,
        scaled_down: bool,
    },
}

/// Pod counts of the set's status (Kubernetes' `computeReplicaStatus`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    /// Pods created (with a phase).
    pub replicas: i32,
    /// Running and Ready.
    pub ready: i32,
    /// Ready for minReadySeconds.
    pub available: i32,
    /// Not terminating, at the current revision.
    pub current: i32,
    /// Not terminating, at the update revision.
    pub updated: i32,
}

/// The decisions of one sync.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Carried out in order, stopping at the first failure; the steps of
    /// a phase concurrently when `burst`, else in order.
    pub phases: Vec<Vec<Step>>,
    pub burst: bool,
    pub counts: Counts,
    /// When a ready pod turns available (a sync is due then).
    pub recheck: Option<Duration>,
}

/// A pod's health as the rules see it.
struct Health {
    created: bool,
    running_ready: bool,
    available: bool,
    terminating: bool,
}

fn health(pod: &Pod, min_ready_s: i64, now: Timestamp) -> Health {
    let running_ready = pod_phase(pod) == Some("Running") && pod_is_ready(pod);
    Health {
        created: pod_phase(pod).is_some_and(|p| !p.is_empty()),
        running_ready,
        available: running_ready && pod_available_in(pod, min_ready_s, now) == Some(Duration::ZERO),
        terminating: is_deleting(&pod.metadata),
    }
}

/// A slot without a pod or with a pod that is not healthy and available.
fn unavailable(slot: Option<&Arc<Pod>>, min_ready_s: i64, now: Timestamp) -> bool {
    slot.is_none_or(|p| {
        let h = health(p, min_ready_s, now);
        !h.running_ready || h.terminating || !h.available
    })
}

/// How far a phase got: on, or the sync stops after this phase.
#[derive(PartialEq)]
enum Flow {
    Continue,
    Stop,
}

/// Decides the sync of `input.set`.
pub(super) fn plan(input: &Input) -> Plan {
    let set = input.set;
    let min_ready_s = spec::min_ready_s(set);
    let (replicas, condemned) = slot_pods(set, input.pods);
    let mut plan = Plan {
        burst: spec::is_parallel(set),
        counts: count(
            input,
            replicas
                .iter()
                .flatten()
                .chain(condemned.iter().map(|(_, p)| p)),
        ),
        recheck: recheck(input, input.pods),
        phases: Vec::new(),
    };
    if is_deleting(&set.metadata) {
        return plan;
    }
    let first_unavailable = replicas
        .iter()
        .find(|s| unavailable(s.as_ref(), min_ready_s, input.now))
        .map(|s| s.as_ref().map(|p| name(&p.metadata).to_string()))
        .or_else(|| {
            condemned
                .iter()
                .rev()
                .find(|(_, p)| unavailable(Some(p), min_ready_s, input.now))
                .map(|(_, p)| Some(name(&p.metadata).to_string()))
        })
        .flatten();
    let (steps, flow) = replica_steps(input, &replicas);
    plan.phases.push(steps);
    if flow == Flow::Stop {
        return plan;
    }
    plan.phases.push(condemned_claim_steps(input, &condemned));
    let (steps, flow) = condemned_steps(input, &condemned, first_unavailable.as_deref());
    plan.phases.push(steps);
    if flow == Flow::Stop || spec::is_on_delete(set) {
        return plan;
    }
    let steps = update_steps(input, &replicas);
    plan.counts.current -= i32::try_from(steps.len()).unwrap_or(0);
    plan.phases.push(steps);
    plan
}

/// The wanted ordinals' pods (None: missing), and the condemned pods with
/// their ordinals, highest first. Pods whose name carries no ordinal of
/// this set are ignored.
type Slots = (Vec<Option<Arc<Pod>>>, Vec<(i32, Arc<Pod>)>);

fn slot_pods(set: &StatefulSet, pods: &[Arc<Pod>]) -> Slots {
    let start = spec::start_ordinal(set);
    let n = spec::replicas(set);
    let mut replicas = vec![None; usize::try_from(n).unwrap_or(0)];
    let mut condemned = Vec::new();
    for pod in pods {
        let Some(ordinal) = ordinal_in(set, pod) else {
            continue;
        };
        let index = ordinal
            .checked_sub(start)
            .and_then(|i| usize::try_from(i).ok());
        match index.and_then(|i| replicas.get_mut(i)) {
            Some(slot) => *slot = Some(pod.clone()),
            None => condemned.push((ordinal, pod.clone())),
        }
    }
    condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
    (replicas, condemned)
}

fn count<'a>(input: &Input, pods: impl Iterator<Item = &'a Arc<Pod>>) -> Counts {
    let min_ready_s = spec::min_ready_s(input.set);
    let mut c = Counts::default();
    for pod in pods {
        let h = health(pod, min_ready_s, input.now);
        c.replicas += i32::from(h.created);
        c.ready += i32::from(h.running_ready);
        c.available += i32::from(h.available);
        if h.created && !h.terminating {
            let rev = pod_revision(pod);
            c.current += i32::from(rev == input.current);
            c.updated += i32::from(rev == input.update);
        }
    }
    c
}

/// The soonest a ready pod turns available, plus a margin.
fn recheck(input: &Input, pods: &[Arc<Pod>]) -> Option<Duration> {
    let min_ready_s = spec::min_ready_s(input.set);
    pods.iter()
        .filter_map(|p| pod_available_in(p, min_ready_s, input.now))
        .filter(|d| !d.is_zero())
        .min()
        .map(|d| d + Duration::from_millis(100))
}

/// Phase 1 (Kubernetes' `processReplica` for each wanted ordinal).
fn replica_steps(input: &Input, replicas: &[Option<Arc<Pod>>]) -> (Vec<Step>, Flow) {
    let set = input.set;
    let monotonic = !spec::is_parallel(set);
    let min_ready_s = spec::min_ready_s(set);
    let start = spec::start_ordinal(set);
    let mut steps = Vec::new();
    let ordinals = replicas.iter().enumerate().map(|(i, slot)| {
        let i = i32::try_from(i).unwrap_or(i32::MAX);
        (start.saturating_add(i), slot)
    });
    for (ordinal, slot) in ordinals {
        let Some(pod) = slot else {
            if !stale_claim(set, ordinal, input.claims) {
                let at_update = !at_current_revision(set, ordinal);
                steps.push(Step::Create { ordinal, at_update });
            }
            if monotonic {
                return (steps, Flow::Stop);
            }
            continue;
        };
        let h = health(pod, min_ready_s, input.now);
        if matches!(pod_phase(pod), Some("Failed" | "Succeeded")) {
            if !h.terminating {
                steps.push(Step::Delete(pod.clone()));
            }
            if monotonic {
                return (steps, Flow::Stop);
            }
            continue;
        }
        if pod_phase(pod) == Some("Pending") && missing_claims(input, ordinal) {
            steps.push(Step::CreateClaims(pod.clone(), ordinal));
        }
        if monotonic && (h.terminating || !h.running_ready || !h.available) {
            return (steps, Flow::Stop);
        }
        let labels = missing_identity_labels(pod, ordinal);
        if !labels.is_empty() {
            steps.push(Step::Label(pod.clone(), labels));
        }
        if !claims_match(input, pod, ordinal, false) {
            steps.push(Step::ClaimOwners {
                pod: pod.clone(),
                ordinal,
                scaled_down: false,
            });
        }
    }
    (steps, Flow::Continue)
}

/// A new pod at `ordinal` is made from the current revision: below the
/// partition, or (RollingUpdate without `rollingUpdate`) below the count
/// of current pods (Kubernetes' `newVersionedStatefulSetPod`).
fn at_current_revision(set: &StatefulSet, ordinal: i32) -> bool {
    let start = spec::start_ordinal(set);
    match spec::partition(set) {
        Some(p) => ordinal < start.saturating_add(p),
        None if !spec::is_on_delete(set) => {
            let current = set
                .status
                .as_ref()
                .and_then(|s| s.current_replicas)
                .unwrap_or(0);
            ordinal < start.saturating_add(current)
        }
        None => false,
    }
}

fn missing_claims(input: &Input, ordinal: i32) -> bool {
    claim_names(input.set, ordinal)
        .iter()
        .any(|n| !input.claims.contains_key(n))
}

/// Every existing claim of the pod has the owners the policy asks.
fn claims_match(input: &Input, pod: &Arc<Pod>, ordinal: i32, scaled_down: bool) -> bool {
    claim_names(input.set, ordinal).iter().all(|n| {
        input
            .claims
            .get(n)
            .is_none_or(|c| refs_match(input.set, scaled_down.then_some(pod.as_ref()), c))
    })
}

/// Phase 2: the condemned pods' claims.
fn condemned_claim_steps(input: &Input, condemned: &[(i32, Arc<Pod>)]) -> Vec<Step> {
    condemned
        .iter()
        .filter(|(o, p)| !claims_match(input, p, *o, true))
        .map(|(ordinal, pod)| Step::ClaimOwners {
            pod: pod.clone(),
            ordinal: *ordinal,
            scaled_down: true,
        })
        .collect()
}

/// Phase 3 (Kubernetes' `processCondemned`), highest ordinal first.
fn condemned_steps(
    input: &Input,
    condemned: &[(i32, Arc<Pod>)],
    first_unavailable: Option<&str>,
) -> (Vec<Step>, Flow) {
    let monotonic = !spec::is_parallel(input.set);
    let min_ready_s = spec::min_ready_s(input.set);
    let mut steps = Vec::new();
    for (_, pod) in condemned {
        let h = health(pod, min_ready_s, input.now);
        if h.terminating {
            if monotonic {
                return (steps, Flow::Stop);
            }
            continue;
        }
        let is_first_unavailable = first_unavailable == Some(name(&pod.metadata));
        if monotonic && (!h.running_ready || !h.available) && !is_first_unavailable {
            return (steps, Flow::Stop);
        }
        steps.push(Step::Delete(pod.clone()));
        if monotonic {
            return (steps, Flow::Stop);
        }
    }
    (steps, Flow::Continue)
}

/// Phase 4: RollingUpdate deletions (Kubernetes'
/// `updateStatefulSetAfterInvariantEstablished`).
fn update_steps(input: &Input, replicas: &[Option<Arc<Pod>>]) -> Vec<Step> {
    let set = input.set;
    let min_ready_s = spec::min_ready_s(set);
    let max_unavailable = spec::max_unavailable(set, spec::replicas(set));
    let unavailable_now = replicas
        .iter()
        .filter(|s| unavailable(s.as_ref(), min_ready_s, input.now))
        .count();
    let budget = usize::try_from(max_unavailable)
        .unwrap_or(1)
        .saturating_sub(unavailable_now);
    let partition = usize::try_from(spec::partition(set).unwrap_or(0)).unwrap_or(0);
    replicas
        .iter()
        .enumerate()
        .rev()
        .take_while(|(i, _)| *i >= partition)
        .filter_map(|(_, s)| s.as_ref())
        .filter(|p| pod_revision(p) != input.update && !is_deleting(&p.metadata))
        .take(budget)
        .map(|p| Step::Delete(p.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statefulset::fixtures::set;
    use crate::statefulset::identity::new_pod;
    use k8s_openapi::api::apps::v1::{RollingUpdateStatefulSetStrategy, StatefulSetUpdateStrategy};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    const CUR: &str = "web-cur";
    const UPD: &str = "web-upd";

    /// The pod at `ordinal` of revision `rev`, in `phase`, ready or not.
    fn pod(ordinal: i32, rev: &str, phase: &str, ready: bool) -> Arc<Pod> {
        let s = set();
        let mut p = new_pod(&s, &crate::statefulset::spec::template(&s), rev, ordinal);
        p.metadata.uid = Some(format!("pod-{ordinal}"));
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        Arc::new(p)
    }

    fn running(ordinal: i32, rev: &str) -> Arc<Pod> {
        pod(ordinal, rev, "Running", true)
    }

    fn plan_for(s: &StatefulSet, pods: &[Arc<Pod>]) -> Plan {
        let claims = Claims::new();
        plan(&Input {
            set: s,
            pods,
            current: CUR,
            update: UPD,
            claims: &claims,
            now: Timestamp::now(),
        })
    }

    /// Every step, as (verb, pod ordinal).
    fn steps(p: &Plan) -> Vec<(&'static str, i32)> {
        let ord = |pod: &Arc<Pod>| ordinal_in(&set(), pod).unwrap_or(-1);
        p.phases
            .iter()
            .flatten()
            .map(|s| match s {
                Step::Delete(pod) => ("delete", ord(pod)),
                Step::Create { ordinal, .. } => ("create", *ordinal),
                Step::CreateClaims(pod, _) => ("claims", ord(pod)),
                Step::Label(pod, _) => ("label", ord(pod)),
                Step::ClaimOwners { ordinal, .. } => ("owners", *ordinal),
            })
            .collect()
    }

    fn with_replicas(n: i32) -> StatefulSet {
        let mut s = set();
        if let Some(spec) = s.spec.as_mut() {
            spec.replicas = Some(n);
        }
        s
    }

    fn parallel(mut s: StatefulSet) -> StatefulSet {
        if let Some(spec) = s.spec.as_mut() {
            spec.pod_management_policy = Some("Parallel".into());
        }
        s
    }

    fn strategy(mut s: StatefulSet, ty: &str, partition: i32, max_unavailable: i32) -> StatefulSet {
        if let Some(spec) = s.spec.as_mut() {
            spec.update_strategy = Some(StatefulSetUpdateStrategy {
                type_: Some(ty.into()),
                rolling_update: (ty == "RollingUpdate").then_some(
                    RollingUpdateStatefulSetStrategy {
                        partition: Some(partition),
                        max_unavailable: Some(IntOrString::Int(max_unavailable)),
                    },
                ),
            });
        }
        s
    }

    #[test]
    fn ordered_ready_creates_one_pod_at_a_time_after_its_predecessors() {
        let s = set();
        assert_eq!(steps(&plan_for(&s, &[])), [("create", 0)]);
        let p = plan_for(&s, &[pod(0, UPD, "Pending", false)]);
        assert_eq!(steps(&p), Vec::<(&str, i32)>::new(), "waits for web-0");
        let p = plan_for(&s, &[running(0, UPD)]);
        assert_eq!(steps(&p), [("create", 1)]);
        let p = plan_for(&s, &[running(0, UPD), running(1, UPD)]);
        assert_eq!(steps(&p), [("create", 2)]);
        assert!(!p.burst);
    }

    #[test]
    fn parallel_creates_every_missing_pod_at_once() {
        let p = plan_for(&parallel(set()), &[pod(1, UPD, "Pending", false)]);
        assert_eq!(steps(&p), [("create", 0), ("create", 2)]);
        assert!(p.burst);
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
        let s = with_replicas(1);
        let pods = [running(0, UPD), running(1, UPD), running(2, UPD)];
        assert_eq!(steps(&plan_for(&s, &pods)), [("delete", 2)]);
        let mut going = pod(2, UPD, "Running", true).as_ref().clone();
        going.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        let pods = [running(0, UPD), running(1, UPD), Arc::new(going)];
        assert_eq!(
            steps(&plan_for(&s, &pods)),
            Vec::<(&str, i32)>::new(),
            "waits for web-2 to be gone"
        );
        let pods = [running(0, UPD), running(1, UPD), running(2, UPD)];
        assert_eq!(
            steps(&plan_for(&parallel(with_replicas(1)), &pods)),
            [("delete", 2), ("delete", 1)]
        );
    }

    #[test]
    fn scale_down_waits_while_a_kept_pod_is_unhealthy() {
        let s = with_replicas(1);
        let pods = [pod(0, UPD, "Running", false), running(1, UPD)];
        assert_eq!(steps(&plan_for(&s, &pods)), Vec::<(&str, i32)>::new());
    }

    #[test]
    fn failed_pods_are_deleted_to_be_recreated() {
        let pods = [pod(0, UPD, "Failed", false)];
        assert_eq!(steps(&plan_for(&set(), &pods)), [("delete", 0)]);
    }

    #[test]
    fn rolling_update_replaces_from_the_top_down_to_the_partition() {
        let pods = [running(0, CUR), running(1, CUR), running(2, CUR)];
        let s = strategy(set(), "RollingUpdate", 0, 1);
        let p = plan_for(&s, &pods);
        assert_eq!(steps(&p), [("delete", 2)]);
        assert_eq!(p.counts.current, 2);
        let pods = [running(0, CUR), running(1, CUR), running(2, UPD)];
        assert_eq!(steps(&plan_for(&s, &pods)), [("delete", 1)]);
        let s = strategy(set(), "RollingUpdate", 2, 1);
        assert_eq!(steps(&plan_for(&s, &pods)), Vec::<(&str, i32)>::new());
        let s = strategy(set(), "RollingUpdate", 0, 2);
        let pods = [running(0, CUR), running(1, CUR), running(2, CUR)];
        assert_eq!(steps(&plan_for(&s, &pods)), [("delete", 2), ("delete", 1)]);
    }

    #[test]
    fn rolling_update_waits_for_the_replaced_pod_to_be_ready() {
        let s = strategy(set(), "RollingUpdate", 0, 1);
        let pods = [
            running(0, CUR),
            running(1, CUR),
            pod(2, UPD, "Pending", false),
        ];
        assert_eq!(steps(&plan_for(&s, &pods)), Vec::<(&str, i32)>::new());
    }

    #[test]
    fn new_pods_below_the_partition_get_the_current_revision() {
        let s = strategy(set(), "RollingUpdate", 2, 1);
        let p = plan_for(&s, &[]);
        assert_eq!(
            p.phases[0],
            [Step::Create {
                ordinal: 0,
                at_update: false
            }]
        );
        let p = plan_for(&s, &[running(0, CUR), running(1, CUR)]);
        assert_eq!(
            p.phases[0],
            [Step::Create {
                ordinal: 2,
                at_update: true
            }]
        );
    }

    #[test]
    fn on_delete_never_deletes_for_an_update() {
        let s = strategy(set(), "OnDelete", 0, 1);
        let pods = [running(0, CUR), running(1, CUR), running(2, CUR)];
        assert_eq!(steps(&plan_for(&s, &pods)), Vec::<(&str, i32)>::new());
        let p = plan_for(&s, &[running(0, CUR), running(2, CUR)]);
        assert_eq!(
            p.phases[0],
            [Step::Create {
                ordinal: 1,
                at_update: true
            }]
        );
    }

    #[test]
    fn counts_follow_phase_readiness_and_revision() {
        let pods = [
            running(0, CUR),
            pod(1, UPD, "Pending", false),
            running(2, UPD),
        ];
        let p = plan_for(&set(), &pods);
        assert_eq!(
            p.counts,
            Counts {
                replicas: 3,
                ready: 2,
                available: 2,
                current: 1,
                updated: 2
            }
        );
    }

    #[test]
    fn pods_missing_identity_labels_are_relabelled() {
        let mut p0 = running(0, UPD).as_ref().clone();
        if let Some(l) = p0.metadata.labels.as_mut() {
            l.remove(crate::statefulset::identity::POD_INDEX_LABEL);
        }
        let p = plan_for(&set(), &[Arc::new(p0), running(1, UPD), running(2, UPD)]);
        assert_eq!(steps(&p), [("label", 0)]);
    }
}
