//! A DaemonSet's `status` (Kubernetes' `updateDaemonSetStatus`): per node
//! that should run the daemon, whether it has a pod, and whether the
//! oldest one is ready, available and of the current revision; per node
//! that should not, whether it has one anyway (misscheduled).
//!
//! The four counts Go always emits (`currentNumberScheduled`,
//! `desiredNumberScheduled`, `numberMisscheduled`, `numberReady`) are
//! always written, 0 included; the others are omitted when 0, as Go's
//! `omitempty` does. `observedGeneration` is raised only by a reconcile
//! that acted on that generation, so `kubectl rollout status` does not
//! report a rollout done before the controller saw it.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};

use super::placement::fit;
use super::pods::{by_node, pod_hash};
use super::{min_ready_s, Controller};
use crate::client::is_status;
use crate::reconcile::{name, namespace, pod_available_in, pod_is_ready};

/// The counts of one DaemonSet, and when a ready pod turns available.
fn calculate(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    owned: &[Arc<Pod>],
    hash: &str,
    now: Timestamp,
) -> (Counts, Option<Duration>) {
    let pods = by_node(owned);
    let mut c = Counts::default();
    let mut recheck: Option<Duration> = None;
    for node in nodes {
        let on_node = pods.get(name(&node.metadata)).and_then(|p| p.first());
        if !fit(ds, node).should_run {
            c.misscheduled += i32::from(on_node.is_some());
            continue;
        }
        c.desired += 1;
        let Some(pod) = on_node else {
            continue;
        };
        c.current += 1;
        if pod_is_ready(pod) {
            c.ready += 1;
            match pod_available_in(pod, min_ready_s(ds), now) {
                Some(d) if d.is_zero() => c.available += 1,
                Some(d) => recheck = Some(recheck.map_or(d, |r| r.min(d))),
                None => {}
            }
        }
        if pod_hash(pod) == hash {
            c.updated += 1;
        }
    }
    (c, recheck.map(|d| d + Duration::from_millis(100)))
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    desired: i32,
    current: i32,
    misscheduled: i32,
    ready: i32,
    updated: i32,
    available: i32,
}

impl Counts {
    /// Writes the counts into `s`, zeros of `omitempty` fields omitted.
    fn apply(self, s: &mut DaemonSetStatus) {
        let nonzero = |n: i32| Some(n).filter(|n| *n != 0);
        s.desired_number_scheduled = self.desired;
        s.current_number_scheduled = self.current;
        s.number_misscheduled = self.misscheduled;
        s.number_ready = self.ready;
        s.updated_number_scheduled = nonzero(self.updated);
        s.number_available = nonzero(self.available);
        s.number_unavailable = nonzero(self.desired - self.available);
    }
}

/// The status `ds` should have: the counts, and the generation when
/// `observed` (else the one already there).
fn desired_status(ds: &DaemonSet, counts: Counts, observed: bool) -> DaemonSetStatus {
    let mut s = ds.status.clone().unwrap_or_default();
    counts.apply(&mut s);
    if observed {
        s.observed_generation = ds.metadata.generation;
    }
    s
}

impl Controller {
    /// Writes the status when it changed; when to look again for pods
    /// that are ready but not yet available.
    pub(super) async fn write_status(
        &self,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        owned: &[Arc<Pod>],
        hash: &str,
        observed: bool,
    ) -> kube::Result<Option<Duration>> {
        let (counts, recheck) = calculate(ds, nodes, owned, hash, Timestamp::now());
        let status = desired_status(ds, counts, observed);
        // An absent status differs even when every count is 0: the four
        // required counts must be written.
        if ds.status.as_ref() == Some(&status) {
            return Ok(recheck);
        }
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), namespace(&ds.metadata));
        let ds_name = name(&ds.metadata);
        let mut updated = ds.clone();
        updated.status = Some(status);
        match api
            .replace_status(ds_name, &PostParams::default(), &updated)
            .await
        {
            Err(e) if is_status(&e, 409) => {
                // Stale cache: apply the same counts to the current object.
                let Some(mut fresh) = api.get_opt(ds_name).await? else {
                    return Ok(None);
                };
                let same_generation = fresh.metadata.generation == ds.metadata.generation;
                fresh.status = Some(desired_status(&fresh, counts, observed && same_generation));
                api.replace_status(ds_name, &PostParams::default(), &fresh)
                    .await?;
            }
            other => {
                other?;
            }
        }
        Ok(recheck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn required_counts_are_written_as_zero_and_the_rest_omitted() {
        let ds = DaemonSet {
            metadata: ObjectMeta {
                generation: Some(2),
                ..ObjectMeta::default()
            },
            ..DaemonSet::default()
        };
        let (counts, recheck) = calculate(&ds, &[], &[], "h", Timestamp::now());
        assert_eq!(counts, Counts::default());
        assert_eq!(recheck, None);
        let s = desired_status(&ds, counts, true);
        let json = serde_json::to_value(&s).expect("a status serializes");
        assert_eq!(
            json,
            serde_json::json!({"currentNumberScheduled": 0, "desiredNumberScheduled": 0,
                "numberMisscheduled": 0, "numberReady": 0, "observedGeneration": 2})
        );
        let unobserved = desired_status(&ds, counts, false);
        assert_eq!(unobserved.observed_generation, None);
    }
}
