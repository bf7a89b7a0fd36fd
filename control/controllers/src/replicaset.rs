//! The ReplicaSet controller (Kubernetes' `pkg/controller/replicaset`):
//! keeps `spec.replicas` active pods matching the selector, adopting
//! orphans and releasing pods that stopped matching, and reports what it
//! sees in `status`.
//!
//! Why expectations: the pod cache lags our own writes. Without them a
//! reconcile right after creating pods would count too few and create
//! them again. Why the deletion ranking: removing the pods that serve
//! least (unscheduled, not running, not ready, youngest) first keeps a
//! scale-down from hurting availability.
//!
//! It reads ReplicaSets and pods from the manager's shared caches (the
//! pod cache is the scheduler's and the other controllers' too) and writes
//! through `kube::Api`, as the client's user agent (its field manager).
//!
//! The same controller runs ReplicationControllers (core/v1): `run` is
//! generic over [`Replicated`], which hides the selector's shape and the
//! status type.

mod replicated;

pub use replicated::{Counts, Replicated};

use std::cmp::Reverse;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use crate::cache::{key_of, next_change, Caches, Change, Informer};
use crate::client::is_status;
use crate::events;
use crate::meta;
use crate::reconcile::{
    claim, controller_key, controller_ref, created_s, enqueue_all, is_deleting, name, namespace,
    owner_ref, pod_available_in, pod_is_active, pod_is_ready, pod_phase, pod_ready_since,
    run_workers, Expectations, Reconciled, WorkQueue, RESYNC,
};

/// Kubernetes' `burstReplicas`: at most this many creates or deletes per sync.
const BURST: usize = 500;
const WORKERS: usize = 4;

struct Controller<K: Replicated> {
    client: kube::Client,
    replicasets: Informer<K>,
    pods: Informer<Pod>,
    expectations: Expectations,
}

/// Runs the controller of `K` (ReplicaSets or ReplicationControllers)
/// until the future is dropped, reading through the shared `caches` and
/// writing through `client`.
pub async fn run<K: Replicated>(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Controller {
        replicasets: caches.get::<K>(),
        pods: caches.get::<Pod>(),
        client,
        expectations: Expectations::default(),
    });
    let queue = WorkQueue::new();
    // Subscribes when first polled, after the sync; the resync tick that
    // fires at once then queues everything the initial list brought.
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.replicasets.wait_synced().await;
    ctl.pods.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

/// Maps every ReplicaSet and pod change to the ReplicaSets to reconcile.
async fn watch_changes<K: Replicated>(ctl: Arc<Controller<K>>, queue: WorkQueue) {
    let mut rs_rx = ctl.replicasets.subscribe();
    let mut pod_rx = ctl.pods.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut rs_rx) => match c {
                Some(Change::Applied(rs) | Change::Deleted(rs)) => queue.add(&key_of(rs.as_ref())),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.replicasets),
                None => return,
            },
            c = next_change(&mut pod_rx) => match c {
                Some(Change::Applied(p)) => ctl.pod_changed(&queue, &p, false),
                Some(Change::Deleted(p)) => ctl.pod_changed(&queue, &p, true),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.replicasets),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.replicasets),
        }
    }
}

impl<K: Replicated> Controller<K> {
    /// A pod changed: its controller must look, or, for an orphan, every
    /// ReplicaSet that could adopt it.
    fn pod_changed(&self, queue: &WorkQueue, pod: &Pod, deleted: bool) {
        let m = &pod.metadata;
        let gone = deleted || is_deleting(m);
        if let Some(key) = controller_key(m, &K::kind(&())) {
            self.expectations.observe(&key, name(m), gone);
            queue.add(&key);
            return;
        }
        if gone || controller_ref(m).is_some() {
            return;
        }
        let adopters = self.replicasets.filter_in(namespace(m), |rs| {
            rs.selector()
                .is_some_and(|s| s.matches_labels(m.labels.as_ref()))
        });
        for rs in adopters {
            queue.add(&key_of(rs.as_ref()));
        }
    }

