//! Users and RBAC end to end with the real kubectl on a `keel server`:
//! an `auth can-i` matrix (users, groups, service accounts and node users
//! × verbs × resources × namespaces) whose expected answers follow the
//! Kubernetes RBAC documentation; a client-certificate user from
//! `keel kubeconfig` who gets 403 (worded as Kubernetes words it) and then
//! 200 once a RoleBinding names them; escalation refused; impersonation
//! checked; a wrong token is 401.

mod util;

use std::path::PathBuf;
use std::process::Command;

use util::kubectl::Kubectl;
use util::up::write;
use util::Cluster;

const POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: dev}
---
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-edit, namespace: dev}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: developers-view, namespace: prod}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: Group, name: developers, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: app-config-reader, namespace: dev}
rules:
- {apiGroups: [""], resources: [configmaps], resourceNames: [app-config], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: robot-config, namespace: dev}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: app-config-reader}
subjects: [{kind: ServiceAccount, name: robot}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-reader}
rules:
- {apiGroups: [""], resources: [nodes], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ops-node-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-reader}
subjects: [{kind: Group, name: ops, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: metrics-reader}
rules:
- {nonResourceURLs: [/metrics], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: prom-metrics}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: metrics-reader}
subjects: [{kind: User, name: prom, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Pod
metadata: {name: on-n1, namespace: dev}
spec:
  nodeName: n1
  containers: [{name: c, image: keel/pause}]
  volumes: [{name: s, secret: {secretName: n1-secret}}]
---
apiVersion: v1
kind: Pod
metadata: {name: on-n2, namespace: dev}
spec:
  nodeName: n2
  containers: [{name: c, image: keel/pause}]
"#;

/// (as, as-groups, can-i arguments, expected answer). Every line follows
/// from the RBAC documentation: bindings are additive and scoped to their
/// namespace, resourceNames narrow to one object (and never allow list),
/// `edit` holds secrets and pods/exec but not roles, `view` holds no
/// secrets, every authenticated user may discover and ask about itself,
/// system:masters may do everything.
const MATRIX: &[(&str, &[&str], &[&str], bool)] = &[
    ("alice", &[], &["list", "pods", "-n", "dev"], true),
    (
        "alice",
        &[],
        &["create", "deployments.apps", "-n", "dev"],
        true,
    ),
    ("alice", &[], &["delete", "secrets", "-n", "dev"], true),
    (
        "alice",
        &[],
        &["create", "pods", "--subresource=exec", "-n", "dev"],
        true,
    ),
    (
        "alice",
        &[],
        &["get", "pods", "--subresource=log", "-n", "dev"],
        true,
    ),
    (
        "alice",
        &[],
        &[
            "update",
            "deployments.apps",
            "--subresource=scale",
            "-n",
            "dev",
        ],
        true,
    ),
    (
        "alice",
        &[],
        &["impersonate", "serviceaccounts", "-n", "dev"],
        true,
    ),
    (
        "alice",
        &[],
        &["create", "roles.rbac.authorization.k8s.io", "-n", "dev"],
        false,
    ),
    ("alice", &[], &["list", "pods", "-n", "prod"], false),
    ("alice", &[], &["list", "nodes"], false),
    ("alice", &[], &["list", "pods", "--all-namespaces"], false),
    ("alice", &[], &["get", "/healthz"], true),
    ("alice", &[], &["get", "/apis/apps/v1"], true),
    ("alice", &[], &["get", "/metrics"], false),
    (
        "alice",
        &[],
        &["create", "selfsubjectaccessreviews.authorization.k8s.io"],
        true,
    ),
    (
        "alice",
        &[],
        &["create", "subjectaccessreviews.authorization.k8s.io"],
        false,
    ),
    (
        "bob",
        &["developers"],
        &["list", "pods", "-n", "prod"],
        true,
    ),
    (
        "bob",
        &["developers"],
        &["watch", "deployments.apps", "-n", "prod"],
        true,
    ),
    (
        "bob",
        &["developers"],
        &["get", "pods", "--subresource=log", "-n", "prod"],
        true,
    ),
    (
        "bob",
        &["developers"],
        &["get", "secrets", "-n", "prod"],
        false,
    ),
    (
        "bob",
        &["developers"],
        &["create", "pods", "-n", "prod"],
        false,
    ),
    (
        "bob",
        &["developers"],
        &["create", "pods", "--subresource=exec", "-n", "prod"],
        false,
    ),
    (
        "bob",
        &["developers"],
        &["list", "pods", "-n", "dev"],
        false,
    ),
    ("bob", &[], &["list", "pods", "-n", "prod"], false),
    (
        "system:serviceaccount:dev:robot",
        &[],
        &["get", "configmaps/app-config", "-n", "dev"],
        true,
    ),
    (
        "system:serviceaccount:dev:robot",
        &[],
        &["get", "configmaps/other", "-n", "dev"],
        false,
    ),
    (
        "system:serviceaccount:dev:robot",
        &[],
        &["list", "configmaps", "-n", "dev"],
        false,
    ),
    (
        "system:serviceaccount:dev:robot",
        &[],
        &["get", "configmaps/app-config", "-n", "prod"],
        false,
    ),
    (
        "system:serviceaccount:prod:robot",
        &[],
        &["get", "configmaps/app-config", "-n", "dev"],
        false,
    ),
    ("carol", &["ops"], &["list", "nodes"], true),
    ("carol", &["ops"], &["watch", "nodes"], true),
    ("carol", &["ops"], &["delete", "nodes"], false),
    ("carol", &["ops"], &["list", "pods", "-n", "dev"], false),
    ("prom", &[], &["get", "/metrics"], true),
    ("prom", &[], &["post", "/metrics"], false),
    // Nodes: the Node authorizer (no binding of system:node needed):
    // only their pods and what those reference, their own lease.
    ("system:node:n1", &["system:nodes"], &["get", "nodes"], true),
    (
        "system:node:n1",
        &["system:nodes"],
        &["patch", "nodes", "--subresource=status"],
        true,
    ),
    (
        "system:node:n1",
        &["system:nodes"],
        &["get", "secrets/n1-secret", "-n", "dev"],
        true,
    ),
    (
        "system:node:n1",
        &["system:nodes"],
        &["get", "secrets/other", "-n", "dev"],
        false,
    ),
    (
        "system:node:n1",
        &["system:nodes"],
        &["list", "secrets", "-n", "dev"],
        false,
    ),
    (
        "system:node:n1",
        &["system:nodes"],
        &["get", "pods/on-n1", "-n", "dev"],
        true,
    ),
    (
        "system:node:n1",
        &["system:nodes"],
        &["get", "pods/on-n2", "-n", "dev"],
        false,
    ),
    (
        "system:node:n1",
        &["system:nodes"],
        &["list", "pods", "--all-namespaces"],
        false,
    ),
    (
        "system:node:n1",
        &["system:nodes"],
        &["create", "events", "-n", "dev"],
        true,
    ),
    (
        "system:node:n1",
        &["system:nodes"],
        &["update", "pods", "--subresource=status", "-n", "dev"],
        true,
    ),
    (
        "system:node:n1",
        &["system:nodes"],
        &["get", "leases/n1", "-n", "kube-node-lease"],
        true,
    ),
    (
        "system:node:n1",
        &["system:nodes"],
        &["get", "leases/n2", "-n", "kube-node-lease"],
        false,
    ),
    (
        "system:node:n1",
        &["system:nodes"],
        &["delete", "nodes"],
        false,
    ),
    (
        "system:node:n1",
        &["system:nodes"],
        &["delete", "namespaces"],
        false,
    ),
    ("system:node:n1", &[], &["get", "nodes"], false),
    ("root", &["system:masters"], &["delete", "nodes"], true),
    (
        "root",
        &["system:masters"],
        &["escalate", "clusterroles.rbac.authorization.k8s.io"],
        true,
    ),
];

fn can_i(k: &Kubectl, user: &str, groups: &[&str], args: &[&str]) -> String {
    let mut a: Vec<&str> = vec!["auth", "can-i"];
    a.extend(args);
    a.extend(["--as", user]);
    for g in groups {
        a.extend(["--as-group", g]);
    }
    let o = k.run(&a);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn keel_kubeconfig(
    data_dir: &std::path::Path,
    dir: &std::path::Path,
    user: &str,
    group: &str,
) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "kubeconfig",
            "--user",
            user,
            "--group",
            group,
            "--expiry",
            "1h",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("keel kubeconfig runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write(
        dir,
        &format!("{user}.kubeconfig"),
        &String::from_utf8_lossy(&out.stdout),
    )
}

fn stderr_of(k: &Kubectl, args: &[&str]) -> String {
    let o = k.run(args);
    assert!(!o.status.success(), "kubectl {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn can_i_matrix_certificate_users_and_escalation() {
    let c = Cluster::start(1, &[]);
    c.api_addr(0);
    let data = c.replicas[0].data_dir.clone();
    let admin = Kubectl::new(data.join("kubeconfig"));
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.yaml", POLICY);
    admin.ok(&["apply", "-f", policy.to_str().unwrap()]);

    let mut wrong = Vec::new();
    for (user, groups, args, want) in MATRIX {
        // A denial may carry the authorizer's reason: `no - <reason>`.
        let got = can_i(&admin, user, groups, args);
        let got = got.split(" - ").next().unwrap_or("").to_string();
        let want = if *want { "yes" } else { "no" };
        if got != want {
            wrong.push(format!(
                "{user} {groups:?} can-i {args:?}: got {got:?}, want {want}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} answers differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // whoami, for the admin token and for an impersonated user.
    let who = admin.ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"]);
    assert!(who.contains("system:masters"), "{who}");
    let who = admin.ok(&["auth", "whoami", "--as", "alice", "--as-group", "dev-team"]);
    assert!(who.contains("alice") && who.contains("dev-team"), "{who}");

    // A real client-certificate user: 403 worded as Kubernetes words it,
    // then 200 once a RoleBinding names them.
    let dave = Kubectl::new(keel_kubeconfig(&data, dir.path(), "dave", "qa"));
    let who = dave.ok(&["auth", "whoami"]);
    assert!(
        who.contains("dave") && who.contains("qa") && who.contains("system:authenticated"),
        "{who}"
    );
    let err = stderr_of(&dave, &["get", "pods", "-n", "dev"]);
    assert!(
        err.contains(r#"pods is forbidden: User "dave" cannot list resource "pods" in API group "" in the namespace "dev""#),
        "{err}"
    );
    let err = stderr_of(&dave, &["get", "nodes"]);
    assert!(
        err.contains(
            r#"User "dave" cannot list resource "nodes" in API group "" at the cluster scope"#
        ),
        "{err}"
    );
    let err = stderr_of(
        &dave,
        &["get", "--raw", "/api/v1/namespaces/dev/pods?watch=true"],
    );
    assert!(err.contains("cannot watch resource"), "{err}");
    admin.ok(&[
        "create",
        "rolebinding",
        "qa-admin",
        "--clusterrole=admin",
        "--group=qa",
        "-n",
        "dev",
    ]);
    dave.ok(&["get", "pods", "-n", "dev"]);
    dave.ok(&[
        "create",
        "configmap",
        "c1",
        "-n",
        "dev",
        "--from-literal=a=b",
    ]);
    assert_eq!(
        dave.ok(&["auth", "can-i", "create", "roles", "-n", "dev"])
            .trim(),
        "yes"
    );

    // Escalation: dave may write roles and bindings in dev, but only with
    // what he holds there.
    dave.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
        "-n",
        "dev",
    ]);
    let err = stderr_of(
        &dave,
        &[
            "create",
            "role",
            "node-getter",
            "--verb=get",
            "--resource=nodes",
            "-n",
            "dev",
        ],
    );
    assert!(
        err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    let err = stderr_of(
        &dave,
        &[
            "create",
            "rolebinding",
            "me-root",
            "--clusterrole=cluster-admin",
            "--user=dave",
            "-n",
            "dev",
        ],
    );
    assert!(err.contains("forbidden"), "{err}");
    dave.ok(&[
        "create",
        "rolebinding",
        "robot-pods",
        "--role=pod-reader",
        "--serviceaccount=dev:robot",
        "-n",
        "dev",
    ]);
    // With `bind` on cluster-admin granted, the same binding is allowed.
    admin.ok(&[
        "create",
        "clusterrole",
        "bind-cluster-admin",
        "--verb=bind",
        "--resource=clusterroles",
        "--resource-name=cluster-admin",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "qa-bind",
        "--clusterrole=bind-cluster-admin",
        "--group=qa",
        "-n",
        "dev",
    ]);
    dave.ok(&[
        "create",
        "rolebinding",
        "me-root",
        "--clusterrole=cluster-admin",
        "--user=dave",
        "-n",
        "dev",
    ]);
    // roleRef never changes.
    let err = stderr_of(
        &admin,
        &[
            "patch",
            "rolebinding",
            "me-root",
            "-n",
            "dev",
            "-p",
            r#"{"roleRef":{"name":"view"}}"#,
        ],
    );
    assert!(err.contains("cannot change roleRef"), "{err}");

    // Impersonation needs the impersonate verb.
    let err = stderr_of(&dave, &["get", "pods", "-n", "dev", "--as", "alice"]);
    assert!(
        err.contains(r#"users "alice" is forbidden: User "dave" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{err}"
    );

    // A wrong token is 401, not 403.
    let err = stderr_of(&admin, &["get", "pods", "--token", "not-a-token"]);
    assert!(err.contains("Unauthorized"), "{err}");
}

const AUDIT_POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/api", "/api/*", "/apis", "/apis/*", "/openapi/*"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["configmaps"]
- level: Metadata
"#;

#[test]
fn audit_log_records_requests_at_the_policy_level() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "audit-policy.yaml", AUDIT_POLICY);
    let log = dir.path().join("audit.log");
    let c = Cluster::start(
        1,
        &[
            "--audit-log-path",
            log.to_str().unwrap(),
            "--audit-policy-file",
            policy.to_str().unwrap(),
        ],
    );
    c.api_addr(0);
    let admin = Kubectl::new(c.replicas[0].data_dir.join("kubeconfig"));
    admin.ok(&["create", "configmap", "audited", "--from-literal=k=v"]);
    let err = stderr_of(&admin, &["get", "secrets", "--as", "mallory"]);
    assert!(err.contains("forbidden"), "{err}");

    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON event"))
        .collect();
    for e in &events {
        assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(e["kind"], "Event");
        assert_eq!(e["stage"], "ResponseComplete");
        let uri = e["requestURI"].as_str().unwrap();
        assert!(
            !uri.starts_with("/api?") && !uri.starts_with("/version"),
            "level None was logged: {e}"
        );
    }
    let create = events
        .iter()
        .find(|e| e["verb"] == "create" && e["objectRef"]["resource"] == "configmaps")
        .unwrap_or_else(|| panic!("no configmap create among {events:?}"));
    assert_eq!(create["level"], "RequestResponse");
    assert_eq!(create["responseStatus"]["code"], 201);
    assert_eq!(create["user"]["username"], "admin");
    assert_eq!(create["requestObject"]["data"]["k"], "v", "{create}");
    assert_eq!(
        create["responseObject"]["metadata"]["name"], "audited",
        "{create}"
    );
    let denied = events
        .iter()
        .find(|e| e["objectRef"]["resource"] == "secrets")
        .unwrap_or_else(|| panic!("no secrets request among {events:?}"));
    assert_eq!(denied["level"], "Metadata");
    assert_eq!(denied["responseStatus"]["code"], 403);
    assert_eq!(denied["impersonatedUser"]["username"], "mallory");
    assert_eq!(denied["user"]["username"], "admin");
    assert!(denied.get("requestObject").is_none());
}

/// The upgrade path: at every start the default policy is reconciled —
/// a deleted default role comes back, one an operator marked
/// `autoupdate: "false"` is left as they changed it — and the admin
/// token, the credential of clusters made before RBAC, stays
/// `system:masters` across the restart.
#[test]
fn restarts_reconcile_the_default_policy() {
    let mut c = Cluster::start(1, &[]);
    c.api_addr(0);
    let kubeconfig = c.replicas[0].data_dir.join("kubeconfig");
    let admin = Kubectl::new(kubeconfig.clone());
    admin.ok(&["delete", "clusterrole", "view"]);
    admin.ok(&[
        "annotate",
        "--overwrite",
        "clusterrole",
        "system:basic-user",
        "rbac.authorization.kubernetes.io/autoupdate=false",
    ]);
    admin.ok(&[
        "patch",
        "clusterrole",
        "system:basic-user",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/rules/1"}]"#,
    ]);
    let before = std::fs::read_to_string(&kubeconfig).unwrap();
    c.kill(0);
    std::fs::remove_file(&kubeconfig).unwrap();
    c.spawn(0);
    c.api_addr(0);
    let admin = Kubectl::new(kubeconfig.clone());
    let view = admin.json(&["get", "clusterrole", "view"]);
    assert!(view["aggregationRule"].is_object(), "{view}");
    assert!(
        view["rules"].to_string().contains("pods"),
        "view is aggregated again: {view}"
    );
    let basic = admin.json(&["get", "clusterrole", "system:basic-user"]);
    assert_eq!(
        basic["rules"].as_array().unwrap().len(),
        1,
        "autoupdate=false is left alone: {basic}"
    );
    // The same admin token, still everything.
    let token = |kc: &str| {
        kc.lines()
            .find(|l| l.contains("token:"))
            .map(str::to_string)
    };
    assert_eq!(
        token(&before),
        token(&std::fs::read_to_string(&kubeconfig).unwrap())
    );
    assert_eq!(admin.ok(&["auth", "can-i", "*", "*"]).trim(), "yes");
}
