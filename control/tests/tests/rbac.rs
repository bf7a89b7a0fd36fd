//! RBAC over HTTP on a one-replica server: the reviews (SubjectAccessReview,
//! LocalSubjectAccessReview, SelfSubjectRulesReview, TokenReview), the
//! ClusterRole aggregation controller, RBAC validation, and a fuzz of
//! random subjects (impersonated), verbs, resources and paths that must
//! never answer 5xx.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use support::{wait_for, TestServer};

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";
const AUTHZ: &str = "/apis/authorization.k8s.io/v1";

/// A request sent as `user` in `groups` (impersonated by the admin the
/// plain-HTTP test server authenticates everyone as).
async fn as_user(
    s: &TestServer,
    user: &str,
    groups: &[&str],
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> support::Reply {
    let mut b = http::Request::builder().method(method).uri(path);
    if !user.is_empty() {
        b = b.header("Impersonate-User", user);
    }
    for g in groups {
        b = b.header("Impersonate-Group", *g);
    }
    let bytes = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            serde_json::to_vec(v).unwrap()
        }
        None => vec![],
    };
    s.send(b.body(bytes).unwrap()).await
}

async fn setup(s: &TestServer) {
    for (path, obj) in [
        (
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "devs-edit"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                   "subjects": [{"kind": "Group", "name": "devs"}]}),
        ),
    ] {
        let r = s.post(path, &obj).await;
        assert_eq!(r.code, 201, "{path}: {}", r.body);
    }
}

fn sar(user: &str, groups: &[&str], attrs: Value) -> Value {
    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
           "spec": {"user": user, "groups": groups, "resourceAttributes": attrs}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_aggregation_and_validation() {
    let s = TestServer::start().await;
    setup(&s).await;

    // SubjectAccessReview: about anyone, asked by someone allowed to ask.
    let r = s
        .post(
            &format!("{AUTHZ}/subjectaccessreviews"),
            &sar(
                "ann",
                &["devs"],
                json!({"namespace": "team", "verb": "delete", "resource": "secrets"}),
            ),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.body["status"]["allowed"], true, "{}", r.body);
    let r = s
        .post(
            &format!("{AUTHZ}/subjectaccessreviews"),
            &sar(
                "ann",
                &["devs"],
                json!({"namespace": "other", "verb": "get", "resource": "pods"}),
            ),
        )
        .await;
    assert_eq!(r.body["status"]["allowed"], false, "{}", r.body);
    let r = s
        .post(
            &format!("{AUTHZ}/subjectaccessreviews"),
            &sar("", &[], json!({"verb": "get"})),
        )
        .await;
    assert_eq!(r.code, 422, "{}", r.body);
    // ... but a plain user may not ask about others.
    let r = as_user(
        &s,
        "ann",
        &["devs"],
        "POST",
        &format!("{AUTHZ}/subjectaccessreviews"),
        Some(&sar("bob", &[], json!({"verb": "get", "resource": "pods"}))),
    )
    .await;
    assert_eq!(r.code, 403, "{}", r.body);
    assert_eq!(r.body["reason"], "Forbidden");

    // LocalSubjectAccessReview: the namespace must match the URL's.
    let local = |ns: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
        "spec": {"user": "ann", "groups": ["devs"], "resourceAttributes": {"namespace": ns, "verb": "list", "resource": "pods"}}})
    };
    let r = s
        .post(
            &format!("{AUTHZ}/namespaces/team/localsubjectaccessreviews"),
            &local("team"),
        )
        .await;
    assert_eq!(
        (r.code, &r.body["status"]["allowed"]),
        (201, &json!(true)),
        "{}",
        r.body
    );
    let r = s
        .post(
            &format!("{AUTHZ}/namespaces/team/localsubjectaccessreviews"),
            &local("kube-system"),
        )
        .await;
    assert_eq!(r.code, 422, "{}", r.body);

    // SelfSubjectRulesReview: what `kubectl auth can-i --list` prints.
    let rr = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": "team"}});
    let r = as_user(
        &s,
        "ann",
        &["devs"],
        "POST",
        &format!("{AUTHZ}/selfsubjectrulesreviews"),
        Some(&rr),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let rules = r.body["status"]["resourceRules"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        rules.iter().any(|r| r["resources"]
            .as_array()
            .unwrap()
            .contains(&json!("secrets"))),
        "{rules:?}"
    );
    assert!(!r.body["status"]["nonResourceRules"]
        .as_array()
        .unwrap()
        .is_empty());

    // TokenReview: an unknown token is not authenticated.
    let tr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "nope"}});
    let r = s
        .post("/apis/authentication.k8s.io/v1/tokenreviews", &tr)
        .await;
    assert_eq!(
        (r.code, &r.body["status"]["authenticated"]),
        (201, &json!(false)),
        "{}",
        r.body
    );
    assert!(
        r.body["spec"].get("token").is_none(),
        "the token is never echoed: {}",
        r.body
    );

    // Aggregation: a ClusterRole labelled aggregate-to-view adds its rules
    // to view (and so to edit and admin).
    let extra = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "widgets-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]}]});
    assert_eq!(
        s.post(&format!("{RBAC}/clusterroles"), &extra).await.code,
        201
    );
    wait_for("view to aggregate widgets", 20, || async {
        let view = s.get(&format!("{RBAC}/clusterroles/view")).await.body;
        let text = view["rules"].to_string();
        text.contains("widgets").then_some(())
    })
    .await;
    let r = s.post(&format!("{AUTHZ}/subjectaccessreviews"),
        &sar("ann", &["devs"], json!({"namespace": "team", "verb": "get", "group": "example.com", "resource": "widgets"}))).await;
    assert_eq!(r.body["status"]["allowed"], true, "{}", r.body);

    // Validation: 422 naming the field; roleRef never changes.
    let bad = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "bad"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": []}]});
    let r = s.post(&format!("{RBAC}/namespaces/team/roles"), &bad).await;
    assert_eq!(r.code, 422, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("rules[0].verbs"),
        "{}",
        r.body
    );
    let path = format!("{RBAC}/namespaces/team/rolebindings/devs-edit");
    let r = s
        .patch(
            &path,
            "application/merge-patch+json",
            &json!({"roleRef": {"name": "view"}}),
        )
        .await;
    assert_eq!(r.code, 422, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("cannot change roleRef"),
        "{}",
        r.body
    );

    // Watch is authorized like list.
    let r = as_user(
        &s,
        "ann",
        &["devs"],
        "GET",
        "/api/v1/namespaces/kube-system/pods?watch=true",
        None,
    )
    .await;
    assert_eq!(r.code, 403);
    assert_eq!(
        r.body["message"],
        r#"pods is forbidden: User "ann" cannot watch resource "pods" in API group "" in the namespace "kube-system""#
    );
    let store = s.store.clone();
    drop(s);
    store.shutdown().await;
}