    async fn reconcile(&self, key: &str) -> Reconciled<kube::Error> {
        let Some(rs) = self.replicasets.get_key(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let Some(selector) = rs.selector() else {
            return Ok(None);
        };
        let candidates = self.pods.filter_in(namespace(rs.meta()), pod_is_active);
        let owned = claim(&self.client, rs.as_ref(), &selector, candidates).await?;
        let managed = match self.expectations.satisfied(key) && !is_deleting(rs.meta()) {
            true => self.manage(key, &rs, &owned).await,
            false => Ok(HashSet::new()),
        };
        let deleted = managed.as_ref().cloned().unwrap_or_default();
        let alive: Vec<&Pod> = owned
            .iter()
            .map(Arc::as_ref)
            .filter(|p| !deleted.contains(name(&p.metadata)))
            .collect();
        let recheck = self.write_status(&rs, &alive).await?;
        managed.map(|_| recheck)
    }

    /// Creates or deletes pods toward `spec.replicas`; the names deleted.
    async fn manage(&self, key: &str, rs: &K, owned: &[Arc<Pod>]) -> kube::Result<HashSet<String>> {
        let want = usize::try_from(rs.replicas()).unwrap_or(0);
        let have = owned.len();
        if have < want {
            self.create_pods(key, rs, (want - have).min(BURST)).await?;
            return Ok(HashSet::new());
        }
        let mut victims: Vec<&Pod> = owned.iter().map(Arc::as_ref).collect();
        victims.sort_by_cached_key(|p| deletion_rank(p));
        victims.truncate((have - want).min(BURST));
        self.delete_pods(key, rs, &victims).await
    }

    /// Creates `count` pods in batches of 1, 2, 4, ... (Kubernetes' slow
    /// start): a quota or admission failure then costs one request, not
    /// hundreds.
    async fn create_pods(&self, key: &str, rs: &K, count: usize) -> kube::Result<()> {
        let mut left = count;
        let mut batch = 1;
        while left > 0 {
            let n = batch.min(left);
            let results = join_all((0..n).map(|_| self.create_pod(key, rs))).await;
            results.into_iter().collect::<kube::Result<Vec<()>>>()?;
            left -= n;
            batch *= 2;
        }
        Ok(())
    }

    /// Names the pod here (not with generateName on the server) so the
    /// expectation exists before the informer can possibly see the pod.
    async fn create_pod(&self, key: &str, rs: &K) -> kube::Result<()> {
        let pod_name = meta::generated_name(&format!("{}-", name(rs.meta())));
        let pod = pod_from_template(rs, &pod_name);
        self.expectations.expect_create(key, &pod_name);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace(rs.meta()));
        if let Err(e) = pods.create(&PostParams::default(), &pod).await {
            self.expectations.observe(key, &pod_name, true);
            return Err(e);
        }
        self.event(rs, "SuccessfulCreate", format!("Created pod: {pod_name}"));
        Ok(())
    }

    /// Deletes `victims`, each pinned to the uid judged (a pod recreated
    /// under the same name is not ours to delete); the names deleted.
    async fn delete_pods(
        &self,
        key: &str,
        rs: &K,
        victims: &[&Pod],
    ) -> kube::Result<HashSet<String>> {
        let deletes = victims.iter().map(|p| async move {
            let pod_name = name(&p.metadata).to_string();
            self.expectations.expect_delete(key, &pod_name);
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace(&p.metadata));
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: p.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pods.delete(&pod_name, &params).await {
                Ok(_) => {
                    let msg = format!("Deleted pod: {pod_name}");
                    self.event(rs, "SuccessfulDelete", msg);
                    Ok(pod_name)
                }
                // Already gone: its event may have passed, expect nothing.
                Err(e) if is_status(&e, 404) => {
                    self.expectations.observe(key, &pod_name, true);
                    Ok(pod_name)
                }
                Err(e) => {
                    self.expectations.observe(key, &pod_name, true);
                    Err(e)
                }
            }
        });
        join_all(deletes).await.into_iter().collect()
    }

    /// Records an Event about `rs` in the background (best effort).
    fn event(&self, rs: &K, reason: &'static str, message: String) {
        let (client, involved) = (self.client.clone(), events::object_ref(rs));
        tokio::spawn(async move {
            events::record(
                &client,
                &involved,
                events::NORMAL,
                reason,
                &message,
                K::COMPONENT,
            )
            .await;
        });
    }

    /// Writes the status when it changed; when to look again for pods
    /// that are ready but not yet available.
    async fn write_status(&self, rs: &K, pods: &[&Pod]) -> kube::Result<Option<Duration>> {
        let (counts, recheck) = calculate_status(rs, pods, Timestamp::now());
        if rs.counts() == counts {
            return Ok(recheck);
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace(rs.meta()));
        let rs_name = name(rs.meta());
        let mut updated = rs.clone();
        updated.set_counts(&counts);
        match api
            .replace_status(rs_name, &PostParams::default(), &updated)
            .await
        {
            Err(e) if is_status(&e, 409) => {
                // Stale cache: apply the same counts to the current object.
                let Some(mut fresh) = api.get_opt(rs_name).await? else {
                    return Ok(None);
                };
                fresh.set_counts(&counts);
                api.replace_status(rs_name, &PostParams::default(), &fresh)
                    .await?;
            }
            other => {
                other?;
            }
        }
        Ok(recheck)
    }
}

