//! API semantics against an in-process server: optimistic concurrency,
//! paging at one revision, watch (initial state, selectors, bookmarks,
//! timeouts, 410), kube-rs typed clients, health and metrics.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;
use support::{configmap, pod, TestServer};

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn two_writers_from_one_resource_version_one_wins() {
    let s = TestServer::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(s.client.clone());
    let created: ConfigMap = serde_json::from_value(configmap("race", json!({"n": "0"}))).unwrap();
    let base = cms.create(&PostParams::default(), &created).await.unwrap();
    let mut a = base.clone();
    a.data = Some([("n".to_string(), "a".to_string())].into());
    let mut b = base.clone();
    b.data = Some([("n".to_string(), "b".to_string())].into());
    let pp = PostParams::default();
    let (ra, rb) = tokio::join!(cms.replace("race", &pp, &a), cms.replace("race", &pp, &b));
    let wins = [ra.is_ok(), rb.is_ok()];
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{ra:?} {rb:?}");
    let loser = match (ra, rb) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        other => panic!("exactly one must win: {other:?}"),
    };
    match loser {
        kube::Error::Api(e) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
        other => panic!("{other:?}"),
    }
    let now = cms.get("race").await.unwrap();
    let winner = if wins[0] { "a" } else { "b" };
    assert_eq!(now.data.unwrap()["n"], winner);
}

#[tokio::test]
async fn a_paged_list_is_one_consistent_revision_while_writes_go_on() {
    let s = TestServer::start().await;
    let n = 10_000;
    create_pods(&s, "p", n, 32).await;
    // Keep creating pods while paging through the first ones.
    let writer = {
        let s2 = s.client.clone();
        tokio::spawn(async move {
            let pods: Api<Pod> = Api::default_namespaced(s2);
            for i in 0..300 {
                let p: Pod =
                    serde_json::from_value(pod(&format!("late-{i:04}"), json!({}))).unwrap();
                let _ = pods.create(&PostParams::default(), &p).await;
            }
        })
    };
    let mut seen = BTreeSet::new();
    let mut cont: Option<String> = None;
    let mut revs = BTreeSet::new();
    let mut pages = 0;
    loop {
        let mut path = format!("{PODS}?limit=500");
        if let Some(c) = &cont {
            path.push_str(&format!("&continue={c}"));
        }
        let r = s.get(&path).await;
        assert_eq!(r.code, 200, "{}", r.body);
        pages += 1;
        revs.insert(
            r.body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        for item in r.body["items"].as_array().unwrap() {
            let name = item["metadata"]["name"].as_str().unwrap().to_string();
            assert!(seen.insert(name.clone()), "{name} listed twice");
        }
        match r.body["metadata"]["continue"].as_str() {
            Some(c) => cont = Some(c.to_string()),
            None => break,
        }
    }
    writer.await.unwrap();
    assert_eq!(revs.len(), 1, "every page at one revision: {revs:?}");
    let originals = seen.iter().filter(|n| n.starts_with("p-")).count();
    assert_eq!(originals, n);
    assert!(pages >= n / 500, "{pages} pages");
    // Whatever late pods the list shows were created before its revision:
    // a fresh list at that exact revision shows the same set.
    let rv = revs.into_iter().next().unwrap();
    let exact = s
        .get(&format!(
            "{PODS}?resourceVersion={rv}&resourceVersionMatch=Exact&limit=0"
        ))
        .await;
    assert_eq!(exact.code, 200);
}

async fn create_pods(s: &TestServer, prefix: &str, n: usize, clients: usize) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = s.client.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let pods: Api<Pod> = Api::default_namespaced(client);
            for i in (c..n).step_by(clients) {
                let p: Pod =
                    serde_json::from_value(pod(&format!("{prefix}-{i:05}"), json!({"app": "x"})))
                        .unwrap();
                pods.create(&PostParams::default(), &p).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn watch_from_zero_sends_current_state_then_changes() {
    let s = TestServer::start().await;
    assert_eq!(s.post(CMS, &configmap("a", json!({}))).await.code, 201);
    let mut w = s
        .watch(&format!("{CMS}?watch=true&resourceVersion=0"))
        .await;
    let first = w.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (
            first["type"].as_str(),
            first["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("a"))
    );
    let r = s.post(CMS, &configmap("b", json!({}))).await;
    let ev = w.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(
        ev["object"]["metadata"]["resourceVersion"],
        r.body["metadata"]["resourceVersion"]
    );
    assert_eq!(s.delete(&format!("{CMS}/a")).await.code, 200);
    let ev = w.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("DELETED"), Some("a"))
    );
}

#[tokio::test]
async fn watch_from_a_revision_replays_history_in_order() {
    let s = TestServer::start().await;
    let r = s.post(CMS, &configmap("h", json!({"v": "0"}))).await;
    let rv0 = r.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 1..=5 {
        let p = s
            .patch(
                &format!("{CMS}/h"),
                "application/merge-patch+json",
                &json!({"data": {"v": i.to_string()}}),
            )
            .await;
        assert_eq!(p.code, 200);
    }
    let mut w = s
        .watch(&format!("{CMS}?watch=1&resourceVersion={rv0}"))
        .await;
    let mut last = rv0.parse::<i64>().unwrap();
    for i in 1..=5 {
        let ev = w.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(ev["type"], "MODIFIED");
        assert_eq!(ev["object"]["data"]["v"], i.to_string());
        let rv: i64 = ev["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv > last);
        last = rv;
    }
}

#[tokio::test]
async fn objects_leaving_a_selector_are_deleted_for_the_watcher() {
    let s = TestServer::start().await;
    let r = s.post(PODS, &pod("x", json!({"app": "web"}))).await;
    assert_eq!(r.code, 201, "{}", r.body);
    let rv = r.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w = s
        .watch(&format!(
            "{PODS}?watch=true&labelSelector=app%3Dweb&resourceVersion={rv}"
        ))
        .await;
    let relabel = |v: &str| json!({"metadata": {"labels": {"app": v}}});
    assert_eq!(
        s.patch(
            &format!("{PODS}/x"),
            "application/merge-patch+json",
            &relabel("db")
        )
        .await
        .code,
        200
    );
    let ev = w.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev["type"], "DELETED");
    assert_eq!(
        s.patch(
            &format!("{PODS}/x"),
            "application/merge-patch+json",
            &relabel("web")
        )
        .await
        .code,
        200
    );
    let ev = w.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["metadata"]["labels"]["app"], "web");
}

