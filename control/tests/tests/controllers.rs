//! The ReplicaSet and Deployment controllers against an in-process API
//! server. No agent runs pods here, so a background task plays the
//! kubelets: it marks every pod of the namespace Running and Ready.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::ReplicationController;
use keel_controllers::cache::Caches;
use keel_controllers::{deployment, replicaset};
use serde_json::{json, Value};
use support::client::{path, Client};
use support::{bg, wait_for, with_in_process_client, Bg, TestServer};

const NS: &str = "default";

async fn setup() -> (TestServer, Client) {
    with_in_process_client("controllers-test").await
}

/// The shared caches the controllers read, as the controller manager makes them.
fn caches(server: &TestServer) -> Caches {
    Caches::new(server.in_process("keel-controller-manager"))
}

/// Runs the ReplicaSet controller on `caches`, as the manager does.
fn run_replicaset(server: &TestServer, caches: &Caches) -> Bg {
    bg(replicaset::run::<ReplicaSet>(
        server.in_process("replicaset-controller"),
        caches.clone(),
    ))
}

/// Runs the Deployment controller on `caches`, as the manager does.
fn run_deployment(server: &TestServer, caches: &Caches) -> Bg {
    bg(deployment::run(
        server.in_process("deployment-controller"),
        caches.clone(),
    ))
}

async fn list(c: &Client, gv: &str, resource: &str) -> Vec<Value> {
    let l = c.list(&path(gv, resource, Some(NS), None)).await.unwrap();
    l["items"].as_array().cloned().unwrap_or_default()
}

async fn pods(c: &Client) -> Vec<Value> {
    list(c, "v1", "pods")
        .await
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn owned_by<'a>(items: &'a [Value], owner: &Value) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["uid"] == owner["metadata"]["uid"]))
        })
        .collect()
}

/// Plays the kubelets: marks every pod Running and Ready.
fn mark_pods_ready(c: Client) -> Bg {
    mark_pods_ready_after(c, Duration::ZERO)
}

/// Like [`mark_pods_ready`], for pods at least `startup` old (containers
/// that take a while to start make an unsafe rollout visible).
fn mark_pods_ready_after(c: Client, startup: Duration) -> Bg {
    mark_ready_where(c, startup, |_| true)
}

/// Like [`mark_pods_ready_after`], only for pods `startable` accepts (a
/// kubelet that cannot start some image).
fn mark_ready_where(c: Client, startup: Duration, startable: fn(&Value) -> bool) -> Bg {
    bg(async move {
        let mut first_seen = std::collections::HashMap::new();
        loop {
            let now = tokio::time::Instant::now();
            let waiting = pods(&c).await.into_iter().filter(|p| !is_ready(p));
            for mut p in waiting.filter(&startable) {
                let uid = p["metadata"]["uid"].to_string();
                if now.duration_since(*first_seen.entry(uid).or_insert(now)) < startup {
                    continue;
                }
                let now = jiff::Timestamp::now().to_string();
                p["apiVersion"] = json!("v1");
                p["kind"] = json!("Pod");
                p["status"] = json!({
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
                    "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "",
                        "ready": true, "restartCount": 0, "started": true,
                        "state": {"running": {"startedAt": now}}}],
                });
                let name = p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let uri = path("v1", "pods", Some(NS), Some(&name)) + "/status";
                let _ = c.update(&uri, &p).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

fn template(image: &str) -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
           "spec": {"containers": [{"name": "c", "image": image}]}})
}

async fn get(c: &Client, gv: &str, resource: &str, name: &str) -> Option<Value> {
    c.get(&path(gv, resource, Some(NS), Some(name)))
        .await
        .unwrap()
}

