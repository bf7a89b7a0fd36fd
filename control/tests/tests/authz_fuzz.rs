//! Fuzzing authentication-adjacent and authorization paths through real
//! HTTP: random subjects (users, groups including `system:masters` and
//! `system:unauthenticated`, service accounts, nodes, malformed and very
//! long names) acting through impersonation headers, random verbs
//! (including unknown ones and `escalate`/`bind`/`impersonate`) on random
//! resources (subresources, unknown groups and resources, non-resource
//! URLs, %-escaped and very long namespaces and names), access reviews
//! with well-formed and malformed bodies, and raw requests with random
//! methods, paths and bodies.
//!
//! The invariants: the server never answers 5xx (but for streams from an
//! agent, none of which runs here: [`agent_unreachable`]), every answer outside
//! 2xx/3xx is a well-formed Kubernetes `Status` whose `code` is the HTTP
//! code, a well-formed SubjectAccessReview for a member of
//! `system:masters` is allowed, and a well-formed review's answer carries
//! `status.allowed`.
//!
//! The RNG is seeded; the seed is printed and `AUTHZ_FUZZ_SEED=<n>`
//! replays a run (`AUTHZ_FUZZ_CASES=<n>` changes its length).

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::fmt::Write as _;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use support::TestServer;

/// SplitMix64: tiny, seedable, good enough to pick cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const USERS: &[&str] = &[
    "alice",
    "admin",
    "system:admin",
    "system:anonymous",
    "system:node:n1",
    "system:node:n2",
    "system:node:",
    "system:node:no-such-node",
    "system:serviceaccount:default:default",
    "system:serviceaccount:kube-system:",
    "system:serviceaccount::",
    "system:serviceaccount:a",
    "system:serviceaccount:kube-system:namespace-controller",
    "system:kube-scheduler",
    "system:bootstrap:abcdef",
    " ",
    "a,b",
    "%2F%00",
    "dev\t",
];

const GROUPS: &[&str] = &[
    "system:masters",
    "system:authenticated",
    "system:unauthenticated",
    "system:nodes",
    "system:serviceaccounts",
    "system:serviceaccounts:default",
    "system:bootstrappers",
    "system:bootstrappers:keel:default-node-token",
    "dev",
    "",
    "system:masters ",
];

const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "escalate",
    "bind",
    "impersonate",
    "approve",
    "sign",
    "use",
    "proxy",
    "*",
    "",
    "GET",
    "frobnicate",
];

const METHODS: &[&str] = &[
    "GET", "GET", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FROB",
];

/// `group/version` prefixes ("" is the core group).
const GROUP_VERSIONS: &[&str] = &[
    "",
    "",
    "apps/v1",
    "rbac.authorization.k8s.io/v1",
    "authorization.k8s.io/v1",
    "authentication.k8s.io/v1",
    "certificates.k8s.io/v1",
    "coordination.k8s.io/v1",
    "batch/v1",
    "networking.k8s.io/v1",
    "storage.k8s.io/v1",
    "discovery.k8s.io/v1",
    "policy/v1",
    "metrics.k8s.io/v1beta1",
    "apps/v2",
    "nope.example.com/v1",
    "rbac.authorization.k8s.io",
];

const RESOURCES: &[&str] = &[
    "pods",
    "pods",
    "secrets",
    "secrets",
    "configmaps",
    "nodes",
    "serviceaccounts",
    "namespaces",
    "roles",
    "clusterroles",
    "rolebindings",
    "clusterrolebindings",
    "leases",
    "certificatesigningrequests",
    "subjectaccessreviews",
    "selfsubjectaccessreviews",
    "localsubjectaccessreviews",
    "selfsubjectrulesreviews",
    "tokenreviews",
    "selfsubjectreviews",
    "deployments",
    "persistentvolumeclaims",
    "persistentvolumes",
    "events",
    "widgets",
    "",
    "%2e%2e",
    "Pods",
];

