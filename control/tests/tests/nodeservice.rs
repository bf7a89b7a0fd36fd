//! The node service over gRPC on the API port: registration with a pod
//! CIDR, the node lease, the pod assignment stream (snapshot, changes,
//! resume without loss or replay), status reports and final deletion.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::time::Duration;

use futures::StreamExt;
use keel_proto::keelnode::node_service_client::NodeServiceClient;
use keel_proto::keelnode::{
    pod_event, DeletePodRequest, GetObjectRequest, HeartbeatRequest, PodEvent, PodStatusReport,
    RegisterRequest, WatchPodsRequest,
};
use serde_json::{json, Value};
use support::TestServer;
use tonic::transport::Channel;

async fn node_client(t: &TestServer) -> NodeServiceClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(t.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    NodeServiceClient::new(ch)
}

fn node(name: &str) -> Vec<u8> {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"zone": "a"}},
           "status": {"capacity": {"cpu": "2", "memory": "1Gi", "pods": "110"},
                      "allocatable": {"cpu": "2", "memory": "1Gi", "pods": "110"},
                      "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                      "message": "ready"}]}})
    .to_string()
    .into_bytes()
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "keel/pause"}]}})
}

async fn bind(t: &TestServer, name: &str, node: &str) {
    let b = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                   "target": {"kind": "Node", "name": node}});
    let r = t
        .post(
            &format!("/api/v1/namespaces/default/pods/{name}/binding"),
            &b,
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
}

fn decode(ev: &PodEvent) -> (i32, String) {
    let name = match ev.pod_json.is_empty() {
        true => String::new(),
        false => {
            let v: Value = serde_json::from_slice(&ev.pod_json).unwrap();
            v["metadata"]["name"].as_str().unwrap().to_string()
        }
    };
    (ev.r#type, name)
}

async fn next(s: &mut tonic::Streaming<PodEvent>) -> PodEvent {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream stays open")
            .expect("no error");
        if ev.r#type != pod_event::Type::Bookmark as i32 {
            return ev;
        }
    }
}

