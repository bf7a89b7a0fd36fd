//! Node identities (`system:node:<name>` in `system:nodes`) over REST and
//! the node gRPC stream: the Node authorizer lets a node read only its own
//! pods and what they reference, NodeRestriction lets it write only its
//! own Node, Lease and pods' status, and the node service enforces the
//! same for the stream. The plain-HTTP test server authenticates everyone
//! as the admin, who impersonates the node (as kubectl's `--as` does).

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::time::Duration;

use futures::StreamExt;
use keel_proto::keelnode::node_service_client::NodeServiceClient;
use keel_proto::keelnode::{
    pod_event, DeletePodRequest, GetObjectRequest, HeartbeatRequest, PodStatusReport,
    RegisterRequest, WatchPodsRequest,
};
use serde_json::{json, Value};
use support::TestServer;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

type Node = NodeServiceClient<InterceptedService<Channel, As>>;

/// Sends every call impersonating `user` in `group`.
#[derive(Clone)]
struct As(&'static str, &'static str);

impl tonic::service::Interceptor for As {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let m = req.metadata_mut();
        m.insert("impersonate-user", MetadataValue::from_static(self.0));
        m.insert("impersonate-group", MetadataValue::from_static(self.1));
        Ok(req)
    }
}

async fn node_client(t: &TestServer, user: &'static str, group: &'static str) -> Node {
    let ch = tonic::transport::Endpoint::from_shared(t.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    NodeServiceClient::with_interceptor(ch, As(user, group))
}

/// A REST request as node `n1`.
async fn as_n1(
    t: &TestServer,
    method: &str,
    path: &str,
    ct: &str,
    body: Option<&Value>,
) -> support::Reply {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Impersonate-User", "system:node:n1")
        .header("Impersonate-Group", "system:nodes");
    let bytes = match body {
        Some(v) => {
            b = b.header("content-type", ct);
            serde_json::to_vec(v).unwrap()
        }
        None => vec![],
    };
    t.send(b.body(bytes).unwrap()).await
}

fn node_json(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
}

/// Pod `name` on `node`, using `secret` and ConfigMap `cm`.
fn pod(name: &str, node: &str, secret: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"nodeName": node,
                    "volumes": [{"name": "s", "secret": {"secretName": secret}},
                                {"name": "c", "configMap": {"name": "cm"}}],
                    "containers": [{"name": "c", "image": "keel/pause"}]}})
}

fn secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
           "stringData": {"k": "v"}})
}

async fn setup(t: &TestServer) {
    for (path, obj) in [
        ("/api/v1/nodes", node_json("n1")),
        ("/api/v1/nodes", node_json("n2")),
        ("/api/v1/namespaces/default/secrets", secret("mine")),
        ("/api/v1/namespaces/default/secrets", secret("theirs")),
        ("/api/v1/namespaces/default/secrets", secret("loose")),
        (
            "/api/v1/namespaces/default/configmaps",
            support::configmap("cm", json!({"a": "b"})),
        ),
        ("/api/v1/namespaces/default/pods", pod("p1", "n1", "mine")),
        ("/api/v1/namespaces/default/pods", pod("p2", "n2", "theirs")),
    ] {
        let r = t.post(path, &obj).await;
        assert_eq!(r.code, 201, "{path}: {}", r.body);
    }
}

