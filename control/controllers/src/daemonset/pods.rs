//! A DaemonSet's pods: grouped by the node they are for, ordered oldest
//! first, made from the template for one node, and created or deleted
//! under expectations (Kubernetes' `syncNodes`).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use super::placement::{daemon_pod_spec, pin_to_node, target_node};
use super::{Controller, BURST, HASH_LABEL};
use crate::client::is_status;
use crate::events;
use crate::meta;
use crate::reconcile::{created_s, is_deleting, name, namespace, owner_ref, pod_phase};

/// A DaemonSet's pods per target node, each list oldest first (bound pods
/// before unbound ones). Pods that finished and are being deleted are
/// left out: nothing more is to be done with them. Pods with no target
/// node (not made by a DaemonSet controller) are left out too.
pub(super) fn by_node(pods: &[Arc<Pod>]) -> BTreeMap<String, Vec<Arc<Pod>>> {
    let mut map: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in pods {
        let terminal = matches!(pod_phase(pod), Some("Succeeded" | "Failed"));
        if terminal && is_deleting(&pod.metadata) {
            continue;
        }
        if let Some(node) = target_node(pod) {
            map.entry(node.to_string()).or_default().push(pod.clone());
        }
    }
    for list in map.values_mut() {
        list.sort_by_cached_key(|p| age_rank(p));
    }
    map
}

/// Kubernetes' `podByCreationTimestampAndPhase`: bound first, then oldest,
/// then by name.
fn age_rank(pod: &Pod) -> (bool, Option<i64>, String) {
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    (
        !bound,
        created_s(&pod.metadata),
        name(&pod.metadata).to_string(),
    )
}

/// The template's revision label on a pod (empty when absent).
pub(super) fn pod_hash(pod: &Pod) -> &str {
    let labels = pod.metadata.labels.as_ref();
    labels
        .and_then(|l| l.get(HASH_LABEL))
        .map_or("", String::as_str)
}