#[tokio::test]
async fn bookmarks_timeouts_and_compacted_revisions() {
    let s = TestServer::start().await;
    let mut w = s
        .watch(&format!(
            "{CMS}?watch=true&allowWatchBookmarks=true&timeoutSeconds=12&resourceVersion=1"
        ))
        .await;
    let ev = w
        .next(Duration::from_secs(15))
        .await
        .expect("a bookmark within the interval");
    assert_eq!(ev["type"], "BOOKMARK");
    assert!(
        ev["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            >= 1
    );
    // timeoutSeconds ends the stream.
    let end = w.next(Duration::from_secs(10)).await;
    assert!(end.is_none() || end.as_ref().unwrap()["type"] == "BOOKMARK");

    let a = s.post(CMS, &configmap("old", json!({}))).await;
    let old_rv: i64 = a.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for i in 0..3 {
        s.post(CMS, &configmap(&format!("n{i}"), json!({}))).await;
    }
    s.store.compact(s.store.current_revision()).await.unwrap();
    let mut w = s
        .watch(&format!("{CMS}?watch=true&resourceVersion={old_rv}"))
        .await;
    let ev = w.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    assert!(
        w.next(Duration::from_secs(2)).await.is_none(),
        "the stream ends after 410"
    );
    let page = s.get(&format!("{CMS}?limit=1")).await;
    let cont = page.body["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..2 {
        s.post(CMS, &configmap(&format!("m{i}"), json!({}))).await;
    }
    s.store.compact(s.store.current_revision()).await.unwrap();
    let expired = s.get(&format!("{CMS}?limit=1&continue={cont}")).await;
    assert_eq!(expired.code, 410, "{}", expired.body);
}

#[tokio::test]
async fn watch_tables_carry_one_row_per_event() {
    let s = TestServer::start().await;
    let req = http::Request::builder()
        .uri(format!("{PODS}?watch=true"))
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = s.client.send(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut w = support::WatchStream::from_body(resp.into_body());
    s.post(PODS, &pod("t", json!({}))).await;
    let ev = w.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev["object"]["kind"], "Table");
    assert_eq!(ev["object"]["rows"].as_array().unwrap().len(), 1);
    assert_eq!(ev["object"]["rows"][0]["cells"][0], "t");
    assert_eq!(ev["object"]["columnDefinitions"][0]["format"], "name");
}

#[tokio::test]
async fn kube_rs_typed_clients_drive_pods_and_deployments() {
    let s = TestServer::start().await;
    let pods: Api<Pod> = Api::default_namespaced(s.client.clone());
    let p: Pod = serde_json::from_value(pod("k", json!({"app": "k"}))).unwrap();
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"), "defaulted");
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    let listed = pods
        .list(&ListParams::default().labels("app=k"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    let rv = listed.metadata.resource_version.clone().unwrap();
    let mut stream = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let patch = json!({"metadata": {"labels": {"patched": "yes"}}});
    pods.patch("k", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    use futures::StreamExt;
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Modified(p) => assert_eq!(p.metadata.labels.unwrap()["patched"], "yes"),
        other => panic!("{other:?}"),
    }
    pods.delete("k", &DeleteParams::default()).await.unwrap();
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Deleted(p) => assert_eq!(p.metadata.name.as_deref(), Some("k")),
        other => panic!("{other:?}"),
    }

    let deploys: Api<Deployment> = Api::default_namespaced(s.client.clone());
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}}
    }))
    .unwrap();
    let d = deploys.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(d.metadata.generation, Some(1));
    let ssa = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                     "spec": {"replicas": 3}});
    let applied = deploys
        .patch(
            "web",
            &PatchParams::apply("tester").force(),
            &Patch::Apply(&ssa),
        )
        .await
        .unwrap();
    assert_eq!(applied.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(applied.metadata.generation, Some(2));
    let managers: Vec<String> = applied
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"tester".to_string()), "{managers:?}");
    // Another manager applying a different replicas conflicts.
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                       "spec": {"replicas": 5}});
    let err = deploys
        .patch("web", &PatchParams::apply("rival"), &Patch::Apply(&other))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409),
        "{err:?}"
    );
    let forced = deploys
        .patch(
            "web",
            &PatchParams::apply("rival").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.unwrap().replicas, Some(5));
    let scale = deploys.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(5));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    // A scale patch naming a stale resourceVersion is pinned to it: 409.
    let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 6}});
    let err = deploys
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&stale))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409),
        "{err:?}"
    );
    // Without one, it applies to whatever version is current.
    let fresh = json!({"spec": {"replicas": 6}});
    let scale = deploys
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&fresh))
        .await
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(6));
    deploys
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    assert!(deploys.get_opt("web").await.unwrap().is_none());
}