fn forbidden(r: &support::Reply, wording: &str) {
    assert_eq!(r.code, 403, "{}", r.body);
    let msg = r.body["message"].as_str().unwrap_or_default();
    assert!(msg.contains(wording), "{msg:?} lacks {wording:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_only_its_pods_and_what_they_reference_over_rest() {
    let t = TestServer::start().await;
    setup(&t).await;
    let get = |p: &'static str| {
        let t = &t;
        async move { as_n1(t, "GET", p, "", None).await }
    };
    let ns = "/api/v1/namespaces/default";
    assert_eq!(get("/api/v1/namespaces/default/pods/p1").await.code, 200);
    let r = get("/api/v1/namespaces/default/pods/p2").await;
    forbidden(
        &r,
        r#"pods "p2" is forbidden: User "system:node:n1" cannot get resource "pods" in API group "" in the namespace "default": no relationship found between node 'n1' and this object"#,
    );
    assert_eq!(
        get("/api/v1/namespaces/default/secrets/mine").await.code,
        200
    );
    assert_eq!(
        get("/api/v1/namespaces/default/configmaps/cm").await.code,
        200
    );
    forbidden(
        &get("/api/v1/namespaces/default/secrets/theirs").await,
        "no relationship found between node 'n1' and this object",
    );
    forbidden(
        &get("/api/v1/namespaces/default/secrets/loose").await,
        r#"User "system:node:n1" cannot get resource "secrets""#,
    );
    forbidden(
        &get("/api/v1/namespaces/default/secrets").await,
        "cannot list",
    );
    // Pods: only a list selecting its own node.
    forbidden(&get("/api/v1/pods").await, "spec.nodeName field selector");
    let r = as_n1(
        &t,
        "GET",
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1",
        "",
        None,
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.body);
    let names: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p1"]);
    forbidden(
        &as_n1(
            &t,
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2",
            "",
            None,
        )
        .await,
        "spec.nodeName field selector",
    );
    // Services and nodes: readable, as the system:node role grants.
    assert_eq!(get("/api/v1/services").await.code, 200);
    assert_eq!(get("/api/v1/nodes/n2").await.code, 200);
    // TokenRequest: only for its pods' service accounts (the rest of
    // NodeRestriction's rules are in the next test).
    let tr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"audiences": [], "boundObjectRef": bound_ref(&t, "p1").await}});
    let r = as_n1(
        &t,
        "POST",
        &format!("{ns}/serviceaccounts/default/token"),
        "application/json",
        Some(&tr),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let r = t
        .post(
            &format!("{ns}/serviceaccounts"),
            &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let r = as_n1(
        &t,
        "POST",
        &format!("{ns}/serviceaccounts/robot/token"),
        "application/json",
        Some(&tr),
    )
    .await;
    forbidden(&r, "no relationship found");
    // Another node's lease, and leases outside kube-node-lease.
    let r = get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2").await;
    forbidden(&r, "same name as the requesting node");
}

/// A Pod `boundObjectRef` naming stored pod `name` (with its uid).
async fn bound_ref(t: &TestServer, name: &str) -> Value {
    let p = t
        .get(&format!("/api/v1/namespaces/default/pods/{name}"))
        .await;
    assert_eq!(p.code, 200, "{}", p.body);
    json!({"apiVersion": "v1", "kind": "Pod", "name": name, "uid": p.body["metadata"]["uid"]})
}

/// NodeRestriction for TokenRequest (Kubernetes' behaviour): a node may
/// create a service account token only bound to a pod bound to itself,
/// named with its current uid; the admin is not restricted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_requests_tokens_only_bound_to_its_own_pods() {
    let t = TestServer::start().await;
    setup(&t).await;
    let path = "/api/v1/namespaces/default/serviceaccounts/default/token";
    let request = |bound: Value| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"boundObjectRef": bound}})
    };
    let ask = |body: Value| {
        let t = &t;
        async move { as_n1(t, "POST", path, "application/json", Some(&body)).await }
    };
    let own = bound_ref(&t, "p1").await;
    let r = ask(request(own.clone())).await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert!(r.body["status"]["token"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    // p2 runs as the same account, but on n2.
    forbidden(
        &ask(request(bound_ref(&t, "p2").await)).await,
        r#"serviceaccounts "default" is forbidden: node "n1" requested token bound to a pod scheduled on a different node"#,
    );
    forbidden(
        &ask(json!({"kind": "TokenRequest", "spec": {}})).await,
        "requested token not bound to a pod",
    );
    let mut no_uid = own.clone();
    no_uid.as_object_mut().unwrap().remove("uid");
    forbidden(&ask(request(no_uid)).await, "pod binding without a uid");
    let mut stale = own.clone();
    stale["uid"] = json!("00000000-0000-0000-0000-000000000000");
    forbidden(
        &ask(request(stale)).await,
        "does not match the UID in record",
    );
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "name": "mine", "uid": "x"});
    forbidden(
        &ask(request(secret)).await,
        "requested token not bound to a pod",
    );
    let mut gone = own.clone();
    gone["name"] = json!("nope");
    let r = ask(request(gone)).await;
    assert_eq!(r.code, 404, "{}", r.body);
    assert_eq!(r.body["kind"], "Status", "{}", r.body);
    // The admin may still ask for an unbound token (kubectl create token).
    let r = t
        .post(path, &json!({"kind": "TokenRequest", "spec": {}}))
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_writes_only_its_node_and_its_pods_status_over_rest() {
    let t = TestServer::start().await;
    setup(&t).await;
    let merge = "application/merge-patch+json";
    let label = |k: &str| json!({"metadata": {"labels": {k: "x"}}});
    let r = as_n1(&t, "PATCH", "/api/v1/nodes/n1", merge, Some(&label("zone"))).await;
    assert_eq!(r.code, 200, "{}", r.body);
    let r = as_n1(&t, "PATCH", "/api/v1/nodes/n2", merge, Some(&label("zone"))).await;
    forbidden(&r, r#"node "n1" is not allowed to modify node "n2""#);
    let r = as_n1(
        &t,
        "PATCH",
        "/api/v1/nodes/n1",
        merge,
        Some(&label("node-restriction.kubernetes.io/pool")),
    )
    .await;
    forbidden(&r, "node-restriction.kubernetes.io/pool");
    let taint = json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
    let r = as_n1(&t, "PATCH", "/api/v1/nodes/n1", merge, Some(&taint)).await;
    forbidden(&r, "not allowed to modify taints");
    let status = json!({"status": {"phase": "Running"}});
    let r = as_n1(
        &t,
        "PATCH",
        "/api/v1/namespaces/default/pods/p1/status",
        merge,
        Some(&status),
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.body);
    let r = as_n1(
        &t,
        "PATCH",
        "/api/v1/namespaces/default/pods/p2/status",
        merge,
        Some(&status),
    )
    .await;
    forbidden(
        &r,
        "can only update pod status for pods with spec.nodeName set to itself",
    );
    let r = as_n1(&t, "DELETE", "/api/v1/namespaces/default/pods/p2", "", None).await;
    forbidden(&r, "can only delete pods with spec.nodeName set to itself");
    // Only mirror pods, bound to itself.
    let r = as_n1(
        &t,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        Some(&pod("p3", "n1", "mine")),
    )
    .await;
    forbidden(&r, "can only create mirror pods");
    let r = as_n1(&t, "DELETE", "/api/v1/nodes/n1", "", None).await;
    assert_eq!(r.code, 403, "{}", r.body);
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "metadata": {"name": "n2"}, "spec": {"holderIdentity": "n2"}});
    let r = as_n1(
        &t,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        "application/json",
        Some(&lease),
    )
    .await;
    forbidden(&r, "same name as the requesting node");
    // p2 survived every attempt.
    assert_eq!(t.get("/api/v1/namespaces/default/pods/p2").await.code, 200);
}