/// A new pod of `ds` for `node`, labelled with the current revision's
/// `hash`, carrying the daemon tolerations and pinned to the node.
pub(super) fn new_pod(ds: &DaemonSet, node: &str, hash: &str, pod_name: &str) -> Pod {
    let template = ds.spec.as_ref().and_then(|s| s.template.metadata.as_ref());
    let mut labels = template.and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(HASH_LABEL.to_string(), hash.to_string());
    let mut spec = daemon_pod_spec(ds);
    spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name.to_string()),
            generate_name: Some(format!("{}-", name(&ds.metadata))),
            namespace: Some(namespace(&ds.metadata).to_string()),
            owner_references: Some(vec![owner_ref(ds)]),
            labels: Some(labels),
            annotations: template.and_then(|m| m.annotations.clone()),
            finalizers: template.and_then(|m| m.finalizers.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// A pod chosen for deletion, and whether to skip its grace period (its
/// node is gone, so no agent will confirm it stopped).
pub(super) struct Victim {
    pub pod: Arc<Pod>,
    pub force: bool,
}

impl Victim {
    pub fn graceful(pod: &Arc<Pod>) -> Victim {
        Victim {
            pod: pod.clone(),
            force: false,
        }
    }
}

impl Controller {
    /// Creates a pod on each of `nodes` and deletes `victims`, at most
    /// [`BURST`] of each; creates go in batches of 1, 2, 4, ... (slow
    /// start), so a quota or admission failure costs one request.
    pub(super) async fn sync_nodes(
        &self,
        key: &str,
        ds: &DaemonSet,
        nodes: &[String],
        victims: &[Victim],
        hash: &str,
    ) -> kube::Result<()> {
        let deletes = victims
            .iter()
            .take(BURST)
            .map(|v| self.delete_pod(key, ds, v));
        let deleted: kube::Result<Vec<()>> = join_all(deletes).await.into_iter().collect();
        let mut nodes = &nodes[..nodes.len().min(BURST)];
        let mut batch = 1;
        while !nodes.is_empty() {
            let (now, rest) = nodes.split_at(batch.min(nodes.len()));
            let creates = now.iter().map(|n| self.create_pod(key, ds, n, hash));
            join_all(creates)
                .await
                .into_iter()
                .collect::<kube::Result<Vec<()>>>()?;
            nodes = rest;
            batch *= 2;
        }
        deleted.map(|_| ())
    }

    /// Names the pod here (not with generateName on the server) so the
    /// expectation exists before the informer can possibly see the pod.
    async fn create_pod(
        &self,
        key: &str,
        ds: &DaemonSet,
        node: &str,
        hash: &str,
    ) -> kube::Result<()> {
        let pod_name = meta::generated_name(&format!("{}-", name(&ds.metadata)));
        let pod = new_pod(ds, node, hash, &pod_name);
        self.expectations.expect_create(key, &pod_name);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace(&ds.metadata));
        if let Err(e) = pods.create(&PostParams::default(), &pod).await {
            self.expectations.observe(key, &pod_name, true);
            return Err(e);
        }
        let msg = format!("Created pod: {pod_name}");
        self.event(ds, events::NORMAL, "SuccessfulCreate", msg);
        Ok(())
    }

    /// Deletes one pod, pinned to the uid judged (a pod recreated under
    /// the same name is not ours to delete).
    async fn delete_pod(&self, key: &str, ds: &DaemonSet, victim: &Victim) -> kube::Result<()> {
        let m = &victim.pod.metadata;
        let pod_name = name(m).to_string();
        self.expectations.expect_delete(key, &pod_name);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace(m));
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: m.uid.clone(),
                resource_version: None,
            }),
            grace_period_seconds: victim.force.then_some(0),
            ..DeleteParams::default()
        };
        match pods.delete(&pod_name, &params).await {
            Ok(_) => {
                let msg = format!("Deleted pod: {pod_name}");
                self.event(ds, events::NORMAL, "SuccessfulDelete", msg);
                Ok(())
            }
            // Already gone: its event may have passed, expect nothing.
            Err(e) if is_status(&e, 404) => {
                self.expectations.observe(key, &pod_name, true);
                Ok(())
            }
            Err(e) => {
                self.expectations.observe(key, &pod_name, true);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(pod_name: &str, node: Option<&str>, pinned: &str, created: &str) -> Arc<Pod> {
        let created: jiff::Timestamp = created.parse().expect("a test timestamp");
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(pod_name.into()),
                creation_timestamp: Some(Time(created)),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                affinity: Some(pin_to_node(None, pinned)),
                ..PodSpec::default()
            }),
            status: None,
        })
    }

    #[test]
    fn pods_group_by_target_node_bound_and_oldest_first() {
        let pods = [
            pod("young", Some("a"), "a", "2024-01-02T00:00:00Z"),
            pod("unbound", None, "a", "2024-01-01T00:00:00Z"),
            pod("old", Some("a"), "a", "2024-01-01T00:00:00Z"),
            pod("other", None, "b", "2024-01-01T00:00:00Z"),
        ];
        let map = by_node(&pods);
        let names = |n: &str| -> Vec<String> {
            map[n]
                .iter()
                .map(|p| name(&p.metadata).to_string())
                .collect()
        };
        assert_eq!(names("a"), ["old", "young", "unbound"]);
        assert_eq!(names("b"), ["other"]);
    }

    #[test]
    fn new_pods_carry_the_hash_owner_tolerations_and_pin() {
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), "agent".to_string());
        let ds = DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("d".into()),
                uid: Some("u".into()),
                ..ObjectMeta::default()
            },
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec::default()),
                },
                ..DaemonSetSpec::default()
            }),
            status: None,
        };
        let p = new_pod(&ds, "n1", "h4sh", "agent-xyz");
        let labels = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("app").map(String::as_str), Some("agent"));
        assert_eq!(pod_hash(&p), "h4sh");
        assert_eq!(target_node(&p), Some("n1"));
        let refs = p.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(
            (refs[0].kind.as_str(), refs[0].uid.as_str()),
            ("DaemonSet", "u")
        );
        let tolerations = p.spec.and_then(|s| s.tolerations).unwrap_or_default();
        assert_eq!(tolerations.len(), 6);
    }
}
