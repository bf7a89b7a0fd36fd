//! The EndpointSlice and Endpoints controllers against an in-process API
//! server, and the API server's own `default/kubernetes` Service. No agent
//! runs pods here: the tests play the kubelet, writing each pod's IP and
//! readiness through the status subresource.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::collections::BTreeSet;
use std::time::Duration;

use keel_controllers::cache::Caches;
use keel_controllers::{endpoints, endpointslice, gc};
use serde_json::{json, Value};
use support::client::{path, Client};
use support::{bg, wait_for, with_in_process_client, Bg, TestServer};

const NS: &str = "default";
const DISCOVERY: &str = "discovery.k8s.io/v1";
const WAIT_S: u64 = 60;

/// The two controllers (and the garbage collector) on shared caches, as
/// the manager runs them.
fn run_controllers(server: &TestServer) -> Vec<Bg> {
    let caches = Caches::new(server.in_process("keel-controller-manager"));
    vec![
        bg(endpointslice::run(
            server.in_process("endpointslice-controller"),
            caches.clone(),
        )),
        bg(endpoints::run(
            server.in_process("endpoints-controller"),
            caches.clone(),
        )),
        bg(gc::run(
            server.in_process("generic-garbage-collector"),
            caches,
        )),
    ]
}

async fn setup() -> (TestServer, Client, Vec<Bg>) {
    let (server, c) = with_in_process_client("endpoints-test").await;
    let loops = run_controllers(&server);
    (server, c, loops)
}

fn service(name: &str, spec: Value) -> Value {
    let mut s = json!({"ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                       "selector": {"app": name}});
    for (k, v) in spec.as_object().into_iter().flatten() {
        s[k] = v.clone();
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": s})
}

async fn create(c: &Client, resource: &str, obj: &Value) -> Value {
    c.create(&path("v1", resource, Some(NS), None), obj)
        .await
        .unwrap_or_else(|e| panic!("create {resource}: {e}"))
}

/// A pod of `app` with optional container ports `[(name, number)]`.
fn pod(name: &str, app: &str, ports: &[(&str, i32)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "containerPort": p}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"app": app}},
           "spec": {"nodeName": "n1",
                    "containers": [{"name": "c", "image": "busybox", "ports": ports}]}})
}

/// Plays the kubelet: the pod runs at `ip`, Ready or not.
async fn set_status(c: &Client, name: &str, ip: &str, ready: bool) {
    let uri = path("v1", "pods", Some(NS), Some(name));
    for _ in 0..20 {
        let mut p = c.get(&uri).await.unwrap().expect("the pod exists");
        p["status"] = json!({
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        });
        match c.update(&format!("{uri}/status"), &p).await {
            Ok(_) => return,
            Err(e) if e.is_conflict() => continue,
            Err(e) => panic!("status of {name}: {e}"),
        }
    }
    panic!("status of {name}: kept conflicting");
}

async fn slices(c: &Client, svc: &str) -> Vec<Value> {
    let uri = path(DISCOVERY, "endpointslices", Some(NS), None)
        + &format!("?labelSelector=kubernetes.io/service-name%3D{svc}");
    let l = c.list(&uri).await.unwrap();
    l["items"].as_array().cloned().unwrap_or_default()
}

async fn endpoints_of(c: &Client, svc: &str) -> Option<Value> {
    c.get(&path("v1", "endpoints", Some(NS), Some(svc)))
        .await
        .unwrap()
}

/// (pod, ip, ready, serving, terminating, port) of every endpoint in the slices.
type Row = (String, String, bool, bool, bool, i64);

fn rows(slices: &[Value]) -> BTreeSet<Row> {
    let mut out = BTreeSet::new();
    for s in slices {
        let port = s["ports"][0]["port"].as_i64().unwrap_or(0);
        for e in s["endpoints"].as_array().into_iter().flatten() {
            let c = &e["conditions"];
            out.insert((
                e["targetRef"]["name"].as_str().unwrap_or("").to_string(),
                e["addresses"][0].as_str().unwrap_or("").to_string(),
                c["ready"] == true,
                c["serving"] == true,
                c["terminating"] == true,
                port,
            ));
        }
    }
    out
}

