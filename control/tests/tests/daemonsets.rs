//! The DaemonSet controller with the scheduler against an in-process API
//! server. Nodes are plain Node objects marked Ready; no agent runs pods,
//! so a background task plays the kubelets: it marks bound pods Running
//! and Ready and finishes the deletion of terminating ones.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_controllers::cache::Caches;
use keel_controllers::{daemonset, scheduler};
use serde_json::{json, Value};
use support::client::{path, Client};
use support::{bg, wait_for, with_in_process_client, Bg, TestServer};

const NS: &str = "default";
const DS: &str = "apps/v1";

/// The API server, a JSON client, and the DaemonSet controller and the
/// scheduler running on shared caches as the controller manager runs them.
struct Cluster {
    _server: TestServer,
    c: Client,
    _loops: Vec<Bg>,
}

async fn start(kubelet: Kubelet) -> Cluster {
    let (server, c) = with_in_process_client("daemonsets-test").await;
    let caches = Caches::new(server.in_process("keel-controller-manager"));
    let loops = vec![
        bg(daemonset::run(
            server.in_process("daemonset-controller"),
            caches.clone(),
        )),
        bg(scheduler::run::run(
            server.in_process(scheduler::run::SCHEDULER_NAME),
            caches,
        )),
        play_kubelets(c.clone(), kubelet),
    ];
    Cluster {
        _server: server,
        c,
        _loops: loops,
    }
}

/// How the fake kubelets treat pods.
#[derive(Clone, Copy)]
struct Kubelet {
    /// A pod turns Ready this long after it is first seen bound.
    startup: Duration,
}

const INSTANT: Kubelet = Kubelet {
    startup: Duration::ZERO,
};

async fn list(c: &Client, gv: &str, resource: &str) -> Vec<Value> {
    let ns = (resource != "nodes").then_some(NS);
    let l = c.list(&path(gv, resource, ns, None)).await.unwrap();
    l["items"].as_array().cloned().unwrap_or_default()
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

fn live(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn node_of(p: &Value) -> Option<&str> {
    p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
}

fn hash_of(p: &Value) -> &str {
    p["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap_or_default()
}

/// Plays the kubelets: bound pods turn Running and Ready after the
/// startup delay; terminating pods are removed (their containers "stop").
fn play_kubelets(c: Client, kubelet: Kubelet) -> Bg {
    bg(async move {
        let mut first_seen = std::collections::HashMap::new();
        loop {
            let now = tokio::time::Instant::now();
            for mut p in list(&c, "v1", "pods").await {
                let uri = path("v1", "pods", Some(NS), Some(name(&p)));
                if !live(&p) {
                    let _ = c
                        .delete(&uri, Some(&json!({"gracePeriodSeconds": 0})))
                        .await;
                    continue;
                }
                if node_of(&p).is_none() || is_ready(&p) || p["status"]["phase"] == "Failed" {
                    continue;
                }
                let uid = p["metadata"]["uid"].to_string();
                if now.duration_since(*first_seen.entry(uid).or_insert(now)) < kubelet.startup {
                    continue;
                }
                let ts = jiff::Timestamp::now().to_string();
                p["status"] = json!({
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ts}],
                });
                let _ = c.update(&(uri + "/status"), &p).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Creates a Ready node with `labels` and `taints`.
async fn create_node(c: &Client, node: &str, labels: Value, taints: Value) {
    let obj = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node, "labels": labels},
        "spec": {"taints": taints}});
    let nodes = path("v1", "nodes", None, None);
    c.create(&nodes, &obj).await.unwrap();
    let status = json!({"status": {
        "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True"}]}});
    let uri = path("v1", "nodes", None, Some(node)) + "/status";
    c.merge_patch(&uri, &status).await.unwrap();
}

async fn patch_node(c: &Client, node: &str, patch: Value) {
    c.merge_patch(&path("v1", "nodes", None, Some(node)), &patch)
        .await
        .unwrap();
}

fn daemon_set(ds: &str, pod_spec: Value, strategy: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": ds},
        "spec": {"selector": {"matchLabels": {"ds": ds}},
                 "updateStrategy": strategy,
                 "template": {"metadata": {"labels": {"ds": ds}}, "spec": pod_spec}}})
}

fn containers(image: &str) -> Value {
    json!([{"name": "c", "image": image}])
}

async fn create_ds(c: &Client, obj: &Value) -> Value {
    c.create(&path(DS, "daemonsets", Some(NS), None), obj)
        .await
        .unwrap()
}

async fn get_ds(c: &Client, ds: &str) -> Value {
    let uri = path(DS, "daemonsets", Some(NS), Some(ds));
    c.get(&uri).await.unwrap().expect("the DaemonSet exists")
}

