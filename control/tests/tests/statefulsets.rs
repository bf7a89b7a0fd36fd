//! The StatefulSet controller against an in-process API server. No agent
//! runs pods here (and no scheduler: pods stay unbound, so a delete removes
//! them at once); the tests play the kubelet, marking pods Running and
//! Ready through the status subresource, all at once or one by one to
//! watch the ordering rules.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use keel_controllers::cache::Caches;
use keel_controllers::{gc, statefulset};
use serde_json::{json, Value};
use support::client::{path, Client};
use support::{bg, wait_for, with_in_process_client, Bg, TestServer};

const NS: &str = "default";
const APPS: &str = "apps/v1";

async fn setup() -> (TestServer, Client) {
    with_in_process_client("statefulsets-test").await
}

/// Runs the StatefulSet controller on shared caches, as the manager does.
fn run_sts(server: &TestServer) -> Bg {
    let caches = Caches::new(server.in_process("keel-controller-manager"));
    bg(statefulset::run(
        server.in_process("statefulset-controller"),
        caches,
    ))
}

/// Runs the garbage collector (the retention policy's executor).
fn run_gc(server: &TestServer) -> Bg {
    let caches = Caches::new(server.in_process("keel-controller-manager"));
    bg(gc::run(
        server.in_process("generic-garbage-collector"),
        caches,
    ))
}

async fn list(c: &Client, gv: &str, resource: &str) -> Vec<Value> {
    let l = c.list(&path(gv, resource, Some(NS), None)).await.unwrap();
    l["items"].as_array().cloned().unwrap_or_default()
}

async fn get(c: &Client, gv: &str, resource: &str, name: &str) -> Option<Value> {
    c.get(&path(gv, resource, Some(NS), Some(name)))
        .await
        .unwrap()
}

async fn patch(c: &Client, resource: &str, name: &str, p: Value) -> Value {
    c.merge_patch(&path(APPS, resource, Some(NS), Some(name)), &p)
        .await
        .unwrap()
}