fn subject() -> impl Strategy<Value = (String, Vec<String>)> {
    let user = prop_oneof![
        Just("ann".to_string()),
        Just("system:anonymous".to_string()),
        Just("system:serviceaccount:team:default".to_string()),
        Just("system:node:n1".to_string()),
        "[a-z:.0-9-]{1,24}",
    ];
    let group = prop_oneof![
        Just("devs".to_string()),
        Just("system:masters".to_string()),
        Just("system:nodes".to_string()),
        Just("system:authenticated".to_string()),
        "[a-z:.0-9-]{1,16}",
    ];
    (user, prop::collection::vec(group, 0..3))
}

fn path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        Just("api".to_string()),
        Just("apis".to_string()),
        Just("v1".to_string()),
        Just("namespaces".to_string()),
        Just("team".to_string()),
        Just("default".to_string()),
        Just("pods".to_string()),
        Just("secrets".to_string()),
        Just("nodes".to_string()),
        Just("log".to_string()),
        Just("exec".to_string()),
        Just("status".to_string()),
        Just("scale".to_string()),
        Just("rbac.authorization.k8s.io".to_string()),
        Just("roles".to_string()),
        Just("clusterroles".to_string()),
        Just("rolebindings".to_string()),
        Just("clusterrolebindings".to_string()),
        Just("authorization.k8s.io".to_string()),
        Just("selfsubjectaccessreviews".to_string()),
        Just("subjectaccessreviews".to_string()),
        Just("localsubjectaccessreviews".to_string()),
        Just("selfsubjectrulesreviews".to_string()),
        Just("authentication.k8s.io".to_string()),
        Just("selfsubjectreviews".to_string()),
        Just("tokenreviews".to_string()),
        Just("healthz".to_string()),
        Just("metrics".to_string()),
        Just("watch".to_string()),
        "[a-z0-9.-]{1,12}",
    ];
    (
        prop::collection::vec(seg, 0..7),
        prop::option::of(Just("watch=true")),
    )
        .prop_map(|(segs, q)| match q {
            Some(q) => format!("/{}?{q}", segs.join("/")),
            None => format!("/{}", segs.join("/")),
        })
}

fn body() -> impl Strategy<Value = Option<Value>> {
    let attrs = (
        prop::sample::select(
            &[
                "get",
                "list",
                "create",
                "escalate",
                "bind",
                "impersonate",
                "*",
                "",
            ][..],
        ),
        prop::sample::select(&["pods", "secrets", "roles", "*", ""][..]),
        prop::sample::select(&["team", "", "x"][..]),
    )
        .prop_map(|(v, r, ns)| json!({"verb": v, "resource": r, "namespace": ns}));
    prop_oneof![
        Just(None),
        attrs.clone().prop_map(|a| Some(
            json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "spec": {"resourceAttributes": a}})
        )),
        attrs.clone().prop_map(|a| Some(
            json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "spec": {"user": "u", "resourceAttributes": a}})
        )),
        Just(Some(
            json!({"spec": {"namespace": 3, "resourceAttributes": [], "nonResourceAttributes": {"path": 1}}})
        )),
        Just(Some(
            json!({"kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": "r"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})
        )),
        Just(Some(
            json!({"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": "b"},
            "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [{"kind": "User", "name": "ann"}]})
        )),
        Just(Some(json!("not an object"))),
    ]
}

