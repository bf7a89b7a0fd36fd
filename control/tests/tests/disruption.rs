//! PodDisruptionBudgets end to end in process: the disruption controller
//! computes budget status from pods, and the eviction API spends it. No
//! agent runs here: pods are made Running and Ready by writing their status
//! as a kubelet would, and, having no node, an evicted pod is deleted at once.

#![recursion_limit = "256"]

use keel_control_tests as support;

use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use keel_controllers::cache::Caches;
use keel_controllers::{disruption, replicaset};
use serde_json::{json, Value};
use support::client::{path, Client};
use support::{bg, wait_for, with_in_process_client, Bg, TestServer};

const NS: &str = "default";

fn run_disruption(server: &TestServer, caches: &Caches) -> Bg {
    bg(disruption::run(
        server.in_process("disruption-controller"),
        caches.clone(),
    ))
}

fn pod_path(name: &str) -> String {
    path("v1", "pods", Some(NS), Some(name))
}

fn pdb_path(name: Option<&str>) -> String {
    path("policy/v1", "poddisruptionbudgets", Some(NS), name)
}

/// Marks a pod Running (and Ready when `ready`), as its kubelet would.
async fn set_running(c: &Client, name: &str, ready: bool) {
    let mut p = c.get(&pod_path(name)).await.unwrap().expect("the pod");
    let now = jiff::Timestamp::now().to_string();
    let status = if ready { "True" } else { "False" };
    p["status"] = json!({"phase": "Running", "conditions": [
        {"type": "Ready", "status": status, "lastTransitionTime": now}]});
    c.update(&(pod_path(name) + "/status"), &p).await.unwrap();
}

/// A running, ready pod labelled `app=web`.
async fn running_pod(c: &Client, name: &str) {
    c.create(
        &path("v1", "pods", Some(NS), None),
        &support::pod(name, json!({"app": "web"})),
    )
    .await
    .unwrap();
    set_running(c, name, true).await;
}

async fn create_pdb(c: &Client, name: &str, spec: Value) -> Value {
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name}, "spec": spec});
    c.create(&pdb_path(None), &pdb).await.unwrap()
}

/// Waits until the budget's status (observed at its generation) shows
/// `(currentHealthy, desiredHealthy, expectedPods, disruptionsAllowed)`.
async fn wait_status(c: &Client, name: &str, want: (i64, i64, i64, i64)) -> Value {
    wait_for(&format!("budget {name} at {want:?}"), 15, || async {
        let b = c.get(&pdb_path(Some(name))).await.ok()??;
        let s = &b["status"];
        let got = (
            s["currentHealthy"].as_i64()?,
            s["desiredHealthy"].as_i64()?,
            s["expectedPods"].as_i64()?,
            s["disruptionsAllowed"].as_i64()?,
        );
        let observed = s["observedGeneration"] == b["metadata"]["generation"];
        (got == want && observed).then_some(b)
    })
    .await
}

fn eviction(name: &str) -> Value {
    json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}})
}

/// POSTs an Eviction in process. (The test server's HTTP client retries
/// 429 answers by itself; kubectl's does not, and a test must see them.)
async fn evict(server: &TestServer, name: &str, body: &Value) -> Reply {
    let req = http::Request::builder()
        .method("POST")
        .uri(pod_path(name) + "/eviction")
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body.to_string().into_bytes()))
        .unwrap();
    let resp = server
        .in_process("disruption-test")
        .send(req)
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { code, body }
}

struct Reply {
    code: u16,
    body: Value,
}

fn condition(b: &Value) -> (String, String) {
    let c = b["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionAllowed"))
        .cloned()
        .unwrap_or_default();
    assert!(c["lastTransitionTime"].is_string(), "{c}");
    assert!(c["message"].is_string(), "{c}");
    (
        c["status"].as_str().unwrap_or("").into(),
        c["reason"].as_str().unwrap_or("").into(),
    )
}

