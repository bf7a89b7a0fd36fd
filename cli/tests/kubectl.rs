//! The real `kubectl` against a 3-replica keel control plane over https
//! with the admin token from the kubeconfig keel writes.

mod util;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use util::kubectl::Kubectl;
use util::Cluster;

/// Waits for replica `i` to write its kubeconfig and answer /readyz.
fn kubeconfig(c: &Cluster, i: usize) -> PathBuf {
    let path = c.replicas[i].data_dir.join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "no kubeconfig from r{i}:\n{}",
            c.log(i)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    path
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 80
        - containerPort: 443
        env:
        - name: A
          value: "1"
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  mode: fast
"#;

#[test]
fn kubectl_drives_a_three_replica_control_plane() {
    let cluster = Cluster::start(3, &[]);
    let k0 = Kubectl::new(kubeconfig(&cluster, 0));
    let k1 = Kubectl::new(kubeconfig(&cluster, 1));
    let dir = tempfile::tempdir().unwrap();

    let v = k0.ok(&["version"]);
    assert!(v.contains("Server Version: v1.33"), "{v}");
    let ar = k0.ok(&["api-resources"]);
    assert!(
        ar.lines()
            .any(|l| l.starts_with("deployments") && l.contains("deploy") && l.contains("apps/v1")),
        "{ar}"
    );

    // apply a multi-document manifest, then re-apply an edit: a strategic
    // merge patch that changes the image, drops a port and adds an env var.
    let m = write(dir.path(), "app.yaml", MANIFEST);
    let out = k0.ok(&["apply", "-f", m.to_str().unwrap()]);
    for want in [
        "namespace/shop created",
        "deployment.apps/web created",
        "service/web created",
        "configmap/settings created",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }
    let edited = MANIFEST
        .replace("nginx:1.25", "nginx:1.27")
        .replace("        - containerPort: 443\n", "")
        .replace(
            "          value: \"1\"\n",
            "          value: \"1\"\n        - name: B\n          value: \"2\"\n",
        );
    let m2 = write(dir.path(), "app2.yaml", &edited);
    let out = k1.ok(&["apply", "-f", m2.to_str().unwrap()]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("configmap/settings unchanged"), "{out}");
    let d = k0.json(&["get", "deployment", "web", "-n", "shop"]);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx:1.27");
    assert_eq!(
        c["ports"],
        serde_json::json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(
        c["env"],
        serde_json::json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );
    assert_eq!(d["metadata"]["generation"], 2);

    // create, and the get variants
    let extra = write(
        dir.path(),
        "extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\ndata: {k: v}\n",
    );
    let out = k0.ok(&["create", "-n", "shop", "-f", extra.to_str().unwrap()]);
    assert!(out.contains("configmap/extra created"), "{out}");
    let table = k0.ok(&["get", "deploy", "-n", "shop"]);
    assert!(
        table.starts_with("NAME") && table.contains("READY") && table.contains("web"),
        "{table}"
    );
    let wide = k0.ok(&["get", "deployments", "-n", "shop", "-o", "wide"]);
    assert!(
        wide.contains("IMAGES") && wide.contains("nginx:1.27") && wide.contains("app=web"),
        "{wide}"
    );
    let yaml = k0.ok(&["get", "cm", "settings", "-n", "shop", "-o", "yaml"]);
    assert!(
        yaml.contains("mode: fast") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );
    let names = k0.ok(&["get", "cm", "-n", "shop", "-o", "name"]);
    // Every namespace also gets the cluster CA's `kube-root-ca.crt`, as
    // in Kubernetes, whenever its publisher gets there.
    assert_eq!(
        names
            .lines()
            .filter(|n| *n != "configmap/kube-root-ca.crt")
            .collect::<Vec<_>>(),
        vec!["configmap/extra", "configmap/settings"]
    );
    let by_label = k0.ok(&[
        "get",
        "deploy,svc",
        "-n",
        "shop",
        "-l",
        "app=web",
        "-o",
        "name",
    ]);
    assert_eq!(by_label.trim(), "deployment.apps/web");
    let by_field = k0.ok(&[
        "get",
        "cm",
        "-n",
        "shop",
        "--field-selector",
        "metadata.name=extra",
        "-o",
        "name",
    ]);
    assert_eq!(by_field.trim(), "configmap/extra");
    let all_ns = k0.ok(&["get", "ns", "-A"]);
    assert!(
        all_ns.contains("shop") && all_ns.contains("kube-system") && all_ns.contains("Active"),
        "{all_ns}"
    );
    let all_cm = k0.ok(&["get", "cm", "-A"]);
    assert!(
        all_cm.starts_with("NAMESPACE") && all_cm.contains("shop"),
        "{all_cm}"
    );
    let labels = k0.ok(&["get", "deploy", "-n", "shop", "--show-labels"]);
    assert!(
        labels.contains("LABELS") && labels.contains("app=web"),
        "{labels}"
    );
    let sorted = k0.ok(&[
        "get",
        "cm",
        "-n",
        "shop",
        "--sort-by=.metadata.name",
        "-o",
        "name",
    ]);
    assert_eq!(sorted.lines().next(), Some("configmap/extra"));

    // get -w on r0 sees a change made through r1
    let mut watch = k0
        .cmd(&["get", "cm", "-n", "shop", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The watch prints the existing objects first; then the new one.
    wait_line(&rx, "settings");
    let seen = write(
        dir.path(),
        "seen.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: seen-by-watch}\n",
    );
    k1.ok(&["create", "-n", "shop", "-f", seen.to_str().unwrap()]);
    let line = wait_line(&rx, "seen-by-watch");
    assert!(line.contains("ADDED"), "{line}");
    let _ = watch.kill();
    let _ = watch.wait();

    // describe, label, annotate, scale, set image, edit
    let desc = k0.ok(&["describe", "deployment", "web", "-n", "shop"]);
    assert!(
        desc.contains("Name:") && desc.contains("nginx:1.27") && desc.contains("Replicas:"),
        "{desc}"
    );
    k0.ok(&["label", "deployment", "web", "-n", "shop", "tier=front"]);
    k1.ok(&[
        "annotate",
        "deployment",
        "web",
        "-n",
        "shop",
        "owner=team-a",
    ]);
    let out = k0.ok(&["scale", "deployment", "web", "-n", "shop", "--replicas=5"]);
    assert!(out.contains("scaled"), "{out}");
    k0.ok(&[
        "set",
        "image",
        "deployment/web",
        "-n",
        "shop",
        "web=nginx:1.28",
    ]);
    let editor = write(
        dir.path(),
        "editor.sh",
        "#!/bin/sh\nsed -i 's/nginx:1.28/nginx:1.29/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = k0
        .cmd(&["edit", "deployment", "web", "-n", "shop"])
        .env("EDITOR", &editor)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "edit: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let d = k1.json(&["get", "deployment", "web", "-n", "shop"]);
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(d["metadata"]["annotations"]["owner"], "team-a");
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.29"
    );

    // pods: run (unscheduled, so Pending), get all, delete
    k0.ok(&["run", "one", "-n", "shop", "--image=busybox"]);
    let pods = k0.ok(&["get", "pods", "-n", "shop", "-o", "wide"]);
    assert!(
        pods.contains("one") && pods.contains("Pending") && pods.contains("NODE"),
        "{pods}"
    );
    let all = k0.ok(&["get", "all", "-n", "shop"]);
    for want in ["pod/one", "service/web", "deployment.apps/web"] {
        assert!(all.contains(want), "{want} in {all}");
    }
    k1.ok(&["delete", "pod", "one", "-n", "shop"]);
    k0.ok(&["delete", "configmap", "extra", "-n", "shop"]);
    let gone = k0.run(&["get", "cm", "extra", "-n", "shop"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));

    // kubectl's generators send protobuf bodies
    k0.ok(&[
        "create",
        "configmap",
        "gen",
        "-n",
        "shop",
        "--from-literal=k=v",
    ]);
    k0.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "shop",
        "--from-literal=p=q",
    ]);
    k1.ok(&[
        "create",
        "deployment",
        "gen",
        "-n",
        "shop",
        "--image=nginx:1.25",
        "--replicas=2",
        "--port=80",
    ]);
    k1.ok(&[
        "create",
        "service",
        "clusterip",
        "gen",
        "-n",
        "shop",
        "--tcp=80:8080",
    ]);
    let cm = k0.json(&["get", "cm", "gen", "-n", "shop"]);
    assert_eq!(cm["data"], serde_json::json!({"k": "v"}));
    let s = k0.json(&["get", "secret", "s", "-n", "shop"]);
    assert_eq!(s["data"]["p"], "cQ==");
    let d = k0.json(&["get", "deploy", "gen", "-n", "shop"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        80
    );
    let svc = k0.json(&["get", "svc", "gen", "-n", "shop"]);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);

    // server-side apply creates, then updates, with its own field manager
    let ssa = write(dir.path(), "ssa.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa, namespace: shop}\ndata: {a: \"1\"}\n");
    let out = k0.ok(&["apply", "--server-side", "-f", ssa.to_str().unwrap()]);
    assert!(out.contains("configmap/ssa serverside-applied"), "{out}");
    let ssa2 = write(dir.path(), "ssa2.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa, namespace: shop}\ndata: {b: \"2\"}\n");
    k1.ok(&["apply", "--server-side", "-f", ssa2.to_str().unwrap()]);
    let cm = k0.json(&["get", "cm", "ssa", "-n", "shop", "--show-managed-fields"]);
    assert_eq!(
        cm["data"],
        serde_json::json!({"b": "2"}),
        "the field the manager dropped is gone"
    );
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(cm["metadata"]["managedFields"][0]["operation"], "Apply");
    let svc = k0.json(&["get", "svc", "web", "-n", "shop"]);
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("127.43."),
        "{svc}"
    );

    // foreground deletion: the object waits, with the GC's finalizer,
    // until the garbage collector has removed its ReplicaSet; then it goes
    let out = k0.ok(&[
        "delete",
        "deployment",
        "web",
        "-n",
        "shop",
        "--cascade=foreground",
        "--wait=false",
    ]);
    assert!(out.contains("deleted"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = k0.run(&["get", "deployment", "web", "-n", "shop", "-o", "json"]);
        let rs = k0.ok(&[
            "get",
            "replicasets",
            "-n",
            "shop",
            "-l",
            "app=web",
            "-o",
            "name",
        ]);
        if !o.status.success() {
            assert!(String::from_utf8_lossy(&o.stderr).contains("NotFound"));
            assert!(rs.trim().is_empty(), "the Deployment went first: {rs}");
            break;
        }
        let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(d["metadata"]["deletionTimestamp"].is_string(), "{d}");
        assert_eq!(
            d["metadata"]["finalizers"],
            serde_json::json!(["foregroundDeletion"])
        );
        assert!(Instant::now() < deadline, "the Deployment never went: {d}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // deleting the namespace removes its contents, then the namespace
    let out = k1.ok(&["delete", "namespace", "shop", "--timeout=60s"]);
    assert!(out.contains("namespace \"shop\" deleted"), "{out}");
    let gone = k0.run(&["get", "ns", "shop"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
    let cms = k0.run(&["get", "cm", "-n", "shop", "-o", "name"]);
    assert!(String::from_utf8_lossy(&cms.stdout).trim().is_empty());
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(want) => return l,
            Ok(_) => {}
            Err(e) => panic!("watch never printed {want}: {e}"),
        }
    }
}

#[test]
fn kubectl_errors_are_status_objects() {
    let cluster = Cluster::start(1, &[]);
    let k = Kubectl::new(kubeconfig(&cluster, 0));
    let dir = tempfile::tempdir().unwrap();
    let o = k.run(&["get", "pod", "nope"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("Error from server (NotFound): pods \"nope\" not found"));
    let bad = write(dir.path(), "bad.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicaz: 2\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: i}]}\n");
    let o = k.run(&["create", "-f", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("BadRequest") && err.contains("unknown field \"spec.replicaz\""),
        "{err}"
    );
    let dup = write(dir.path(), "dup.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: c, image: i}]}\n");
    let o = k.run(&["create", "-f", dup.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is invalid") && err.contains("metadata.name"),
        "{err}"
    );
    // A wrong token is 401: kubectl asks for credentials.
    let text = std::fs::read_to_string(&k.kubeconfig).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .to_string();
    let badcfg = write(dir.path(), "bad-kubeconfig", &text.replace(&token, "wrong"));
    let kb = Kubectl::new(badcfg);
    let o = kb.run(&["get", "pods"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("must be logged in"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