/// The live (not terminating) pods.
async fn pods(c: &Client) -> Vec<Value> {
    list(c, "v1", "pods")
        .await
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn name_of(v: &Value) -> String {
    v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn pod_names(c: &Client) -> BTreeSet<String> {
    pods(c).await.iter().map(name_of).collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn image_of(p: &Value) -> &str {
    p["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
}

fn revision_of(p: &Value) -> &str {
    p["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap_or_default()
}

/// Marks `p` Running and Ready, as a kubelet would.
async fn mark_ready(c: &Client, mut p: Value) {
    let now = jiff::Timestamp::now().to_string();
    p["apiVersion"] = json!("v1");
    p["kind"] = json!("Pod");
    p["status"] = json!({
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        "containerStatuses": [{"name": "c", "image": image_of(&p), "imageID": "",
            "ready": true, "restartCount": 0, "started": true,
            "state": {"running": {"startedAt": now}}}],
    });
    let uri = path("v1", "pods", Some(NS), Some(&name_of(&p))) + "/status";
    let _ = c.update(&uri, &p).await;
}

/// Marks the pod `name` Ready once it exists.
async fn mark_ready_by_name(c: &Client, name: &str) {
    let p = wait_for(&format!("pod {name}"), 10, || async {
        get(c, "v1", "pods", name).await
    })
    .await;
    mark_ready(c, p).await;
}

/// Plays the kubelets: marks every pod Running and Ready.
fn kubelet(c: Client) -> Bg {
    bg(async move {
        loop {
            for p in pods(&c).await.into_iter().filter(|p| !is_ready(p)) {
                mark_ready(&c, p).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Records, every ~20 ms, what `sample` says about the pods.
fn sampler<T: Send + 'static>(
    c: Client,
    samples: Arc<Mutex<Vec<T>>>,
    sample: fn(&[Value]) -> T,
) -> Bg {
    bg(async move {
        loop {
            let s = sample(&pods(&c).await);
            samples.lock().unwrap().push(s);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

fn template(image: &str) -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
           "spec": {"containers": [{"name": "c", "image": image}]}})
}

/// The "web" StatefulSet of the Kubernetes docs, with `spec` merged in.
fn web(replicas: i64, spec: Value) -> Value {
    let mut s = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "serviceName": "nginx",
                 "selector": {"matchLabels": {"app": "web"}},
                 "template": template("nginx:1")}});
    if let (Some(base), Some(extra)) = (s["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    s
}

async fn create_web(c: &Client, obj: &Value) -> Value {
    c.create(&path(APPS, "statefulsets", Some(NS), None), obj)
        .await
        .unwrap()
}

async fn status_of(c: &Client) -> Value {
    get(c, APPS, "statefulsets", "web").await.unwrap()["status"].clone()
}

/// Waits until `kubectl rollout status sts/web` would report success for
/// `replicas` pods: spec observed, all ready, all updated, update current.
async fn rollout_complete(c: &Client, replicas: i64) -> Value {
    wait_for("the rollout to complete", 20, || async {
        let s = get(c, APPS, "statefulsets", "web").await?;
        let st = &s["status"];
        let done = st["observedGeneration"] == s["metadata"]["generation"]
            && st["replicas"] == replicas
            && st["readyReplicas"] == replicas
            && st["updatedReplicas"] == replicas
            && st["currentRevision"] == st["updateRevision"];
        done.then_some(s)
    })
    .await
}

async fn set_image(c: &Client, image: &str) {
    let p =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    patch(c, "statefulsets", "web", p).await;
}

async fn revisions(c: &Client) -> Vec<Value> {
    let mut all = list(c, APPS, "controllerrevisions").await;
    all.sort_by_key(|r| r["revision"].as_i64());
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_creates_in_order_and_scales_down_in_reverse() {
    let (server, c) = setup().await;
    let _ctl = run_sts(&server);
    let set = create_web(&c, &web(3, json!({}))).await;

    // web-0 first; nothing else while it is not Ready.
    wait_for("the controller to see web-0", 10, || async {
        (status_of(&c).await["replicas"] == 1).then_some(())
    })
    .await;
    assert_eq!(pod_names(&c).await, names(&["web-0"]));
    for (ready, next) in [("web-0", "web-1"), ("web-1", "web-2")] {
        mark_ready_by_name(&c, ready).await;
        wait_for(&format!("{next} after {ready} is Ready"), 10, || async {
            pod_names(&c).await.contains(next).then_some(())
        })
        .await;
    }
    mark_ready_by_name(&c, "web-2").await;
    let s = rollout_complete(&c, 3).await;
    assert_eq!(s["status"]["availableReplicas"], 3);
    assert_eq!(s["status"]["collisionCount"], 0);

    // Each pod carries its identity.
    let p1 = get(&c, "v1", "pods", "web-1").await.unwrap();
    assert_eq!(p1["spec"]["hostname"], "web-1");
    assert_eq!(p1["spec"]["subdomain"], "nginx");
    let labels = &p1["metadata"]["labels"];
    assert_eq!(labels["app"], "web");
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-1");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "1");
    assert_eq!(
        labels["controller-revision-hash"],
        s["status"]["updateRevision"]
    );
    let owner = &p1["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "StatefulSet");
    assert_eq!(owner["uid"], set["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);

    // A deleted pod comes back under its name.
    let old_uid = p1["metadata"]["uid"].clone();
    c.delete(&path("v1", "pods", Some(NS), Some("web-1")), None)
        .await
        .unwrap();
    let back = wait_for("web-1 recreated", 10, || async {
        let p = get(&c, "v1", "pods", "web-1").await?;
        (p["metadata"]["uid"] != old_uid).then_some(p)
    })
    .await;
    assert_eq!(back["spec"]["hostname"], "web-1");
    mark_ready(&c, back).await;
    rollout_complete(&c, 3).await;

    // Scale down to 1: web-2 goes before web-1, never the other way.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sampling = sampler(c.clone(), seen.clone(), |ps| {
        ps.iter().map(name_of).collect::<BTreeSet<String>>()
    });
    patch(&c, "statefulsets", "web", json!({"spec": {"replicas": 1}})).await;
    wait_for("scaled down to web-0", 10, || async {
        (pod_names(&c).await == names(&["web-0"])).then_some(())
    })
    .await;
    drop(sampling);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|s| !s.contains("web-2") || s.contains("web-1")),
        "web-1 went before web-2: {seen:?}"
    );
    rollout_complete(&c, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_creates_and_deletes_without_waiting() {
    let (server, c) = setup().await;
    let _ctl = run_sts(&server);
    create_web(&c, &web(3, json!({"podManagementPolicy": "Parallel"}))).await;
    // No pod is ever Ready here, yet all three are made.
    wait_for("three pods at once", 10, || async {
        (pod_names(&c).await == names(&["web-0", "web-1", "web-2"])).then_some(())
    })
    .await;
    assert_eq!(status_of(&c).await["readyReplicas"], Value::Null);
    patch(&c, "statefulsets", "web", json!({"spec": {"replicas": 0}})).await;
    wait_for("every pod gone", 10, || async {
        pod_names(&c).await.is_empty().then_some(())
    })
    .await;
    wait_for("status replicas 0", 10, || async {
        (status_of(&c).await["replicas"] == 0).then_some(())
    })
    .await;
}

fn claim_template() -> Value {
    json!([{"metadata": {"name": "www"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}])
}

async fn claim(c: &Client, name: &str) -> Option<Value> {
    get(c, "v1", "persistentvolumeclaims", name).await
}

fn refs_of(v: &Value) -> Vec<(String, String, bool)> {
    v["metadata"]["ownerReferences"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                    (s("kind"), s("name"), r["controller"] == true)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_come_from_templates_and_follow_the_retention_policy() {
    let (server, c) = setup().await;
    let _ctl = run_sts(&server);
    let _gc = run_gc(&server);
    let spec = json!({"podManagementPolicy": "Parallel",
        "volumeClaimTemplates": claim_template(),
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}});
    create_web(&c, &web(2, spec)).await;
    // Retain (the default) on a second set: its claims have no owners.
    let mut db = web(1, json!({"volumeClaimTemplates": claim_template()}));
    db["metadata"]["name"] = json!("db");
    db["spec"]["selector"]["matchLabels"] = json!({"app": "db"});
    db["spec"]["template"]["metadata"]["labels"] = json!({"app": "db"});
    create_web(&c, &db).await;

    let pvc0 = wait_for("claims www-web-0/1 and www-db-0", 10, || async {
        let pvc0 = claim(&c, "www-web-0").await?;
        claim(&c, "www-web-1").await?;
        claim(&c, "www-db-0").await?;
        Some(pvc0)
    })
    .await;
    assert_eq!(pvc0["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert_eq!(pvc0["metadata"]["labels"]["app"], "web");
    assert_eq!(refs_of(&pvc0), [("StatefulSet".into(), "web".into(), true)]);
    assert!(refs_of(&claim(&c, "www-db-0").await.unwrap()).is_empty());
    let p0 = wait_for("web-0", 10, || async {
        get(&c, "v1", "pods", "web-0").await
    })
    .await;
    let volume = &p0["spec"]["volumes"][0];
    assert_eq!(volume["name"], "www");
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], "www-web-0");

    // A recreated pod gets the same claim back.
    c.delete(&path("v1", "pods", Some(NS), Some("web-0")), None)
        .await
        .unwrap();
    wait_for("web-0 recreated", 10, || async {
        let p = get(&c, "v1", "pods", "web-0").await?;
        (p["metadata"]["uid"] != p0["metadata"]["uid"]).then_some(())
    })
    .await;
    let again = claim(&c, "www-web-0").await.unwrap();
    assert_eq!(again["metadata"]["uid"], pvc0["metadata"]["uid"]);

    // whenScaled: Delete: the scaled-down pod's claim goes with it.
    patch(&c, "statefulsets", "web", json!({"spec": {"replicas": 1}})).await;
    wait_for("www-web-1 collected after web-1", 15, || async {
        claim(&c, "www-web-1").await.is_none().then_some(())
    })
    .await;
    assert!(claim(&c, "www-web-0").await.is_some());

    // whenDeleted: Delete: deleting the set deletes its remaining claims.
    c.delete(&path(APPS, "statefulsets", Some(NS), Some("web")), None)
        .await
        .unwrap();
    wait_for("www-web-0 collected after the set", 15, || async {
        claim(&c, "www-web-0").await.is_none().then_some(())
    })
    .await;
    assert!(claim(&c, "www-db-0").await.is_some(), "Retain keeps claims");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_respects_the_partition_and_goes_top_down() {
    let (server, c) = setup().await;
    let _ctl = run_sts(&server);
    let _kubelet = kubelet(c.clone());
    let strategy = json!({"updateStrategy": {"type": "RollingUpdate",
                                             "rollingUpdate": {"partition": 2}}});
    create_web(&c, &web(3, strategy)).await;
    let first = rollout_complete(&c, 3).await;
    let rev1 = first["status"]["currentRevision"]
        .as_str()
        .unwrap()
        .to_string();

    // Only ordinals >= 2 move to the new revision.
    let updated = Arc::new(Mutex::new(Vec::new()));
    let sampling = sampler(c.clone(), updated.clone(), |ps| {
        let mut at_v2: Vec<String> = ps
            .iter()
            .filter(|p| image_of(p) == "nginx:2")
            .map(name_of)
            .collect();
        at_v2.sort();
        at_v2
    });
    set_image(&c, "nginx:2").await;
    let s = wait_for("web-2 updated", 10, || async {
        let s = get(&c, APPS, "statefulsets", "web").await?;
        let p2 = get(&c, "v1", "pods", "web-2").await?;
        let ok = s["status"]["updatedReplicas"] == 1
            && s["status"]["readyReplicas"] == 3
            && image_of(&p2) == "nginx:2";
        ok.then_some(s)
    })
    .await;
    let rev2 = s["status"]["updateRevision"].as_str().unwrap().to_string();
    assert_ne!(rev1, rev2);
    assert_eq!(s["status"]["currentRevision"], rev1.as_str());
    for old in ["web-0", "web-1"] {
        let p = get(&c, "v1", "pods", old).await.unwrap();
        assert_eq!((image_of(&p), revision_of(&p)), ("nginx:1", rev1.as_str()));
    }

    // Partition 0: the rest follow, highest ordinal first.
    patch(
        &c,
        "statefulsets",
        "web",
        json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}),
    )
    .await;
    let done = rollout_complete(&c, 3).await;
    drop(sampling);
    assert_eq!(done["status"]["currentRevision"], rev2.as_str());
    assert_eq!(done["status"]["currentReplicas"], 3);
    let seen = updated.lock().unwrap().clone();
    let allowed: [&[&str]; 4] = [
        &[],
        &["web-2"],
        &["web-1", "web-2"],
        &["web-0", "web-1", "web-2"],
    ];
    assert!(
        seen.iter().all(|s| allowed.iter().any(|a| s == a)),
        "updates out of order: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_updates_only_recreated_pods() {
    let (server, c) = setup().await;
    let _ctl = run_sts(&server);
    let _kubelet = kubelet(c.clone());
    create_web(&c, &web(2, json!({"updateStrategy": {"type": "OnDelete"}}))).await;
    let first = rollout_complete(&c, 2).await;
    let rev1 = first["status"]["currentRevision"].clone();
    set_image(&c, "nginx:2").await;
    let s = wait_for("a new update revision", 10, || async {
        let s = get(&c, APPS, "statefulsets", "web").await?;
        let observed = s["status"]["observedGeneration"] == s["metadata"]["generation"];
        (observed && s["status"]["updateRevision"] != rev1).then_some(s)
    })
    .await;
    assert_eq!(s["status"]["currentRevision"], rev1);
    assert_eq!(s["status"]["updatedReplicas"], Value::Null);
    for p in pods(&c).await {
        assert_eq!(image_of(&p), "nginx:1", "{} was replaced", name_of(&p));
    }
    c.delete(&path("v1", "pods", Some(NS), Some("web-1")), None)
        .await
        .unwrap();
    let p1 = wait_for("web-1 recreated at the new revision", 10, || async {
        let p = get(&c, "v1", "pods", "web-1").await?;
        (image_of(&p) == "nginx:2").then_some(p)
    })
    .await;
    assert_eq!(
        revision_of(&p1),
        s["status"]["updateRevision"].as_str().unwrap()
    );
    wait_for("one updated pod in status", 10, || async {
        (status_of(&c).await["updatedReplicas"] == 1).then_some(())
    })
    .await;
    let p0 = get(&c, "v1", "pods", "web-0").await.unwrap();
    assert_eq!(image_of(&p0), "nginx:1");
}

/// Sends a revision's data back as a strategic merge patch, as `kubectl
/// rollout undo sts/web` does.
async fn undo_to(c: &Client, revision: &Value) {
    c.request(
        Method::PATCH,
        &path(APPS, "statefulsets", Some(NS), Some("web")),
        Some(&revision["data"]),
        "application/strategic-merge-patch+json",
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_record_templates_and_rollback_renumbers_them() {
    let (server, c) = setup().await;
    let _ctl = run_sts(&server);
    let _kubelet = kubelet(c.clone());
    let mut obj = web(2, json!({"revisionHistoryLimit": 1}));
    obj["metadata"]["annotations"] = json!({"kubernetes.io/change-cause": "first"});
    let set = create_web(&c, &obj).await;
    let s = rollout_complete(&c, 2).await;
    let revs = revisions(&c).await;
    assert_eq!(revs.len(), 1);
    let r1 = revs[0].clone();
    assert_eq!(r1["revision"], 1);
    assert_eq!(
        name_of(&r1),
        s["status"]["currentRevision"].as_str().unwrap()
    );
    let hash = r1["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap();
    assert_eq!(name_of(&r1), format!("web-{hash}"));
    assert_eq!(r1["metadata"]["labels"]["app"], "web");
    assert_eq!(
        r1["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "first"
    );
    assert_eq!(
        r1["metadata"]["ownerReferences"][0]["uid"],
        set["metadata"]["uid"]
    );
    assert_eq!(r1["data"]["spec"]["template"]["$patch"], "replace");
    assert_eq!(
        r1["data"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1"
    );

    set_image(&c, "nginx:2").await;
    let s = rollout_complete(&c, 2).await;
    let revs = revisions(&c).await;
    assert_eq!(
        revs.iter()
            .map(|r| r["revision"].clone())
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        name_of(&revs[1]),
        s["status"]["updateRevision"].as_str().unwrap()
    );

    // Rollback: revision 1 comes back as revision 3, under its own name.
    undo_to(&c, &r1).await;
    let s = wait_for("rolled back to nginx:1", 20, || async {
        let s = rollout_complete(&c, 2).await;
        let ps = pods(&c).await;
        (ps.len() == 2 && ps.iter().all(|p| image_of(p) == "nginx:1")).then_some(s)
    })
    .await;
    assert_eq!(s["status"]["updateRevision"], name_of(&r1).as_str());
    let back = get(&c, APPS, "controllerrevisions", &name_of(&r1))
        .await
        .unwrap();
    assert_eq!(back["revision"], 3);

    // revisionHistoryLimit 1: one revision besides the live one is kept.
    set_image(&c, "nginx:3").await;
    rollout_complete(&c, 2).await;
    wait_for(
        "history truncated to the live revision and one more",
        10,
        || async {
            let nums: Vec<Value> = revisions(&c)
                .await
                .iter()
                .map(|r| r["revision"].clone())
                .collect();
            (nums == [json!(3), json!(4)]).then_some(())
        },
    )
    .await;
}
