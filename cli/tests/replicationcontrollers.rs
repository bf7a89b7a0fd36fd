//! ReplicationControllers end to end with the real kubectl on `keel up
//! --agents 3`: the documentation's example runs, `kubectl scale rc`
//! resizes it, `get all` lists it, and orphaned pods are adopted again.

mod util;

use serde_json::Value;
use util::up::{is_ready, live, pods, Up};
use util::wait_for;

const SELECTOR: &str = "app=echo-rc";

fn example() -> String {
    format!(
        "{}/../examples/replicationcontroller.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn live_pods(k: &util::kubectl::Kubectl) -> Vec<Value> {
    pods(k, SELECTOR).into_iter().filter(live).collect()
}

fn owner_uid(pod: &Value) -> Option<String> {
    pod["metadata"]["ownerReferences"][0]["uid"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn a_replication_controller_runs_scales_and_adopts_orphans() {
    let up = Up::start(3, &[]);
    let k = up.kubectl();
    k.ok(&["apply", "-f", &example()]);
    wait_for(
        "3 ready pods",
        60,
        || {
            let ps = live_pods(&k);
            ps.len() == 3 && ps.iter().all(is_ready)
        },
        || up.log(),
    );
    let rc = k.json(&["get", "rc", "echo-rc"]);
    assert_eq!(rc["status"]["readyReplicas"], 3);

    let all = k.ok(&["get", "all"]);
    assert!(
        all.contains("replicationcontroller/echo-rc"),
        "get all lists the rc:\n{all}"
    );

    k.ok(&["scale", "rc", "echo-rc", "--replicas=5"]);
    wait_for(
        "5 ready pods",
        60,
        || {
            let ps = live_pods(&k);
            ps.len() == 5 && ps.iter().all(is_ready)
        },
        || up.log(),
    );
    k.ok(&["scale", "rc", "echo-rc", "--replicas=2"]);
    wait_for("2 pods", 30, || live_pods(&k).len() == 2, || up.log());

    // Orphan the pods, then a new controller with the same selector adopts them.
    k.ok(&["delete", "rc", "echo-rc", "--cascade=orphan"]);
    wait_for(
        "orphaned pods",
        30,
        || {
            let ps = live_pods(&k);
            ps.len() == 2 && ps.iter().all(|p| owner_uid(p).is_none())
        },
        || up.log(),
    );
    let orphans: Vec<String> = live_pods(&k)
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    k.ok(&["apply", "-f", &example()]);
    let uid = k.json(&["get", "rc", "echo-rc"])["metadata"]["uid"]
        .as_str()
        .expect("a uid")
        .to_string();
    wait_for(
        "adoption and one more pod",
        60,
        || {
            let ps = live_pods(&k);
            ps.len() == 3
                && ps
                    .iter()
                    .all(|p| owner_uid(p).as_deref() == Some(uid.as_str()))
        },
        || up.log(),
    );
    let names: Vec<String> = live_pods(&k)
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    for o in &orphans {
        assert!(
            names.contains(o),
            "orphan {o} was adopted, not replaced: {names:?}"
        );
    }
}
