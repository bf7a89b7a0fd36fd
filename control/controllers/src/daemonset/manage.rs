//! One pod per eligible node (Kubernetes' `manage` and
//! `podsShouldBeOnNode`): create where one is missing, delete where the
//! node no longer takes it (gone, relabelled, tainted NoExecute), delete
//! failed and succeeded pods so they are replaced, and prune extra pods:
//! without surge only the oldest stays; with surge an old and a new pod
//! may share a node until the new one is available.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};

use super::placement::{fit, Fit};
use super::pods::{by_node, pod_hash, Victim};
use super::rolling::allows_surge;
use super::{min_ready_s, sooner, Controller};
use crate::events;
use crate::reconcile::{
    is_deleting, name, namespace, pod_available_in, pod_is_ready, pod_phase, uid,
};

/// What one reconcile's manage step did.
pub(super) struct Step {
    /// Pods were created or deleted (the next step waits for the cache).
    pub wrote: bool,
    /// Look again after this long (a failed pod still backing off).
    pub after: Option<Duration>,
}

/// What should happen on one node.
#[derive(Default)]
struct NodePlan {
    create: bool,
    delete: Vec<Arc<Pod>>,
    /// Failed pods to report (deleted in this plan).
    failed: Vec<Arc<Pod>>,
    after: Option<Duration>,
}

/// The node is bound and has a name: the pod may be deleted gracefully.
fn is_bound(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

impl Controller {
    pub(super) async fn manage(
        &self,
        key: &str,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        owned: &[Arc<Pod>],
        hash: &str,
    ) -> kube::Result<Step> {
        let mut by_node = by_node(owned);
        let (mut create, mut victims, mut after) = (Vec::new(), Vec::new(), None);
        for node in nodes {
            let node_name = name(&node.metadata);
            let pods = by_node.remove(node_name).unwrap_or_default();
            let plan = self.plan_node(ds, node_name, fit(ds, node), &pods, hash);
            for pod in &plan.failed {
                let msg = format!(
                    "Found failed daemon pod {}/{} on node {node_name}, will try to kill it",
                    namespace(&pod.metadata),
                    name(&pod.metadata)
                );
                self.event(ds, events::WARNING, "FailedDaemonPod", msg);
            }
            if plan.create {
                create.push(node_name.to_string());
            }
            victims.extend(plan.delete.iter().map(Victim::graceful));
            after = sooner(after, plan.after);
        }
        // Pods for nodes that no longer exist: keel has no pod GC, so the
        // controller removes them, bound ones without a grace period.
        for pod in by_node.into_values().flatten() {
            if !is_deleting(&pod.metadata) {
                let force = is_bound(&pod);
                victims.push(Victim { pod, force });
            }
        }
        let wrote = !create.is_empty() || !victims.is_empty();
        self.sync_nodes(key, ds, &create, &victims, hash).await?;
        Ok(Step { wrote, after })
    }

    /// Kubernetes' `podsShouldBeOnNode` for one node and its daemon pods
    /// (oldest first).
    fn plan_node(
        &self,
        ds: &DaemonSet,
        node_name: &str,
        fit: Fit,
        pods: &[Arc<Pod>],
        hash: &str,
    ) -> NodePlan {
        let mut plan = NodePlan::default();
        if fit.should_run && pods.is_empty() {
            plan.create = true;
            return plan;
        }
        if !fit.may_stay {
            plan.delete = pods
                .iter()
                .filter(|p| !is_deleting(&p.metadata))
                .cloned()
                .collect();
            return plan;
        }
        let mut running = Vec::new();
        for pod in pods.iter().filter(|p| !is_deleting(&p.metadata)) {
            match pod_phase(pod) {
                Some("Failed") => {
                    let backoff_key = failed_backoff_key(ds, node_name);
                    match self.failed.try_next(&backoff_key, Instant::now()) {
                        Ok(()) => {
                            plan.delete.push(pod.clone());
                            plan.failed.push(pod.clone());
                        }
                        Err(wait) => plan.after = sooner(plan.after, Some(wait)),
                    }
                }
                Some("Succeeded") => plan.delete.push(pod.clone()),
                _ => running.push(pod.clone()),
            }
        }
        if !allows_surge(ds) {
            // Only the oldest stays.
            plan.delete.extend(running.into_iter().skip(1));
            return plan;
        }
        if running.len() <= 1 {
            plan.create = running.is_empty() && fit.should_run;
            return plan;
        }
        plan.delete.extend(surge_excess(ds, &running, hash));
        plan
    }
}

/// With surge, a node keeps at most its oldest new pod and its oldest old
/// pod, and the old one only while it is ready and the new one is not yet
/// available. `running` is oldest first.
fn surge_excess(ds: &DaemonSet, running: &[Arc<Pod>], hash: &str) -> Vec<Arc<Pod>> {
    let (mut oldest_new, mut oldest_old, mut excess) = (None, None, Vec::new());
    for pod in running {
        let slot = match pod_hash(pod) == hash {
            true => &mut oldest_new,
            false => &mut oldest_old,
        };
        if slot.is_none() {
            *slot = Some(pod.clone());
        } else {
            excess.push(pod.clone());
        }
    }
    if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
        let new_available =
            pod_available_in(&new, min_ready_s(ds), Timestamp::now()).is_some_and(|d| d.is_zero());
        if !pod_is_ready(&old) || new_available {
            excess.push(old);
        }
    }
    excess
}

/// The back-off of failed pods is per DaemonSet, generation and node, so
/// a new template retries at once.
fn failed_backoff_key(ds: &DaemonSet, node_name: &str) -> String {
    let generation = ds
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    format!("{}/{generation}/{node_name}", uid(&ds.metadata))
}