/// The controller counts healthy pods; an eviction spends the one allowed
/// disruption (recorded in disruptedPods) and deletes the pod; the next one
/// is refused with 429 and Kubernetes' message and cause, and the pod stays.
#[tokio::test]
async fn evictions_spend_the_budget_and_then_are_refused() {
    let (server, c) = with_in_process_client("disruption-test").await;
    let caches = Caches::new(server.in_process("keel-controller-manager"));
    let _ctl = run_disruption(&server, &caches);
    for p in ["a", "b", "c"] {
        running_pod(&c, p).await;
    }
    create_pdb(
        &c,
        "web",
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
    )
    .await;
    let b = wait_status(&c, "web", (3, 2, 3, 1)).await;
    assert_eq!(condition(&b), ("True".into(), "SufficientPods".into()));

    let ok = evict(&server, "a", &eviction("a")).await;
    assert_eq!(ok.code, 201, "{}", ok.body);
    assert!(c.get(&pod_path("a")).await.unwrap().is_none(), "evicted");
    let b = wait_status(&c, "web", (2, 2, 2, 0)).await;
    assert_eq!(condition(&b), ("False".into(), "InsufficientPods".into()));

    let refused = evict(&server, "b", &eviction("b")).await;
    assert_eq!(refused.code, 429, "{}", refused.body);
    assert_eq!(refused.body["reason"], "TooManyRequests");
    assert_eq!(
        refused.body["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let cause = &refused.body["details"]["causes"][0];
    assert_eq!(cause["reason"], "DisruptionBudget");
    assert_eq!(
        cause["message"],
        "The disruption budget web needs 2 healthy pods and has 2 currently"
    );
    assert!(c.get(&pod_path("b")).await.unwrap().is_some(), "b stays");

    // Back to three healthy pods: one disruption again.
    running_pod(&c, "d").await;
    wait_status(&c, "web", (3, 2, 3, 1)).await;
}

/// Sets a budget's status by hand (no controller), observed at generation 1.
async fn set_budget(c: &Client, name: &str, allowed: i64) {
    let mut b = c.get(&pdb_path(Some(name))).await.unwrap().unwrap();
    b["status"] = json!({"currentHealthy": 3, "desiredHealthy": 3 - allowed, "expectedPods": 3,
        "disruptionsAllowed": allowed, "observedGeneration": 1});
    c.update(&(pdb_path(Some(name)) + "/status"), &b)
        .await
        .unwrap();
}

/// Two evictions racing for the last disruption: the budget's
/// compare-and-swap lets exactly one through.
#[tokio::test]
async fn concurrent_evictions_cannot_both_spend_one_disruption() {
    let (server, c) = with_in_process_client("disruption-test").await;
    for p in ["a", "b", "c"] {
        running_pod(&c, p).await;
    }
    create_pdb(
        &c,
        "web",
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
    )
    .await;
    set_budget(&c, "web", 1).await;
    let (ea, eb, ec) = (eviction("a"), eviction("b"), eviction("c"));
    let (ra, rb, rc) = tokio::join!(
        evict(&server, "a", &ea),
        evict(&server, "b", &eb),
        evict(&server, "c", &ec),
    );
    let mut codes = [ra.code, rb.code, rc.code];
    codes.sort_unstable();
    assert_eq!(codes, [201, 429, 429]);
    let b = c.get(&pdb_path(Some("web"))).await.unwrap().unwrap();
    assert_eq!(b["status"]["disruptionsAllowed"], 0);
    let disrupted = b["status"]["disruptedPods"].as_object().unwrap();
    assert_eq!(disrupted.len(), 1);
    let pods = c.list(&path("v1", "pods", Some(NS), None)).await.unwrap();
    assert_eq!(pods["items"].as_array().unwrap().len(), 2);
}

/// dryRun checks the budget and writes nothing; a budget not yet observed
/// is 429; two budgets are a 500; pods not running ignore budgets.
/// Typed clients send an Eviction without `kind`: it is the URL's, as for
/// every write; a body of another kind is still a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_takes_its_kind_from_the_url() {
    let (server, c) = with_in_process_client("disruption-test").await;
    c.create(
        &path("v1", "pods", Some(NS), None),
        &support::pod("p", json!({"app": "web"})),
    )
    .await
    .unwrap();
    let mut wrong = eviction("p");
    wrong["kind"] = json!("Pod");
    assert_eq!(evict(&server, "p", &wrong).await.code, 400);
    let bare = json!({"metadata": {"name": "p"}});
    let r = evict(&server, "p", &bare).await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert!(c.get(&pod_path("p")).await.unwrap().is_none(), "evicted");
}

#[tokio::test]
async fn dry_runs_unobserved_and_ambiguous_budgets_and_pending_pods() {
    let (server, c) = with_in_process_client("disruption-test").await;
    for p in ["a", "b"] {
        running_pod(&c, p).await;
    }
    create_pdb(
        &c,
        "web",
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}),
    )
    .await;
    // Never observed by a controller.
    let unobserved = evict(&server, "a", &eviction("a")).await;
    assert_eq!(unobserved.code, 429, "{}", unobserved.body);
    assert_eq!(
        unobserved.body["details"]["causes"][0]["message"],
        "The disruption budget web is still being processed by the server."
    );
    set_budget(&c, "web", 1).await;
    let mut dry = eviction("a");
    dry["deleteOptions"] = json!({"dryRun": ["All"]});
    assert_eq!(evict(&server, "a", &dry).await.code, 201);
    assert!(c.get(&pod_path("a")).await.unwrap().is_some(), "dry run");
    let b = c.get(&pdb_path(Some("web"))).await.unwrap().unwrap();
    assert_eq!(b["status"]["disruptionsAllowed"], 1, "dry run");
    assert!(b["status"]["disruptedPods"].is_null());

    // A pending pod goes even when the budget allows nothing.
    set_budget(&c, "web", 0).await;
    c.create(
        &path("v1", "pods", Some(NS), None),
        &support::pod("pending", json!({"app": "web"})),
    )
    .await
    .unwrap();
    let pending = evict(&server, "pending", &eviction("pending")).await;
    assert_eq!(pending.code, 201, "{}", pending.body);

    create_pdb(
        &c,
        "also",
        json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}),
    )
    .await;
    let two = evict(&server, "b", &eviction("b")).await;
    assert_eq!(two.code, 500, "{}", two.body);
    assert!(two.body["message"]
        .as_str()
        .unwrap()
        .contains("more than one PodDisruptionBudget"));
    assert_eq!(evict(&server, "nope", &eviction("nope")).await.code, 404);
}