#[tokio::test]
async fn register_heartbeat_and_assignment_stream() {
    let t = TestServer::start().await;
    let mut c = node_client(&t).await;

    let r = c
        .register(RegisterRequest {
            node_json: node("n1"),
        })
        .await
        .unwrap()
        .into_inner();
    let n: Value = serde_json::from_slice(&r.node_json).unwrap();
    assert_eq!(n["spec"]["podCIDR"], "127.16.0.0/24");
    assert_eq!(n["status"]["conditions"][0]["status"], "True");
    let r2 = c
        .register(RegisterRequest {
            node_json: node("n2"),
        })
        .await
        .unwrap()
        .into_inner();
    let n2: Value = serde_json::from_slice(&r2.node_json).unwrap();
    assert_eq!(n2["spec"]["podCIDR"], "127.16.1.0/24");
    // Registering again keeps the node's CIDR.
    let again = c
        .register(RegisterRequest {
            node_json: node("n1"),
        })
        .await
        .unwrap()
        .into_inner();
    let again: Value = serde_json::from_slice(&again.node_json).unwrap();
    assert_eq!(again["spec"]["podCIDR"], "127.16.0.0/24");

    c.heartbeat(HeartbeatRequest {
        node_name: "n1".into(),
        lease_duration_seconds: 40,
        node_status_json: vec![],
    })
    .await
    .unwrap();
    let lease = t
        .get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1")
        .await;
    assert_eq!(lease.code, 200, "{}", lease.body);
    assert_eq!(lease.body["spec"]["holderIdentity"], "n1");

    // Snapshot: one pod already bound.
    assert_eq!(
        t.post("/api/v1/namespaces/default/pods", &pod("a"))
            .await
            .code,
        201
    );
    bind(&t, "a", "n1").await;
    assert_eq!(
        t.post("/api/v1/namespaces/default/pods", &pod("other"))
            .await
            .code,
        201
    );
    bind(&t, "other", "n2").await;
    let mut s = c
        .watch_pods(WatchPodsRequest {
            node_name: "n1".into(),
            from_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        decode(&next(&mut s).await),
        (pod_event::Type::Added as i32, "a".into())
    );
    let synced = next(&mut s).await;
    assert_eq!(synced.r#type, pod_event::Type::Synced as i32);

    // A change after the snapshot; then resume from it on a new stream.
    assert_eq!(
        t.post("/api/v1/namespaces/default/pods", &pod("b"))
            .await
            .code,
        201
    );
    bind(&t, "b", "n1").await;
    let added_b = next(&mut s).await;
    assert_eq!(
        decode(&added_b),
        (pod_event::Type::Added as i32, "b".into())
    );
    drop(s);
    assert_eq!(
        t.post("/api/v1/namespaces/default/pods", &pod("c"))
            .await
            .code,
        201
    );
    bind(&t, "c", "n1").await;
    let mut s = c
        .watch_pods(WatchPodsRequest {
            node_name: "n1".into(),
            from_revision: added_b.revision,
        })
        .await
        .unwrap()
        .into_inner();
    let ev = next(&mut s).await;
    assert_eq!(
        decode(&ev),
        (pod_event::Type::Added as i32, "c".into()),
        "no replay of b, no loss of c"
    );

    // Status report, then the agent's final delete after a graceful one.
    let uid = t.get("/api/v1/namespaces/default/pods/c").await.body["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    c.report_pod_status(PodStatusReport {
        namespace: "default".into(),
        name: "c".into(),
        uid: uid.clone(),
        status_json: json!({"phase": "Running", "podIP": "127.16.0.2",
            "conditions": [{"type": "Ready", "status": "True"}]})
        .to_string()
        .into_bytes(),
    })
    .await
    .unwrap();
    let p = t.get("/api/v1/namespaces/default/pods/c").await.body;
    assert_eq!(p["status"]["podIP"], "127.16.0.2");
    let types: Vec<&str> = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"PodScheduled") || types == ["Ready"],
        "{types:?}"
    );
    let modified = next(&mut s).await;
    assert_eq!(
        decode(&modified),
        (pod_event::Type::Modified as i32, "c".into())
    );

    let stale = c
        .report_pod_status(PodStatusReport {
            namespace: "default".into(),
            name: "c".into(),
            uid: "not-the-uid".into(),
            status_json: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::NotFound);

    let r = t
        .request("DELETE", "/api/v1/namespaces/default/pods/c", "", b"")
        .await;
    assert!(r.code == 200 || r.code == 202, "{}", r.body);
    let terminating = next(&mut s).await;
    assert_eq!(decode(&terminating).1, "c");
    c.delete_pod(DeletePodRequest {
        namespace: "default".into(),
        name: "c".into(),
        uid,
    })
    .await
    .unwrap();
    assert_eq!(t.get("/api/v1/namespaces/default/pods/c").await.code, 404);
    let gone = next(&mut s).await;
    assert_eq!(decode(&gone), (pod_event::Type::Deleted as i32, "c".into()));
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_and_change_nothing() {
    let t = TestServer::start().await;
    let mut c = node_client(&t).await;
    let before = t.store.current_revision();
    let e = c
        .register(RegisterRequest {
            node_json: b"{not json".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("node_json"), "{}", e.message());
    let e = c.heartbeat(HeartbeatRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = c
        .get_object(GetObjectRequest {
            kind: "Pod".into(),
            namespace: "default".into(),
            name: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = c
        .get_object(GetObjectRequest {
            kind: "Secret".into(),
            namespace: "default".into(),
            name: "missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = c
        .watch_pods(WatchPodsRequest {
            node_name: "n".into(),
            from_revision: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(t.store.current_revision(), before, "nothing was written");
}

/// Node streams on one replica share one store watch (they used to open
/// one each, decoding every pod event per node); each still gets only
/// its own pods, and a stream resumed from before what the replica's
/// router holds is served from history without loss.
#[tokio::test]
async fn node_streams_share_one_store_watch_and_resume_from_history() {
    let t = TestServer::start().await;
    let mut c = node_client(&t).await;
    let nodes = ["s1", "s2", "s3", "s4"];
    for n in nodes {
        c.register(RegisterRequest { node_json: node(n) })
            .await
            .unwrap();
    }
    let before = t.store.watcher_count();
    let mut streams = vec![];
    for n in nodes {
        let mut s = c
            .watch_pods(WatchPodsRequest {
                node_name: n.into(),
                from_revision: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(next(&mut s).await.r#type, pod_event::Type::Synced as i32);
        streams.push(s);
    }
    let opened = t.store.watcher_count() - before;
    assert!(
        opened <= 1,
        "{} node streams opened {opened} store watches",
        nodes.len()
    );

    for (i, n) in nodes.iter().enumerate() {
        let name = format!("p{i}");
        assert_eq!(
            t.post("/api/v1/namespaces/default/pods", &pod(&name))
                .await
                .code,
            201
        );
        bind(&t, &name, n).await;
    }
    let mut first_added = 0;
    for (i, s) in streams.iter_mut().enumerate() {
        let ev = next(s).await;
        assert_eq!(
            decode(&ev),
            (pod_event::Type::Added as i32, format!("p{i}")),
            "{} gets its own pod and nothing else first",
            nodes[i]
        );
        let v: Value = serde_json::from_slice(&ev.pod_json).unwrap();
        assert_eq!(
            v["metadata"]["resourceVersion"],
            ev.revision.to_string(),
            "served with its resourceVersion"
        );
        if i == 0 {
            first_added = ev.revision;
        }
    }

    // Deleted on s1: DELETED at the delete's revision, to s1 only.
    let r = t
        .delete("/api/v1/namespaces/default/pods/p0?gracePeriodSeconds=0")
        .await;
    assert!(r.code == 200 || r.code == 202, "{}", r.body);
    let del = until_deleted(&mut streams[0]).await;
    assert_eq!(decode(&del), (pod_event::Type::Deleted as i32, "p0".into()));
    assert!(del.revision > first_added);

    // Resumed from revision 1, older than anything the router holds: the
    // bind of p0 and its delete again, in order, from history.
    let mut old = c
        .watch_pods(WatchPodsRequest {
            node_name: "s1".into(),
            from_revision: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let a = next(&mut old).await;
    assert_eq!(decode(&a), (pod_event::Type::Added as i32, "p0".into()));
    assert_eq!(a.revision, first_added);
    let d = until_deleted(&mut old).await;
    assert_eq!(decode(&d), (pod_event::Type::Deleted as i32, "p0".into()));
    assert_eq!(d.revision, del.revision);
}

/// Node streams that resume from recent history share the replica's
/// router, whichever of them came first: the router begins a little
/// history before its first subscriber (nodes that start together list at
/// slightly different revisions), so none falls back to a store watch of
/// its own.
#[tokio::test]
async fn streams_resuming_from_recent_history_share_the_router() {
    let t = TestServer::start().await;
    let mut c = node_client(&t).await;
    c.register(RegisterRequest {
        node_json: node("h1"),
    })
    .await
    .unwrap();
    let from = t.store.current_revision();
    assert_eq!(
        t.post("/api/v1/namespaces/default/pods", &pod("q0"))
            .await
            .code,
        201
    );
    bind(&t, "q0", "h1").await;
    let before = t.store.watcher_count();
    let open = |from_revision| {
        let mut c = c.clone();
        async move {
            c.watch_pods(WatchPodsRequest {
                node_name: "h1".into(),
                from_revision,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    // First a stream from now, then two from before q0 was bound.
    let mut newest = open(t.store.current_revision()).await;
    for _ in 0..2 {
        let mut s = open(from).await;
        let ev = next(&mut s).await;
        assert_eq!(decode(&ev), (pod_event::Type::Added as i32, "q0".into()));
    }
    let opened = t.store.watcher_count() - before;
    assert_eq!(opened, 1, "3 streams opened {opened} store watches");

    assert_eq!(
        t.post("/api/v1/namespaces/default/pods", &pod("q1"))
            .await
            .code,
        201
    );
    bind(&t, "q1", "h1").await;
    let ev = next(&mut newest).await;
    assert_eq!(decode(&ev), (pod_event::Type::Added as i32, "q1".into()));
}

/// The next DELETED, after any MODIFIED (a graceful delete marks first).
async fn until_deleted(s: &mut tonic::Streaming<PodEvent>) -> PodEvent {
    loop {
        let ev = next(s).await;
        if ev.r#type != pod_event::Type::Modified as i32 {
            return ev;
        }
    }
}