const SUBRESOURCES: &[&str] = &[
    "status",
    "token",
    "binding",
    "eviction",
    "scale",
    "approval",
    "ephemeralcontainers",
    "finalize",
    "log",
    "exec",
    "attach",
    "portforward",
    "proxy",
    "bogus",
    "",
    "status/extra",
];

const NAMESPACES: &[&str] = &[
    "default",
    "default",
    "kube-system",
    "kube-node-lease",
    "kube-public",
    "no-such-ns",
    "A_B",
    "%2F",
    "a%2Fb",
    "%00",
    "%ZZ",
    "..",
    "%E2%98%83",
];

const NAMES: &[&str] = &[
    "p1",
    "p2",
    "n1",
    "n2",
    "mine",
    "theirs",
    "default",
    "cluster-admin",
    "system:node",
    "system:node:n1",
    "admin",
    "a%20b",
    "%2F",
    "%2e%2e",
    ".",
    "%00",
    "%G1",
    "x.y.z",
    "UPPER",
    "%E2%98%83",
];

const NON_RESOURCE: &[&str] = &[
    "/",
    "/healthz",
    "/livez",
    "/readyz",
    "/readyz/etcd",
    "/version",
    "/version/",
    "/metrics",
    "/openapi/v2",
    "/openapi/v3",
    "/api",
    "/apis",
    "/apis/",
    "/apis/rbac.authorization.k8s.io",
    "/apis/nope.example.com",
    "/.well-known/openid-configuration",
    "/openid/v1/jwks",
    "/logs",
    "/debug/pprof/",
    "/raft",
    "//",
    "/api/v1/../../etc/passwd",
    "/%ZZ",
    "/api/v1/namespaces//pods",
    "/apis/authorization.k8s.io/v1/namespaces/default/selfsubjectaccessreviews",
    "/api/v1/namespaces/default/pods/p1/log",
    "/api/v1/namespaces/default/pods/p1/exec",
];

const QUERIES: &[&str] = &[
    "",
    "",
    "",
    "?fieldSelector=spec.nodeName%3Dn1",
    "?fieldSelector=spec.nodeName%3Dn2",
    "?fieldSelector=%ZZ",
    "?labelSelector=a%3D%3D%3Db",
    "?labelSelector=!!",
    "?limit=-1",
    "?limit=1&continue=junk",
    "?resourceVersion=abc",
    "?dryRun=All",
    "?dryRun=Bogus",
    "?fieldManager=",
    "?timeoutSeconds=-5",
    "?propagationPolicy=Sideways",
    "?pretty=maybe",
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    "text/plain",
    "",
    "garbage/garbage; x=\"",
];

/// A name that is sometimes very long.
fn name(r: &mut Rng) -> String {
    match r.below(12) {
        0 => "n".repeat(253),
        1 => "x".repeat(r.below(3000) + 254),
        _ => r.pick(NAMES).to_string(),
    }
}

fn namespace(r: &mut Rng) -> String {
    match r.below(15) {
        0 => "ns".repeat(200),
        _ => r.pick(NAMESPACES).to_string(),
    }
}

/// A resource path: `/api/v1` or `/apis/<gv>`, maybe a namespace, a
/// resource, maybe a name and a subresource, maybe a query.
fn resource_path(r: &mut Rng) -> String {
    let gv = r.pick(GROUP_VERSIONS);
    let mut p = if gv.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{gv}")
    };
    if r.chance(60) {
        let _ = write!(p, "/namespaces/{}", namespace(r));
    }
    let _ = write!(p, "/{}", r.pick(RESOURCES));
    if r.chance(70) {
        let _ = write!(p, "/{}", name(r));
        if r.chance(30) {
            let _ = write!(p, "/{}", r.pick(SUBRESOURCES));
        }
    }
    p.push_str(r.pick(QUERIES));
    p
}

