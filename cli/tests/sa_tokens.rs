//! Service account tokens end to end with the real kubectl on a `keel
//! server`: `kubectl create token` issues a JWT that authenticates as
//! `system:serviceaccount:<ns>:<name>`; the account gets 403 until a
//! RoleBinding grants it `view`; a token bound to a pod stops working when
//! the pod is deleted, and every token of an account stops when the
//! account is recreated; bad requests are refused naming the problem;
//! OIDC discovery serves the issuer and its key.

mod util;

use util::kubectl::Kubectl;
use util::up::write;
use util::Cluster;

fn stderr_of(k: &Kubectl, args: &[&str]) -> String {
    let o = k.run(args);
    assert!(!o.status.success(), "kubectl {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn create_token_whoami_rbac_binding_and_revocation() {
    let c = Cluster::start(1, &[]);
    c.api_addr(0);
    let data = c.replicas[0].data_dir.clone();
    let admin = Kubectl::new(data.join("kubeconfig"));
    let dir = tempfile::tempdir().unwrap();

    // Discovery lists the subresource kubectl create token posts to.
    let v1 = admin.ok(&["get", "--raw", "/api/v1"]);
    assert!(v1.contains(r#""name":"serviceaccounts/token""#), "{v1}");

    let token = admin.ok(&["create", "token", "default"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let who = admin.ok(&[
        "--token",
        &token,
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
    ]);
    assert!(
        who.starts_with("system:serviceaccount:default:default "),
        "{who}"
    );
    for g in [
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ] {
        assert!(who.contains(g), "{g} missing: {who}");
    }

    // 403 first, 200 once `view` is bound to the account.
    let err = stderr_of(&admin, &["--token", &token, "get", "pods", "-n", "default"]);
    assert!(
        err.contains(r#"User "system:serviceaccount:default:default" cannot list resource "pods""#),
        "{err}"
    );
    admin.ok(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        "--serviceaccount=default:default",
        "-n",
        "default",
    ]);
    admin.ok(&["--token", &token, "get", "pods", "-n", "default"]);

    // A tampered token is 401.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let err = stderr_of(&admin, &["--token", &forged, "get", "pods"]);
    assert!(err.contains("Unauthorized"), "{err}");

    // Bad requests name the problem.
    let err = stderr_of(&admin, &["create", "token", "default", "--duration", "5m"]);
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let err = stderr_of(&admin, &["create", "token", "nobody"]);
    assert!(
        err.contains(r#"serviceaccounts "nobody" not found"#),
        "{err}"
    );
    let err = stderr_of(
        &admin,
        &[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "ghost",
        ],
    );
    assert!(err.contains(r#"pods "ghost" not found"#), "{err}");

    // A token bound to a pod carries it and dies with it.
    let pod = write(
        dir.path(),
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec:\n  nodeName: nowhere\n  containers: [{name: c, image: busybox}]\n",
    );
    admin.ok(&["apply", "-f", pod.to_str().unwrap()]);
    let bound = admin
        .ok(&[
            "create",
            "token",
            "default",
            "--duration",
            "2h",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "p1",
        ])
        .trim()
        .to_string();
    let extra = admin.ok(&[
        "--token",
        &bound,
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.extra}",
    ]);
    assert!(
        extra.contains("authentication.kubernetes.io/pod-name") && extra.contains("p1"),
        "{extra}"
    );
    admin.ok(&["delete", "pod", "p1", "--grace-period=0", "--force"]);
    let err = stderr_of(&admin, &["--token", &bound, "get", "pods"]);
    assert!(err.contains("Unauthorized"), "{err}");
    // The unbound token still works: only the pod's token is revoked.
    admin.ok(&["--token", &token, "get", "pods"]);

    // Recreating the account (new uid) revokes its tokens.
    admin.ok(&["create", "namespace", "team"]);
    admin.ok(&["create", "serviceaccount", "bot", "-n", "team"]);
    let bot = admin
        .ok(&["create", "token", "bot", "-n", "team"])
        .trim()
        .to_string();
    admin.ok(&["--token", &bot, "auth", "whoami"]);
    admin.ok(&["delete", "serviceaccount", "bot", "-n", "team"]);
    admin.ok(&["create", "serviceaccount", "bot", "-n", "team"]);
    let err = stderr_of(&admin, &["--token", &bot, "auth", "whoami"]);
    assert!(err.contains("Unauthorized"), "{err}");

    // OIDC discovery names the issuer and the key the tokens carry.
    let raw = |path: &str| -> serde_json::Value {
        serde_json::from_str(&admin.ok(&["get", "--raw", path])).expect("JSON")
    };
    let conf = raw("/.well-known/openid-configuration");
    assert_eq!(
        conf["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    let jwks = raw("/openid/v1/jwks");
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    assert_eq!(jwks["keys"][0]["kty"], "EC");
}
