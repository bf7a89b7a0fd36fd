//! Typed clients of another language: the official Python `kubernetes`
//! client, whose models reject objects missing a field Go always emits,
//! decodes every served kind against `keel up --agents 3`, as created and
//! after the controllers acted, on gets, lists and watch events
//! (`python/decode_all.py`). Also kubectl's view of the serviceaccounts
//! controller: a new namespace has its `default` account within seconds,
//! and a pod created right after the namespace is admitted.

mod util;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use util::kubectl::Kubectl;
use util::up::{ready_nodes, Up};
use util::{tail, wait_for};

/// Runs `decode_all.py` against the cluster's kubeconfig.
fn decode_all(kubeconfig: &Path) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/decode_all.py");
    Command::new("python3")
        .arg(script)
        .arg(kubeconfig)
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .expect("python3 runs")
}

fn python_client_installed() -> bool {
    Command::new("python3")
        .args(["-c", "import kubernetes"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_python_client_decodes_every_served_kind() {
    assert!(
        python_client_installed(),
        "this test needs the official Python client: python3 -m pip install 'kubernetes>=31' (.ci/run does)"
    );
    let up = Up::start(3, &[]);
    let k = up.kubectl();
    wait_for("3 Ready nodes", 90, || ready_nodes(&k) == 3, || up.log());

    service_accounts_come_with_namespaces(&k, &up);

    let started = Instant::now();
    let out = decode_all(&up.data_dir().join("kubeconfig"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "decode_all.py failed ({}):\n{stdout}\n--- stderr ---\n{stderr}\n--- keel up log ---\n{}",
        out.status,
        tail(&up.log(), 60)
    );
    assert!(stdout.contains("served kinds decoded"), "{stdout}");
    println!("{stdout}\ndecode_all.py took {:?}", started.elapsed());
}

/// `kubectl create ns` then `kubectl get sa default` succeeds within a few
/// seconds; a pod made at once is admitted (the API server waits a moment
/// for the account), and one naming a missing account is Forbidden.
fn service_accounts_come_with_namespaces(k: &Kubectl, up: &Up) {
    k.ok(&["create", "namespace", "sa-e2e"]);
    let run = k.run(&[
        "run",
        "first",
        "-n",
        "sa-e2e",
        "--image=keel/pause",
        "--restart=Never",
    ]);
    assert!(
        run.status.success(),
        "a pod right after its namespace: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = k.run(&["get", "serviceaccount", "default", "-n", "sa-e2e"]);
        if got.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no default ServiceAccount in sa-e2e: {}\n{}",
            String::from_utf8_lossy(&got.stderr),
            tail(&up.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pod = k.json(&["get", "pod", "first", "-n", "sa-e2e"]);
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    let refused = k.run(&[
        "run",
        "second",
        "-n",
        "sa-e2e",
        "--image=keel/pause",
        "--overrides={\"spec\":{\"serviceAccountName\":\"nobody\"}}",
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a pod of a missing account was admitted"
    );
    assert!(
        err.contains("Forbidden") && err.contains("error looking up service account sa-e2e/nobody"),
        "{err}"
    );
}