#[tokio::test]
async fn status_writes_leave_spec_and_generation_alone() {
    let s = TestServer::start().await;
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "st"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"replicas": 99}
    });
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let r = s.post(path, &d).await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert!(
        r.body["status"].get("replicas").is_none(),
        "status is not settable on create"
    );
    let st = s
        .patch(
            &format!("{path}/st/status"),
            "application/merge-patch+json",
            &json!({"status": {"replicas": 2, "readyReplicas": 2}, "spec": {"replicas": 7}}),
        )
        .await;
    assert_eq!(st.code, 200, "{}", st.body);
    assert_eq!(st.body["status"]["readyReplicas"], 2);
    assert_eq!(
        st.body["spec"]["replicas"], 2,
        "spec ignored on the status subresource"
    );
    assert_eq!(st.body["metadata"]["generation"], 1);
    let main = s
        .patch(
            &format!("{path}/st"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 4}, "status": {"readyReplicas": 0}}),
        )
        .await;
    assert_eq!(main.body["spec"]["replicas"], 4);
    assert_eq!(
        main.body["status"]["readyReplicas"], 2,
        "status ignored on the main resource"
    );
    assert_eq!(main.body["metadata"]["generation"], 2);
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let s = TestServer::start().await;
    let mut cm = configmap("fin", json!({}));
    cm["metadata"]["finalizers"] = json!(["example.com/hold"]);
    assert_eq!(s.post(CMS, &cm).await.code, 201);
    let d = s.delete(&format!("{CMS}/fin")).await;
    assert!(d.code == 200 || d.code == 202, "{}", d.body);
    let held = s.get(&format!("{CMS}/fin")).await;
    assert!(held.body["metadata"]["deletionTimestamp"].is_string());
    let rm = s
        .patch(
            &format!("{CMS}/fin"),
            "application/json-patch+json",
            &json!([{"op": "remove", "path": "/metadata/finalizers"}]),
        )
        .await;
    assert_eq!(rm.code, 200, "{}", rm.body);
    assert_eq!(s.get(&format!("{CMS}/fin")).await.code, 404);
}

