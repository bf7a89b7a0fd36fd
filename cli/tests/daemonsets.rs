//! DaemonSets end to end, driven by the real kubectl on `keel up --agents
//! 3`: `examples/daemonset.yaml` (the Kubernetes docs' log agent, with its
//! control-plane toleration) runs one pod per node; `kubectl set image`,
//! `rollout status`, `rollout history` and `rollout undo` work on it; and
//! a nodeSelector plus `kubectl label node` moves the pods around.

mod util;

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use util::kubectl::Kubectl;
use util::up::{is_ready, live, pods, ready_nodes, Up};
use util::wait_for;

const DS: &str = "ds/fluentd-elasticsearch";
const SELECTOR: &str = "name=fluentd-elasticsearch";

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/daemonset.yaml")
}

/// Node name → image of each live daemon pod (several per node show up
/// as duplicates in the count).
fn placement(k: &Kubectl) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pods(k, SELECTOR)
        .iter()
        .filter(|p| live(p))
        .map(|p| {
            let node = p["spec"]["nodeName"].as_str().unwrap_or_default();
            let image = p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or_default();
            (node.to_string(), image.to_string())
        })
        .collect();
    v.sort();
    v
}

/// Exactly one live, Ready pod of `image` on each of `nodes`.
fn runs_on(k: &Kubectl, nodes: &[&str], image: &str) -> bool {
    let want: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n.to_string(), image.to_string()))
        .collect();
    let ready = pods(k, SELECTOR).iter().filter(|p| live(p)).all(is_ready);
    placement(k) == want && ready
}

fn node_names(k: &Kubectl) -> Vec<String> {
    let v = k.json(&["get", "nodes"]);
    let mut names: Vec<String> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn revisions_listed(history: &str) -> BTreeSet<String> {
    history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn a_daemon_set_runs_everywhere_rolls_out_rolls_back_and_follows_labels() {
    let up = Up::start(3, &[]);
    let k = up.kubectl();
    wait_for("3 Ready nodes", 90, || ready_nodes(&k) == 3, || up.log());
    let nodes = node_names(&k);
    let n: Vec<&str> = nodes.iter().map(String::as_str).collect();
    // A control-plane node: the example tolerates its taint.
    k.ok(&[
        "taint",
        "node",
        n[0],
        "node-role.kubernetes.io/control-plane=:NoSchedule",
    ]);

    k.ok(&["apply", "-f", example().to_str().unwrap()]);
    k.ok(&["rollout", "status", DS, "--timeout=60s"]);
    wait_for(
        "one v1 pod per node",
        30,
        || runs_on(&k, &n, "keel/pause:v1"),
        || up.log(),
    );
    let ds: Value = k.json(&["get", DS]);
    let s = &ds["status"];
    assert_eq!(
        (
            &s["desiredNumberScheduled"],
            &s["currentNumberScheduled"],
            &s["numberReady"],
            &s["numberMisscheduled"]
        ),
        (
            &Value::from(3),
            &Value::from(3),
            &Value::from(3),
            &Value::from(0)
        ),
        "{s}"
    );
    let table = k.ok(&["get", DS]);
    assert!(
        table.contains("DESIRED") && table.contains("fluentd-elasticsearch"),
        "{table}"
    );

    // Rolling update to v2, then back with `rollout undo`.
    k.ok(&["set", "image", DS, "fluentd-elasticsearch=keel/pause:v2"]);
    let status = k.ok(&["rollout", "status", DS, "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    wait_for(
        "one v2 pod per node",
        30,
        || runs_on(&k, &n, "keel/pause:v2"),
        || up.log(),
    );
    let history = k.ok(&["rollout", "history", DS]);
    assert_eq!(
        revisions_listed(&history),
        BTreeSet::from(["1".into(), "2".into()]),
        "{history}"
    );
    let first = k.ok(&["rollout", "history", DS, "--revision=1"]);
    assert!(first.contains("keel/pause:v1"), "{first}");

    k.ok(&["rollout", "undo", DS]);
    k.ok(&["rollout", "status", DS, "--timeout=60s"]);
    wait_for(
        "one v1 pod per node again",
        30,
        || runs_on(&k, &n, "keel/pause:v1"),
        || up.log(),
    );
    let history = k.ok(&["rollout", "history", DS]);
    assert_eq!(
        revisions_listed(&history),
        BTreeSet::from(["2".into(), "3".into()]),
        "{history}"
    );

    // A nodeSelector: the pods follow the label from node to node.
    k.ok(&["label", "node", n[1], "logging=on"]);
    let select = r#"{"spec":{"template":{"spec":{"nodeSelector":{"logging":"on"}}}}}"#;
    k.ok(&["patch", DS, "-p", select]);
    k.ok(&["rollout", "status", DS, "--timeout=60s"]);
    wait_for(
        "only the labelled node",
        30,
        || runs_on(&k, &n[1..2], "keel/pause:v1"),
        || up.log(),
    );
    k.ok(&["label", "node", n[2], "logging=on"]);
    wait_for(
        "both labelled nodes",
        30,
        || runs_on(&k, &n[1..3], "keel/pause:v1"),
        || up.log(),
    );
    k.ok(&["label", "node", n[1], "logging-"]);
    wait_for(
        "the node still labelled",
        30,
        || runs_on(&k, &n[2..3], "keel/pause:v1"),
        || up.log(),
    );
    let ds: Value = k.json(&["get", DS]);
    assert_eq!(
        ds["status"]["desiredNumberScheduled"], 1,
        "{}",
        ds["status"]
    );
}