/// A percentage budget is relative to the controller's scale: a
/// ReplicaSet of 4 with maxUnavailable 25% allows one disruption. A budget
/// selecting nothing still reports every count (typed clients need them).
#[tokio::test]
async fn percentages_follow_the_replicaset_scale() {
    let (server, c) = with_in_process_client("disruption-test").await;
    let caches = Caches::new(server.in_process("keel-controller-manager"));
    let _rs = bg(replicaset::run::<ReplicaSet>(
        server.in_process("replicaset-controller"),
        caches.clone(),
    ));
    let _ctl = run_disruption(&server, &caches);
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    c.create(&path("apps/v1", "replicasets", Some(NS), None), &rs)
        .await
        .unwrap();
    let names: Vec<String> = wait_for("4 pods", 15, || async {
        let l = c.list(&path("v1", "pods", Some(NS), None)).await.ok()?;
        let items = l["items"].as_array()?.clone();
        (items.len() == 4).then(|| {
            items
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
    })
    .await;
    for n in &names {
        set_running(&c, n, true).await;
    }
    create_pdb(
        &c,
        "web",
        json!({"maxUnavailable": "25%", "selector": {"matchLabels": {"app": "web"}}}),
    )
    .await;
    wait_status(&c, "web", (4, 3, 4, 1)).await;
    set_running(&c, &names[0], false).await;
    wait_status(&c, "web", (3, 3, 4, 0)).await;

    create_pdb(
        &c,
        "none",
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "nothing"}}}),
    )
    .await;
    let b = wait_status(&c, "none", (0, 1, 0, 0)).await;
    for f in [
        "currentHealthy",
        "desiredHealthy",
        "expectedPods",
        "disruptionsAllowed",
    ] {
        assert!(b["status"][f].is_i64(), "{f} in {}", b["status"]);
    }
}