#[tokio::test]
async fn namespaces_terminate_with_their_contents() {
    let s = TestServer::start().await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "temp"}});
    assert_eq!(s.post("/api/v1/namespaces", &ns).await.code, 201);
    let r = s
        .post(
            "/api/v1/namespaces/temp/configmaps",
            &configmap("c", json!({})),
        )
        .await;
    assert_eq!(r.code, 201);
    assert_eq!(s.delete("/api/v1/namespaces/temp").await.code, 202);
    let refused = s
        .post(
            "/api/v1/namespaces/temp/configmaps",
            &configmap("d", json!({})),
        )
        .await;
    assert_eq!(refused.code, 403, "{}", refused.body);
    for _ in 0..100 {
        if s.get("/api/v1/namespaces/temp").await.code == 404 {
            assert_eq!(
                s.get("/api/v1/namespaces/temp/configmaps/c").await.code,
                404
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("namespace never went away");
}

#[tokio::test]
async fn health_and_metrics() {
    let s = TestServer::start().await;
    for p in ["/healthz", "/livez", "/readyz"] {
        let r = s.get(p).await;
        assert_eq!((r.code, r.body.as_str()), (200, Some("ok")), "{p}");
    }
    s.get(PODS).await;
    let m = s.get("/metrics").await;
    let text = m.body.as_str().unwrap();
    assert!(
        text.contains("apiserver_request_total{verb=\"GET\",resource=\"pods\",code=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("apiserver_request_duration_seconds_bucket"));
    assert!(text.contains("keel_raft_term"));
    assert!(text.contains("keel_store_write_duration_seconds"));
}

/// The value of the unlabelled sample `name` in a Prometheus text body.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn readyz_lists_membership_and_quorum_checks() {
    let s = TestServer::start().await;
    let r = s.get("/readyz?verbose").await;
    assert_eq!(
        (r.code, r.body.as_str()),
        (
            200,
            Some(
                "[+]ping ok\n[+]etcd-member ok\n[+]etcd-leader ok\n[+]etcd ok\nreadyz check passed\n"
            )
        )
    );
    let r = s.get("/readyz?verbose&exclude=etcd&exclude=ping").await;
    assert_eq!(
        r.body.as_str(),
        Some("[+]etcd-member ok\n[+]etcd-leader ok\nreadyz check passed\n")
    );
    let r = s.get("/readyz/etcd-leader").await;
    assert_eq!(
        (r.code, r.body.as_str()),
        (200, Some("[+]etcd-leader ok\nreadyz check passed\n"))
    );
    let r = s.get("/readyz/nonsense").await;
    assert_eq!(r.code, 404);
    assert!(
        r.body
            .as_str()
            .unwrap()
            .contains("no readyz check named \"nonsense\""),
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn raft_metrics_use_etcd_names_and_move_with_writes() {
    let s = TestServer::start().await;
    let scrape = || async { s.get("/metrics").await.body.as_str().unwrap().to_string() };
    let before = scrape().await;
    assert_eq!(sample(&before, "etcd_server_has_leader"), 1.0);
    assert_eq!(sample(&before, "etcd_server_is_leader"), 1.0);
    assert_eq!(sample(&before, "etcd_server_is_learner"), 0.0);
    assert!(sample(&before, "etcd_server_raft_term") >= 1.0);
    assert!(sample(&before, "etcd_server_leader_changes_seen_total") >= 1.0);
    assert_eq!(sample(&before, "etcd_server_proposals_failed_total"), 0.0);
    assert!(
        before.trim_end().ends_with("# EOF"),
        "one exposition: {before}"
    );
    assert_eq!(before.matches("# EOF").count(), 1);
    for i in 0..5 {
        let r = s
            .post(
                "/api/v1/namespaces/default/configmaps",
                &configmap(&format!("m{i}"), json!({"a": "b"})),
            )
            .await;
        assert_eq!(r.code, 201);
    }
    let after = scrape().await;
    let moved = |name: &str| sample(&after, name) - sample(&before, name);
    assert!(
        moved("etcd_server_proposals_committed_total") >= 5.0,
        "{after}"
    );
    assert!(
        moved("etcd_server_proposals_applied_total") >= 5.0,
        "{after}"
    );
    assert!(sample(&after, "keel_raft_apply_lag_entries") >= 0.0);
}

#[tokio::test]
async fn services_get_unique_cluster_ips_and_node_ports() {
    let s = TestServer::start().await;
    let svc = |name: &str, extra: serde_json::Value| {
        let mut v = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                           "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}});
        json_patch::merge(&mut v, &extra);
        v
    };
    const SVCS: &str = "/api/v1/namespaces/default/services";
    let a = s.post(SVCS, &svc("a", json!({}))).await;
    let b = s
        .post(SVCS, &svc("b", json!({"spec": {"type": "NodePort"}})))
        .await;
    assert_eq!((a.code, b.code), (201, 201), "{} {}", a.body, b.body);
    let ip_a = a.body["spec"]["clusterIP"].as_str().unwrap().to_string();
    let ip_b = b.body["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip_a.starts_with("127.43.") && ip_b.starts_with("127.43.") && ip_a != ip_b);
    assert_eq!(a.body["spec"]["clusterIPs"], json!([ip_a]));
    let np = b.body["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&np));
    assert_eq!(a.body["spec"]["ports"][0]["targetPort"], 80, "defaulted");

    // A replace that omits the allocated fields keeps them.
    let put = s
        .put(
            &format!("{SVCS}/b"),
            &svc("b", json!({"spec": {"type": "NodePort"}})),
        )
        .await;
    assert_eq!(put.code, 200, "{}", put.body);
    assert_eq!(put.body["spec"]["clusterIP"], ip_b);
    assert_eq!(put.body["spec"]["ports"][0]["nodePort"], np);

    // Asking for a taken IP is 422; once released it can be had.
    let taken = s
        .post(SVCS, &svc("c", json!({"spec": {"clusterIP": ip_a}})))
        .await;
    assert_eq!(taken.code, 422, "{}", taken.body);
    assert!(taken.body["message"]
        .as_str()
        .unwrap()
        .contains("already allocated"));
    assert_eq!(s.delete(&format!("{SVCS}/a")).await.code, 200);
    let again = s
        .post(SVCS, &svc("c", json!({"spec": {"clusterIP": ip_a}})))
        .await;
    assert_eq!(again.code, 201, "{}", again.body);
    let headless = s
        .post(SVCS, &svc("h", json!({"spec": {"clusterIP": "None"}})))
        .await;
    assert_eq!(headless.body["spec"]["clusterIP"], "None");
}

#[tokio::test]
async fn binding_eviction_and_deletecollection() {
    let s = TestServer::start().await;
    for (name, app) in [("b1", "keep"), ("b2", "drop"), ("b3", "drop")] {
        assert_eq!(
            s.post(PODS, &pod(name, json!({"app": app}))).await.code,
            201
        );
    }
    let bind = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b1"},
                      "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}});
    assert_eq!(s.post(&format!("{PODS}/b1/binding"), &bind).await.code, 201);
    let again = s.post(&format!("{PODS}/b1/binding"), &bind).await;
    assert_eq!(again.code, 409, "{}", again.body);
    let by_node = s
        .get(&format!("{PODS}?fieldSelector=spec.nodeName%3Dn1"))
        .await;
    assert_eq!(by_node.body["items"].as_array().unwrap().len(), 1);

    // A bound pod gets its grace period: eviction marks it terminating.
    let ev = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "b1"}});
    assert_eq!(s.post(&format!("{PODS}/b1/eviction"), &ev).await.code, 201);
    let b1 = s.get(&format!("{PODS}/b1")).await;
    assert!(b1.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(b1.body["metadata"]["deletionGracePeriodSeconds"], 30);

    let dc = s
        .request(
            "DELETE",
            &format!("{PODS}?labelSelector=app%3Ddrop"),
            "",
            b"",
        )
        .await;
    assert_eq!(dc.code, 200, "{}", dc.body);
    assert_eq!(dc.body["items"].as_array().unwrap().len(), 2);
    let left = s.get(PODS).await;
    let names: Vec<&str> = left.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["b1"]);
}

/// Typed clients (Python's `kubernetes`) send no apiVersion or kind: the
/// URL's are taken on create, update and server-side apply; a body that
/// states other ones is still a 400. Every object comes back with the
/// fields Go always emits (a fresh DaemonSet's counts are 0).
#[tokio::test]
async fn writes_without_kind_take_the_urls_and_come_back_complete() {
    let s = TestServer::start().await;
    let ns = s
        .post(
            "/api/v1/namespaces",
            &json!({"metadata": {"name": "typed"}}),
        )
        .await;
    assert_eq!(ns.code, 201, "{}", ns.body);
    assert_eq!(
        (ns.body["apiVersion"].as_str(), ns.body["kind"].as_str()),
        (Some("v1"), Some("Namespace"))
    );
    assert_eq!(ns.body["status"]["phase"], "Active");

    let cms = "/api/v1/namespaces/typed/configmaps";
    let cm = s
        .post(cms, &json!({"metadata": {"name": "c"}, "data": {"a": "1"}}))
        .await;
    assert_eq!(cm.code, 201, "{}", cm.body);
    let put = s
        .put(
            &format!("{cms}/c"),
            &json!({"metadata": {"name": "c"}, "data": {"a": "2"}}),
        )
        .await;
    assert_eq!(put.code, 200, "{}", put.body);
    assert_eq!(put.body["kind"], "ConfigMap");
    assert_eq!(put.body["data"]["a"], "2");
    let stored = s.get(&format!("{cms}/c")).await;
    assert_eq!(stored.body["apiVersion"], "v1");

    let dss = "/apis/apps/v1/namespaces/typed/daemonsets";
    let ds = json!({"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}},
                     "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let applied = s
        .patch(
            &format!("{dss}/d?fieldManager=typed"),
            "application/apply-patch+yaml",
            &ds,
        )
        .await;
    assert_eq!(applied.code, 201, "{}", applied.body);
    assert_eq!(applied.body["kind"], "DaemonSet");
    assert_eq!(applied.body["apiVersion"], "apps/v1");
    for count in [
        "currentNumberScheduled",
        "desiredNumberScheduled",
        "numberMisscheduled",
        "numberReady",
    ] {
        assert_eq!(
            applied.body["status"][count], 0,
            "{count}: {}",
            applied.body
        );
    }
    // A status write that leaves the counts out gets them back as 0.
    let st = s
        .put(
            &format!("{dss}/d/status"),
            &json!({"metadata": {"name": "d"}, "status": {"numberReady": 0, "observedGeneration": 1}}),
        )
        .await;
    assert_eq!(st.code, 200, "{}", st.body);
    assert_eq!(
        st.body["status"]["desiredNumberScheduled"], 0,
        "{}",
        st.body
    );
    assert_eq!(st.body["status"]["observedGeneration"], 1);

    let wrong = s
        .post(cms, &json!({"kind": "Secret", "metadata": {"name": "w"}}))
        .await;
    assert_eq!(wrong.code, 400, "{}", wrong.body);
    let wrong = s
        .post(
            dss,
            &json!({"apiVersion": "apps/v2", "metadata": {"name": "w"}}),
        )
        .await;
    assert_eq!(wrong.code, 400, "{}", wrong.body);
    assert_eq!(s.get(&format!("{cms}/w")).await.code, 404);
}