fn path(r: &mut Rng) -> String {
    if r.chance(20) {
        let mut p = r.pick(NON_RESOURCE).to_string();
        if r.chance(20) {
            p.push_str(r.pick(QUERIES));
        }
        p
    } else {
        resource_path(r)
    }
}

/// A value that is usually, but not always, a string.
fn stringish(r: &mut Rng, xs: &[&str]) -> Value {
    match r.below(20) {
        0 => json!(42),
        1 => json!(null),
        2 => json!(["a"]),
        3 => json!({"a": 1}),
        4 => json!("x".repeat(2000)),
        _ => json!(r.pick(xs)),
    }
}

fn groups(r: &mut Rng) -> Vec<String> {
    (0..r.below(4))
        .map(|_| r.pick(GROUPS).to_string())
        .collect()
}

fn resource_attributes(r: &mut Rng) -> Value {
    let mut a = serde_json::Map::new();
    for (k, v) in [
        ("verb", stringish(r, VERBS)),
        (
            "group",
            stringish(
                r,
                &[
                    "",
                    "apps",
                    "rbac.authorization.k8s.io",
                    "*",
                    "nope.example.com",
                ],
            ),
        ),
        ("version", stringish(r, &["v1", "", "*", "v9"])),
        ("resource", stringish(r, RESOURCES)),
        ("subresource", stringish(r, SUBRESOURCES)),
        ("namespace", stringish(r, NAMESPACES)),
        ("name", stringish(r, NAMES)),
    ] {
        if r.chance(80) {
            a.insert(k.into(), v);
        }
    }
    if r.chance(10) {
        a.insert(
            "fieldSelector".into(),
            json!({"rawSelector": "spec.nodeName=n1"}),
        );
    }
    Value::Object(a)
}

/// The spec of an access review, sometimes malformed.
fn review_spec(r: &mut Rng, with_subject: bool) -> Value {
    let mut spec = serde_json::Map::new();
    if with_subject {
        spec.insert("user".into(), stringish(r, USERS));
        let g = if r.chance(10) {
            json!("system:masters")
        } else {
            json!(groups(r))
        };
        spec.insert("groups".into(), g);
        if r.chance(20) {
            spec.insert("uid".into(), stringish(r, &["u1", ""]));
        }
        if r.chance(15) {
            spec.insert("extra".into(), json!({"scopes": ["a", 1], "k": "v"}));
        }
    }
    match r.below(10) {
        0..=5 => {
            spec.insert("resourceAttributes".into(), resource_attributes(r));
        }
        6..=7 => {
            spec.insert(
                "nonResourceAttributes".into(),
                json!({"path": stringish(r, NON_RESOURCE), "verb": stringish(r, VERBS)}),
            );
        }
        8 => {
            spec.insert("resourceAttributes".into(), resource_attributes(r));
            spec.insert(
                "nonResourceAttributes".into(),
                json!({"path": "/healthz", "verb": "get"}),
            );
        }
        _ => {}
    }
    Value::Object(spec)
}

/// One case: a request and what it is for the failure report.
struct Case {
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    content_type: String,
    body: Vec<u8>,
    /// A SubjectAccessReview whose subject is in `system:masters` and
    /// whose body is well-formed: it must be allowed.
    masters_review: bool,
}

impl Case {
    fn describe(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v)))
            .collect();
        let mut body = String::from_utf8_lossy(&self.body).into_owned();
        if body.len() > 300 {
            body.truncate(300);
            body.push('…');
        }
        let mut path = self.path.clone();
        if path.len() > 300 {
            path.truncate(300);
            path.push('…');
        }
        format!(
            "{} {} {headers:?} [{}] {body}",
            self.method, path, self.content_type
        )
    }
}

