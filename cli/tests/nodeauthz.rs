//! Agents under `keel up` run with node identities: each gets a client
//! certificate `system:node:<name>` and a kubeconfig of its own, with
//! which it registers, heartbeats and runs a pod that mounts a Secret;
//! the same credential gets 403 for another node's pod, an unreferenced
//! Secret and another Node. The Ingress router has a read-only identity
//! of its own.

mod util;

use serde_json::Value;
use util::kubectl::Kubectl;
use util::up::{ready_nodes, write, Up};
use util::wait_for;

const PODS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: mine}
stringData: {k: v}
---
apiVersion: v1
kind: Secret
metadata: {name: loose}
stringData: {k: v}
---
apiVersion: v1
kind: Pod
metadata: {name: on-0}
spec:
  nodeName: na-0
  containers: [{name: c, image: keel/echo:v1}]
  volumes: [{name: s, secret: {secretName: mine}}]
---
apiVersion: v1
kind: Pod
metadata: {name: on-1}
spec:
  nodeName: na-1
  containers: [{name: c, image: keel/echo:v1}]
"#;

fn forbidden(k: &Kubectl, args: &[&str], wording: &str) {
    let o = k.run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{args:?}: {err}"
    );
    assert!(err.contains(wording), "{args:?}: {err:?} lacks {wording:?}");
}

#[test]
fn agents_use_their_node_identity_and_get_403_beyond_it() {
    let up = Up::start(2, &["--node-name", "na"]);
    let admin = up.kubectl();
    wait_for(
        "2 ready nodes",
        120,
        || ready_nodes(&admin) == 2,
        || up.log(),
    );
    let dir = tempfile::tempdir().unwrap();
    let pods = write(dir.path(), "pods.yaml", PODS);
    admin.ok(&["apply", "-f", pods.to_str().unwrap()]);
    let phase = |name: &str| {
        let v: Value = admin.json(&["get", "pod", name, "-o", "json"]);
        v["status"]["phase"].as_str().unwrap_or("").to_string()
    };
    // The agent read the Secret and reported status with its own identity.
    wait_for(
        "on-0 running",
        120,
        || phase("on-0") == "Running",
        || up.log(),
    );
    wait_for(
        "on-1 running",
        120,
        || phase("on-1") == "Running",
        || up.log(),
    );

    let kc = up.data_dir().join("agents").join("na-0.kubeconfig");
    let node = Kubectl::new(kc);
    let who = node.ok(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(who.trim(), "system:node:na-0");
    node.ok(&["get", "pod", "on-0"]);
    node.ok(&["get", "secret", "mine"]);
    forbidden(
        &node,
        &["get", "pod", "on-1"],
        r#"User "system:node:na-0" cannot get resource "pods" in API group "" in the namespace "default": no relationship found between node 'na-0' and this object"#,
    );
    forbidden(&node, &["get", "secret", "loose"], "no relationship found");
    forbidden(
        &node,
        &["label", "node", "na-1", "x=y"],
        r#"node "na-0" is not allowed to modify node "na-1""#,
    );
    forbidden(&node, &["get", "pods"], "spec.nodeName field selector");

    // The Ingress router has an identity of its own, read-only, not the
    // admin's.
    let kc = up.data_dir().join("agents").join("na-0-ingress.kubeconfig");
    let router = Kubectl::new(kc);
    let who = router.ok(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(who.trim(), "system:keel:ingress-router:na-0");
    let can = |args: &[&str]| {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        String::from_utf8_lossy(&router.run(&a).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(can(&["watch", "ingresses.networking.k8s.io", "-A"]), "yes");
    assert_eq!(can(&["list", "secrets", "-A"]), "yes");
    assert_eq!(can(&["create", "secrets"]), "no");
    assert_eq!(can(&["delete", "nodes"]), "no");
    assert_eq!(can(&["get", "pods"]), "no");
}
