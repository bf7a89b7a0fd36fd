//! ResourceQuota and LimitRange admission, and the quota controller, in
//! process: what is refused is refused with Kubernetes' 403 messages and
//! nothing is written; concurrent creates cannot overshoot a quota; the
//! controller keeps `status.used` in step with the namespace.

#![recursion_limit = "256"]

use keel_control_tests as support;

use keel_controllers::cache::Caches;
use keel_controllers::resourcequota;
use serde_json::{json, Value};
use support::client::{path, Client};
use support::{bg, wait_for, with_in_process_client};

const NS: &str = "default";

fn pods_path() -> String {
    path("v1", "pods", Some(NS), None)
}

fn quota_path(name: Option<&str>) -> String {
    path("v1", "resourcequotas", Some(NS), name)
}

async fn create_quota(c: &Client, name: &str, hard: Value) {
    let q = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
        "spec": {"hard": hard}});
    c.create(&quota_path(None), &q).await.unwrap();
}

fn pod_with(name: &str, resources: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}})
}

async fn pod_names(c: &Client) -> Vec<String> {
    let l = c.list(&pods_path()).await.unwrap();
    l["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// The third pod of a `pods=2` quota is 403 with Kubernetes' message and is
/// not stored; a finished pod frees its place.
#[tokio::test]
async fn pods_beyond_the_quota_are_forbidden_until_one_finishes() {
    let (_server, c) = with_in_process_client("quota-test").await;
    create_quota(&c, "q", json!({"pods": "2"})).await;
    for p in ["p1", "p2"] {
        c.create(&pods_path(), &support::pod(p, json!({})))
            .await
            .unwrap();
    }
    let e = c
        .create(&pods_path(), &support::pod("p3", json!({})))
        .await
        .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "pods \"p3\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
    );
    assert_eq!(pod_names(&c).await, ["p1", "p2"]);
    let q = c.get(&quota_path(Some("q"))).await.unwrap().unwrap();
    assert_eq!(q["status"]["used"]["pods"], "2", "charged by admission");
    assert_eq!(q["status"]["hard"]["pods"], "2");

    let dry = c
        .request(
            http::Method::POST,
            &(pods_path() + "?dryRun=All"),
            Some(&support::pod("p3", json!({}))),
            "application/json",
        )
        .await
        .unwrap_err();
    assert_eq!(dry.code, 403, "a dry run is admitted the same way");

    let uri = path("v1", "pods", Some(NS), Some("p1")) + "/status";
    let mut p1 = c
        .get(&path("v1", "pods", Some(NS), Some("p1")))
        .await
        .unwrap()
        .unwrap();
    p1["status"] = json!({"phase": "Succeeded"});
    c.update(&uri, &p1).await.unwrap();
    c.create(&pods_path(), &support::pod("p3", json!({})))
        .await
        .unwrap();
}

/// A compute quota needs every container to state the resource, and sums
/// requests across pods.
#[tokio::test]
async fn compute_quotas_need_requests_and_sum_them() {
    let (_server, c) = with_in_process_client("quota-test").await;
    create_quota(&c, "cpu", json!({"requests.cpu": "1"})).await;
    let e = c
        .create(&pods_path(), &support::pod("bare", json!({})))
        .await
        .unwrap_err();
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        "pods \"bare\" is forbidden: failed quota: cpu: must specify requests.cpu for: c"
    );
    let half = json!({"requests": {"cpu": "600m"}});
    c.create(&pods_path(), &pod_with("a", half.clone()))
        .await
        .unwrap();
    let e = c
        .create(&pods_path(), &pod_with("b", half))
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        "pods \"b\" is forbidden: exceeded quota: cpu, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"
    );
    c.create(
        &pods_path(),
        &pod_with("c", json!({"requests": {"cpu": "400m"}})),
    )
    .await
    .unwrap();
    assert_eq!(pod_names(&c).await, ["a", "c"]);
}

/// Twenty creates at once against `pods=5`: exactly five are stored.
#[tokio::test]
async fn concurrent_creates_cannot_overshoot_a_quota() {
    let (_server, c) = with_in_process_client("quota-test").await;
    create_quota(&c, "q", json!({"pods": "5", "count/configmaps": "50"})).await;
    let creates = (0..20).map(|i| {
        let c = c.clone();
        async move {
            c.create(&pods_path(), &support::pod(&format!("p{i}"), json!({})))
                .await
        }
    });
    let results = futures::future::join_all(creates).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 5, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code, 403, "{r}");
    }
    assert_eq!(pod_names(&c).await.len(), 5);
}