async fn patch_ds(c: &Client, ds: &str, patch: Value) {
    let uri = path(DS, "daemonsets", Some(NS), Some(ds));
    c.merge_patch(&uri, &patch).await.unwrap();
}

async fn set_image(c: &Client, ds: &str, image: &str) {
    let p = json!({"spec": {"template": {"spec": {"containers": containers(image)}}}});
    patch_ds(c, ds, p).await;
}

/// The live pods of DaemonSet `ds`.
async fn pods_of(c: &Client, ds: &str) -> Vec<Value> {
    list(c, "v1", "pods")
        .await
        .into_iter()
        .filter(|p| live(p) && p["metadata"]["labels"]["ds"] == ds)
        .collect()
}

/// Node → live pods of `ds` bound there (unbound pods under "").
async fn placement(c: &Client, ds: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in pods_of(c, ds).await {
        *m.entry(node_of(&p).unwrap_or_default().to_string())
            .or_default() += 1;
    }
    m
}

fn one_each(nodes: &[&str]) -> BTreeMap<String, usize> {
    nodes.iter().map(|n| (n.to_string(), 1)).collect()
}

/// Waits until `ds` runs exactly one bound pod on each of `nodes`.
async fn wait_placed(c: &Client, ds: &str, nodes: &[&str]) {
    let want = one_each(nodes);
    let what = format!("{ds} on exactly {nodes:?}");
    wait_for(&what, 20, || async {
        (placement(c, ds).await == want).then_some(())
    })
    .await;
}

/// Waits until every pod of `ds` is Ready, of the current revision, and
/// the status says so for `n` nodes.
async fn wait_rolled_out(c: &Client, ds: &str, n: i64) -> Value {
    wait_for(&format!("{ds} rolled out on {n} nodes"), 30, || async {
        let d = get_ds(c, ds).await;
        let s = &d["status"];
        let done = s["observedGeneration"] == d["metadata"]["generation"]
            && s["desiredNumberScheduled"] == n
            && s["updatedNumberScheduled"] == n
            && s["numberAvailable"] == n
            && pods_of(c, ds).await.len() == usize::try_from(n).unwrap();
        done.then_some(d)
    })
    .await
}

