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

use std::cmp::Reverse;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use serde_json::{json, Value};

use crate::client::{path, Client, ClientResult};
use crate::events;
use crate::informer::{key_of, next_change, Change, Informer};
use crate::meta;
use crate::reconcile::{
    claim, controller_key, enqueue_all_json, int_at, namespace, owner_ref, pod_available_in,
    pod_is_active, pod_is_ready, pod_ready_since, run_workers, spec_selector, typed, Expectations,
    Reconciled, WorkQueue, RESYNC,
};

const COMPONENT: &str = "replicaset-controller";
/// Kubernetes' `burstReplicas`: at most this many creates or deletes per sync.
const BURST: usize = 500;
const WORKERS: usize = 4;

struct Controller {
    client: Client,
    replicasets: Informer,
    pods: Informer,
    expectations: Expectations,
}

/// Runs the ReplicaSet controller until the future is dropped.
pub async fn run(client: Client) {
    let ctl = Arc::new(Controller {
        replicasets: Informer::spawn(client.clone(), "/apis/apps/v1/replicasets", ""),
        pods: Informer::spawn(client.clone(), "/api/v1/pods", ""),
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
async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut rs_rx = ctl.replicasets.subscribe();
    let mut pod_rx = ctl.pods.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut rs_rx) => match c {
                Some(Change::Applied(rs) | Change::Deleted(rs)) => queue.add(&key_of(&rs)),
                Some(Change::Resync) => enqueue_all_json(&queue, &ctl.replicasets),
                None => return,
            },
            c = next_change(&mut pod_rx) => match c {
                Some(Change::Applied(p)) => ctl.pod_changed(&queue, &p, false),
                Some(Change::Deleted(p)) => ctl.pod_changed(&queue, &p, true),
                Some(Change::Resync) => enqueue_all_json(&queue, &ctl.replicasets),
                None => return,
            },
            _ = resync.tick() => enqueue_all_json(&queue, &ctl.replicasets),
        }
    }
}

impl Controller {
    /// A pod changed: its controller must look, or, for an orphan, every
    /// ReplicaSet that could adopt it.
    fn pod_changed(&self, queue: &WorkQueue, pod: &Value, deleted: bool) {
        let gone = deleted || meta::is_deleting(pod);
        if let Some(key) = controller_key(pod, "ReplicaSet") {
            self.expectations.observe(&key, meta::name(pod), gone);
            queue.add(&key);
            return;
        }
        if gone || crate::reconcile::controller_ref(pod).is_some() {
            return;
        }
        let ns = namespace(pod);
        for rs in self.replicasets.filter(|rs| namespace(rs) == ns) {
            if spec_selector(&rs).is_some_and(|s| s.matches(meta::labels(pod))) {
                queue.add(&key_of(&rs));
            }
        }
    }

