//! Invalid workload specs, sent by the real kubectl, get a 422 whose
//! message names the field, and nothing is written: neither a create nor
//! an update of an immutable field changes what is stored.

mod util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use util::kubectl::Kubectl;
use util::Cluster;

fn kubeconfig(c: &Cluster) -> PathBuf {
    let path = c.replicas[0].data_dir.join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "no kubeconfig:\n{}", c.log(0));
        std::thread::sleep(Duration::from_millis(100));
    }
    path
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

const TEMPLATE: &str = "
  template:
    metadata: {labels: {app: a}}
    spec:
      restartPolicy: RESTART
      containers: [{name: c, image: keel/pause}]";

fn template(restart: &str) -> String {
    TEMPLATE.replace("RESTART", restart)
}

/// `(what, manifest, field the 422 must name)`; each manifest is invalid.
fn invalid_creates() -> Vec<(&'static str, String, &'static str)> {
    let never = template("Never");
    let always = template("Always");
    vec![
        (
            "a Job with negative completions",
            format!("apiVersion: batch/v1\nkind: Job\nmetadata: {{name: neg}}\nspec:\n  completions: -1{never}"),
            "spec.completions",
        ),
        (
            "a Job with negative parallelism",
            format!("apiVersion: batch/v1\nkind: Job\nmetadata: {{name: negp}}\nspec:\n  parallelism: -2{never}"),
            "spec.parallelism",
        ),
        (
            "a CronJob with a bad schedule",
            format!("apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: badcron}}\nspec:\n  schedule: \"61 * * * *\"\n  jobTemplate:\n    spec:\n{}", indent(&never, 4)),
            "spec.schedule",
        ),
        (
            "a CronJob with an @every of nonsense",
            format!("apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: badevery}}\nspec:\n  schedule: \"@every banana\"\n  jobTemplate:\n    spec:\n{}", indent(&never, 4)),
            "spec.schedule",
        ),
        (
            "a CronJob with an unknown time zone",
            format!("apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: badtz}}\nspec:\n  schedule: \"@hourly\"\n  timeZone: Mars/Olympus\n  jobTemplate:\n    spec:\n{}", indent(&never, 4)),
            "spec.timeZone",
        ),
        (
            "a StatefulSet whose selector does not match the template",
            format!("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: sts}}\nspec:\n  serviceName: s\n  selector: {{matchLabels: {{app: b}}}}{always}"),
            "spec.template.metadata.labels",
        ),
        (
            "a DaemonSet whose selector does not match the template",
            format!("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: ds}}\nspec:\n  selector: {{matchLabels: {{app: b}}}}{always}"),
            "spec.template.metadata.labels",
        ),
        (
            "a ReplicationController whose selector does not match the template",
            format!("apiVersion: v1\nkind: ReplicationController\nmetadata: {{name: rc}}\nspec:\n  selector: {{app: b}}{always}"),
            "spec.template.metadata.labels",
        ),
        (
            "a Job whose selector does not match the template",
            format!("apiVersion: batch/v1\nkind: Job\nmetadata: {{name: sel}}\nspec:\n  manualSelector: true\n  selector: {{matchLabels: {{app: b}}}}{never}"),
            "spec.template.metadata.labels",
        ),
    ]
}

fn indent(text: &str, by: usize) -> String {
    text.trim_start_matches('\n')
        .lines()
        .map(|l| format!("{}{l}", " ".repeat(by)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_invalid(k: &Kubectl, args: &[&str], field: &str, what: &str) {
    let o = k.run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{what}: kubectl {args:?} succeeded");
    assert!(
        err.contains("is invalid") && err.contains(field),
        "{what}: want a 422 naming {field}, got:\n{err}"
    );
}

#[test]
fn invalid_workload_specs_are_422s_that_name_the_field_and_write_nothing() {
    let cluster = Cluster::start(1, &[]);
    let k = Kubectl::new(kubeconfig(&cluster));
    let dir = tempfile::tempdir().unwrap();
    for (i, (what, manifest, field)) in invalid_creates().into_iter().enumerate() {
        let f = write(dir.path(), &format!("bad-{i}.yaml"), &manifest);
        assert_invalid(&k, &["create", "-f", &f], field, what);
    }
    let all = k.ok(&[
        "get",
        "jobs,cronjobs,statefulsets,daemonsets,rc",
        "-o",
        "name",
    ]);
    assert_eq!(all.trim(), "", "nothing invalid was stored");

    // Immutable fields: the update is refused and the object is unchanged.
    let never = template("Never");
    let always = template("Always");
    let job = format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: pi}}\nspec:\n  suspend: true{never}"
    );
    let sts = format!("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: web}}\nspec:\n  serviceName: web\n  replicas: 0\n  selector: {{matchLabels: {{app: a}}}}{always}");
    let ds = format!("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent}}\nspec:\n  selector: {{matchLabels: {{app: a}}}}{always}");
    for (name, text) in [("job", &job), ("sts", &sts), ("ds", &ds)] {
        k.ok(&[
            "create",
            "-f",
            &write(dir.path(), &format!("{name}.yaml"), text),
        ]);
    }
    let updates: [(&str, &str, &str, &str); 3] = [
        (
            "job/pi",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"keel/echo"}]}}}}"#,
            "spec.template",
            "the template of a Job",
        ),
        (
            "statefulset/web",
            r#"{"spec":{"serviceName":"other"}}"#,
            "spec",
            "the serviceName of a StatefulSet",
        ),
        (
            "daemonset/agent",
            r#"{"spec":{"selector":{"matchLabels":{"app":"a","x":"y"}},"template":{"metadata":{"labels":{"app":"a","x":"y"}}}}}"#,
            "spec.selector",
            "the selector of a DaemonSet",
        ),
    ];
    for (obj, patch, field, what) in updates {
        let before = k.json(&["get", obj]);
        assert_invalid(
            &k,
            &["patch", obj, "--type=merge", "-p", patch],
            field,
            what,
        );
        let after = k.json(&["get", obj]);
        assert_eq!(
            before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
            "{what}: nothing changed"
        );
    }
}
