//! Local-path storage end to end, driven by the real kubectl on `keel up
//! --agents 3`: a claim of the default class and a pod writing to it
//! (`examples/pvc.yaml`) get a volume on the pod's node; a second pod
//! using the claim lands on the same node and reads the data back;
//! deleting the pod and the claim removes the volume and its directory
//! (Delete), while a Retain class keeps both (Released).

mod util;

use std::path::{Path, PathBuf};

use serde_json::Value;
use util::kubectl::Kubectl;
use util::up::{ready_nodes, write, Up};
use util::wait_for;

const READER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  restartPolicy: Never
  containers:
  - name: reader
    image: keel/host
    command: [sh, -c, 'cat "$KEEL_VOLUME_DATA/greeting"']
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data}
"#;

const RETAINED: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: keep
provisioner: keel.dev/local-path
reclaimPolicy: Retain
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: kept
spec:
  storageClassName: keep
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: keeper
spec:
  restartPolicy: Never
  containers:
  - name: keeper
    image: keel/host
    command: [sh, -c, 'echo kept > "$KEEL_VOLUME_DATA/file"']
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: kept}
"#;

fn get(k: &Kubectl, what: &str) -> Option<Value> {
    let out = k.run(&["get", what, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn field<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Waits for pod `name` to succeed; its node.
fn succeeded(up: &Up, k: &Kubectl, name: &str) -> String {
    let what = format!("pod {name} to succeed");
    let done = || {
        get(k, &format!("pod/{name}")).is_some_and(|p| field(&p, "/status/phase") == "Succeeded")
    };
    wait_for(&what, 60, done, || up.log());
    let pod = get(k, &format!("pod/{name}")).unwrap();
    field(&pod, "/spec/nodeName").to_string()
}

/// The claim's volume once Bound: (volume name, its directory).
fn bound_volume(up: &Up, k: &Kubectl, claim: &str) -> (String, PathBuf) {
    let bound =
        || get(k, &format!("pvc/{claim}")).is_some_and(|c| field(&c, "/status/phase") == "Bound");
    wait_for(&format!("claim {claim} to be Bound"), 60, bound, || {
        up.log()
    });
    let pvc = get(k, &format!("pvc/{claim}")).unwrap();
    let pv_name = field(&pvc, "/spec/volumeName").to_string();
    let pv = get(k, &format!("pv/{pv_name}")).expect("the bound volume exists");
    (pv_name, PathBuf::from(field(&pv, "/spec/hostPath/path")))
}

fn volume_node(k: &Kubectl, pv: &str) -> String {
    let pv = get(k, &format!("pv/{pv}")).unwrap();
    let term = "/spec/nodeAffinity/required/nodeSelectorTerms/0/matchExpressions/0/values/0";
    field(&pv, term).to_string()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

#[test]
fn a_claim_gets_a_local_volume_that_follows_its_pods_and_goes_with_the_claim() {
    let up = Up::start(3, &[]);
    let k = up.kubectl();
    let dir = tempfile::tempdir().unwrap();
    wait_for("3 Ready nodes", 90, || ready_nodes(&k) == 3, || up.log());
    let sc = k.ok(&["get", "storageclass"]);
    assert!(sc.contains("local-path (default)"), "{sc}");

    k.ok(&["apply", "-f", example("pvc.yaml").to_str().unwrap()]);
    let node = succeeded(&up, &k, "writer");
    let (pv, path) = bound_volume(&up, &k, "data");
    assert!(pv.starts_with("pvc-"), "{pv}");
    assert_eq!(
        volume_node(&k, &pv),
        node,
        "the volume is on the writer's node"
    );
    assert!(
        path.starts_with(up.data_dir()),
        "{} is under the agent's data dir",
        path.display()
    );
    let greeting = std::fs::read_to_string(path.join("greeting")).expect("the file the pod wrote");
    assert_eq!(greeting, "hello\n");

    // Another pod using the claim runs on the same node and reads it back.
    k.ok(&["delete", "pod", "writer"]);
    let reader = write(dir.path(), "reader.yaml", READER);
    k.ok(&["apply", "-f", reader.to_str().unwrap()]);
    assert_eq!(succeeded(&up, &k, "reader"), node);
    assert_eq!(k.ok(&["logs", "reader"]), "hello\n");

    // Pod and claim deleted: the volume (Delete) and its directory go.
    k.ok(&["delete", "pod", "reader"]);
    k.ok(&["delete", "pvc", "data"]);
    let gone = || get(&k, &format!("pv/{pv}")).is_none();
    wait_for("the volume to be deleted", 30, gone, || up.log());
    wait_for(
        "its directory to be removed",
        30,
        || !path.exists(),
        || up.log(),
    );

    // A Retain class keeps the volume Released, with its data.
    let retained = write(dir.path(), "retained.yaml", RETAINED);
    k.ok(&["apply", "-f", retained.to_str().unwrap()]);
    succeeded(&up, &k, "keeper");
    let (kept_pv, kept_path) = bound_volume(&up, &k, "kept");
    k.ok(&["delete", "pod", "keeper"]);
    k.ok(&["delete", "pvc", "kept"]);
    let released = || {
        get(&k, &format!("pv/{kept_pv}")).is_some_and(|v| field(&v, "/status/phase") == "Released")
    };
    wait_for("the retained volume to be Released", 30, released, || {
        up.log()
    });
    let listed = k.ok(&["get", "pv", &kept_pv]);
    assert!(
        listed.contains("Released") && listed.contains("Retain"),
        "{listed}"
    );
    assert_eq!(
        std::fs::read_to_string(kept_path.join("file")).unwrap(),
        "kept\n"
    );
}