fn impersonation(r: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let mut h = Vec::new();
    let user = match r.below(25) {
        0 => "u".repeat(10_000),
        1 => String::new(),
        _ => r.pick(USERS).to_string(),
    };
    if r.chance(95) {
        h.push(("impersonate-user".to_string(), user.into_bytes()));
    }
    for g in groups(r) {
        h.push(("impersonate-group".to_string(), g.into_bytes()));
    }
    if r.chance(10) {
        h.push(("impersonate-uid".to_string(), b"u-1".to_vec()));
    }
    if r.chance(10) {
        h.push(("impersonate-extra-scopes%2Fa".to_string(), b"x".to_vec()));
    }
    if r.chance(5) {
        // Not valid UTF-8 (obs-text): a header a client may still send.
        h.push(("impersonate-group".to_string(), vec![b'g', 0xff, 0xfe]));
    }
    h
}

fn body_for(r: &mut Rng, path: &str) -> (String, Vec<u8>) {
    let ct = r.pick(CONTENT_TYPES).to_string();
    let body = match r.below(10) {
        0 => Vec::new(),
        1 => b"{".to_vec(),
        2 => b"null".to_vec(),
        3 => b"[{\"op\": \"remove\", \"path\": \"/metadata\"}]".to_vec(),
        4 => vec![0x6b, 0x38, 0x73, 0x00, 0xff, 0x01],
        5 => json!({"metadata": {"name": "n".repeat(300)}})
            .to_string()
            .into_bytes(),
        _ => {
            let kind = path.rsplit('/').next().unwrap_or("");
            json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "fuzz", "labels": {"a": "b"}},
                   "spec": {"boundObjectRef": {"kind": "Pod", "name": "p1"}}, "data": {"k": 1}})
            .to_string()
            .into_bytes()
        }
    };
    (ct, body)
}

/// Reviews (SubjectAccessReview and friends), often malformed.
fn review_case(r: &mut Rng) -> Case {
    let (resource, kind, namespaced, subject) = match r.below(5) {
        0 | 1 => ("subjectaccessreviews", "SubjectAccessReview", false, true),
        2 => (
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
            false,
        ),
        3 => (
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            true,
            true,
        ),
        _ => (
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            false,
            false,
        ),
    };
    let ns = if namespaced {
        namespace(r)
    } else {
        String::new()
    };
    let path = if namespaced {
        format!("/apis/authorization.k8s.io/v1/namespaces/{ns}/{resource}")
    } else {
        format!("/apis/authorization.k8s.io/v1/{resource}")
    };
    let mut spec = if kind == "SelfSubjectRulesReview" {
        json!({"namespace": stringish(r, NAMESPACES)})
    } else {
        review_spec(r, subject)
    };
    let strings = |v: &Value| {
        v.as_object()
            .is_some_and(|o| o.iter().all(|(k, v)| v.is_string() || k == "fieldSelector"))
    };
    let masters = subject
        && strings(&spec["resourceAttributes"])
        && spec["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "system:masters"))
        && spec["user"].is_string()
        && spec["resourceAttributes"].is_object()
        && spec["nonResourceAttributes"].is_null();
    let mut doc =
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": kind, "spec": spec.take()});
    let mut well_formed = true;
    match r.below(12) {
        0 => {
            doc["kind"] = json!("Pod");
            well_formed = false;
        }
        1 => {
            doc["spec"] = json!("spec");
            well_formed = false;
        }
        2 => {
            doc["apiVersion"] = json!("authorization.k8s.io/v1beta1");
            well_formed = false;
        }
        3 => {
            doc = json!([doc]);
            well_formed = false;
        }
        _ => {}
    }
    let (ct, body) = match r.below(15) {
        0 => ("application/json".to_string(), b"{\"spec\": ".to_vec()),
        1 => (
            "application/vnd.kubernetes.protobuf".to_string(),
            vec![0x6b, 0x38, 0x73, 0x00, 0x0a, 0x02],
        ),
        2 => (
            "application/yaml".to_string(),
            b"spec: [unterminated".to_vec(),
        ),
        3 => ("text/plain".to_string(), doc.to_string().into_bytes()),
        _ => ("application/json".to_string(), doc.to_string().into_bytes()),
    };
    let json_body = ct == "application/json" && serde_json::from_slice::<Value>(&body).is_ok();
    // Namespaced reviews need the path's namespace in the spec to be
    // well-formed; leave them out of the masters invariant.
    let mut headers = Vec::new();
    if !subject || r.chance(30) {
        headers = impersonation(r);
    }
    // Only the admin itself surely may create the review.
    let method = if r.chance(92) {
        "POST"
    } else {
        r.pick(METHODS)
    };
    let masters_review = masters
        && well_formed
        && json_body
        && !namespaced
        && headers.is_empty()
        && method == "POST";
    Case {
        method: method.to_string(),
        path,
        headers,
        content_type: ct,
        body,
        masters_review,
    }
}

/// A request acting as a random subject through impersonation.
fn impersonated_case(r: &mut Rng) -> Case {
    let method = r.pick(METHODS).to_string();
    let path = path(r);
    let (content_type, body) = if matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
        body_for(r, &path)
    } else {
        (String::new(), Vec::new())
    };
    Case {
        method,
        path,
        headers: impersonation(r),
        content_type,
        body,
        masters_review: false,
    }
}