#[test]
fn fuzzed_subjects_verbs_and_paths_are_never_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let s = TestServer::start().await;
        setup(&s).await;
        s
    });
    let mut runner = TestRunner::new(Config {
        cases: 500,
        failure_persistence: None,
        ..Config::default()
    });
    let method = prop::sample::select(&["GET", "POST", "PUT", "PATCH", "DELETE"][..]);
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let result = runner.run(
        &(subject(), method, path(), body()),
        |((user, groups), method, path, body)| {
            let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
            let reply = rt.block_on(as_user(&s, &user, &groups, method, &path, body.as_ref()));
            *seen.lock().unwrap().entry(reply.code).or_default() += 1;
            prop_assert!(
                reply.code < 500,
                "{user} {groups:?} {method} {path}: {} {}",
                reply.code,
                reply.body
            );
            if reply.code == 403 {
                prop_assert_eq!(&reply.body["reason"], "Forbidden");
                prop_assert!(
                    reply.body["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("forbidden")),
                    "{}",
                    reply.body
                );
            }
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner().unwrap();
    eprintln!("response codes: {seen:?}");
    for code in [200, 403, 404] {
        assert!(seen.contains_key(&code), "no {code} among {seen:?}");
    }
    rt.block_on(async {
        let store = s.store.clone();
        drop(s);
        store.shutdown().await;
    });
    drop(rt);
    std::thread::sleep(Duration::from_millis(300));
}

/// Whether `user` may list ConfigMaps in `ns` (200) or not (403).
async fn lists_configmaps(s: &TestServer, user: &str, ns: &str) -> bool {
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let r = as_user(s, user, &[], "GET", &path, None).await;
    assert!(matches!(r.code, 200 | 403), "{}: {}", r.code, r.body);
    r.code == 200
}

/// The authorizer reuses decoded RBAC objects between requests, yet every
/// binding or role created, changed or deleted decides the very next
/// request after the write (this replica has applied it).
#[tokio::test]
async fn rbac_changes_decide_the_next_request() {
    let s = TestServer::start().await;
    setup(&s).await;
    let rb_path = format!("{RBAC}/namespaces/team/rolebindings");
    let role_path = format!("{RBAC}/namespaces/team/roles");
    let crb_path = format!("{RBAC}/clusterrolebindings");
    // Twice each: the second is answered from the cache.
    for _ in 0..2 {
        assert!(!lists_configmaps(&s, "carol", "team").await);
        assert!(!lists_configmaps(&s, "carol", "default").await);
    }

    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "cm-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]});
    assert_eq!(s.post(&role_path, &role).await.code, 201);
    assert!(
        !lists_configmaps(&s, "carol", "team").await,
        "not bound yet"
    );
    let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "carol-cm"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
        "subjects": [{"kind": "User", "name": "carol"}]});
    assert_eq!(s.post(&rb_path, &rb).await.code, 201);
    assert!(
        lists_configmaps(&s, "carol", "team").await,
        "binding created"
    );
    assert!(lists_configmaps(&s, "carol", "team").await);

    // A changed role: same count of keys, a newer revision.
    let mut narrowed = role.clone();
    narrowed["rules"][0]["verbs"] = json!(["get"]);
    let r = s.put(&format!("{role_path}/cm-reader"), &narrowed).await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(
        !lists_configmaps(&s, "carol", "team").await,
        "role narrowed"
    );
    let r = s.put(&format!("{role_path}/cm-reader"), &role).await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(lists_configmaps(&s, "carol", "team").await, "role widened");

    // A deleted binding: fewer keys, no newer revision.
    let r = s.delete(&format!("{rb_path}/carol-cm")).await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(
        !lists_configmaps(&s, "carol", "team").await,
        "binding deleted"
    );

    // Cluster-wide bindings alike.
    let crb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "carol-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "carol"}]});
    assert_eq!(s.post(&crb_path, &crb).await.code, 201);
    assert!(
        lists_configmaps(&s, "carol", "default").await,
        "cluster binding created"
    );
    let r = s.delete(&format!("{crb_path}/carol-view")).await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(
        !lists_configmaps(&s, "carol", "default").await,
        "cluster binding deleted"
    );
    let store = s.store.clone();
    drop(s);
    store.shutdown().await;
}