    async fn reconcile(&self, key: &str) -> Reconciled {
        let Some(rs) = self.replicasets.get(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let rs = typed(rs, "apps/v1", "ReplicaSet");
        let Some(selector) = spec_selector(&rs) else {
            return Ok(None);
        };
        let ns = namespace(&rs).to_string();
        let candidates = self.pods.filter(|p| namespace(p) == ns && pod_is_active(p));
        let owned = claim(&self.client, &rs, &selector, ("v1", "pods"), candidates).await?;
        let managed = match self.expectations.satisfied(key) && !meta::is_deleting(&rs) {
            true => self.manage(key, &rs, &owned).await,
            false => Ok(HashSet::new()),
        };
        let deleted = managed.as_ref().cloned().unwrap_or_default();
        let alive: Vec<&Value> = owned
            .iter()
            .filter(|p| !deleted.contains(meta::name(p)))
            .collect();
        let recheck = self.write_status(&rs, &alive).await?;
        managed.map(|_| recheck)
    }

    /// Creates or deletes pods toward `spec.replicas`; the names deleted.
    async fn manage(
        &self,
        key: &str,
        rs: &Value,
        owned: &[Value],
    ) -> ClientResult<HashSet<String>> {
        let want = int_at(rs, "/spec/replicas").max(0) as usize;
        let have = owned.len();
        if have < want {
            self.create_pods(key, rs, (want - have).min(BURST)).await?;
            return Ok(HashSet::new());
        }
        let mut victims: Vec<&Value> = owned.iter().collect();
        victims.sort_by_cached_key(|p| deletion_rank(p));
        victims.truncate((have - want).min(BURST));
        self.delete_pods(key, rs, &victims).await
    }

    /// Creates `count` pods in batches of 1, 2, 4, ... (Kubernetes' slow
    /// start): a quota or admission failure then costs one request, not
    /// hundreds.
    async fn create_pods(&self, key: &str, rs: &Value, count: usize) -> ClientResult<()> {
        let mut left = count;
        let mut batch = 1;
        while left > 0 {
            let n = batch.min(left);
            let results = join_all((0..n).map(|_| self.create_pod(key, rs))).await;
            results.into_iter().collect::<ClientResult<Vec<()>>>()?;
            left -= n;
            batch *= 2;
        }
        Ok(())
    }

    /// Names the pod here (not with generateName on the server) so the
    /// expectation exists before the informer can possibly see the pod.
    async fn create_pod(&self, key: &str, rs: &Value) -> ClientResult<()> {
        let name = meta::generated_name(&format!("{}-", meta::name(rs)));
        let pod = pod_from_template(rs, &name);
        self.expectations.expect_create(key, &name);
        let coll = path("v1", "pods", Some(namespace(rs)), None);
        if let Err(e) = self.client.create(&coll, &pod).await {
            self.expectations.observe(key, &name, true);
            return Err(e);
        }
        self.event(rs, "SuccessfulCreate", format!("Created pod: {name}"));
        Ok(())
    }

    async fn delete_pods(
        &self,
        key: &str,
        rs: &Value,
        victims: &[&Value],
    ) -> ClientResult<HashSet<String>> {
        let deletes = victims.iter().map(|p| async move {
            let name = meta::name(p).to_string();
            self.expectations.expect_delete(key, &name);
            let uri = path("v1", "pods", Some(namespace(p)), Some(&name));
            let result = self.client.delete(&uri, None).await;
            match &result {
                Ok(true) => self.event(rs, "SuccessfulDelete", format!("Deleted pod: {name}")),
                // Already gone (its event may have passed) or failed: expect nothing.
                _ => self.expectations.observe(key, &name, true),
            }
            result.map(|_| name)
        });
        join_all(deletes).await.into_iter().collect()
    }

    fn event(&self, rs: &Value, reason: &'static str, message: String) {
        let (client, involved) = (self.client.clone(), events::object_ref_value(rs));
        tokio::spawn(async move {
            events::record(
                client.kube(),
                &involved,
                events::NORMAL,
                reason,
                &message,
                COMPONENT,
            )
            .await;
        });
    }

    /// Writes the status when it changed; when to look again for pods
    /// that are ready but not yet available.
    async fn write_status(&self, rs: &Value, pods: &[&Value]) -> ClientResult<Option<Duration>> {
        let (status, recheck) = calculate_status(rs, pods, Timestamp::now());
        if !status_differs(&rs["status"], &status) {
            return Ok(recheck);
        }
        let uri = path(
            "apps/v1",
            "replicasets",
            Some(namespace(rs)),
            Some(meta::name(rs)),
        ) + "/status";
        let mut updated = rs.clone();
        merge_status(&mut updated, &status);
        match self.client.update(&uri, &updated).await {
            Err(e) if e.is_conflict() => {
                // Stale cache: apply the same counts to the current object.
                let Some(mut fresh) = self.client.get(&uri).await? else {
                    return Ok(None);
                };
                merge_status(&mut fresh, &status);
                self.client.update(&uri, &fresh).await?;
            }
            other => {
                other?;
            }
        }
        Ok(recheck)
    }
}

/// The fields of `status` this controller owns.
const STATUS_FIELDS: [&str; 5] = [
    "replicas",
    "fullyLabeledReplicas",
    "readyReplicas",
    "availableReplicas",
    "observedGeneration",
];

fn status_differs(old: &Value, new: &Value) -> bool {
    STATUS_FIELDS
        .iter()
        .any(|f| old[*f].as_i64().unwrap_or(0) != new[*f].as_i64().unwrap_or(0))
}

/// Sets the owned fields, omitting zeros as Kubernetes does (`omitempty`)
/// except `replicas`, which is always present.
fn merge_status(rs: &mut Value, status: &Value) {
    if !rs["status"].is_object() {
        rs["status"] = json!({});
    }
    for f in STATUS_FIELDS {
        let v = status[f].as_i64().unwrap_or(0);
        if let Some(s) = rs["status"].as_object_mut() {
            if v == 0 && f != "replicas" {
                s.remove(f);
            } else {
                s.insert(f.to_string(), json!(v));
            }
        }
    }
}

/// The counts of `pods` (the active pods the ReplicaSet owns) and when a
/// ready pod will next turn available.
fn calculate_status(rs: &Value, pods: &[&Value], now: Timestamp) -> (Value, Option<Duration>) {
    let min_ready = int_at(rs, "/spec/minReadySeconds");
    let template_labels = rs
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    let fully_labeled = pods
        .iter()
        .filter(|p| {
            template_labels.is_none_or(|t| {
                t.iter()
                    .all(|(k, v)| meta::labels(p).and_then(|l| l.get(k)) == Some(v))
            })
        })
        .count();
    let ready = pods.iter().filter(|p| pod_is_ready(p)).count();
    let waits: Vec<Duration> = pods
        .iter()
        .filter_map(|p| pod_available_in(p, min_ready, now))
        .collect();
    let available = waits.iter().filter(|d| d.is_zero()).count();
    let recheck = waits.into_iter().filter(|d| !d.is_zero()).min();
    let status = json!({
        "replicas": pods.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": int_at(rs, "/metadata/generation"),
    });
    (status, recheck.map(|d| d + Duration::from_millis(100)))
}

/// A new pod from the ReplicaSet's template, controlled by it.
fn pod_from_template(rs: &Value, name: &str) -> Value {
    let t = &rs["spec"]["template"];
    let mut m = json!({
        "name": name,
        "generateName": format!("{}-", meta::name(rs)),
        "namespace": namespace(rs),
        "ownerReferences": [owner_ref(rs)],
    });
    for f in ["labels", "annotations", "finalizers"] {
        if let Some(v) = t["metadata"].get(f).filter(|v| !v.is_null()) {
            m[f] = v.clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": m, "spec": t["spec"]})
}

/// Sort key: pods that sort first are deleted first (Kubernetes'
/// `ActivePodsWithRanks` without the co-location rank).
fn deletion_rank(pod: &Value) -> impl Ord {
    let assigned = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let phase = match pod["status"]["phase"].as_str() {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    };
    let ready_since = pod_ready_since(pod).map(|t| t.as_second());
    let restarts: i64 = pod["status"]["containerStatuses"]
        .as_array()
        .map(|a| a.iter().map(|c| int_at(c, "/restartCount")).sum())
        .unwrap_or(0);
    let created = meta::str_field(pod, "creationTimestamp")
        .and_then(meta::parse_time)
        .map(|t| t.as_second());
    (
        assigned,
        phase,
        pod_is_ready(pod),
        Reverse(ready_since),
        Reverse(restarts),
        Reverse(created),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: &str) -> Value {
        json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        })
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
        let names: Vec<&str> = pods.iter().map(meta::name).collect();
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

    #[test]
    fn status_counts_ready_available_and_fully_labeled() {
        let rs = json!({"metadata": {"generation": 3}, "spec": {"replicas": 2,
            "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}}}}});
        let mut a = pod("a", Some("n"), "Running", true, "2024-01-01T00:00:00Z");
        a["metadata"]["labels"] = json!({"app": "web", "tier": "fe"});
        let b = pod("b", None, "Pending", false, "2024-01-01T00:00:00Z");
        let (s, recheck) = calculate_status(&rs, &[&a, &b], Timestamp::now());
        assert_eq!(
            s,
            json!({"replicas": 2, "fullyLabeledReplicas": 1, "readyReplicas": 1,
                   "availableReplicas": 1, "observedGeneration": 3})
        );
        assert_eq!(recheck, None);
        let mut rs2 = rs.clone();
        merge_status(&mut rs2, &s);
        assert!(!status_differs(&rs2["status"], &s));
        assert!(status_differs(&rs["status"], &s));
    }

    #[test]
    fn pods_copy_the_template_and_point_at_their_owner() {
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "d", "uid": "u"},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
        let p = pod_from_template(&rs, "web-abcde");
        assert_eq!(p["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "u");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(p["spec"]["containers"][0]["image"], "nginx");
    }
}