/// A raw request as the admin: random method, path and body.
fn raw_case(r: &mut Rng) -> Case {
    let method = r.pick(METHODS).to_string();
    let path = path(r);
    let (content_type, body) = if r.chance(50) {
        body_for(r, &path)
    } else {
        (String::new(), Vec::new())
    };
    Case {
        method,
        path,
        headers: Vec::new(),
        content_type,
        body,
        masters_review: false,
    }
}

/// The one 5xx accepted: a pod's log, exec, attach or port-forward
/// stream when the pod's node has no reachable agent (no agent runs in
/// this test), which is 503 ServiceUnavailable, as kube-apiserver answers
/// 5xx for an unreachable kubelet. Authorization has allowed the request
/// by then; anything else 5xx is a failure.
fn agent_unreachable(case: &Case, code: u16, body: &Value) -> bool {
    let path = case.path.split('?').next().unwrap_or("");
    let streams = ["/log", "/exec", "/attach", "/portforward"]
        .iter()
        .any(|s| path.ends_with(s));
    let msg = body["message"].as_str().unwrap_or("");
    code == 503
        && streams
        && body["reason"] == "ServiceUnavailable"
        && (msg.contains("cannot be reached") || msg.contains("is not registered"))
}

/// The violations of one answer, if any.
fn check(case: &Case, code: u16, body: &Value) -> Option<String> {
    if code >= 500 && !agent_unreachable(case, code, body) {
        return Some(format!("{code}: {body}"));
    }
    if (200..400).contains(&code) {
        if case.masters_review && body["status"]["allowed"] != json!(true) {
            return Some(format!(
                "a system:masters review was not allowed: {code} {body}"
            ));
        }
        return None;
    }
    if case.masters_review && code != 201 {
        return Some(format!(
            "a well-formed masters review failed: {code} {body}"
        ));
    }
    if case.method == "HEAD" {
        return None; // no body to check
    }
    let ok = body["kind"] == "Status"
        && body["apiVersion"] == "v1"
        && body["status"] == "Failure"
        && body["code"] == json!(code)
        && body["message"].as_str().is_some_and(|m| !m.is_empty())
        && body["reason"].is_string();
    (!ok).then(|| format!("{code} is not a well-formed Status: {body}"))
}

