//! Persistent volumes against an in-process API server: the default
//! StorageClass and its admission, the PV controller binding pre-created
//! volumes (class, access modes, capacity, pre-bound `volumeName`), the
//! local-path provisioner after the scheduler selected a node, reclaim
//! (Retain keeps a Released volume, Delete removes it), PVC protection,
//! and the scheduler keeping pods with their volumes. No agent runs here.

#![recursion_limit = "256"]

use keel_control_tests as support;

use keel_controllers::cache::Caches;
use keel_controllers::{scheduler, volume};
use serde_json::{json, Value};
use support::client::{path, Client};
use support::{bg, wait_for, with_in_process_client, Bg, TestServer};

const NS: &str = "default";

/// The binder, the provisioner, PVC protection and the scheduler, on one
/// set of shared caches as the controller manager runs them.
fn start_loops(server: &TestServer) -> Vec<Bg> {
    let caches = Caches::new(server.in_process("keel-controller-manager"));
    vec![
        bg(volume::binder::run(
            server.in_process("persistentvolume-binder-controller"),
            caches.clone(),
        )),
        bg(volume::provisioner::run(
            server.in_process("local-path-provisioner"),
            caches.clone(),
        )),
        bg(volume::protection::run(
            server.in_process("persistentvolumeclaim-protection-controller"),
            caches.clone(),
        )),
        bg(scheduler::run::run(
            server.in_process(scheduler::run::SCHEDULER_NAME),
            caches,
        )),
    ]
}

fn pvc_path(name: Option<&str>) -> String {
    path("v1", "persistentvolumeclaims", Some(NS), name)
}

fn pv_path(name: Option<&str>) -> String {
    path("v1", "persistentvolumes", None, name)
}

fn pod_path(name: Option<&str>) -> String {
    path("v1", "pods", Some(NS), name)
}

async fn get(c: &Client, uri: &str) -> Option<Value> {
    c.get(uri).await.unwrap()
}

/// A claim for `size` with `access` (None: no class field at all).
fn claim(name: &str, size: &str, class: Option<&str>, access: &str) -> Value {
    let mut spec = json!({"accessModes": [access], "resources": {"requests": {"storage": size}}});
    if let Some(class) = class {
        spec["storageClassName"] = json!(class);
    }
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name}, "spec": spec})
}

fn volume(name: &str, size: &str, class: &str, access: &[&str], policy: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
           "spec": {"capacity": {"storage": size}, "accessModes": access,
                    "storageClassName": class, "persistentVolumeReclaimPolicy": policy,
                    "hostPath": {"path": format!("/tmp/keel-test-{name}")}}})
}

/// A pod of one container mounting claim `pvc` (under volume name "data").
fn pod_with_claim(name: &str, pvc: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "busybox",
                                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": pvc}}]}})
}

/// A Ready node whose agent published `root` as its local-path root.
async fn create_node(c: &Client, name: &str, root: &str) {
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
                     "annotations": {"keel.dev/local-path-root": root}}});
    c.create(&path("v1", "nodes", None, None), &node)
        .await
        .unwrap();
    let status = json!({"status": {
        "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True"}]}});
    let uri = format!("{}/status", path("v1", "nodes", None, Some(name)));
    c.merge_patch(&uri, &status).await.unwrap();
}

/// Waits until `uri`'s object satisfies `ok`, and returns it.
async fn wait_obj(c: &Client, what: &str, uri: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, 15, || async { get(c, uri).await.filter(|o| ok(o)) }).await
}

async fn wait_gone(c: &Client, what: &str, uri: &str) {
    wait_for(what, 15, || async {
        get(c, uri).await.is_none().then_some(())
    })
    .await
}

fn phase(o: &Value) -> &str {
    o["status"]["phase"].as_str().unwrap_or_default()
}

/// The reasons and messages of the events about `name`.
async fn events_of(c: &Client, name: &str) -> Vec<(String, String)> {
    let l = c.list(&path("v1", "events", Some(NS), None)).await.unwrap();
    let items = l["items"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("reason"), s("message"))
        })
        .collect()
}

async fn wait_event(c: &Client, name: &str, reason: &str) -> String {
    wait_for(&format!("a {reason} event about {name}"), 15, || async {
        let evs = events_of(c, name).await;
        evs.into_iter().find(|(r, _)| r == reason).map(|(_, m)| m)
    })
    .await
}

/// Deletes a pod at once (there is no agent to finish a graceful delete).
async fn delete_pod_now(c: &Client, name: &str) {
    let opts = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
    c.delete(&pod_path(Some(name)), Some(&opts)).await.unwrap();
    wait_gone(c, "the pod to go", &pod_path(Some(name))).await;
}

