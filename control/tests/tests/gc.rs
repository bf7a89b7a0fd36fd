//! The garbage collector and the namespace controller against an
//! in-process API server: owner references with background, foreground
//! and orphan propagation, and namespaces whose deletion was left
//! unfinished.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use keel_apiserver::metrics::Metrics;
use keel_apiserver::storage::Objects;
use keel_controllers::cache::Caches;
use keel_controllers::{deployment, gc, namespace, replicaset};
use serde_json::{json, Value};
use support::client::{path, Client};
use support::{bg, wait_for, with_in_process_client, Bg, TestServer};

const NS: &str = "default";

async fn setup() -> (TestServer, Client) {
    with_in_process_client("gc-test").await
}

/// The namespace controller, on caches of its own.
fn start_namespace(c: &Client) -> Bg {
    bg(namespace::run(
        c.kube().clone(),
        Caches::new(c.kube().clone()),
    ))
}

/// The garbage collector, on caches of its own, as a manager runs it.
fn start_gc(c: &Client) -> Bg {
    bg(gc::run(c.kube().clone(), Caches::new(c.kube().clone())))
}

fn cm_uri(name: &str) -> String {
    path("v1", "configmaps", Some(NS), Some(name))
}

/// A ConfigMap owned by `owners` (each `(name, uid, blockOwnerDeletion)`).
fn owned_cm(name: &str, owners: &[(&str, &str, bool)]) -> Value {
    let refs: Vec<Value> = owners
        .iter()
        .map(|(n, uid, block)| {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "name": n, "uid": uid,
                   "blockOwnerDeletion": block})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "ownerReferences": refs}, "data": {"k": "v"}})
}

async fn create_cm(c: &Client, obj: &Value) -> Value {
    c.create(&path("v1", "configmaps", Some(NS), None), obj)
        .await
        .expect("create configmap")
}

async fn owner(c: &Client, name: &str) -> (Value, String) {
    let o = create_cm(c, &owned_cm(name, &[])).await;
    let uid = o["metadata"]["uid"].as_str().unwrap().to_string();
    (o, uid)
}

async fn gone(c: &Client, uri: String) -> Option<()> {
    c.get(&uri).await.unwrap().is_none().then_some(())
}

fn delete_options(policy: &str) -> Value {
    json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy})
}

#[tokio::test]
async fn dependents_of_a_deleted_owner_go_unless_another_owner_lives() {
    let (_s, c) = setup().await;
    let _gc = start_gc(&c);
    let (_, a) = owner(&c, "owner-a").await;
    let (_, b) = owner(&c, "owner-b").await;
    create_cm(&c, &owned_cm("only-a", &[("owner-a", &a, false)])).await;
    create_cm(
        &c,
        &owned_cm("a-and-b", &[("owner-a", &a, true), ("owner-b", &b, true)]),
    )
    .await;
    // Background propagation (kubectl's default): the owner goes at once.
    let opts = delete_options("Background");
    assert!(c.delete(&cm_uri("owner-a"), Some(&opts)).await.unwrap());
    wait_for("only-a to be collected", 20, || gone(&c, cm_uri("only-a"))).await;
    let survivor = wait_for("the dead reference to be dropped", 20, || async {
        let o = c.get(&cm_uri("a-and-b")).await.unwrap()?;
        let refs = o["metadata"]["ownerReferences"].as_array()?.clone();
        (refs.len() == 1).then_some(refs)
    })
    .await;
    assert_eq!(survivor[0]["uid"], json!(b));
}

#[tokio::test]
async fn dangling_references_are_collected_but_unknown_kinds_are_kept() {
    let (_s, c) = setup().await;
    let _gc = start_gc(&c);
    // Owner never existed (or died before the dependent was created).
    create_cm(
        &c,
        &owned_cm("dangling", &[("nobody", "no-such-uid", false)]),
    )
    .await;
    // Same name, other uid: the owner was replaced, so the reference is dead.
    let (_, _) = owner(&c, "replaced").await;
    create_cm(
        &c,
        &owned_cm("stale-uid", &[("replaced", "old-uid", false)]),
    )
    .await;
    // A kind keel does not serve cannot be checked, so it is kept.
    let mut alien = owned_cm("alien", &[]);
    alien["metadata"]["ownerReferences"] = json!([{"apiVersion": "example.com/v1",
        "kind": "Widget", "name": "w", "uid": "w-uid"}]);
    create_cm(&c, &alien).await;
    // Another version of a served kind names the same objects.
    let mut old_version = owned_cm("old-version", &[]);
    old_version["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1beta1",
        "kind": "Deployment", "name": "gone", "uid": "gone-uid"}]);
    create_cm(&c, &old_version).await;
    wait_for("dangling to be collected", 20, || {
        gone(&c, cm_uri("dangling"))
    })
    .await;
    wait_for("stale-uid to be collected", 20, || {
        gone(&c, cm_uri("stale-uid"))
    })
    .await;
    wait_for("old-version to be collected", 20, || {
        gone(&c, cm_uri("old-version"))
    })
    .await;
    assert!(c.get(&cm_uri("replaced")).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        c.get(&cm_uri("alien")).await.unwrap().is_some(),
        "an owner of an unknown kind must not condemn its dependent"
    );
}

