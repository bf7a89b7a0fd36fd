//! Jobs and CronJobs end to end, driven by the real kubectl on `keel up
//! --agents 3`: the docs' pi Job runs to completion and logs its answer,
//! an Indexed Job's pods each see their JOB_COMPLETION_INDEX, a failing
//! Job ends Failed with BackoffLimitExceeded, and `kubectl create job
//! --from=cronjob/hello` runs the CronJob's template at once (the
//! schedule itself is covered by the fake-clock tests in
//! control/tests/tests/cronjobs.rs: nothing here waits for a minute).

mod util;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use util::kubectl::Kubectl;
use util::up::{pods, ready_nodes, write, Up};
use util::wait_for;

const INDEXED: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: indexed
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: worker
        image: keel/host
        command: [sh, -c, 'echo "working on index $JOB_COMPLETION_INDEX"']
"#;

const FAILING: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: doomed
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: fail
        image: keel/host
        command: [sh, -c, 'echo "giving up"; exit 3']
"#;

fn example(name: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join("examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn condition(job: &Value, type_: &str) -> Option<Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

fn job(k: &Kubectl, name: &str) -> Value {
    let o = k.run(&["get", "job", name, "-o", "json"]);
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

#[test]
fn jobs_and_cronjobs_run_with_kubectl() {
    let up = Up::start(3, &[]);
    let k = up.kubectl();
    let dir = tempfile::tempdir().unwrap();
    wait_for("3 Ready nodes", 90, || ready_nodes(&k) == 3, || up.log());

    let indexed = write(dir.path(), "indexed.yaml", INDEXED);
    let failing = write(dir.path(), "failing.yaml", FAILING);
    k.ok(&["apply", "-f", &example("job.yaml")]);
    k.ok(&["apply", "-f", &example("cronjob.yaml")]);
    k.ok(&["apply", "-f", indexed.to_str().unwrap()]);
    k.ok(&["apply", "-f", failing.to_str().unwrap()]);
    k.ok(&["create", "job", "hello-now", "--from=cronjob/hello"]);

    // The pi Job: wait for Complete the way the docs do, then read the answer.
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "--timeout=60s",
    ]);
    let logs = k.ok(&["logs", "job/pi"]);
    assert!(logs.contains("3.1415926536"), "pi logs: {logs}");
    let pi = job(&k, "pi");
    assert_eq!(pi["status"]["succeeded"], 1, "{}", pi["status"]);
    let table = k.ok(&["get", "job", "pi"]);
    assert!(
        table.contains("Complete") && table.contains("1/1"),
        "{table}"
    );

    // The Indexed Job: every index ran once and saw its own index.
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/indexed",
        "--timeout=60s",
    ]);
    assert_eq!(job(&k, "indexed")["status"]["completedIndexes"], "0-2");
    let mut seen = BTreeSet::new();
    for p in pods(&k, "batch.kubernetes.io/job-name=indexed") {
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap()
            .to_string();
        let logs = k.ok(&["logs", &name]);
        assert_eq!(logs.trim(), format!("working on index {index}"), "{name}");
        seen.insert(index);
    }
    assert_eq!(seen, ["0", "1", "2"].map(String::from).into());

    // The failing Job: retried once (after the back-off), then Failed.
    wait_for(
        "job/doomed Failed",
        60,
        || condition(&job(&k, "doomed"), "Failed").is_some(),
        || up.log(),
    );
    let doomed = job(&k, "doomed");
    let failed = condition(&doomed, "Failed").unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded", "{failed}");
    assert_eq!(doomed["status"]["failed"], 2, "{}", doomed["status"]);
    let o = k.run(&[
        "wait",
        "--for=condition=failed",
        "job/doomed",
        "--timeout=5s",
    ]);
    assert!(o.status.success(), "kubectl wait for failed");

    // The CronJob's template, run by hand.
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/hello-now",
        "--timeout=60s",
    ]);
    let manual = job(&k, "hello-now");
    assert_eq!(
        manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(manual["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    let logs = k.ok(&["logs", "job/hello-now"]);
    assert!(logs.contains("Hello from the keel cluster"), "{logs}");
    let cj = k.ok(&["get", "cronjob", "hello"]);
    assert!(cj.contains("*/1 * * * *"), "{cj}");
}
