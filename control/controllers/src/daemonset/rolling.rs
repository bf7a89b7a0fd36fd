//! The RollingUpdate strategy (Kubernetes' `rollingUpdate` in
//! `pkg/controller/daemon/update.go`), one step per reconcile.
//!
//! Without surge (`maxSurge: 0`): old pods are deleted while at most
//! `maxUnavailable` nodes are without an available pod; the manage step
//! then creates the new pod on each emptied node. Old pods that are not
//! available anyway are replaced at once.
//!
//! With surge: a new pod is created beside an old one on up to `maxSurge`
//! nodes at a time (at once where the old pod is not available), and the
//! old pod is deleted when the new one is available, so the node is never
//! without a running daemon.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::placement::fit;
use super::pods::{by_node, pod_hash, Victim};
use super::{min_ready_s, Controller};
use crate::reconcile::{is_deleting, name, pod_available_in};

/// An int-or-percent of `total`, rounded up (Kubernetes'
/// `GetScaledValueFromIntOrPercent(.., true)`); unparsable reads as 0.
fn resolve(v: Option<&IntOrString>, total: usize) -> usize {
    let total = i64::try_from(total).unwrap_or(i64::MAX);
    let n = match v {
        None => 0,
        Some(IntOrString::Int(n)) => i64::from(*n),
        Some(IntOrString::String(s)) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map_or(0, |p| (p.max(0).saturating_mul(total) + 99) / 100),
    };
    usize::try_from(n.max(0)).unwrap_or(0)
}

fn rolling_params(ds: &DaemonSet) -> Option<&k8s_openapi::api::apps::v1::RollingUpdateDaemonSet> {
    let strategy = ds.spec.as_ref()?.update_strategy.as_ref()?;
    strategy.rolling_update.as_ref()
}

/// (maxSurge, maxUnavailable) for `desired` nodes; both 0 reads as one
/// unavailable, as in Kubernetes (the API refuses it, old objects aside).
fn limits(ds: &DaemonSet, desired: usize) -> (usize, usize) {
    let ru = rolling_params(ds);
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), desired);
    let default_unavailable = IntOrString::Int(1);
    let unavailable = ru.map_or(Some(&default_unavailable), |r| r.max_unavailable.as_ref());
    let mut unavailable = resolve(unavailable, desired);
    if desired > 0 && surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// Whether the strategy lets an old and a new pod share a node.
pub(super) fn allows_surge(ds: &DaemonSet) -> bool {
    super::is_rolling(ds)
        && rolling_params(ds)
            .and_then(|r| r.max_surge.as_ref())
            .is_some_and(|s| resolve(Some(s), 1) > 0)
}

/// A node's live pod of the current revision and its live older one.
type NewAndOld = (Option<Arc<Pod>>, Option<Arc<Pod>>);