async fn node_of(c: &Client, pod: &str) -> String {
    let p = wait_obj(
        c,
        &format!("pod {pod} to be bound"),
        &pod_path(Some(pod)),
        |p| p["spec"]["nodeName"].is_string(),
    )
    .await;
    p["spec"]["nodeName"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn default_class_is_local_path_and_claims_without_a_class_get_it() {
    let (_server, c) = with_in_process_client("volumes-test").await;
    let sc_uri = path(
        "storage.k8s.io/v1",
        "storageclasses",
        None,
        Some("local-path"),
    );
    let sc = get(&c, &sc_uri)
        .await
        .expect("the default class is bootstrapped");
    assert_eq!(sc["provisioner"], "keel.dev/local-path");
    assert_eq!(sc["volumeBindingMode"], "WaitForFirstConsumer");
    assert_eq!(sc["reclaimPolicy"], "Delete");
    assert_eq!(
        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );

    let none = c
        .create(
            &pvc_path(None),
            &claim("none", "1Gi", None, "ReadWriteOnce"),
        )
        .await
        .unwrap();
    assert_eq!(none["spec"]["storageClassName"], "local-path");
    let empty = claim("empty", "1Gi", Some(""), "ReadWriteOnce");
    let empty = c.create(&pvc_path(None), &empty).await.unwrap();
    assert_eq!(empty["spec"]["storageClassName"], "");
    let named = claim("named", "1Gi", Some("fast"), "ReadWriteOnce");
    let named = c.create(&pvc_path(None), &named).await.unwrap();
    assert_eq!(named["spec"]["storageClassName"], "fast");

    // A class without a provisioner is refused, naming the field.
    let bad = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                     "metadata": {"name": "bad"}});
    let e = c
        .create(
            &path("storage.k8s.io/v1", "storageclasses", None, None),
            &bad,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 422);
    assert!(e.message.contains("provisioner"), "{}", e.message);
}