fn row(pod: &str, ip: &str, ready: bool, serving: bool, terminating: bool, port: i64) -> Row {
    (pod.into(), ip.into(), ready, serving, terminating, port)
}

/// (ready ips, not-ready ips) of an Endpoints.
fn addresses(ep: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let ips = |key: &str| -> BTreeSet<String> {
        ep["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s[key].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["ip"].as_str().map(str::to_string))
            .collect()
    };
    (ips("addresses"), ips("notReadyAddresses"))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn rv(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_lists_its_pods_follows_readiness_and_rewrites_nothing_unchanged() {
    let (server, c, loops) = setup().await;
    create(&c, "services", &service("web", json!({}))).await;
    for (i, name) in ["web-a", "web-b", "web-c"].iter().enumerate() {
        create(&c, "pods", &pod(name, "web", &[])).await;
        set_status(&c, name, &format!("127.1.0.{}", i + 1), true).await;
    }
    // A pod of another app is not selected.
    create(&c, "pods", &pod("other", "db", &[])).await;
    set_status(&c, "other", "127.1.0.9", true).await;
    let want = BTreeSet::from([
        row("web-a", "127.1.0.1", true, true, false, 8080),
        row("web-b", "127.1.0.2", true, true, false, 8080),
        row("web-c", "127.1.0.3", true, true, false, 8080),
    ]);
    let listed = wait_for("a slice of the 3 pods", WAIT_S, || async {
        let s = slices(&c, "web").await;
        (s.len() == 1 && rows(&s) == want).then_some(s)
    })
    .await;
    let slice = &listed[0];
    let labels = &slice["metadata"]["labels"];
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert!(slice["metadata"]["name"]
        .as_str()
        .unwrap()
        .starts_with("web-"));
    assert_eq!(slice["metadata"]["generateName"], "web-");
    let owner = &slice["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["controller"]),
        (&json!("Service"), &json!(true))
    );
    assert_eq!(slice["ports"][0]["name"], "http");
    assert_eq!(slice["endpoints"][0]["nodeName"], "n1");
    assert_eq!(slice["endpoints"][0]["targetRef"]["kind"], "Pod");
    wait_for("Endpoints of the 3 pods", WAIT_S, || async {
        let ep = endpoints_of(&c, "web").await?;
        let all = set(&["127.1.0.1", "127.1.0.2", "127.1.0.3"]);
        (addresses(&ep) == (all, set(&[]))).then_some(())
    })
    .await;
    let ep = endpoints_of(&c, "web").await.unwrap();
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080);
    assert_eq!(ep["subsets"][0]["ports"][0]["name"], "http");
    assert_eq!(
        ep["subsets"][0]["addresses"][0]["targetRef"]["name"],
        "web-a"
    );

    // web-b turns not ready.
    set_status(&c, "web-b", "127.1.0.2", false).await;
    wait_for("web-b ready=false in the slice", WAIT_S, || async {
        let r = rows(&slices(&c, "web").await);
        r.contains(&row("web-b", "127.1.0.2", false, false, false, 8080))
            .then_some(())
    })
    .await;
    wait_for("web-b in notReadyAddresses", WAIT_S, || async {
        let ep = endpoints_of(&c, "web").await?;
        let ready = set(&["127.1.0.1", "127.1.0.3"]);
        (addresses(&ep) == (ready, set(&["127.1.0.2"]))).then_some(())
    })
    .await;

    // Nothing changed: a Service update (a reconcile) and a restart of
    // the controllers on fresh caches (a full resync) write nothing.
    let before_slice = rv(&slices(&c, "web").await[0]);
    let before_ep = rv(&endpoints_of(&c, "web").await.unwrap());
    c.merge_patch(
        &path("v1", "services", Some(NS), Some("web")),
        &json!({"metadata": {"annotations": {"touched": "yes"}}}),
    )
    .await
    .unwrap();
    drop(loops);
    let _loops = run_controllers(&server);
    // A Service made after the restart is served after the resync of
    // `web` was queued: once its slice exists, `web` was looked at.
    create(&c, "services", &service("later", json!({}))).await;
    wait_for("the later service's placeholder slice", WAIT_S, || async {
        (slices(&c, "later").await.len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = slices(&c, "web").await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        rv(&after[0]),
        before_slice,
        "an unchanged slice was rewritten"
    );
    let after_ep = endpoints_of(&c, "web").await.unwrap();
    assert_eq!(
        rv(&after_ep),
        before_ep,
        "unchanged Endpoints were rewritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_target_ports_resolve_per_pod_and_publish_not_ready_counts_every_pod() {
    let (_server, c, _loops) = setup().await;
    let spec = json!({"ports": [{"name": "web", "port": 80, "targetPort": "http"}]});
    create(&c, "services", &service("named", spec)).await;
    create(&c, "pods", &pod("n-a", "named", &[("http", 8080)])).await;
    create(&c, "pods", &pod("n-b", "named", &[("http", 8081)])).await;
    create(&c, "pods", &pod("n-none", "named", &[("metrics", 9090)])).await;
    set_status(&c, "n-a", "127.2.0.1", true).await;
    set_status(&c, "n-b", "127.2.0.2", true).await;
    set_status(&c, "n-none", "127.2.0.3", true).await;
    let want = BTreeSet::from([
        row("n-a", "127.2.0.1", true, true, false, 8080),
        row("n-b", "127.2.0.2", true, true, false, 8081),
    ]);
    wait_for("one slice per resolved port", WAIT_S, || async {
        let s = slices(&c, "named").await;
        (s.len() == 2 && rows(&s) == want).then_some(())
    })
    .await;
    let ep = wait_for("Endpoints with two subsets", WAIT_S, || async {
        let ep = endpoints_of(&c, "named").await?;
        (ep["subsets"].as_array()?.len() == 2).then_some(ep)
    })
    .await;
    let ports: BTreeSet<i64> = ep["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ports"][0]["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, BTreeSet::from([8080, 8081]));
    assert_eq!(addresses(&ep).0, set(&["127.2.0.1", "127.2.0.2"]));

    let spec = json!({"publishNotReadyAddresses": true});
    create(&c, "services", &service("pnr", spec)).await;
    create(&c, "pods", &pod("p-a", "pnr", &[])).await;
    set_status(&c, "p-a", "127.2.1.1", false).await;
    wait_for("a not-ready pod published as ready", WAIT_S, || async {
        let r = rows(&slices(&c, "pnr").await);
        (r == BTreeSet::from([row("p-a", "127.2.1.1", true, false, false, 8080)])).then_some(())
    })
    .await;
    wait_for("a not-ready pod in addresses", WAIT_S, || async {
        let ep = endpoints_of(&c, "pnr").await?;
        (addresses(&ep) == (set(&["127.2.1.1"]), set(&[]))).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_services_carry_hostnames_and_terminating_pods_drain() {
    let (_server, c, _loops) = setup().await;
    create(&c, "services", &service("db", json!({"clusterIP": "None"}))).await;
    let mut p = pod("db-0", "db", &[]);
    p["spec"]["hostname"] = json!("db-0");
    p["spec"]["subdomain"] = json!("db");
    p["metadata"]["finalizers"] = json!(["example.com/hold"]);
    create(&c, "pods", &p).await;
    create(&c, "pods", &pod("db-1", "db", &[])).await;
    set_status(&c, "db-0", "127.3.0.1", true).await;
    set_status(&c, "db-1", "127.3.0.2", true).await;
    let s = wait_for("the headless service's slice", WAIT_S, || async {
        let s = slices(&c, "db").await;
        (rows(&s).len() == 2).then_some(s)
    })
    .await;
    assert_eq!(
        s[0]["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
    let hostnames: BTreeSet<(String, Option<String>)> = s[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let pod = e["targetRef"]["name"].as_str().unwrap().to_string();
            (pod, e["hostname"].as_str().map(str::to_string))
        })
        .collect();
    assert_eq!(
        hostnames,
        BTreeSet::from([("db-0".into(), Some("db-0".into())), ("db-1".into(), None)])
    );
    let ep = wait_for("the headless service's Endpoints", WAIT_S, || async {
        let ep = endpoints_of(&c, "db").await?;
        (addresses(&ep).0.len() == 2).then_some(ep)
    })
    .await;
    let host = ep["subsets"][0]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["ip"] == "127.3.0.1")
        .map(|a| a["hostname"].clone());
    assert_eq!(host, Some(json!("db-0")));

    // db-0 is deleted but held by its finalizer: terminating, still
    // serving (it is Ready), not ready; gone from the Endpoints.
    let uri = path("v1", "pods", Some(NS), Some("db-0"));
    c.delete(&uri, None).await.unwrap();
    wait_for("db-0 terminating in the slice", WAIT_S, || async {
        let r = rows(&slices(&c, "db").await);
        r.contains(&row("db-0", "127.3.0.1", false, true, true, 8080))
            .then_some(())
    })
    .await;
    wait_for("db-0 out of the Endpoints", WAIT_S, || async {
        let ep = endpoints_of(&c, "db").await?;
        (addresses(&ep) == (set(&["127.3.0.2"]), set(&[]))).then_some(())
    })
    .await;
    // It stops being ready: serving false, still terminating; then gone.
    set_status(&c, "db-0", "127.3.0.1", false).await;
    wait_for("db-0 terminating and not serving", WAIT_S, || async {
        let r = rows(&slices(&c, "db").await);
        r.contains(&row("db-0", "127.3.0.1", false, false, true, 8080))
            .then_some(())
    })
    .await;
    // The kubelet's final delete (the pod is bound, so the first one only
    // marked it), and its finalizer released.
    c.merge_patch(&uri, &json!({"metadata": {"finalizers": null}}))
        .await
        .unwrap();
    let now = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0});
    c.delete(&uri, Some(&now)).await.unwrap();
    wait_for("db-0 out of the slice", WAIT_S, || async {
        let r = rows(&slices(&c, "db").await);
        (r == BTreeSet::from([row("db-1", "127.3.0.2", true, true, false, 8080)])).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_100_pods_take_two_slices_and_deleting_the_service_deletes_them() {
    let (_server, c, _loops) = setup().await;
    create(&c, "services", &service("big", json!({}))).await;
    for i in 0..105 {
        let name = format!("big-{i:03}");
        create(&c, "pods", &pod(&name, "big", &[])).await;
        set_status(
            &c,
            &name,
            &format!("127.4.{}.{}", i / 200, i % 200 + 1),
            true,
        )
        .await;
    }
    let s = wait_for("105 endpoints in 2 slices", WAIT_S, || async {
        let s = slices(&c, "big").await;
        (rows(&s).len() == 105).then_some(s)
    })
    .await;
    let mut sizes: Vec<usize> = s
        .iter()
        .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
        .collect();
    sizes.sort();
    assert_eq!(sizes, [5, 100]);
    wait_for("105 addresses in the Endpoints", WAIT_S, || async {
        let ep = endpoints_of(&c, "big").await?;
        (addresses(&ep).0.len() == 105).then_some(())
    })
    .await;

    c.delete(&path("v1", "services", Some(NS), Some("big")), None)
        .await
        .unwrap();
    wait_for("the slices garbage-collected", WAIT_S, || async {
        slices(&c, "big").await.is_empty().then_some(())
    })
    .await;
    wait_for("the Endpoints deleted", WAIT_S, || async {
        endpoints_of(&c, "big").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_without_selectors_are_left_alone() {
    let (_server, c, _loops) = setup().await;
    let mut svc = service("manual", json!({}));
    svc["spec"].as_object_mut().unwrap().remove("selector");
    create(&c, "services", &svc).await;
    let manual = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual"},
        "subsets": [{"addresses": [{"ip": "127.5.0.1"}], "ports": [{"name": "http", "port": 9999}]}]});
    create(&c, "endpoints", &manual).await;
    // A selected Service made after it is served: by then `manual` was seen.
    create(&c, "services", &service("auto", json!({}))).await;
    wait_for("the selected service's Endpoints", WAIT_S, || async {
        endpoints_of(&c, "auto").await.map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(slices(&c, "manual").await.is_empty());
    let ep = endpoints_of(&c, "manual").await.unwrap();
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 9999);
}

/// The API server keeps `default/kubernetes` at the range's `.1`, with
/// its own address in the Endpoints and the EndpointSlice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_service_points_at_the_api_server() {
    let (server, c) = with_in_process_client("endpoints-test").await;
    // Written in the background of the server's start.
    wait_for("the kubernetes service's slice", WAIT_S, || async {
        (!slices(&c, "kubernetes").await.is_empty()).then_some(())
    })
    .await;
    let svc = c
        .get(&path("v1", "services", Some(NS), Some("kubernetes")))
        .await
        .unwrap()
        .expect("the kubernetes service exists");
    assert_eq!(svc["spec"]["clusterIP"], "127.43.0.1");
    assert!(svc["spec"].get("selector").is_none());
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}])
    );
    let ep = endpoints_of(&c, "kubernetes").await.expect("its Endpoints");
    assert_eq!(
        ep["subsets"],
        json!([{"addresses": [{"ip": "127.0.0.1"}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}])
    );
    let s = slices(&c, "kubernetes").await;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0]["metadata"]["name"], "kubernetes");
    assert_eq!(s[0]["endpoints"][0]["addresses"], json!(["127.0.0.1"]));
    assert_eq!(s[0]["ports"][0]["port"], port);
    // Nobody else may take `.1`.
    let mut clash = service("clash", json!({}));
    clash["spec"]["clusterIP"] = json!("127.43.0.1");
    let e = c
        .create(&path("v1", "services", Some(NS), None), &clash)
        .await
        .unwrap_err();
    assert_eq!(e.code, 422, "{e}");
}

/// Port clashes and bad targetPort names are 422 naming the field, and
/// nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_service_ports_are_refused_with_the_field() {
    let (_server, c) = with_in_process_client("endpoints-test").await;
    let cases = [
        (
            json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}]),
            "spec.ports[1]",
        ),
        (
            json!([{"name": "a", "port": 80}, {"name": "a", "port": 81}]),
            "spec.ports[1].name",
        ),
        (
            json!([{"port": 80}, {"name": "b", "port": 81}]),
            "spec.ports[0].name",
        ),
        (
            json!([{"name": "a", "port": 80, "targetPort": "Not_A_Name"}]),
            "spec.ports[0].targetPort",
        ),
        (
            json!([{"name": "a", "port": 80, "targetPort": "much-too-long-name"}]),
            "spec.ports[0].targetPort",
        ),
        (
            json!([{"name": "a", "port": 80, "targetPort": "double--dash"}]),
            "spec.ports[0].targetPort",
        ),
    ];
    for (i, (ports, field)) in cases.iter().enumerate() {
        let name = format!("bad-{i}");
        let svc = service(&name, json!({"ports": ports}));
        let e = c
            .create(&path("v1", "services", Some(NS), None), &svc)
            .await
            .unwrap_err();
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{name}: {e}");
        assert!(
            e.message.contains(field),
            "{name}: {field} not in {}",
            e.message
        );
        let stored = c
            .get(&path("v1", "services", Some(NS), Some(&name)))
            .await
            .unwrap();
        assert!(stored.is_none(), "{name} was stored");
    }
    let svc = service(
        "np",
        json!({"type": "NodePort", "ports": [
            {"name": "a", "port": 80, "nodePort": 30080},
            {"name": "b", "port": 81, "nodePort": 30080}]}),
    );
    let e = c
        .create(&path("v1", "services", Some(NS), None), &svc)
        .await
        .unwrap_err();
    assert_eq!(e.code, 422, "{e}");
    assert!(
        e.message.contains("spec.ports[1].nodePort"),
        "{}",
        e.message
    );
}
