//! `keel up --runtime keel` end to end with kubectl: pods in their own
//! namespaces on a busybox rootfs (a local image directory with `rootfs/`),
//! volumes at mountPath, limits in cgroups, OOMKilled, `kubectl exec` and
//! exec probes inside the container, and cleanup after deletion. Needs root and
//! Debian's busybox-static; otherwise prints why and checks nothing.

mod util;

use std::path::{Path, PathBuf};

use util::up::{is_ready, write, Up};
use util::{tail, wait_for};

const BUSYBOX: &str = "/bin/busybox";

const PODS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {key: from-configmap}
---
apiVersion: v1
kind: Pod
metadata: {name: iso}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 1000}
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo hi > /scratch/hello; exec sleep 3600"]
    readinessProbe:
      exec: {command: ["cat", "/scratch/hello"]}
      periodSeconds: 1
    resources:
      requests: {cpu: 250m}
      limits: {cpu: 500m, memory: 64Mi}
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    - {name: scratch, mountPath: /sub, subPath: nested}
    - {name: cfg, mountPath: /cfg, readOnly: true}
  volumes:
  - name: scratch
    emptyDir: {}
  - name: cfg
    configMap: {name: cfg}
---
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: hog
    image: busybox
    command: ["sh", "-c", "x=$(yes 0123456789abcdef); echo survived"]
    resources:
      limits: {memory: 32Mi}
"#;

fn unsupported() -> Option<String> {
    let missing = keel_node::runtime::isolated::missing_features(Path::new("/sys/fs/cgroup"));
    if !missing.is_empty() {
        return Some(missing.join(", "));
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!(
            "{BUSYBOX} missing (apt-get install -y busybox-static)"
        ));
    }
    None
}

/// `<images>/busybox/latest/{rootfs,image.json}`, user `web` = 1000.
fn busybox_image(images: &Path) {
    let dir = images.join("busybox/latest");
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for a in [
        "sh", "ls", "wc", "cat", "id", "hostname", "sleep", "yes", "echo", "ps",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nweb:x:1000:1000::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("image.json"), r#"{"cmd": ["sh"]}"#).unwrap();
}

/// The pod's cgroup directories on this host (v2 or the v1 memory one).
fn pod_cgroup(uid: &str) -> PathBuf {
    let v1 = Path::new("/sys/fs/cgroup/memory");
    let root = if v1.join("cgroup.procs").exists() {
        v1.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    };
    root.join("keel").join(format!("pod{uid}"))
}

fn mountinfo_mentions(dir: &Path) -> bool {
    let needle = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(&needle))
}

#[test]
fn kubectl_on_the_isolating_runtime() {
    if let Some(why) = unsupported() {
        eprintln!("skipping: the keel runtime cannot run here: {why}");
        return;
    }
    let up = Up::start(1, &["--runtime", "keel"]);
    // After the kubeconfig: `keel up` refuses a non-empty new data dir.
    let k = up.kubectl();
    busybox_image(&up.data_dir().join("images"));
    let f = write(up.dir.path(), "pods.yaml", PODS);
    let log = || tail(&up.log(), 60);
    wait_for(
        "the node",
        60,
        || k.run(&["get", "nodes"]).status.success(),
        log,
    );
    wait_for(
        "pods applied",
        60,
        || {
            k.run(&["apply", "-f", f.to_str().unwrap()])
                .status
                .success()
        },
        log,
    );
    // Ready needs the exec probe to see /scratch/hello: inside the container.
    wait_for(
        "pod iso Ready",
        60,
        || {
            let o = k.run(&["get", "pod", "iso", "-o", "json"]);
            o.status.success() && is_ready(&serde_json::from_slice(&o.stdout).unwrap())
        },
        || format!("{}\n{}", k.ok(&["describe", "pod", "iso"]), log()),
    );
    let exec = |script: &str| k.run(&["exec", "iso", "--", "sh", "-c", script]);
    let out = |script: &str| {
        let o = exec(script);
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };

    // Isolation: own PID namespace, own hostname, no host files.
    let procs: usize = out("ls -d /proc/[0-9]* | wc -l").parse().unwrap();
    assert!(procs <= 5, "sees only its own processes ({procs})");
    assert_eq!(
        out("cat /proc/1/comm"),
        "sleep",
        "PID 1 is the container's process"
    );
    assert_eq!(out("hostname"), "iso");
    assert_eq!(
        out("ls /work 2>/dev/null; echo $?"),
        "1",
        "host files are invisible"
    );
    assert_eq!(out("id -u"), "1000", "runAsUser");
    // Volumes at mountPath; readOnly enforced; subPath is its own directory.
    assert_eq!(out("cat /scratch/hello"), "hi");
    assert_eq!(out("cat /cfg/key"), "from-configmap");
    assert_eq!(
        out("echo x > /cfg/key 2>/dev/null; echo $?"),
        "1",
        "readOnly"
    );
    out("echo deep > /sub/file");
    assert_eq!(out("cat /scratch/nested/file"), "deep", "subPath");
    // Exit codes propagate through kubectl exec.
    assert_eq!(exec("exit 3").status.code(), Some(3));

    // Limits are in the pod's cgroup.
    let uid = k.ok(&["get", "pod", "iso", "-o", "jsonpath={.metadata.uid}"]);
    let pod_cg = pod_cgroup(uid.trim());
    let containers: Vec<PathBuf> = std::fs::read_dir(&pod_cg)
        .unwrap_or_else(|e| panic!("{}: {e}", pod_cg.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(
        containers.len(),
        1,
        "one cgroup per container: {containers:?}"
    );
    let limit_file = ["memory.limit_in_bytes", "memory.max"]
        .iter()
        .map(|f| containers[0].join(f))
        .find(|p| p.exists())
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(limit_file).unwrap().trim(),
        "67108864"
    );

    // The memory hog is OOMKilled with 137.
    wait_for(
        "hog OOMKilled",
        60,
        || {
            let t = k.ok(&["get", "pod", "hog", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.reason}/{.status.containerStatuses[0].state.terminated.exitCode}"]);
            t.trim() == "OOMKilled/137"
        },
        || k.ok(&["get", "pod", "hog", "-o", "yaml"]),
    );

    // Deletion removes cgroups and leaves no mount behind on the host.
    k.ok(&[
        "delete",
        "pod",
        "iso",
        "hog",
        "--wait=true",
        "--timeout=60s",
    ]);
    wait_for("pod cgroup removed", 30, || !pod_cg.exists(), log);
    assert!(
        !mountinfo_mentions(&up.data_dir()),
        "no mounts leak to the host"
    );
}