/// The controller writes `status.hard` and recounts `status.used` as
/// objects come and go (including kinds other than pods).
#[tokio::test]
async fn the_controller_keeps_usage_current() {
    let (server, c) = with_in_process_client("quota-test").await;
    let caches = Caches::new(server.in_process("keel-controller-manager"));
    let _ctl = bg(resourcequota::run(
        server.in_process("resourcequota-controller"),
        caches,
    ));
    for p in ["p1", "p2"] {
        c.create(&pods_path(), &support::pod(p, json!({})))
            .await
            .unwrap();
    }
    c.create(
        &path("v1", "configmaps", Some(NS), None),
        &support::configmap("cm", json!({})),
    )
    .await
    .unwrap();
    create_quota(
        &c,
        "q",
        json!({"pods": "10", "configmaps": "5", "requests.memory": "1Gi"}),
    )
    .await;
    let want = json!({"pods": "2", "configmaps": "1", "requests.memory": "0"});
    wait_for("the first count", 15, || async {
        let q = c.get(&quota_path(Some("q"))).await.ok()??;
        (q["status"]["used"] == want).then_some(())
    })
    .await;
    let q = c.get(&quota_path(Some("q"))).await.unwrap().unwrap();
    assert_eq!(q["status"]["hard"], q["spec"]["hard"]);
    c.delete(&path("v1", "pods", Some(NS), Some("p1")), None)
        .await
        .unwrap();
    wait_for("the pod released", 15, || async {
        let q = c.get(&quota_path(Some("q"))).await.ok()??;
        (q["status"]["used"]["pods"] == "1").then_some(())
    })
    .await;
}

async fn create_limit_range(c: &Client, limits: Value) {
    let lr = json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "lr"},
        "spec": {"limits": limits}});
    c.create(&path("v1", "limitranges", Some(NS), None), &lr)
        .await
        .unwrap();
}

/// Containers get the LimitRange's defaults; limits beyond its max are 403
/// with Kubernetes' wording and nothing is stored.
#[tokio::test]
async fn limit_ranges_default_and_bound_containers() {
    let (_server, c) = with_in_process_client("quota-test").await;
    create_limit_range(
        &c,
        json!([{"type": "Container", "max": {"cpu": "500m"},
                "default": {"cpu": "200m", "memory": "64Mi"}, "defaultRequest": {"cpu": "100m", "memory": "32Mi"}},
               {"type": "PersistentVolumeClaim", "max": {"storage": "2Gi"}}]),
    )
    .await;
    let p = c
        .create(&pods_path(), &support::pod("small", json!({})))
        .await
        .unwrap();
    let r = &p["spec"]["containers"][0]["resources"];
    assert_eq!(r["limits"], json!({"cpu": "200m", "memory": "64Mi"}));
    assert_eq!(r["requests"], json!({"cpu": "100m", "memory": "32Mi"}));
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );
    let e = c
        .create(
            &pods_path(),
            &pod_with("big", json!({"limits": {"cpu": "1"}})),
        )
        .await
        .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "pods \"big\" is forbidden: maximum cpu usage per Container is 500m, but limit is 1"
    );
    assert_eq!(pod_names(&c).await, ["small"]);

    let pvc = |name: &str, size: &str| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}})
    };
    let pvcs = path("v1", "persistentvolumeclaims", Some(NS), None);
    c.create(&pvcs, &pvc("ok", "1Gi")).await.unwrap();
    let e = c.create(&pvcs, &pvc("huge", "5Gi")).await.unwrap_err();
    assert_eq!(
        e.message,
        "persistentvolumeclaims \"huge\" is forbidden: maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"
    );
}

/// A JSON client of an API whose local reads see the store as it was at
/// `revision`: a replica that has not yet applied anything newer.
fn lagging_client(server: &support::TestServer, revision: i64) -> Client {
    let api = server.api();
    let lagging = std::sync::Arc::new(keel_apiserver::api::Api {
        objects: api.objects.clone().lagging_at(revision),
        metrics: api.metrics.clone(),
        cfg: api.cfg.clone(),
    });
    let json = keel_apiserver::client::Client::new(lagging, "lagging-replica");
    Client::new(json, server.in_process("lagging-replica"))
}

