//! StatefulSets end to end, driven by the real kubectl on `keel up
//! --agents 3`: `examples/statefulset.yaml` (the Kubernetes docs' "web"
//! set behind a headless Service, on the built-in echo image) comes up in
//! order, rolls out, shows its history, rolls back and scales down in
//! reverse order.

mod util;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use util::kubectl::Kubectl;
use util::up::{http_get, is_ready, live, pods, ready_nodes, Up};
use util::wait_for;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/statefulset.yaml")
}

fn name_of(p: &Value) -> &str {
    p["metadata"]["name"].as_str().unwrap_or_default()
}

/// The live pods of the set, by name.
fn web_pods(k: &Kubectl) -> Vec<Value> {
    let mut ps: Vec<Value> = pods(k, "app=nginx").into_iter().filter(live).collect();
    ps.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    ps
}

fn names(ps: &[Value]) -> Vec<&str> {
    ps.iter().map(name_of).collect()
}

fn images(k: &Kubectl) -> BTreeSet<String> {
    web_pods(k)
        .iter()
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The revision numbers `kubectl rollout history sts/web` lists.
fn revisions(k: &Kubectl) -> Vec<String> {
    let history = k.ok(&["rollout", "history", "sts/web"]);
    history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

/// When the pod turned Ready, if it is (RFC 3339 in UTC, as the API
/// server writes every timestamp, so the text orders like the time).
fn ready_since(p: &Value) -> Option<&str> {
    let c = p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")?;
    c["lastTransitionTime"].as_str()
}

fn created(p: &Value) -> Option<&str> {
    p["metadata"]["creationTimestamp"].as_str()
}

/// Samples the live pod names in a thread until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Vec<String>>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(kubeconfig: PathBuf) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let k = Kubectl::new(kubeconfig);
            while !s.load(Ordering::SeqCst) {
                let ps = web_pods(&k);
                let n: Vec<String> = names(&ps).iter().map(|n| n.to_string()).collect();
                v.lock().unwrap().push(n);
            }
        });
        Sampler { stop, seen, thread }
    }

    fn finish(self) -> Vec<Vec<String>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        let seen = self.seen.lock().unwrap().clone();
        seen
    }
}

#[test]
fn a_statefulset_comes_up_in_order_rolls_out_back_and_scales_down_in_reverse() {
    let up = Up::start(3, &[]);
    let k = up.kubectl();
    wait_for("3 Ready nodes", 90, || ready_nodes(&k) == 3, || up.log());

    k.ok(&["apply", "-f", example().to_str().unwrap()]);
    let all_ready = |k: &Kubectl| {
        let ps = web_pods(k);
        names(&ps) == ["web-0", "web-1", "web-2"] && ps.iter().all(is_ready)
    };
    wait_for(
        "web-0, web-1, web-2 Ready",
        60,
        || all_ready(&k),
        || up.log(),
    );
    k.ok(&["rollout", "status", "sts/web", "--timeout=60s"]);

    // OrderedReady: each pod was created once its predecessor was Ready.
    let ps = web_pods(&k);
    for pair in ps.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let ready = ready_since(before).expect("a Ready time");
        let made = created(after).expect("a creation time");
        assert!(
            made >= ready,
            "{} created at {made} before {} was Ready at {ready}",
            name_of(after),
            name_of(before)
        );
    }
    // Stable identities behind the headless Service; each pod answers.
    let svc = k.json(&["get", "service", "nginx"]);
    assert_eq!(svc["spec"]["clusterIP"], "None");
    for p in &ps {
        let name = name_of(p);
        assert_eq!(p["spec"]["hostname"], name);
        assert_eq!(p["spec"]["subdomain"], "nginx");
        assert_eq!(
            p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
            name
        );
        let ip = p["status"]["podIP"].as_str().expect("a pod IP");
        let answer = http_get(&format!("{ip}:8080"), "/").unwrap_or_default();
        assert!(answer.contains(&format!("pod={name}")), "{name}: {answer}");
    }

    k.ok(&["set", "image", "sts/web", "nginx=keel/echo:v2"]);
    k.ok(&["rollout", "status", "sts/web", "--timeout=90s"]);
    let v2 = BTreeSet::from(["keel/echo:v2".to_string()]);
    wait_for("only v2 pods", 30, || images(&k) == v2, || up.log());
    assert_eq!(revisions(&k), ["1", "2"]);
    let shown = k.ok(&["rollout", "history", "sts/web", "--revision=1"]);
    assert!(shown.contains("keel/echo:v1"), "{shown}");

    k.ok(&["rollout", "undo", "sts/web"]);
    k.ok(&["rollout", "status", "sts/web", "--timeout=90s"]);
    let v1 = BTreeSet::from(["keel/echo:v1".to_string()]);
    wait_for("only v1 pods", 30, || images(&k) == v1, || up.log());
    let set = k.json(&["get", "sts", "web"]);
    assert_eq!(
        set["spec"]["template"]["spec"]["containers"][0]["image"],
        "keel/echo:v1"
    );
    // The rollback renumbered revision 1 to 3.
    assert_eq!(revisions(&k), ["2", "3"]);

    // Scale down: web-2 goes first, then web-1; web-0 stays.
    let sampler = Sampler::start(k.kubeconfig.clone());
    k.ok(&["scale", "sts/web", "--replicas=1"]);
    wait_for(
        "only web-0 left",
        60,
        || names(&web_pods(&k)) == ["web-0"],
        || up.log(),
    );
    let seen = sampler.finish();
    assert!(
        seen.iter()
            .all(|s| !s.contains(&"web-2".to_string()) || s.contains(&"web-1".to_string())),
        "web-1 went before web-2: {seen:?}"
    );
    let s = k.json(&["get", "sts", "web"]);
    wait_for(
        "status of 1 replica",
        30,
        || k.json(&["get", "sts", "web"])["status"]["replicas"] == 1,
        || format!("{s}"),
    );
}
