//! The resource quota controller (Kubernetes' `pkg/controller/resourcequota`):
//! keeps each ResourceQuota's `status.hard` equal to `spec.hard` and its
//! `status.used` recounted from what the namespace holds, so usage goes
//! down when pods finish or are deleted (admission only ever adds to it).
//!
//! Pods are counted from the shared pod cache, and a pod change recounts
//! the quotas of its namespace at once. Other kinds (`services`,
//! `configmaps`, `count/deployments.apps`, ...) are listed through the API
//! when a quota names them, on every reconcile: quota changes and the
//! periodic resync ([`RESYNC`]). Admission never trusts `status.used`
//! (it counts the namespace itself), so this lag only affects what
//! `kubectl describe quota` shows, never what is admitted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::Value;

use crate::cache::{key_of, next_change, Caches, Change, Informer};
use crate::client::{api_resource, is_status};
use crate::reconcile::{enqueue_all, name, namespace, run_workers, Reconciled, WorkQueue, RESYNC};
use crate::resources::RESOURCES;
use keel_apimachinery::quota::{self as q, Usage};

const WORKERS: usize = 2;

struct Controller {
    client: kube::Client,
    quotas: Informer<ResourceQuota>,
    pods: Informer<Pod>,
}

/// Runs the quota controller until the future is dropped.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Controller {
        client,
        quotas: caches.get(),
        pods: caches.get(),
    });
    let queue = WorkQueue::new();
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.quotas.wait_synced().await;
    ctl.pods.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut quota_rx = ctl.quotas.subscribe();
    let mut pod_rx = ctl.pods.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut quota_rx) => match c {
                Some(Change::Applied(x) | Change::Deleted(x)) => queue.add(&key_of(x.as_ref())),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.quotas),
                None => return,
            },
            c = next_change(&mut pod_rx) => match c {
                Some(Change::Applied(p) | Change::Deleted(p)) => {
                    for x in ctl.quotas.filter_in(namespace(&p.metadata), |_| true) {
                        queue.add(&key_of(x.as_ref()));
                    }
                }
                Some(Change::Resync) => enqueue_all(&queue, &ctl.quotas),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.quotas),
        }
    }
}

impl Controller {
    async fn reconcile(&self, key: &str) -> Reconciled<kube::Error> {
        let Some(quota) = self.quotas.get_key(key) else {
            return Ok(None);
        };
        let ns = namespace(&quota.metadata);
        let hard = quota
            .spec
            .as_ref()
            .and_then(|s| s.hard.clone())
            .unwrap_or_default();
        let scopes: Vec<&str> = quota
            .spec
            .as_ref()
            .and_then(|s| s.scopes.as_ref())
            .map(|s| s.iter().map(String::as_str).collect())
            .unwrap_or_default();
        // Each kind a hard name charges, listed once.
        let mut kinds: BTreeMap<(String, String), Vec<&String>> = BTreeMap::new();
        for n in hard.keys() {
            if let Some(kind) = q::charged_resource(n) {
                kinds.entry(kind).or_default().push(n);
            }
        }
        let mut used: Usage = hard.keys().map(|k| (k.clone(), 0)).collect();
        for ((group, resource), names) in kinds {
            for obj in self.objects(ns, &group, &resource).await? {
                if !q::scopes_match(&scopes, &resource, &obj) {
                    continue;
                }
                let charged = q::usage(&group, &resource, &obj);
                for n in &names {
                    if let Some(v) = charged.get(n.as_str()) {
                        *used.entry((*n).clone()).or_insert(0) += v;
                    }
                }
            }
        }
        self.write_status(&quota, hard, &used).await?;
        Ok(None)
    }

    /// The objects of `(group, resource)` in `ns` as JSON: pods from the
    /// cache, others listed through the API; none for kinds keel does not
    /// serve.
    async fn objects(&self, ns: &str, group: &str, resource: &str) -> kube::Result<Vec<Value>> {
        if group.is_empty() && resource == "pods" {
            let pods = self.pods.filter_in(ns, |_| true);
            return Ok(pods
                .iter()
                .filter_map(|p| serde_json::to_value(p.as_ref()).ok())
                .collect());
        }
        let Some(info) = RESOURCES
            .iter()
            .find(|r| r.group == group && r.resource == resource && r.namespaced)
        else {
            return Ok(vec![]);
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &api_resource(info));
        let list = api.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect())
    }

    /// Writes `status.hard` and `status.used` when they changed. A 409
    /// (admission charged the quota meanwhile) is retried from the newer
    /// object by the queue.
    async fn write_status(
        &self,
        quota: &ResourceQuota,
        hard: BTreeMap<String, Quantity>,
        used: &Usage,
    ) -> kube::Result<()> {
        let used: BTreeMap<String, Quantity> = used
            .iter()
            .map(|(k, v)| (k.clone(), Quantity(q::format_quantity(k, *v))))
            .collect();
        let status = ResourceQuotaStatus {
            hard: Some(hard),
            used: Some(used),
        };
        if same_status(quota.status.as_ref(), &status) {
            return Ok(());
        }
        let mut updated = quota.clone();
        updated.status = Some(status);
        let api: Api<ResourceQuota> =
            Api::namespaced(self.client.clone(), namespace(&quota.metadata));
        match api
            .replace_status(name(&quota.metadata), &PostParams::default(), &updated)
            .await
        {
            Err(e) if is_status(&e, 404) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// Equal as amounts (`1000m` is `1`), not as strings.
fn same_status(old: Option<&ResourceQuotaStatus>, new: &ResourceQuotaStatus) -> bool {
    let amounts = |m: Option<&BTreeMap<String, Quantity>>| -> HashMap<String, Option<i128>> {
        m.into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), crate::quantity::quantity_nanos(&v.0)))
            .collect()
    };
    let Some(old) = old else {
        return false;
    };
    amounts(old.hard.as_ref()) == amounts(new.hard.as_ref())
        && amounts(old.used.as_ref()) == amounts(new.used.as_ref())
        && old.hard == new.hard
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        )
    }

    #[test]
    fn equal_amounts_need_no_write() {
        let old = ResourceQuotaStatus {
            hard: list(&[("requests.cpu", "1")]),
            used: list(&[("requests.cpu", "1000m")]),
        };
        let new = ResourceQuotaStatus {
            hard: list(&[("requests.cpu", "1")]),
            used: list(&[("requests.cpu", "1")]),
        };
        assert!(same_status(Some(&old), &new));
        let more = ResourceQuotaStatus {
            hard: list(&[("requests.cpu", "1")]),
            used: list(&[("requests.cpu", "2")]),
        };
        assert!(!same_status(Some(&old), &more));
        assert!(!same_status(None, &new));
    }
}