/// A LimitRange and a quota written after the revision a replica has
/// applied still bind the creates it admits: its local reads miss them, the
/// write's guards fail, and admission runs again from linearizable reads.
#[tokio::test]
async fn a_lagging_replica_admits_against_what_it_has_not_applied() {
    let (server, c) = with_in_process_client("quota-test").await;
    let before = server.store.current_revision();
    create_limit_range(
        &c,
        json!([{"type": "Container", "max": {"cpu": "500m"}, "default": {"cpu": "200m"}}]),
    )
    .await;
    create_quota(&c, "q", json!({"pods": "1"})).await;
    let lagging = lagging_client(&server, before);
    let lr_prefix = "/registry/limitranges/default/";
    let seen = server
        .api()
        .objects
        .clone()
        .lagging_at(before)
        .list_local_page(lr_prefix)
        .await
        .unwrap();
    assert!(
        seen.items.is_empty(),
        "the lagging replica must not see the LimitRange"
    );

    let e = lagging
        .create(
            &pods_path(),
            &pod_with("big", json!({"limits": {"cpu": "1"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            403,
            "pods \"big\" is forbidden: maximum cpu usage per Container is 500m, but limit is 1"
        )
    );
    let p = lagging
        .create(&pods_path(), &support::pod("small", json!({})))
        .await
        .unwrap();
    assert_eq!(
        p["spec"]["containers"][0]["resources"]["limits"],
        json!({"cpu": "200m"}),
        "defaulted by the LimitRange the replica had not applied"
    );
    let q = c.get(&quota_path(Some("q"))).await.unwrap().unwrap();
    assert_eq!(q["status"]["used"]["pods"], "1", "charged with the create");
    let e = lagging
        .create(&pods_path(), &support::pod("second", json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (403, "pods \"second\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1")
    );
    assert_eq!(pod_names(&c).await, ["small"]);
}

/// A LimitRange deleted after a lagging replica's revision no longer
/// applies to what it admits: its defaults are not written (the guard
/// catches the deletion) and its bounds refuse nothing (a refusal from a
/// local read is confirmed linearizably).
#[tokio::test]
async fn a_lagging_replica_does_not_apply_a_deleted_limit_range() {
    let (server, c) = with_in_process_client("quota-test").await;
    create_limit_range(
        &c,
        json!([{"type": "Container", "max": {"cpu": "500m"}, "default": {"cpu": "200m"}}]),
    )
    .await;
    let before = server.store.current_revision();
    c.delete(&path("v1", "limitranges", Some(NS), Some("lr")), None)
        .await
        .unwrap();
    let lagging = lagging_client(&server, before);
    let p = lagging
        .create(&pods_path(), &support::pod("plain", json!({})))
        .await
        .unwrap();
    assert!(
        p["spec"]["containers"][0]["resources"]["limits"].is_null(),
        "no defaults from the deleted LimitRange: {p}"
    );
    assert!(p["metadata"]["annotations"]["kubernetes.io/limit-ranger"].is_null());
    let p = lagging
        .create(
            &pods_path(),
            &pod_with("big", json!({"limits": {"cpu": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        p["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "1"
    );
}

/// Creates through a lagging replica and an up-to-date one at once, against
/// a quota the lagging one has not applied: exactly the quota is admitted.
#[tokio::test]
async fn concurrent_creates_through_a_lagging_replica_cannot_overshoot() {
    let (server, c) = with_in_process_client("quota-test").await;
    let before = server.store.current_revision();
    create_quota(&c, "q", json!({"pods": "5"})).await;
    let lagging = lagging_client(&server, before);
    let creates = (0..20).map(|i| {
        let client = if i % 2 == 0 {
            lagging.clone()
        } else {
            c.clone()
        };
        async move {
            client
                .create(&pods_path(), &support::pod(&format!("p{i}"), json!({})))
                .await
        }
    });
    let results = futures::future::join_all(creates).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 5, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code, 403, "{r}");
    }
    assert_eq!(pod_names(&c).await.len(), 5);
}