#[tokio::test]
async fn static_volumes_bind_by_class_access_modes_and_capacity() {
    let (server, c) = with_in_process_client("volumes-test").await;
    let _loops = start_loops(&server);
    for pv in [
        volume("small", "1Gi", "manual", &["ReadWriteOnce"], "Retain"),
        volume("big", "5Gi", "manual", &["ReadWriteOnce"], "Retain"),
        volume("huge", "50Gi", "manual", &["ReadWriteOnce"], "Retain"),
        volume("rox", "2Gi", "manual", &["ReadOnlyMany"], "Retain"),
        volume("other", "2Gi", "other", &["ReadWriteOnce"], "Retain"),
    ] {
        c.create(&pv_path(None), &pv).await.unwrap();
    }
    wait_obj(
        &c,
        "a new volume to be Available",
        &pv_path(Some("small")),
        |v| phase(v) == "Available",
    )
    .await;

    // 2Gi RWO of class manual: not small (too small), not rox (mode), not
    // other (class); big is the smallest that fits.
    c.create(
        &pvc_path(None),
        &claim("c1", "2Gi", Some("manual"), "ReadWriteOnce"),
    )
    .await
    .unwrap();
    let c1 = wait_obj(&c, "c1 to be Bound", &pvc_path(Some("c1")), |o| {
        phase(o) == "Bound"
    })
    .await;
    assert_eq!(c1["spec"]["volumeName"], "big");
    assert_eq!(c1["status"]["capacity"]["storage"], "5Gi");
    assert_eq!(c1["status"]["accessModes"], json!(["ReadWriteOnce"]));
    let ann = &c1["metadata"]["annotations"];
    assert_eq!(ann["pv.kubernetes.io/bind-completed"], "yes");
    assert_eq!(ann["pv.kubernetes.io/bound-by-controller"], "yes");
    let big = wait_obj(&c, "big to be Bound", &pv_path(Some("big")), |v| {
        phase(v) == "Bound"
    })
    .await;
    assert_eq!(big["spec"]["claimRef"]["name"], "c1");
    assert_eq!(big["spec"]["claimRef"]["uid"], c1["metadata"]["uid"]);
    assert_eq!(
        big["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );

    // Nothing fits 100Gi: the claim stays Pending and says why.
    c.create(
        &pvc_path(None),
        &claim("c2", "100Gi", Some("manual"), "ReadWriteOnce"),
    )
    .await
    .unwrap();
    let msg = wait_event(&c, "c2", "FailedBinding").await;
    assert!(msg.contains("no persistent volumes available"), "{msg}");
    assert_eq!(
        phase(&get(&c, &pvc_path(Some("c2"))).await.unwrap()),
        "Pending"
    );
    assert_eq!(
        get(&c, &pvc_path(Some("c2"))).await.unwrap()["spec"]["volumeName"],
        Value::Null
    );

    // Pre-bound by name: c3 asks for "small" and gets it, not "huge".
    let mut c3 = claim("c3", "1Gi", Some("manual"), "ReadWriteOnce");
    c3["spec"]["volumeName"] = json!("small");
    c.create(&pvc_path(None), &c3).await.unwrap();
    let c3 = wait_obj(&c, "c3 to be Bound", &pvc_path(Some("c3")), |o| {
        phase(o) == "Bound"
    })
    .await;
    assert_eq!(c3["spec"]["volumeName"], "small");
    assert_eq!(
        c3["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        Value::Null
    );
    let small = wait_obj(&c, "small to be Bound", &pv_path(Some("small")), |v| {
        phase(v) == "Bound"
    })
    .await;
    assert_eq!(small["spec"]["claimRef"]["uid"], c3["metadata"]["uid"]);

    // A claim naming a volume that cannot hold it waits, with the reason.
    let mut c4 = claim("c4", "10Gi", Some("manual"), "ReadWriteOnce");
    c4["spec"]["volumeName"] = json!("rox");
    c.create(&pvc_path(None), &c4).await.unwrap();
    let msg = wait_event(&c, "c4", "VolumeMismatch").await;
    assert!(msg.contains("too small"), "{msg}");
    let rox = get(&c, &pv_path(Some("rox"))).await.unwrap();
    assert_eq!(rox["spec"]["claimRef"], Value::Null);
}

#[tokio::test]
async fn reclaim_keeps_retained_volumes_and_fails_undeletable_ones() {
    let (server, c) = with_in_process_client("volumes-test").await;
    let _loops = start_loops(&server);
    c.create(
        &pv_path(None),
        &volume("kept", "1Gi", "manual", &["ReadWriteOnce"], "Retain"),
    )
    .await
    .unwrap();
    let mut pv = volume("gone", "1Gi", "manual", &["ReadWriteOnce"], "Delete");
    pv["spec"]["claimRef"] = json!({"namespace": NS, "name": "d"});
    c.create(&pv_path(None), &pv).await.unwrap();
    let mut r = claim("r", "1Gi", Some("manual"), "ReadWriteOnce");
    r["spec"]["volumeName"] = json!("kept");
    c.create(&pvc_path(None), &r).await.unwrap();
    c.create(
        &pvc_path(None),
        &claim("d", "1Gi", Some("manual"), "ReadWriteOnce"),
    )
    .await
    .unwrap();
    for name in ["r", "d"] {
        wait_obj(&c, "the claim to be Bound", &pvc_path(Some(name)), |o| {
            phase(o) == "Bound"
        })
        .await;
    }
    let d = get(&c, &pvc_path(Some("d"))).await.unwrap();
    assert_eq!(
        d["spec"]["volumeName"], "gone",
        "pre-bound through the volume's claimRef"
    );
    let r = get(&c, &pvc_path(Some("r"))).await.unwrap();
    assert!(r["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.contains(&json!("kubernetes.io/pvc-protection"))));

    for name in ["r", "d"] {
        c.delete(&pvc_path(Some(name)), None).await.unwrap();
        wait_gone(&c, "the claim to go", &pvc_path(Some(name))).await;
    }
    // Retain: Released, claimRef kept, so nobody else binds it.
    let kept = wait_obj(&c, "kept to be Released", &pv_path(Some("kept")), |v| {
        phase(v) == "Released"
    })
    .await;
    assert_eq!(kept["spec"]["claimRef"]["name"], "r");
    c.create(
        &pvc_path(None),
        &claim("again", "1Gi", Some("manual"), "ReadWriteOnce"),
    )
    .await
    .unwrap();
    wait_event(&c, "again", "FailedBinding").await;
    assert_eq!(
        phase(&get(&c, &pv_path(Some("kept"))).await.unwrap()),
        "Released"
    );
    // Delete on a volume keel did not provision: nothing can delete it.
    let gone = wait_obj(&c, "gone to be Failed", &pv_path(Some("gone")), |v| {
        phase(v) == "Failed"
    })
    .await;
    assert!(gone["status"]["message"]
        .as_str()
        .unwrap()
        .contains("deleter"));
}

#[tokio::test]
async fn local_path_volumes_are_provisioned_where_the_first_pod_goes_and_keep_their_pods() {
    let (server, c) = with_in_process_client("volumes-test").await;
    let _loops = start_loops(&server);
    create_node(&c, "n1", "/var/keel/n1/storage").await;
    create_node(&c, "n2", "/var/keel/n2/storage").await;

    // A pod whose claim does not exist stays Pending and says so.
    c.create(&pod_path(None), &pod_with_claim("orphan", "nope"))
        .await
        .unwrap();
    let msg = wait_event(&c, "orphan", "FailedScheduling").await;
    assert_eq!(
        msg,
        "0/2 nodes are available: persistentvolumeclaim \"nope\" not found."
    );

    // The claim (default class) waits for its first consumer.
    let created = c
        .create(
            &pvc_path(None),
            &claim("data", "1Gi", None, "ReadWriteOnce"),
        )
        .await
        .unwrap();
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    wait_event(&c, "data", "WaitForFirstConsumer").await;
    assert_eq!(get(&c, &pv_path(Some(&format!("pvc-{uid}")))).await, None);

    c.create(&pod_path(None), &pod_with_claim("p1", "data"))
        .await
        .unwrap();
    let node = node_of(&c, "p1").await;
    let data = wait_obj(&c, "data to be Bound", &pvc_path(Some("data")), |o| {
        phase(o) == "Bound"
    })
    .await;
    assert_eq!(
        data["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        node
    );
    let pv_name = format!("pvc-{uid}");
    assert_eq!(data["spec"]["volumeName"], pv_name);
    let pv = wait_obj(
        &c,
        "the volume to be Bound",
        &pv_path(Some(&pv_name)),
        |v| phase(v) == "Bound",
    )
    .await;
    assert_eq!(
        pv["spec"]["hostPath"]["path"],
        format!("/var/keel/{node}/storage/{pv_name}_default_data")
    );
    assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(pv["spec"]["storageClassName"], "local-path");
    assert_eq!(pv["spec"]["claimRef"]["uid"], json!(uid));
    let term = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0];
    assert_eq!(term["matchExpressions"][0]["values"], json!([node]));
    wait_event(&c, "data", "ProvisioningSucceeded").await;

    // Later pods using the claim follow the volume to its node.
    delete_pod_now(&c, "p1").await;
    for i in 0..4 {
        let name = format!("p{}", i + 2);
        c.create(&pod_path(None), &pod_with_claim(&name, "data"))
            .await
            .unwrap();
        assert_eq!(node_of(&c, &name).await, node, "{name} follows its volume");
    }

    // Deleting the claim while pods use it leaves it Terminating; once
    // they are gone it goes, and with it (Delete) the volume.
    c.delete(&pvc_path(Some("data")), None).await.unwrap();
    let data = get(&c, &pvc_path(Some("data")))
        .await
        .expect("protected while in use");
    assert!(data["metadata"]["deletionTimestamp"].is_string());
    for i in 0..4 {
        delete_pod_now(&c, &format!("p{}", i + 2)).await;
    }
    wait_gone(&c, "the claim to go", &pvc_path(Some("data"))).await;
    wait_gone(
        &c,
        "the provisioned volume to be deleted",
        &pv_path(Some(&pv_name)),
    )
    .await;
}

#[tokio::test]
async fn pods_wait_for_immediate_claims_and_follow_static_volume_affinity() {
    let (server, c) = with_in_process_client("volumes-test").await;
    let _loops = start_loops(&server);
    create_node(&c, "n1", "/r1").await;
    create_node(&c, "n2", "/r2").await;
    // No class object "manual": binding is immediate, by the PV controller.
    c.create(
        &pvc_path(None),
        &claim("late", "1Gi", Some("manual"), "ReadWriteOnce"),
    )
    .await
    .unwrap();
    c.create(&pod_path(None), &pod_with_claim("waiter", "late"))
        .await
        .unwrap();
    let msg = wait_event(&c, "waiter", "FailedScheduling").await;
    assert_eq!(
        msg,
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."
    );

    // A volume usable only on n2 appears: the claim binds, the pod goes there.
    let mut pv = volume("on-n2", "1Gi", "manual", &["ReadWriteOnce"], "Retain");
    pv["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}});
    c.create(&pv_path(None), &pv).await.unwrap();
    wait_obj(&c, "late to be Bound", &pvc_path(Some("late")), |o| {
        phase(o) == "Bound"
    })
    .await;
    assert_eq!(node_of(&c, "waiter").await, "n2");
}