#[tokio::test]
async fn orphan_propagation_keeps_dependents_and_strips_the_reference() {
    let (_s, c) = setup().await;
    let _gc = start_gc(&c);
    // The owner is of another kind than its children, so its deletion and
    // the children's stripped references arrive on different informers:
    // the collector may see the owner gone while its cache still shows
    // children with the reference.
    let secrets = path("v1", "secrets", Some(NS), None);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "parent"}});
    let parent = c.create(&secrets, &secret).await.unwrap();
    let u = parent["metadata"]["uid"].as_str().unwrap().to_string();
    const CHILDREN: usize = 100;
    for i in 0..CHILDREN {
        let mut child = owned_cm(&format!("child-{i}"), &[("parent", &u, true)]);
        child["metadata"]["ownerReferences"][0]["kind"] = json!("Secret");
        create_cm(&c, &child).await;
    }
    let opts = delete_options("Orphan");
    let parent_uri = path("v1", "secrets", Some(NS), Some("parent"));
    assert!(c.delete(&parent_uri, Some(&opts)).await.unwrap());
    wait_for("the orphaning owner to go", 20, || {
        gone(&c, parent_uri.clone())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for i in 0..CHILDREN {
        let child = c.get(&cm_uri(&format!("child-{i}"))).await.unwrap();
        let child = child.unwrap_or_else(|| panic!("orphaned child-{i} was collected"));
        assert!(
            child["metadata"]["ownerReferences"].is_null(),
            "reference not stripped: {child}"
        );
    }
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let (_s, c) = setup().await;
    let _gc = start_gc(&c);
    let (_, u) = owner(&c, "parent").await;
    let mut held = owned_cm("held", &[("parent", &u, true)]);
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    create_cm(&c, &held).await;
    let opts = delete_options("Foreground");
    assert!(c.delete(&cm_uri("parent"), Some(&opts)).await.unwrap());
    // The collector deletes the dependent; its finalizer keeps it terminating.
    wait_for("the dependent to be deleted", 20, || async {
        let o = c.get(&cm_uri("held")).await.unwrap()?;
        o["metadata"]["deletionTimestamp"].is_string().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let parent = c.get(&cm_uri("parent")).await.unwrap();
    let parent = parent.expect("the owner must wait for its blocking dependent");
    assert_eq!(
        parent["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    // Release the dependent: it goes, and then so does the owner.
    let patch = json!({"metadata": {"finalizers": null}});
    c.merge_patch(&cm_uri("held"), &patch).await.unwrap();
    wait_for("the dependent to go", 20, || gone(&c, cm_uri("held"))).await;
    wait_for("the owner to go", 20, || gone(&c, cm_uri("parent"))).await;
}

async fn count(c: &Client, gv: &str, resource: &str) -> usize {
    let l = c.list(&path(gv, resource, Some(NS), None)).await.unwrap();
    l["items"].as_array().map_or(0, Vec::len)
}

/// Deployment `web` with its controllers' pods (unscheduled) created.
async fn create_web(c: &Client, replicas: usize) {
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "keel/echo"}]}}}});
    c.create(&path("apps/v1", "deployments", Some(NS), None), &d)
        .await
        .unwrap();
    wait_for("the pods", 30, || async {
        (count(c, "v1", "pods").await == replicas).then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_deployment_removes_its_replicasets_and_pods() {
    let (_s, c) = setup().await;
    let caches = Caches::new(c.kube().clone());
    let _gc = bg(gc::run(c.kube().clone(), caches.clone()));
    let _rs = bg(replicaset::run::<ReplicaSet>(
        c.kube().clone(),
        caches.clone(),
    ));
    let _d = bg(deployment::run(c.kube().clone(), caches.clone()));
    create_web(&c, 3).await;
    let uri = path("apps/v1", "deployments", Some(NS), Some("web"));
    assert!(c.delete(&uri, None).await.unwrap());
    wait_for("the ReplicaSet and its pods to go", 30, || async {
        let left = count(&c, "apps/v1", "replicasets").await + count(&c, "v1", "pods").await;
        (left == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn foreground_deletion_of_a_deployment_removes_the_deployment_last() {
    let (_s, c) = setup().await;
    let caches = Caches::new(c.kube().clone());
    let _gc = bg(gc::run(c.kube().clone(), caches.clone()));
    let _rs = bg(replicaset::run::<ReplicaSet>(
        c.kube().clone(),
        caches.clone(),
    ));
    let _d = bg(deployment::run(c.kube().clone(), caches.clone()));
    create_web(&c, 2).await;
    let uri = path("apps/v1", "deployments", Some(NS), Some("web"));
    let opts = delete_options("Foreground");
    assert!(c.delete(&uri, Some(&opts)).await.unwrap());
    // Dependents go first, so the Deployment is never seen without them
    // while pods remain.
    wait_for("everything to go", 30, || async {
        let deploys = count(&c, "apps/v1", "deployments").await;
        let rest = count(&c, "apps/v1", "replicasets").await + count(&c, "v1", "pods").await;
        assert!(
            deploys == 1 || rest == 0,
            "the Deployment went before its dependents ({rest} left)"
        );
        (deploys == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_namespace_controller_finishes_an_abandoned_namespace_deletion() {
    let (s, c) = setup().await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "stuck"}});
    c.create("/api/v1/namespaces", &ns).await.unwrap();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    c.create(&path("v1", "configmaps", Some("stuck"), None), &cm)
        .await
        .unwrap();
    // What a replica that died right after accepting the DELETE leaves:
    // the namespace marked, nothing in it deleted.
    let objects = Objects::new(s.store.clone(), Arc::new(Metrics::new()));
    let key = keel_apiserver::resources::find("", "v1", "namespaces")
        .unwrap()
        .key(None, "stuck");
    let cur = objects.get(&key).await.unwrap().unwrap();
    let mut marked = cur.obj.clone();
    marked["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    marked["metadata"]["finalizers"] = json!(["kubernetes"]);
    marked["status"]["phase"] = json!("Terminating");
    let written = objects.update(&key, &marked, cur.mod_revision).await;
    assert!(written.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cm_uri = path("v1", "configmaps", Some("stuck"), Some("c"));
    assert!(
        c.get(&cm_uri).await.unwrap().is_some(),
        "nothing but the controller should empty the namespace"
    );
    let _ns = start_namespace(&c);
    wait_for("the namespace to go", 20, || {
        gone(&c, "/api/v1/namespaces/stuck".into())
    })
    .await;
    assert!(c.get(&cm_uri).await.unwrap().is_none());
}

#[tokio::test]
async fn a_namespace_created_again_right_after_deletion_is_left_alone() {
    let (s, c) = setup().await;
    let _ns = start_namespace(&c);
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "again"}});
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let cms = path("v1", "configmaps", Some("again"), None);
    let cm_uri = path("v1", "configmaps", Some("again"), Some("c"));
    for _ in 0..5 {
        c.create("/api/v1/namespaces", &ns).await.unwrap();
        c.create(&cms, &cm).await.unwrap();
        // Deleted through the API server: its own cleanup and the
        // controller both work on it.
        assert_eq!(s.delete("/api/v1/namespaces/again").await.code, 202);
        wait_for("the namespace to go", 20, || {
            gone(&c, "/api/v1/namespaces/again".into())
        })
        .await;
    }
    // Created again at once: no leftover cleanup pass may touch it.
    c.create("/api/v1/namespaces", &ns).await.unwrap();
    c.create(&cms, &cm).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = c.get("/api/v1/namespaces/again").await.unwrap();
    let again = again.expect("the new namespace was deleted");
    assert!(again["metadata"]["deletionTimestamp"].is_null(), "{again}");
    assert!(
        c.get(&cm_uri).await.unwrap().is_some(),
        "its contents were deleted"
    );
}

/// A running pod deleted in the foreground loses the finalizer at once
/// (it owns nothing), but still gets its grace period: it stays until its
/// agent's grace-0 delete, instead of vanishing while it still runs.
#[tokio::test]
async fn a_pod_keeps_its_grace_period_when_its_finalizer_goes() {
    let (_s, c) = setup().await;
    let _gc = start_gc(&c);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "keel/pause"}]}});
    c.create(&path("v1", "pods", Some(NS), None), &pod)
        .await
        .unwrap();
    let uri = path("v1", "pods", Some(NS), Some("p"));
    let opts = delete_options("Foreground");
    assert!(c.delete(&uri, Some(&opts)).await.unwrap());
    wait_for("the finalizer to go", 20, || async {
        let p = c.get(&uri).await.unwrap()?;
        p["metadata"]["finalizers"].is_null().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = c
        .get(&uri)
        .await
        .unwrap()
        .expect("the pod is still stopping");
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], json!(30));
    // The agent confirms: a grace-0 delete removes it.
    let now = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0});
    assert!(c.delete(&uri, Some(&now)).await.unwrap());
    assert!(c.get(&uri).await.unwrap().is_none());
}

/// Orphaning works for cluster-scoped dependents too (their path has no
/// namespace segment).
#[tokio::test]
async fn orphaning_a_cluster_scoped_dependent_keeps_it() {
    let (_s, c) = setup().await;
    let _gc = start_gc(&c);
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    let node = c.create("/api/v1/nodes", &node).await.unwrap();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kid",
        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1",
                             "uid": node["metadata"]["uid"]}]}});
    c.create("/api/v1/namespaces", &ns).await.unwrap();
    let opts = delete_options("Orphan");
    assert!(c.delete("/api/v1/nodes/n1", Some(&opts)).await.unwrap());
    wait_for("the node to go", 20, || gone(&c, "/api/v1/nodes/n1".into())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kid = c.get("/api/v1/namespaces/kid").await.unwrap();
    let kid = kid.expect("the orphaned namespace was collected");
    assert!(kid["metadata"]["ownerReferences"].is_null(), "{kid}");
    assert!(kid["metadata"]["deletionTimestamp"].is_null(), "{kid}");
}
