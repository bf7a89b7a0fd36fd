//! ServiceAccounts: the serviceaccounts controller gives every namespace a
//! `default` account (and brings it back when deleted), and the API
//! server's ServiceAccount admission refuses pods whose account does not
//! exist, which is what makes clients wait for the controller.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::time::{Duration, Instant};

use keel_apiserver::api::ApiConfig;
use keel_controllers::cache::Caches;
use keel_controllers::serviceaccount;
use serde_json::{json, Value};
use support::{bg, pod, wait_for, Bg, TestServer};

/// A server with ServiceAccount admission on, as a real replica runs.
async fn server() -> TestServer {
    TestServer::start_with(ApiConfig::default()).await
}

fn run_controller(s: &TestServer) -> Bg {
    let caches = Caches::new(s.in_process("keel-controller-manager"));
    bg(serviceaccount::run(
        s.in_process("service-account-controller"),
        caches,
    ))
}

async fn create_namespace(s: &TestServer, ns: &str) {
    let r = s
        .post(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
}

fn account_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}")
}

/// The uid of `ns/default` once it exists.
async fn default_uid(s: &TestServer, ns: &str) -> String {
    wait_for(&format!("{ns}/default"), 10, || async {
        let r = s.get(&account_path(ns, "default")).await;
        (r.code == 200).then(|| r.body["metadata"]["uid"].as_str().unwrap().to_string())
    })
    .await
}

#[tokio::test]
async fn every_namespace_gets_a_default_account_back_after_deletion() {
    let s = server().await;
    let _ctl = run_controller(&s);
    create_namespace(&s, "team-a").await;
    let first = default_uid(&s, "team-a").await;

    let r = s.delete(&account_path("team-a", "default")).await;
    assert_eq!(r.code, 200, "{}", r.body);
    let second = wait_for("a new team-a/default", 10, || async {
        let r = s.get(&account_path("team-a", "default")).await;
        let uid = r.body["metadata"]["uid"].as_str().map(str::to_string);
        uid.filter(|u| r.code == 200 && *u != first)
    })
    .await;
    assert_ne!(first, second);

    // The system namespaces have theirs from the first start.
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert_eq!(s.get(&account_path(ns, "default")).await.code, 200, "{ns}");
    }
}

#[tokio::test]
async fn a_pod_in_a_namespace_made_a_moment_ago_waits_for_its_account() {
    let s = server().await;
    let _ctl = run_controller(&s);
    create_namespace(&s, "fresh").await;
    // No wait: admission looks the default account up again for a moment.
    let r = s
        .post("/api/v1/namespaces/fresh/pods", &pod("p", json!({})))
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.body["spec"]["serviceAccountName"], "default");
    assert_eq!(r.body["spec"]["serviceAccount"], "default");
}

#[tokio::test]
async fn pods_are_forbidden_until_their_account_exists() {
    let s = server().await;
    create_namespace(&s, "lonely").await;
    let pods = "/api/v1/namespaces/lonely/pods";

    let started = Instant::now();
    let r = s.post(pods, &pod("p", json!({}))).await;
    assert_forbidden(&r.body, r.code, "lonely/default");
    // The default account is looked up for a moment before refusing.
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(s.get(&format!("{pods}/p")).await.code, 404);

    let mut named = pod("q", json!({}));
    named["spec"]["serviceAccountName"] = json!("builder");
    let r = s.post(pods, &named).await;
    assert_forbidden(&r.body, r.code, "lonely/builder");

    for name in ["default", "builder"] {
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}});
        let r = s
            .post("/api/v1/namespaces/lonely/serviceaccounts", &sa)
            .await;
        assert_eq!(r.code, 201, "{}", r.body);
    }
    let r = s.post(pods, &pod("p", json!({}))).await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.body["spec"]["serviceAccountName"], "default");
    let r = s.post(pods, &named).await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.body["spec"]["serviceAccountName"], "builder");
}

fn assert_forbidden(body: &Value, code: u16, account: &str) {
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["reason"], "Forbidden", "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("error looking up service account {account}")),
        "{msg}"
    );
}

#[tokio::test]
async fn pods_get_a_token_volume_unless_automount_is_off() {
    let s = server().await;
    create_namespace(&s, "tok").await;
    for (name, automount) in [("default", Value::Null), ("quiet", json!(false))] {
        let mut sa =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}});
        if !automount.is_null() {
            sa["automountServiceAccountToken"] = automount;
        }
        let r = s.post("/api/v1/namespaces/tok/serviceaccounts", &sa).await;
        assert_eq!(r.code, 201, "{}", r.body);
    }
    let pods = "/api/v1/namespaces/tok/pods";
    let r = s.post(pods, &pod("a", json!({}))).await;
    assert_eq!(r.code, 201, "{}", r.body);
    let volumes = r.body["spec"]["volumes"].as_array().unwrap();
    let name = volumes[0]["name"].as_str().unwrap();
    assert!(name.starts_with("kube-api-access-"), "{name}");
    let sources = &volumes[0]["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(
        r.body["spec"]["containers"][0]["volumeMounts"][0],
        json!({"name": name, "readOnly": true,
               "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    );

    // The account says no; the pod may still say yes.
    let mut quiet = pod("b", json!({}));
    quiet["spec"]["serviceAccountName"] = json!("quiet");
    let r = s.post(pods, &quiet).await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert!(r.body["spec"]["volumes"].is_null(), "{}", r.body);
    quiet["metadata"]["name"] = json!("c");
    quiet["spec"]["automountServiceAccountToken"] = json!(true);
    let r = s.post(pods, &quiet).await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.body["spec"]["volumes"].as_array().unwrap().len(), 1);
    // The pod says no to the default account's yes.
    let mut off = pod("d", json!({}));
    off["spec"]["automountServiceAccountToken"] = json!(false);
    let r = s.post(pods, &off).await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert!(r.body["spec"]["volumes"].is_null(), "{}", r.body);
}
