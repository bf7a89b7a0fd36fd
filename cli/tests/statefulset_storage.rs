//! A StatefulSet with a volume claim template, end to end with the real
//! kubectl on `keel up --agents 3`: each pod gets its own local-path claim,
//! and a deleted pod comes back under the same name, on its volume's node,
//! with its data.

mod util;

use serde_json::Value;
use util::kubectl::Kubectl;
use util::up::{is_ready, live, pods, write, Up};
use util::wait_for;

/// Each start prints what earlier starts left in the volume, then adds a line.
const DB: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: keel/host
        command: [sh, -c, 'echo "before: $(cat "$KEEL_VOLUME_DATA/runs" 2>/dev/null)"; echo "$HOSTNAME" >> "$KEEL_VOLUME_DATA/runs"; exec sleep 3600']
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 1Mi
"#;

fn pod(k: &Kubectl, name: &str) -> Option<Value> {
    pods(k, "app=db")
        .into_iter()
        .find(|p| p["metadata"]["name"] == name && live(p))
}

fn logs(k: &Kubectl, name: &str) -> String {
    let o = k.run(&["logs", name]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_recreated_stateful_pod_gets_its_volume_and_data_back() {
    let up = Up::start(3, &[]);
    let k = up.kubectl();
    let f = write(up.dir.path(), "db.yaml", DB);
    k.ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for(
        "db-0 and db-1 ready with bound claims",
        90,
        || {
            let ready = ["db-0", "db-1"]
                .iter()
                .all(|n| pod(&k, n).is_some_and(|p| is_ready(&p)));
            let claims = k.json(&["get", "pvc", "-l", "app=db"]);
            let bound = claims["items"]
                .as_array()
                .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["status"]["phase"] == "Bound"));
            ready && bound
        },
        || up.log(),
    );
    let first = pod(&k, "db-0").expect("db-0");
    assert_eq!(first["spec"]["hostname"], "db-0");
    assert_eq!(first["spec"]["subdomain"], "db");
    let volume = first["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"].clone();
    assert_eq!(volume, "data-db-0");
    wait_for(
        "db-0's first log",
        30,
        || logs(&k, "db-0").contains("before: "),
        || up.log(),
    );
    assert_eq!(
        logs(&k, "db-0").trim(),
        "before:",
        "a fresh volume is empty"
    );

    k.ok(&["delete", "pod", "db-0", "--wait=false"]);
    let uid = first["metadata"]["uid"].clone();
    wait_for(
        "a new db-0, ready",
        60,
        || pod(&k, "db-0").is_some_and(|p| p["metadata"]["uid"] != uid && is_ready(&p)),
        || up.log(),
    );
    let second = pod(&k, "db-0").expect("db-0 again");
    assert_eq!(
        second["spec"]["nodeName"], first["spec"]["nodeName"],
        "the pod follows its volume to its node"
    );
    wait_for(
        "db-0's second log",
        30,
        || logs(&k, "db-0").contains("before: "),
        || up.log(),
    );
    assert_eq!(
        logs(&k, "db-0").trim(),
        "before: db-0",
        "the recreated pod reads what the first one wrote"
    );
}