async fn patch(c: &Client, gv: &str, resource: &str, name: &str, p: Value) -> Value {
    c.merge_patch(&path(gv, resource, Some(NS), Some(name)), &p)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_keeps_replicas_adopts_and_reports_status() {
    let (server, c) = setup().await;
    let caches = caches(&server);
    let _ctl = run_replicaset(&server, &caches);
    let orphan = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orphan", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    c.create(&path("v1", "pods", Some(NS), None), &orphan)
        .await
        .unwrap();
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": template("busybox")}});
    let rs = c
        .create(&path("apps/v1", "replicasets", Some(NS), None), &rs)
        .await
        .unwrap();

    let owned = wait_for("3 owned pods", 10, || async {
        let ps = pods(&c).await;
        let n = owned_by(&ps, &rs).len();
        (n == 3 && ps.len() == 3).then_some(ps)
    })
    .await;
    let adopted = owned.iter().find(|p| p["metadata"]["name"] == "orphan");
    let r = &adopted.expect("the orphan is adopted")["metadata"]["ownerReferences"][0];
    assert_eq!(
        (r["kind"].as_str(), r["controller"].as_bool()),
        (Some("ReplicaSet"), Some(true))
    );
    for p in owned.iter().filter(|p| p["metadata"]["name"] != "orphan") {
        assert!(p["metadata"]["name"].as_str().unwrap().starts_with("web-"));
        let r = &p["metadata"]["ownerReferences"][0];
        assert_eq!(r["apiVersion"], "apps/v1");
        assert_eq!(r["name"], "web");
        assert_eq!(r["blockOwnerDeletion"], true);
    }

    let _kubelet = mark_pods_ready(c.clone());
    wait_for("status 3 ready", 10, || async {
        let s = get(&c, "apps/v1", "replicasets", "web").await?["status"].clone();
        (s["readyReplicas"] == 3
            && s["availableReplicas"] == 3
            && s["replicas"] == 3
            && s["fullyLabeledReplicas"] == 3
            && s["observedGeneration"] == 1)
            .then_some(())
    })
    .await;

    for n in [5, 2] {
        patch(
            &c,
            "apps/v1",
            "replicasets",
            "web",
            json!({"spec": {"replicas": n}}),
        )
        .await;
        wait_for(&format!("{n} pods"), 10, || async {
            (pods(&c).await.len() == n).then_some(())
        })
        .await;
    }

    let victim = pods(&c).await[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.delete(&path("v1", "pods", Some(NS), Some(&victim)), None)
        .await
        .unwrap();
    wait_for("a replacement pod", 10, || async {
        let ps = pods(&c).await;
        (ps.len() == 2 && ps.iter().all(|p| p["metadata"]["name"] != victim.as_str())).then_some(())
    })
    .await;

    // A pod relabelled out of the selector is released and replaced.
    let leaver = pods(&c).await[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    patch(
        &c,
        "v1",
        "pods",
        &leaver,
        json!({"metadata": {"labels": {"app": "other"}}}),
    )
    .await;
    wait_for("release and replacement", 10, || async {
        let ps = pods(&c).await;
        let released = ps
            .iter()
            .find(|p| p["metadata"]["name"] == leaver.as_str())?
            .pointer("/metadata/ownerReferences")
            .is_none();
        (released && owned_by(&ps, &rs).len() == 2).then_some(())
    })
    .await;

    let events = list(&c, "v1", "events").await;
    assert!(events.iter().any(|e| e["reason"] == "SuccessfulCreate"
        && e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Created pod: web-"))
        && e["source"]["component"] == "replicaset-controller"));
    assert!(events.iter().any(|e| e["reason"] == "SuccessfulDelete"));
}

/// ReplicationControllers run through the same controller: a plain label
/// map selects, orphans are adopted with a core/v1 controller reference,
/// the scale subresource (what `kubectl scale rc` sends) resizes, and the
/// status always carries `replicas`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_controller_adopts_scales_and_reports_status() {
    let (server, c) = setup().await;
    let caches = caches(&server);
    let _ctl = bg(replicaset::run::<ReplicationController>(
        server.in_process("replication-controller"),
        caches.clone(),
    ));
    let orphan = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orphan", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    c.create(&path("v1", "pods", Some(NS), None), &orphan)
        .await
        .unwrap();
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"app": "web"}, "template": template("busybox")}});
    let rc = c
        .create(&path("v1", "replicationcontrollers", Some(NS), None), &rc)
        .await
        .unwrap();
    let owned = wait_for("2 owned pods", 10, || async {
        let ps = pods(&c).await;
        (owned_by(&ps, &rc).len() == 2 && ps.len() == 2).then_some(ps)
    })
    .await;
    let adopted = owned.iter().find(|p| p["metadata"]["name"] == "orphan");
    let r = &adopted.expect("the orphan is adopted")["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            r["apiVersion"].as_str(),
            r["kind"].as_str(),
            r["controller"].as_bool()
        ),
        (Some("v1"), Some("ReplicationController"), Some(true))
    );

    let scale = path("v1", "replicationcontrollers", Some(NS), Some("web")) + "/scale";
    // A scale patch without resourceVersion is retried by the server when a
    // status write races it, so it never answers 409.
    let s = c
        .merge_patch(&scale, &json!({"spec": {"replicas": 4}}))
        .await
        .expect("scale to 4");
    assert_eq!(s["status"]["selector"], "app=web");
    let _kubelet = mark_pods_ready(c.clone());
    wait_for("4 ready in status", 10, || async {
        let s = get(&c, "v1", "replicationcontrollers", "web").await?["status"].clone();
        (s["replicas"] == 4 && s["readyReplicas"] == 4 && s["availableReplicas"] == 4).then_some(())
    })
    .await;

    c.merge_patch(&scale, &json!({"spec": {"replicas": 0}}))
        .await
        .expect("scale to 0");
    let s = wait_for("scaled to 0", 10, || async {
        let rc = get(&c, "v1", "replicationcontrollers", "web").await?;
        (pods(&c).await.is_empty() && rc["status"]["replicas"] == 0).then_some(rc["status"].clone())
    })
    .await;
    assert_eq!(s["replicas"], 0, "Go emits replicas: 0");
}