async fn fixtures(t: &TestServer) {
    let node = |n: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}});
    let pod = |p: &str, n: &str, s: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": p},
               "spec": {"nodeName": n,
                        "volumes": [{"name": "s", "secret": {"secretName": s}}],
                        "containers": [{"name": "c", "image": "keel/pause"}]}})
    };
    let secret = |s: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": s}});
    for (path, obj) in [
        ("/api/v1/nodes", node("n1")),
        ("/api/v1/nodes", node("n2")),
        ("/api/v1/namespaces/default/secrets", secret("mine")),
        ("/api/v1/namespaces/default/secrets", secret("theirs")),
        ("/api/v1/namespaces/default/pods", pod("p1", "n1", "mine")),
        ("/api/v1/namespaces/default/pods", pod("p2", "n2", "theirs")),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "dev-edit"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                   "subjects": [{"kind": "Group", "name": "dev", "apiGroup": "rbac.authorization.k8s.io"}]}),
        ),
    ] {
        let r = t.post(path, &obj).await;
        assert_eq!(r.code, 201, "{path}: {}", r.body);
    }
}

/// The HTTP code and body (JSON when it parses, else a string).
async fn send(client: &kube::Client, req: http::Request<Vec<u8>>) -> (u16, Value) {
    use http_body_util::BodyExt as _;
    let (parts, body) = req.into_parts();
    let req = http::Request::from_parts(parts, kube::client::Body::from(body));
    let resp = client.send(req).await.expect("the server answers");
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (code, body)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_subjects_verbs_and_resources_never_answer_5xx() {
    let seed = env_u64("AUTHZ_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let cases = env_u64("AUTHZ_FUZZ_CASES").unwrap_or(5000) as usize;
    println!("authz fuzz: seed {seed} ({cases} cases; replay with AUTHZ_FUZZ_SEED={seed})");
    let t = TestServer::start().await;
    fixtures(&t).await;
    let mut r = Rng(seed);
    let all: Vec<Case> = (0..cases)
        .map(|_| match r.below(10) {
            0..=3 => impersonated_case(&mut r),
            4..=6 => review_case(&mut r),
            _ => raw_case(&mut r),
        })
        .collect();
    // A client that never retries (kube's default retries 429/503/504,
    // which would hide exactly the answers this test looks for).
    let mut config = kube::Config::new(t.url.parse().unwrap());
    config.default_retry = false;
    let client = &kube::Client::try_from(config).unwrap();
    let codes = &std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let started = std::time::Instant::now();
    let failures: Vec<String> = futures::stream::iter(all.iter().enumerate())
        .map(|(i, case)| async move {
            let Ok(uri) = http::Uri::try_from(case.path.as_str()) else {
                panic!(
                    "case {i}: the generator made an invalid URI {:?}",
                    case.path
                );
            };
            let mut b = http::Request::builder()
                .method(case.method.as_str())
                .uri(uri);
            for (k, v) in &case.headers {
                b = b.header(
                    k.as_str(),
                    http::HeaderValue::from_bytes(v).expect("header value"),
                );
            }
            if !case.content_type.is_empty() {
                b = b.header("content-type", case.content_type.as_str());
            }
            let req = b.body(case.body.clone()).expect("request");
            let reply = tokio::time::timeout(Duration::from_secs(30), send(client, req)).await;
            match reply {
                Err(_) => Some(format!("case {i}: no answer in 30 s: {}", case.describe())),
                Ok((code, body)) => {
                    codes
                        .lock()
                        .unwrap()
                        .entry(code)
                        .and_modify(|n| *n += 1)
                        .or_insert(1);
                    check(case, code, &body)
                        .map(|why| format!("case {i}: {why}\n    request: {}", case.describe()))
                }
            }
        })
        .buffer_unordered(6)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    println!(
        "authz fuzz: {cases} cases in {:.1} s, {} failures; answers by code: {:?}",
        started.elapsed().as_secs_f64(),
        failures.len(),
        codes.lock().unwrap()
    );
    assert!(
        failures.is_empty(),
        "seed {seed}: {} of {cases} cases failed; first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The server still serves.
    assert_eq!(t.get("/version").await.code, 200);
}