/// A PERMISSION_DENIED answer whose message holds `wording`.
fn denied<T: std::fmt::Debug>(r: Result<T, tonic::Status>, wording: &str) {
    let e = r.expect_err("denied");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains(wording),
        "{:?} lacks {wording:?}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_stream_enforces_the_same_rules() {
    let t = TestServer::start().await;
    setup(&t).await;
    let mut n1 = node_client(&t, "system:node:n1", "system:nodes").await;
    // Its own node: register, heartbeat (lease + status), assignments.
    let r = n1
        .register(RegisterRequest {
            node_json: node_json("n1").to_string().into_bytes(),
        })
        .await;
    assert!(r.is_ok(), "{r:?}");
    n1.heartbeat(HeartbeatRequest {
        node_name: "n1".into(),
        lease_duration_seconds: 40,
        node_status_json: br#"{"conditions": [{"type": "Ready", "status": "True"}]}"#.to_vec(),
    })
    .await
    .unwrap();
    let mut s = n1
        .watch_pods(WatchPodsRequest {
            node_name: "n1".into(),
            from_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.r#type, pod_event::Type::Added as i32);
    let p: Value = serde_json::from_slice(&first.pod_json).unwrap();
    assert_eq!(p["metadata"]["name"], "p1");
    let synced = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(synced.r#type, pod_event::Type::Synced as i32);
    let secret = |name: &str| GetObjectRequest {
        kind: "Secret".into(),
        namespace: "default".into(),
        name: name.into(),
    };
    assert!(n1.get_object(secret("mine")).await.is_ok());

    // Another node's name, pods and secrets.
    let wrong_node = "may not act for node \"n2\"";
    denied(
        n1.register(RegisterRequest {
            node_json: node_json("n2").to_string().into_bytes(),
        })
        .await,
        wrong_node,
    );
    denied(
        n1.heartbeat(HeartbeatRequest {
            node_name: "n2".into(),
            lease_duration_seconds: 40,
            node_status_json: vec![],
        })
        .await,
        wrong_node,
    );
    denied(
        n1.watch_pods(WatchPodsRequest {
            node_name: "n2".into(),
            from_revision: 0,
        })
        .await,
        wrong_node,
    );
    denied(
        n1.get_object(secret("theirs")).await,
        "no relationship found between node 'n1' and this object",
    );
    denied(
        n1.get_object(secret("loose")).await,
        "no relationship found",
    );
    denied(
        n1.report_pod_status(PodStatusReport {
            namespace: "default".into(),
            name: "p2".into(),
            uid: String::new(),
            status_json: br#"{"phase": "Failed"}"#.to_vec(),
        })
        .await,
        "no relationship found",
    );
    let uid = t.get("/api/v1/namespaces/default/pods/p2").await.body["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    denied(
        n1.delete_pod(DeletePodRequest {
            namespace: "default".into(),
            name: "p2".into(),
            uid,
        })
        .await,
        "can only delete pods with spec.nodeName set to itself",
    );
    let p2 = t.get("/api/v1/namespaces/default/pods/p2").await;
    assert_eq!(p2.code, 200);
    assert!(p2.body["status"]["phase"] != "Failed", "{}", p2.body);

    // Not a node at all.
    let mut alice = node_client(&t, "alice", "devs").await;
    denied(
        alice
            .watch_pods(WatchPodsRequest {
                node_name: "n1".into(),
                from_revision: 0,
            })
            .await,
        "may not use the node service",
    );
}