/// Records, every ~50 ms, what `sample` says about the pods.
fn sampler<T: Send + 'static>(
    c: Client,
    samples: Arc<Mutex<Vec<T>>>,
    sample: fn(&[Value]) -> T,
) -> Bg {
    bg(async move {
        loop {
            let s = sample(&pods(&c).await);
            samples.lock().unwrap().push(s);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

fn deployment(strategy: Value, replicas: i64, history: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "annotations": {"kubernetes.io/change-cause": "first"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "revisionHistoryLimit": history, "strategy": strategy,
                 "template": template("busybox:1")}})
}

/// Waits until `kubectl rollout status` would report success.
async fn rollout_complete(c: &Client, replicas: i64) -> Value {
    wait_for("the rollout to complete", 20, || async {
        let d = get(c, "apps/v1", "deployments", "web").await?;
        let s = &d["status"];
        let progressing = s["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Progressing")?;
        let done = s["observedGeneration"] == d["metadata"]["generation"]
            && s["updatedReplicas"] == replicas
            && s["replicas"] == replicas
            && s["availableReplicas"] == replicas
            && progressing["reason"] == "NewReplicaSetAvailable";
        done.then_some(d)
    })
    .await
}

async fn replicasets(c: &Client) -> Vec<Value> {
    list(c, "apps/v1", "replicasets").await
}

fn revision(rs: &Value) -> &str {
    rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .unwrap_or_default()
}

async fn set_image(c: &Client, image: &str) {
    let p =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    patch(c, "apps/v1", "deployments", "web", p).await;
}

async fn rs_by_revision(c: &Client, rev: &str) -> Value {
    let all = replicasets(c).await;
    all.into_iter()
        .find(|rs| revision(rs) == rev)
        .unwrap_or_else(|| panic!("no ReplicaSet with revision {rev}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rolls_out_undoes_and_prunes_history() {
    let (server, c) = setup().await;
    let caches = caches(&server);
    let _rs_ctl = run_replicaset(&server, &caches);
    let _d_ctl = run_deployment(&server, &caches);
    let _kubelet = mark_pods_ready_after(c.clone(), Duration::from_millis(150));
    let strategy = json!({"type": "RollingUpdate",
                          "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}});
    c.create(
        &path("apps/v1", "deployments", Some(NS), None),
        &deployment(strategy, 4, 1),
    )
    .await
    .unwrap();

    let d = rollout_complete(&c, 4).await;
    assert_eq!(revision(&d), "1");
    let first = rs_by_revision(&c, "1").await;
    let hash = first["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(first["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(
        first["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
    let a = &first["metadata"]["annotations"];
    assert_eq!(a["kubernetes.io/change-cause"], "first");
    assert_eq!(a["deployment.kubernetes.io/desired-replicas"], "4");
    assert_eq!(a["deployment.kubernetes.io/max-replicas"], "5");
    let available = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Available")
        .unwrap();
    assert_eq!(available["status"], "True");

    // Roll to v2 while sampling how many pods are Ready.
    let ready = Arc::new(Mutex::new(Vec::new()));
    let sampling = sampler(c.clone(), ready.clone(), |ps| {
        ps.iter().filter(|p| is_ready(p)).count()
    });
    set_image(&c, "busybox:2").await;
    let d = rollout_complete(&c, 4).await;
    drop(sampling);
    let samples = ready.lock().unwrap().clone();
    assert!(samples.len() > 2, "{samples:?}");
    assert!(
        samples.iter().all(|n| *n >= 3),
        "ready pods dropped below replicas - maxUnavailable: {samples:?}"
    );
    assert_eq!(revision(&d), "2");
    let second = rs_by_revision(&c, "2").await;
    assert_eq!(second["spec"]["replicas"], 4);
    let first_now = get(
        &c,
        "apps/v1",
        "replicasets",
        first["metadata"]["name"].as_str().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(first_now["spec"]["replicas"], 0);

    // Undo: kubectl patches the old template back; the old ReplicaSet returns as revision 3.
    set_image(&c, "busybox:1").await;
    let d = rollout_complete(&c, 4).await;
    assert_eq!(revision(&d), "3");
    let back = rs_by_revision(&c, "3").await;
    assert_eq!(back["metadata"]["name"], first["metadata"]["name"]);
    assert_eq!(back["spec"]["replicas"], 4);
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(replicasets(&c).await.len(), 2);

    // v3: with revisionHistoryLimit 1, the oldest revision (2) is pruned.
    set_image(&c, "busybox:3").await;
    rollout_complete(&c, 4).await;
    let names = wait_for("history pruned to 1", 10, || async {
        let all = replicasets(&c).await;
        let mut revs: Vec<String> = all.iter().map(|rs| revision(rs).to_string()).collect();
        revs.sort();
        (revs == ["3", "4"]).then_some(all)
    })
    .await;
    assert!(names
        .iter()
        .any(|rs| rs["metadata"]["name"] == first["metadata"]["name"]));

    // kubectl scale: the only active ReplicaSet follows.
    patch(
        &c,
        "apps/v1",
        "deployments",
        "web",
        json!({"spec": {"replicas": 5}}),
    )
    .await;
    rollout_complete(&c, 5).await;
    assert_eq!(rs_by_revision(&c, "4").await["spec"]["replicas"], 5);

    let events = list(&c, "v1", "events").await;
    assert!(events.iter().any(|e| e["reason"] == "ScalingReplicaSet"
        && e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Scaled down replica set web-"))
        && e["source"]["component"] == "deployment-controller"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_old_pods_before_creating_new_ones() {
    let (server, c) = setup().await;
    let caches = caches(&server);
    let _rs_ctl = run_replicaset(&server, &caches);
    let _d_ctl = run_deployment(&server, &caches);
    // Slow starts keep the rollout long enough to be sampled many times.
    let _kubelet = mark_pods_ready_after(c.clone(), Duration::from_millis(300));
    c.create(
        &path("apps/v1", "deployments", Some(NS), None),
        &deployment(json!({"type": "Recreate"}), 3, 10),
    )
    .await
    .unwrap();
    rollout_complete(&c, 3).await;

    let hashes = Arc::new(Mutex::new(Vec::new()));
    let sampling = sampler(c.clone(), hashes.clone(), |ps| {
        let mut h: Vec<String> = ps
            .iter()
            .map(|p| p["metadata"]["labels"]["pod-template-hash"].to_string())
            .collect();
        h.sort();
        h.dedup();
        h
    });
    set_image(&c, "busybox:2").await;
    let d = rollout_complete(&c, 3).await;
    drop(sampling);
    assert_eq!(revision(&d), "2");
    let samples = hashes.lock().unwrap().clone();
    assert!(samples.len() > 2, "{samples:?}");
    assert!(
        samples.iter().all(|h| h.len() <= 1),
        "old and new pods ran at once: {samples:?}"
    );
    assert_eq!(samples.first().map(|h| h.len()), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_deployments_do_not_roll_and_stuck_ones_time_out() {
    let (server, c) = setup().await;
    let caches = caches(&server);
    let _rs_ctl = run_replicaset(&server, &caches);
    let _d_ctl = run_deployment(&server, &caches);
    let mut d = deployment(json!({"type": "RollingUpdate"}), 2, 10);
    d["spec"]["progressDeadlineSeconds"] = json!(1);
    c.create(&path("apps/v1", "deployments", Some(NS), None), &d)
        .await
        .unwrap();
    // No kubelet: the pods never turn ready, so progress stops.
    wait_for("ProgressDeadlineExceeded", 10, || async {
        let d = get(&c, "apps/v1", "deployments", "web").await?;
        let p = d["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Progressing")?
            .clone();
        (p["status"] == "False" && p["reason"] == "ProgressDeadlineExceeded").then_some(())
    })
    .await;

    let _kubelet = mark_pods_ready(c.clone());
    rollout_complete(&c, 2).await;
    patch(
        &c,
        "apps/v1",
        "deployments",
        "web",
        json!({"spec": {"paused": true}}),
    )
    .await;
    set_image(&c, "busybox:2").await;
    wait_for("the paused condition", 10, || async {
        let d = get(&c, "apps/v1", "deployments", "web").await?;
        let paused = d["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["reason"] == "DeploymentPaused");
        (paused && d["status"]["observedGeneration"] == d["metadata"]["generation"]).then_some(())
    })
    .await;
    assert_eq!(
        replicasets(&c).await.len(),
        1,
        "a paused deployment rolled out"
    );
    patch(
        &c,
        "apps/v1",
        "deployments",
        "web",
        json!({"spec": {"paused": false}}),
    )
    .await;
    rollout_complete(&c, 2).await;
    assert_eq!(replicasets(&c).await.len(), 2);
}

/// Scaling in the middle of a rollout spreads the change over the old and
/// the new ReplicaSet in proportion to their sizes (Kubernetes' rule).
#[tokio::test]
async fn scaling_mid_rollout_is_proportional() {
    let (server, c) = setup().await;
    let caches = caches(&server);
    let _rs_ctl = run_replicaset(&server, &caches);
    let _d_ctl = run_deployment(&server, &caches);
    // busybox:2 never starts, so the rollout stops at maxSurge new pods.
    let _kubelet = mark_ready_where(c.clone(), Duration::ZERO, |p| {
        p["spec"]["containers"][0]["image"] == "busybox:1"
    });
    let strategy = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 0}});
    let d = deployment(strategy, 10, 10);
    c.create(&path("apps/v1", "deployments", Some(NS), None), &d)
        .await
        .unwrap();
    rollout_complete(&c, 10).await;
    set_image(&c, "busybox:2").await;
    let sizes = |rss: &[Value]| -> (i64, i64) {
        let size = |rev: &str| {
            rss.iter()
                .find(|rs| revision(rs) == rev)
                .and_then(|rs| rs["spec"]["replicas"].as_i64())
                .unwrap_or(-1)
        };
        (size("1"), size("2"))
    };
    wait_for("the rollout to stall at 10 old + 3 new", 20, || async {
        (sizes(&replicasets(&c).await) == (10, 3)).then_some(())
    })
    .await;
    patch(
        &c,
        "apps/v1",
        "deployments",
        "web",
        json!({"spec": {"replicas": 20}}),
    )
    .await;
    // 23 allowed (20 + surge 3), split as 10:3 → round(17.7) = 18 and 5.
    wait_for("proportional sizes 18 + 5", 20, || async {
        (sizes(&replicasets(&c).await) == (18, 5)).then_some(())
    })
    .await;
}

/// A repeated event (same object, reason, message, source) is one Event
/// whose count grows, as client-go's recorder aggregates.
#[tokio::test]
async fn repeated_events_are_one_event_with_a_count() {
    let (_server, c) = setup().await;
    let involved = k8s_openapi::api::core::v1::ObjectReference {
        kind: Some("Pod".into()),
        api_version: Some("v1".into()),
        name: Some("p".into()),
        uid: Some("u1".into()),
        namespace: Some(NS.into()),
        ..Default::default()
    };
    let k = c.kube();
    // Concurrent repeats: none of the increments is lost.
    let repeats = (0..3).map(|_| {
        keel_controllers::events::record(k, &involved, "Warning", "BackOff", "again", "kubelet")
    });
    futures::future::join_all(repeats).await;
    keel_controllers::events::record(k, &involved, "Normal", "Started", "once", "kubelet").await;
    let events = list(&c, "v1", "events").await;
    let count = |reason: &str| {
        let e: Vec<&Value> = events.iter().filter(|e| e["reason"] == reason).collect();
        assert_eq!(e.len(), 1, "{reason}: {events:?}");
        e[0]["count"].as_i64()
    };
    assert_eq!(count("BackOff"), Some(3));
    assert_eq!(count("Started"), Some(1));
}
