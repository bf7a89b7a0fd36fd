//! A pod's service account identity end to end on `keel up --runtime keel`:
//! ServiceAccount admission mounts a projected `kube-api-access-*` volume
//! (token, ca.crt, namespace) at the standard path; the real kubectl, run
//! *inside* the pod with in-cluster config (`KUBERNETES_SERVICE_HOST/PORT`,
//! the mounted token and CA), is denied with 403 until a RoleBinding grants
//! the account `pod-reader`, then lists pods; `automountServiceAccountToken:
//! false` leaves the token out; every namespace has the `kube-root-ca.crt`
//! ConfigMap, put back when deleted. Needs root, busybox-static and kubectl
//! on the host; otherwise prints why and checks nothing.

mod util;

use std::path::{Path, PathBuf};

use util::up::{is_ready, write, Up};
use util::{tail, wait_for};

const BUSYBOX: &str = "/bin/busybox";
const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: idt}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: idt}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: idt}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list, watch]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: idt}
spec:
  serviceAccountName: reader
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: kubectl
    command: ["sleep", "3600"]
    env:
    - {name: HOME, value: /tmp}
---
apiVersion: v1
kind: Pod
metadata: {name: nomount, namespace: idt}
spec:
  serviceAccountName: reader
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: kubectl
    command: ["sleep", "3600"]
"#;

fn kubectl_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
}

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
    if kubectl_binary().is_none() {
        return Some("no kubectl on PATH".into());
    }
    None
}

/// `<images>/kubectl/latest`: busybox plus the host's (static) kubectl.
fn kubectl_image(images: &Path) {
    let dir = images.join("kubectl/latest");
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for a in ["sh", "ls", "cat", "sleep", "readlink", "test"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::copy(kubectl_binary().unwrap(), root.join("bin/kubectl")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("image.json"), r#"{"cmd": ["sh"]}"#).unwrap();
}

#[test]
fn kubectl_in_a_pod_uses_the_pods_service_account() {
    if let Some(why) = unsupported() {
        eprintln!("skipping: {why}");
        return;
    }
    let up = Up::start(1, &["--runtime", "keel"]);
    let k = up.kubectl();
    kubectl_image(&up.data_dir().join("images"));
    let f = write(up.dir.path(), "objects.yaml", OBJECTS);
    let log = || tail(&up.log(), 60);
    wait_for(
        "objects applied",
        90,
        || {
            k.run(&["apply", "-f", f.to_str().unwrap()])
                .status
                .success()
        },
        log,
    );

    // Admission added the volume and the read-only mount.
    let pod = k.json(&["get", "pod", "client", "-n", "idt"]);
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
        .unwrap_or_else(|| panic!("no token volume: {pod}"))
        .clone();
    let sources = &volume["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    let mount = &pod["spec"]["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["mountPath"], MOUNT);
    assert_eq!(mount["readOnly"], true);
    assert_eq!(mount["name"], volume["name"]);
    let nomount = k.json(&["get", "pod", "nomount", "-n", "idt"]);
    assert!(
        nomount["spec"]["volumes"].is_null()
            || !nomount["spec"]["volumes"]
                .to_string()
                .contains("kube-api-access"),
        "{nomount}"
    );

    for name in ["client", "nomount"] {
        wait_for(
            &format!("pod {name} Ready"),
            90,
            || {
                let o = k.run(&["get", "pod", name, "-n", "idt", "-o", "json"]);
                o.status.success() && is_ready(&serde_json::from_slice(&o.stdout).unwrap())
            },
            || {
                format!(
                    "{}\n{}",
                    k.ok(&["describe", "pod", name, "-n", "idt"]),
                    log()
                )
            },
        );
    }
    let exec =
        |pod: &str, script: &str| k.run(&["exec", pod, "-n", "idt", "--", "sh", "-c", script]);
    let out = |script: &str| {
        let o = exec("client", script);
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };

    // The files, behind the kubelet's `..data` link; the CA is the cluster's.
    assert_eq!(out(&format!("cat {MOUNT}/namespace")), "idt");
    assert_eq!(out(&format!("readlink {MOUNT}/token")), "..data/token");
    let ca = std::fs::read_to_string(up.data_dir().join("pki/ca.crt")).unwrap_or_default();
    let in_pod_ca = out(&format!("cat {MOUNT}/ca.crt"));
    assert!(in_pod_ca.contains("BEGIN CERTIFICATE"), "{in_pod_ca}");
    if !ca.is_empty() {
        assert_eq!(in_pod_ca.trim(), ca.trim());
    }
    assert_eq!(
        out(&format!("echo x > {MOUNT}/token 2>/dev/null; echo $?")),
        "1",
        "read-only"
    );

    // In-cluster kubectl: 403 as the pod's account, then allowed.
    let denied = exec("client", "kubectl get pods -n idt");
    let err = String::from_utf8_lossy(&denied.stderr).into_owned();
    assert!(!denied.status.success(), "listed pods without a binding");
    assert!(
        err.contains(r#"User "system:serviceaccount:idt:reader" cannot list resource "pods""#),
        "{err}"
    );
    k.ok(&[
        "create",
        "rolebinding",
        "read-pods",
        "--role=pod-reader",
        "--serviceaccount=idt:reader",
        "-n",
        "idt",
    ]);
    let mut listed = String::new();
    wait_for(
        "kubectl in the pod lists pods",
        30,
        || {
            let o = exec("client", "kubectl get pods -n idt -o name");
            listed = String::from_utf8_lossy(&o.stdout).into_owned();
            o.status.success()
        },
        || String::from_utf8_lossy(&exec("client", "kubectl get pods -n idt").stderr).into_owned(),
    );
    assert!(
        listed.contains("pod/client") && listed.contains("pod/nomount"),
        "{listed}"
    );
    // Only what the Role grants: other namespaces stay forbidden.
    assert!(!exec("client", "kubectl get pods -n default")
        .status
        .success());

    // No automount, no token.
    let o = exec("nomount", &format!("test -e {MOUNT}/token; echo $?"));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1");

    // The CA ConfigMap comes back when deleted.
    k.ok(&["delete", "configmap", "kube-root-ca.crt", "-n", "idt"]);
    wait_for(
        "kube-root-ca.crt recreated",
        30,
        || {
            k.run(&["get", "configmap", "kube-root-ca.crt", "-n", "idt"])
                .status
                .success()
        },
        log,
    );
    let data = k.ok(&[
        "get",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "idt",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    assert_eq!(data.trim(), in_pod_ca.trim());

    k.ok(&["delete", "namespace", "idt", "--wait=true", "--timeout=60s"]);
}