async fn revisions(c: &Client) -> Vec<Value> {
    let mut r = list(c, DS, "controllerrevisions").await;
    r.sort_by_key(|r| r["revision"].as_i64());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_per_eligible_node_following_labels_taints_and_nodes() {
    let cl = start(INSTANT).await;
    let c = &cl.c;
    create_node(c, "n1", json!({"disk": "ssd"}), json!([])).await;
    create_node(c, "n2", json!({"disk": "ssd"}), json!([])).await;
    create_node(c, "n3", json!({"disk": "hdd"}), json!([])).await;
    let infra = json!([{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]);
    create_node(c, "n4", json!({}), infra).await;
    let rolling = json!({"type": "RollingUpdate"});
    let all = daemon_set(
        "all",
        json!({"containers": containers("a")}),
        rolling.clone(),
    );
    let ssd_spec = json!({"containers": containers("a"), "nodeSelector": {"disk": "ssd"}});
    let ssd = daemon_set("ssd", ssd_spec, rolling.clone());
    let tolerant_spec = json!({"containers": containers("a"),
        "tolerations": [{"key": "dedicated", "operator": "Exists"}]});
    let tolerant = daemon_set("tolerant", tolerant_spec, rolling);
    for ds in [&all, &ssd, &tolerant] {
        create_ds(c, ds).await;
    }
    wait_placed(c, "all", &["n1", "n2", "n3"]).await;
    wait_placed(c, "ssd", &["n1", "n2"]).await;
    wait_placed(c, "tolerant", &["n1", "n2", "n3", "n4"]).await;

    // Pods are pinned by affinity, carry the daemon tolerations and the
    // revision hash, and are controlled by their DaemonSet.
    let pod = pods_of(c, "ssd").await.remove(0);
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    assert_eq!(
        terms,
        &json!([{"matchFields": [{"key": "metadata.name", "operator": "In",
            "values": [node_of(&pod).unwrap()]}]}])
    );
    let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        let found = tolerations
            .iter()
            .any(|t| t["key"] == key && t["effect"] == effect && t["operator"] == "Exists");
        assert!(found, "toleration {key}:{effect} in {tolerations:?}");
    }
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool()),
        (Some("DaemonSet"), Some(true))
    );
    let revs = revisions(c).await;
    let ssd_rev = revs
        .iter()
        .find(|r| r["metadata"]["labels"]["ds"] == "ssd")
        .unwrap();
    assert_eq!(
        hash_of(&pod),
        ssd_rev["metadata"]["labels"]["controller-revision-hash"]
    );

    // Status: every count, the four required ones even when 0.
    let s = wait_rolled_out(c, "all", 3).await["status"].clone();
    assert_eq!(
        (
            s["currentNumberScheduled"].as_i64(),
            s["numberReady"].as_i64(),
            s["numberMisscheduled"].as_i64()
        ),
        (Some(3), Some(3), Some(0))
    );

    // Relabel: n3 becomes ssd, n1 stops being one.
    patch_node(c, "n3", json!({"metadata": {"labels": {"disk": "ssd"}}})).await;
    wait_placed(c, "ssd", &["n1", "n2", "n3"]).await;
    patch_node(c, "n1", json!({"metadata": {"labels": {"disk": null}}})).await;
    wait_placed(c, "ssd", &["n2", "n3"]).await;

    // A NoExecute taint evicts the daemons that do not tolerate it; a
    // NoSchedule one keeps running pods; a cordon keeps daemon pods coming.
    let evict =
        json!({"spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoExecute"}]}});
    patch_node(c, "n2", evict).await;
    wait_placed(c, "all", &["n1", "n3"]).await;
    wait_placed(c, "tolerant", &["n1", "n2", "n3", "n4"]).await;
    patch_node(
        c,
        "n2",
        json!({"spec": {"taints": null, "unschedulable": true}}),
    )
    .await;
    wait_placed(c, "all", &["n1", "n2", "n3"]).await;

    // A node joins, then leaves: its daemon pods come and go with it.
    create_node(c, "n5", json!({}), json!([])).await;
    wait_placed(c, "all", &["n1", "n2", "n3", "n5"]).await;
    wait_placed(c, "tolerant", &["n1", "n2", "n3", "n4", "n5"]).await;
    c.delete(&path("v1", "nodes", None, Some("n5")), None)
        .await
        .unwrap();
    wait_placed(c, "all", &["n1", "n2", "n3"]).await;
    wait_placed(c, "tolerant", &["n1", "n2", "n3", "n4"]).await;
    let s = wait_rolled_out(c, "tolerant", 4).await["status"].clone();
    assert_eq!(s["numberMisscheduled"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_keeps_max_unavailable_and_records_revisions() {
    let cl = start(Kubelet {
        startup: Duration::from_millis(200),
    })
    .await;
    let c = &cl.c;
    let nodes = ["n1", "n2", "n3", "n4"];
    for n in nodes {
        create_node(c, n, json!({}), json!([])).await;
    }
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}});
    let mut ds = daemon_set("agent", json!({"containers": containers("v1")}), strategy);
    ds["spec"]["revisionHistoryLimit"] = json!(1);
    create_ds(c, &ds).await;
    wait_rolled_out(c, "agent", 4).await;
    let v1_hash = hash_of(&pods_of(c, "agent").await[0]).to_string();

    // Sample the rollout: nodes with an available pod never drop below
    // 4 - maxUnavailable, and no node ever runs two live pods.
    let samples = Arc::new(Mutex::new((usize::MAX, 0usize, 0usize)));
    let sampler = {
        let (c, samples) = (c.clone(), samples.clone());
        bg(async move {
            loop {
                let p = placement_ready(&c).await;
                {
                    let mut s = samples.lock().unwrap();
                    s.0 = s.0.min(p.ready_nodes);
                    s.1 = s.1.max(p.max_per_node);
                    s.2 += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    set_image(c, "agent", "v2").await;
    let d = wait_rolled_out(c, "agent", 4).await;
    drop(sampler);
    let (min_ready, max_per_node, n) = *samples.lock().unwrap();
    assert!(n >= 5, "sampled the rollout {n} times");
    assert!(min_ready >= 2, "ready nodes dropped to {min_ready}");
    assert_eq!(max_per_node, 1, "two live pods shared a node");
    let pods = pods_of(c, "agent").await;
    let images: BTreeSet<&str> = pods
        .iter()
        .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap())
        .collect();
    assert_eq!(images, BTreeSet::from(["v2"]));
    let v2_hash = hash_of(&pods[0]).to_string();
    assert_ne!(v1_hash, v2_hash);
    assert!(
        d["status"]["updatedNumberScheduled"] == 4 && d["status"]["numberUnavailable"].is_null()
    );

    // Two revisions: 1 (v1) and 2 (v2), named and labelled by hash, their
    // data a patch that replaces the template (what kubectl undo sends).
    let revs = revisions(c).await;
    let summary: Vec<(i64, &str)> = revs
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap(),
                r["metadata"]["labels"]["controller-revision-hash"]
                    .as_str()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, [(1, v1_hash.as_str()), (2, v2_hash.as_str())]);
    assert_eq!(name(&revs[0]), format!("agent-{v1_hash}"));
    assert_eq!(revs[0]["data"]["spec"]["template"]["$patch"], "replace");
    assert_eq!(
        revs[0]["data"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "v1"
    );

    // Back to v1 (what `kubectl rollout undo` does): revision 1 becomes
    // revision 3 instead of a copy being made; pods get the v1 hash again.
    set_image(c, "agent", "v1").await;
    wait_rolled_out(c, "agent", 4).await;
    assert!(pods_of(c, "agent")
        .await
        .iter()
        .all(|p| hash_of(p) == v1_hash));
    let revs = revisions(c).await;
    let numbers: Vec<(i64, &str)> = revs
        .iter()
        .map(|r| (r["revision"].as_i64().unwrap(), name(r)))
        .collect();
    let (v1_name, v2_name) = (format!("agent-{v1_hash}"), format!("agent-{v2_hash}"));
    assert_eq!(numbers, [(2, v2_name.as_str()), (3, v1_name.as_str())]);

    // revisionHistoryLimit 1: a third template prunes the oldest unused one.
    set_image(c, "agent", "v3").await;
    wait_rolled_out(c, "agent", 4).await;
    let revs = wait_for("history pruned to 1 + current", 10, || async {
        let r = revisions(c).await;
        (r.len() == 2).then_some(r)
    })
    .await;
    assert_eq!(name(&revs[0]), v1_name);
    assert_eq!(revs[1]["revision"], 4);
}

/// What the sampler saw at one instant.
struct Sample {
    /// Nodes with a live, ready pod.
    ready_nodes: usize,
    /// Most live pods on one node.
    max_per_node: usize,
}

async fn placement_ready(c: &Client) -> Sample {
    let pods = pods_of(c, "agent").await;
    let mut per_node: BTreeMap<&str, (usize, bool)> = BTreeMap::new();
    for p in &pods {
        let Some(n) = node_of(p) else { continue };
        let e = per_node.entry(n).or_default();
        e.0 += 1;
        e.1 |= is_ready(p);
    }
    Sample {
        ready_nodes: per_node.values().filter(|(_, r)| *r).count(),
        max_per_node: per_node.values().map(|(n, _)| *n).max().unwrap_or(0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surge_starts_the_new_pod_before_the_old_one_goes() {
    let cl = start(Kubelet {
        startup: Duration::from_millis(300),
    })
    .await;
    let c = &cl.c;
    for n in ["n1", "n2", "n3"] {
        create_node(c, n, json!({}), json!([])).await;
    }
    let strategy = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    create_ds(
        c,
        &daemon_set("agent", json!({"containers": containers("v1")}), strategy),
    )
    .await;
    wait_rolled_out(c, "agent", 3).await;

    let samples = Arc::new(Mutex::new((usize::MAX, 0usize, 0usize, 0usize)));
    let sampler = {
        let (c, samples) = (c.clone(), samples.clone());
        bg(async move {
            loop {
                let p = placement_ready(&c).await;
                let doubled = doubled_nodes(&c).await;
                {
                    let mut s = samples.lock().unwrap();
                    s.0 = s.0.min(p.ready_nodes);
                    s.1 = s.1.max(p.max_per_node);
                    s.2 = s.2.max(doubled);
                    s.3 += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    set_image(c, "agent", "v2").await;
    wait_rolled_out(c, "agent", 3).await;
    drop(sampler);
    let (min_ready, max_per_node, max_doubled, n) = *samples.lock().unwrap();
    assert!(n >= 5, "sampled the rollout {n} times");
    assert_eq!(min_ready, 3, "a node was without a ready daemon");
    assert_eq!(
        max_per_node, 2,
        "the surge pod never ran beside the old one"
    );
    assert_eq!(max_doubled, 1, "more than maxSurge nodes surged at once");
}

/// Nodes running two live pods of "agent".
async fn doubled_nodes(c: &Client) -> usize {
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods_of(c, "agent").await {
        *per_node
            .entry(node_of(&p).unwrap_or_default().to_string())
            .or_default() += 1;
    }
    per_node.values().filter(|n| **n > 1).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_updates_only_deleted_pods_and_failed_pods_are_replaced() {
    let cl = start(INSTANT).await;
    let c = &cl.c;
    for n in ["n1", "n2"] {
        create_node(c, n, json!({}), json!([])).await;
    }
    let strategy = json!({"type": "OnDelete"});
    create_ds(
        c,
        &daemon_set("agent", json!({"containers": containers("v1")}), strategy),
    )
    .await;
    wait_rolled_out(c, "agent", 2).await;
    let before = pods_of(c, "agent").await;

    set_image(c, "agent", "v2").await;
    let generation = get_ds(c, "agent").await["metadata"]["generation"].clone();
    wait_for("the new generation observed", 10, || async {
        let d = get_ds(c, "agent").await;
        (d["status"]["observedGeneration"] == generation).then_some(())
    })
    .await;
    let d = get_ds(c, "agent").await;
    assert!(
        d["status"]["updatedNumberScheduled"].is_null(),
        "{}",
        d["status"]
    );
    let uids = |ps: &[Value]| -> BTreeSet<String> {
        ps.iter()
            .map(|p| p["metadata"]["uid"].to_string())
            .collect()
    };
    assert_eq!(uids(&pods_of(c, "agent").await), uids(&before));

    // Deleting one pod brings it back on the new template.
    let victim = &before[0];
    let node = node_of(victim).unwrap().to_string();
    let uri = path("v1", "pods", Some(NS), Some(name(victim)));
    c.delete(&uri, None).await.unwrap();
    let replaced = wait_for("the deleted pod replaced on v2", 20, || async {
        pods_of(c, "agent").await.into_iter().find(|p| {
            node_of(p) == Some(node.as_str()) && p["spec"]["containers"][0]["image"] == "v2"
        })
    })
    .await;
    wait_for("status: 1 updated", 10, || async {
        (get_ds(c, "agent").await["status"]["updatedNumberScheduled"] == 1).then_some(())
    })
    .await;

    // A failed daemon pod is deleted and replaced, with a warning event.
    // A merge patch: the fake kubelet may have just updated the pod.
    let status_uri = path("v1", "pods", Some(NS), Some(name(&replaced))) + "/status";
    let failed = json!({"status": {"phase": "Failed", "conditions": [
        {"type": "Ready", "status": "False"}]}});
    c.merge_patch(&status_uri, &failed).await.unwrap();
    wait_for("the failed pod replaced", 20, || async {
        let ps = pods_of(c, "agent").await;
        ps.iter()
            .any(|p| {
                node_of(p) == Some(node.as_str())
                    && p["metadata"]["uid"] != replaced["metadata"]["uid"]
                    && is_ready(p)
            })
            .then_some(())
    })
    .await;
    let events = list(c, "v1", "events").await;
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "FailedDaemonPod" && e["type"] == "Warning"),
        "no FailedDaemonPod event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_daemon_sets_are_refused_with_the_field_named() {
    let (_server, c) = with_in_process_client("daemonsets-test").await;
    let collection = path(DS, "daemonsets", Some(NS), None);
    let mut mismatched = daemon_set("bad", json!({"containers": containers("a")}), json!({}));
    mismatched["spec"]["template"]["metadata"]["labels"] = json!({"ds": "other"});
    let e = c.create(&collection, &mismatched).await.unwrap_err();
    assert_eq!(e.code, 422, "{}", e.message);
    assert!(
        e.message.contains("spec.template.metadata.labels"),
        "{}",
        e.message
    );

    let no_progress = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}});
    let stuck = daemon_set("stuck", json!({"containers": containers("a")}), no_progress);
    let e = c.create(&collection, &stuck).await.unwrap_err();
    assert_eq!(e.code, 422, "{}", e.message);
    assert!(
        e.message
            .contains("spec.updateStrategy.rollingUpdate.maxUnavailable"),
        "{}",
        e.message
    );

    let good = daemon_set("good", json!({"containers": containers("a")}), json!({}));
    c.create(&collection, &good).await.unwrap();
    let uri = path(DS, "daemonsets", Some(NS), Some("good"));
    let change = json!({"spec": {"selector": {"matchLabels": {"ds": "good", "x": "y"}},
        "template": {"metadata": {"labels": {"ds": "good", "x": "y"}}}}});
    let e = c.merge_patch(&uri, &change).await.unwrap_err();
    assert_eq!(e.code, 422, "{}", e.message);
    assert!(e.message.contains("spec.selector"), "{}", e.message);
    let stored = c.get(&uri).await.unwrap().unwrap();
    assert_eq!(
        stored["spec"]["selector"],
        json!({"matchLabels": {"ds": "good"}})
    );
    assert!(c
        .get(&path(DS, "daemonsets", Some(NS), Some("bad")))
        .await
        .unwrap()
        .is_none());
}