/// The non-deleting new and old pod of a node; `None` when there are
/// more than one of either (the manage step prunes those first).
fn new_and_old(pods: &[Arc<Pod>], hash: &str) -> Option<NewAndOld> {
    let (mut new, mut old) = (None, None);
    for pod in pods.iter().filter(|p| !is_deleting(&p.metadata)) {
        let slot = if pod_hash(pod) == hash {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(pod.clone());
    }
    Some((new, old))
}

/// What one rolling step decided.
#[derive(Default)]
struct Plan {
    delete: Vec<Arc<Pod>>,
    create: Vec<String>,
}

/// Reads pod availability at one instant, remembering the soonest time a
/// ready pod will turn available.
struct Availability {
    min_ready_s: i64,
    now: Timestamp,
    next: Option<Duration>,
}

impl Availability {
    fn available(&mut self, pod: &Pod) -> bool {
        match pod_available_in(pod, self.min_ready_s, self.now) {
            Some(d) if d.is_zero() => true,
            Some(d) => {
                self.next = Some(self.next.map_or(d, |n| n.min(d)));
                false
            }
            None => false,
        }
    }
}

impl Controller {
    /// One rolling-update step; when to look again for pods turning
    /// available.
    pub(super) async fn rolling_update(
        &self,
        key: &str,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        owned: &[Arc<Pod>],
        hash: &str,
    ) -> kube::Result<Option<Duration>> {
        let mut pods = by_node(owned);
        let mut eligible = BTreeMap::new();
        for node in nodes {
            let should_run = fit(ds, node).should_run;
            eligible.insert(name(&node.metadata).to_string(), should_run);
            if should_run {
                pods.entry(name(&node.metadata).to_string()).or_default();
            }
        }
        let desired = eligible.values().filter(|r| **r).count();
        let (surge, unavailable) = limits(ds, desired);
        let mut avail = Availability {
            min_ready_s: min_ready_s(ds),
            now: Timestamp::now(),
            next: None,
        };
        let plan = match surge {
            0 => plan_without_surge(&pods, hash, unavailable, &mut avail),
            _ => plan_with_surge(&pods, &eligible, hash, surge, desired, &mut avail),
        };
        let victims: Vec<Victim> = plan.delete.iter().map(Victim::graceful).collect();
        self.sync_nodes(key, ds, &plan.create, &victims, hash)
            .await?;
        // A margin so the pod is available when we look (availability is
        // judged in whole seconds).
        Ok(avail.next.map(|d| d + Duration::from_millis(100)))
    }
}

fn plan_without_surge(
    pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    max_unavailable: usize,
    avail: &mut Availability,
) -> Plan {
    let mut unavailable = 0;
    let mut replace_now = Vec::new();
    let mut candidates = Vec::new();
    for node_pods in pods.values() {
        let Some((new, old)) = new_and_old(node_pods, hash) else {
            unavailable += 1;
            continue;
        };
        match (new, old) {
            (None, None) | (Some(_), Some(_)) => unavailable += 1,
            (Some(new), None) => {
                if !avail.available(&new) {
                    unavailable += 1;
                }
            }
            (None, Some(old)) => {
                if !avail.available(&old) {
                    replace_now.push(old);
                    unavailable += 1;
                } else if unavailable < max_unavailable {
                    candidates.push(old);
                }
            }
        }
    }
    let room = max_unavailable
        .saturating_sub(unavailable)
        .min(candidates.len());
    replace_now.extend(candidates.into_iter().take(room));
    Plan {
        delete: replace_now,
        ..Plan::default()
    }
}

fn plan_with_surge(
    pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    eligible: &BTreeMap<String, bool>,
    hash: &str,
    max_surge: usize,
    desired: usize,
    avail: &mut Availability,
) -> Plan {
    let mut plan = Plan::default();
    let (mut surging, mut available) = (0usize, 0usize);
    let (mut replace_now, mut candidates, mut leaving) = (Vec::new(), Vec::new(), Vec::new());
    for (node, node_pods) in pods {
        let should_run = eligible.get(node).copied().unwrap_or(false);
        let Some((new, old)) = new_and_old(node_pods, hash) else {
            surging += 1;
            continue;
        };
        let counted = old.as_ref().or(new.as_ref());
        if counted.is_some_and(|p| avail.available(p)) {
            available += 1;
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                let old_available = avail.available(&old);
                match (should_run, old_available) {
                    (false, false) => plan.delete.push(old),
                    (false, true) => leaving.push(old),
                    (true, false) => replace_now.push(node.clone()),
                    (true, true) => {
                        if surging < max_surge {
                            candidates.push(node.clone());
                        }
                    }
                }
            }
            (Some(new), Some(old)) => {
                if avail.available(&new) {
                    plan.delete.push(old);
                } else {
                    surging += 1;
                }
            }
        }
    }
    // Pods on nodes that stopped taking them go only once enough pods
    // elsewhere are available (surge promises full availability).
    let deletable = available.saturating_sub(desired).min(leaving.len());
    plan.delete.extend(leaving.into_iter().take(deletable));
    let room = max_surge.saturating_sub(surging).min(candidates.len());
    plan.create = replace_now;
    plan.create.extend(candidates.into_iter().take(room));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemonset::placement::pin_to_node;
    use crate::daemonset::HASH_LABEL;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(pod_name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        let mut labels = BTreeMap::new();
        labels.insert(HASH_LABEL.to_string(), hash.to_string());
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(pod_name.into()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                affinity: Some(pin_to_node(None, node)),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        })
    }

    fn avail() -> Availability {
        Availability {
            min_ready_s: 0,
            now: Timestamp::now(),
            next: None,
        }
    }

    fn grouped(pods: &[Arc<Pod>], nodes: &[&str]) -> BTreeMap<String, Vec<Arc<Pod>>> {
        let mut m = by_node(pods);
        for n in nodes {
            m.entry(n.to_string()).or_default();
        }
        m
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter().map(|p| name(&p.metadata)).collect()
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(resolve(Some(&IntOrString::String("10%".into())), 3), 1);
        assert_eq!(resolve(Some(&IntOrString::String("50%".into())), 3), 2);
        assert_eq!(resolve(Some(&IntOrString::Int(2)), 3), 2);
        assert_eq!(resolve(None, 3), 0);
    }

    #[test]
    fn without_surge_old_pods_go_within_max_unavailable() {
        let pods = [
            pod("a-old", "a", "v1", true),
            pod("b-old", "b", "v1", true),
            pod("c-old", "c", "v1", true),
        ];
        let m = grouped(&pods, &["a", "b", "c"]);
        let plan = plan_without_surge(&m, "v2", 1, &mut avail());
        assert_eq!(names(&plan.delete), ["a-old"]);
        let plan = plan_without_surge(&m, "v2", 2, &mut avail());
        assert_eq!(names(&plan.delete), ["a-old", "b-old"]);
        // A node without a pod already uses the budget.
        let m = grouped(&pods[1..], &["a", "b", "c"]);
        let plan = plan_without_surge(&m, "v2", 1, &mut avail());
        assert!(plan.delete.is_empty());
        // An unavailable old pod is replaced regardless.
        let broken = [
            pod("a-old", "a", "v1", false),
            pod("b-old", "b", "v1", true),
        ];
        let m = grouped(&broken, &["a", "b"]);
        let plan = plan_without_surge(&m, "v2", 1, &mut avail());
        assert_eq!(names(&plan.delete), ["a-old"]);
    }

    #[test]
    fn with_surge_new_pods_come_first_and_old_ones_leave_when_replaced() {
        let eligible: BTreeMap<String, bool> = ["a", "b", "c"]
            .iter()
            .map(|n| (n.to_string(), true))
            .collect();
        let pods = [
            pod("a-old", "a", "v1", true),
            pod("b-old", "b", "v1", true),
            pod("c-old", "c", "v1", true),
        ];
        let m = grouped(&pods, &["a", "b", "c"]);
        let plan = plan_with_surge(&m, &eligible, "v2", 1, 3, &mut avail());
        assert_eq!(plan.create, ["a"]);
        assert!(plan.delete.is_empty());
        // The new pod on a is not ready yet: no more surge, nothing deleted.
        let mut more = pods.to_vec();
        more.push(pod("a-new", "a", "v2", false));
        let m = grouped(&more, &["a", "b", "c"]);
        let plan = plan_with_surge(&m, &eligible, "v2", 1, 3, &mut avail());
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        // Ready: the old pod on a goes, the next node surges.
        more[3] = pod("a-new", "a", "v2", true);
        let m = grouped(&more, &["a", "b", "c"]);
        let plan = plan_with_surge(&m, &eligible, "v2", 1, 3, &mut avail());
        assert_eq!(names(&plan.delete), ["a-old"]);
        assert_eq!(plan.create, ["b"]);
    }
}