/// A count as the API's int32, saturating (a namespace never holds 2^31 pods).
fn count_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The counts of `pods` (the active pods `rs` owns), and when a ready pod
/// will next turn available.
fn calculate_status<K: Replicated>(
    rs: &K,
    pods: &[&Pod],
    now: Timestamp,
) -> (Counts, Option<Duration>) {
    let min_ready_s = i64::from(rs.min_ready_seconds());
    let template_labels = rs
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let fully_labeled = pods
        .iter()
        .filter(|p| {
            template_labels.is_none_or(|t| {
                let labels = p.metadata.labels.as_ref();
                t.iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
        })
        .count();
    let ready = pods.iter().filter(|p| pod_is_ready(p)).count();
    let waits: Vec<Duration> = pods
        .iter()
        .filter_map(|p| pod_available_in(p, min_ready_s, now))
        .collect();
    let available = waits.iter().filter(|d| d.is_zero()).count();
    let recheck = waits.into_iter().filter(|d| !d.is_zero()).min();
    let counts = Counts {
        replicas: count_i32(pods.len()),
        fully_labeled: count_i32(fully_labeled),
        ready: count_i32(ready),
        available: count_i32(available),
        observed_generation: rs.meta().generation.unwrap_or(0),
    };
    (counts, recheck.map(|d| d + Duration::from_millis(100)))
}

/// A new pod from the template of `rs`, controlled by it.
fn pod_from_template<K: Replicated>(rs: &K, pod_name: &str) -> Pod {
    let template = rs.template();
    let tm = template.and_then(|t| t.metadata.as_ref());
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name.to_string()),
            generate_name: Some(format!("{}-", name(rs.meta()))),
            namespace: Some(namespace(rs.meta()).to_string()),
            owner_references: Some(vec![owner_ref(rs)]),
            labels: tm.and_then(|m| m.labels.clone()),
            annotations: tm.and_then(|m| m.annotations.clone()),
            finalizers: tm.and_then(|m| m.finalizers.clone()),
            ..ObjectMeta::default()
        },
        spec: template.and_then(|t| t.spec.clone()),
        status: None,
    }
}

/// Sort key: pods that sort first are deleted first (Kubernetes'
/// `ActivePodsWithRanks` without the co-location rank).
fn deletion_rank(pod: &Pod) -> impl Ord {
    let assigned = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match pod_phase(pod) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    };
    let ready_since_s = pod_ready_since(pod).map(|t| t.as_second());
    let restarts: i64 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| i64::from(c.restart_count)).sum());
    (
        assigned,
        phase,
        pod_is_ready(pod),
        Reverse(ready_since_s),
        Reverse(restarts),
        Reverse(created_s(&pod.metadata)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
    use k8s_openapi::api::core::v1::{
        Container, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn pod(pod_name: &str, node: Option<&str>, phase: &str, ready: bool, created: &str) -> Pod {
        let created: Timestamp = created.parse().expect("a test timestamp");
        Pod {
            metadata: ObjectMeta {
                name: Some(pod_name.into()),
                creation_timestamp: Some(Time(created)),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn surplus_pods_are_ranked_least_useful_first() {
        let mut pods = [
            pod(
                "ready-old",
                Some("n"),
                "Running",
                true,
                "2024-01-01T00:00:00Z",
            ),
            pod(
                "ready-new",
                Some("n"),
                "Running",
                true,
                "2024-01-02T00:00:00Z",
            ),
            pod(
                "not-ready",
                Some("n"),
                "Running",
                false,
                "2024-01-01T00:00:00Z",
            ),
            pod(
                "pending",
                Some("n"),
                "Pending",
                false,
                "2024-01-01T00:00:00Z",
            ),
            pod(
                "unscheduled",
                None,
                "Pending",
                false,
                "2024-01-01T00:00:00Z",
            ),
        ];
        pods.sort_by_cached_key(deletion_rank);
        let names: Vec<&str> = pods.iter().map(|p| name(&p.metadata)).collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "not-ready",
                "ready-new",
                "ready-old"
            ]
        );
    }

    fn replicaset(template_labels: &[(&str, &str)]) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("d".into()),
                uid: Some("u".into()),
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(2),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: labels(template_labels),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some("nginx".into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                }),
                ..ReplicaSetSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn status_counts_ready_available_and_fully_labeled() {
        let rs = replicaset(&[("app", "web"), ("tier", "fe")]);
        let mut a = pod("a", Some("n"), "Running", true, "2024-01-01T00:00:00Z");
        a.metadata.labels = labels(&[("app", "web"), ("tier", "fe")]);
        let b = pod("b", None, "Pending", false, "2024-01-01T00:00:00Z");
        let (s, recheck) = calculate_status(&rs, &[&a, &b], Timestamp::now());
        assert_eq!(
            s,
            Counts {
                replicas: 2,
                fully_labeled: 1,
                ready: 1,
                available: 1,
                observed_generation: 3,
            }
        );
        assert_eq!(recheck, None);
        let mut rs2 = rs.clone();
        rs2.set_counts(&s);
        assert_eq!(rs2.counts(), s);
        assert_ne!(rs.counts(), s);
    }

    #[test]
    fn pods_copy_the_template_and_point_at_their_owner() {
        let rs = replicaset(&[("app", "web")]);
        let p = pod_from_template(&rs, "web-abcde");
        assert_eq!(p.metadata.labels, labels(&[("app", "web")]));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        let refs = p.metadata.owner_references.unwrap_or_default();
        assert_eq!(refs[0].uid, "u");
        assert_eq!(refs[0].controller, Some(true));
        let image = p.spec.and_then(|s| s.containers[0].image.clone());
        assert_eq!(image.as_deref(), Some("nginx"));
    }
}
