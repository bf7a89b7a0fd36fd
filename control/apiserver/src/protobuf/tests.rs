use super::*;
use serde_json::json;

// A tiny protobuf encoder for hand-built bodies.

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(num: u32, wire_type: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint((u64::from(num) << 3) | wire_type, &mut out);
    out
}

/// Varint field.
fn v(num: u32, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(num) << 3, &mut out);
    varint(value, &mut out);
    out
}

/// Length-delimited field holding raw bytes.
fn b(num: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint((u64::from(num) << 3) | 2, &mut out);
    varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// String field.
fn s(num: u32, text: &str) -> Vec<u8> {
    b(num, text.as_bytes())
}

/// Embedded message field.
fn m(num: u32, parts: &[Vec<u8>]) -> Vec<u8> {
    b(num, &parts.concat())
}

/// A `map<string, string>` entry.
fn entry(num: u32, key: &str, value: &str) -> Vec<u8> {
    m(num, &[s(1, key), s(2, value)])
}

fn envelope(api_version: &str, kind: &str, raw: &[Vec<u8>]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend(m(1, &[s(1, api_version), s(2, kind)]));
    out.extend(m(2, raw));
    out.extend(s(3, ""));
    out.extend(s(4, ""));
    out
}

/// ObjectMeta as gogo-protobuf writes it: every value field, even when empty.
fn meta(name: &str, labels: &[(&str, &str)]) -> Vec<u8> {
    let mut parts = vec![
        s(1, name),
        s(2, ""),
        s(3, ""),
        s(4, ""),
        s(5, ""),
        s(6, ""),
        v(7, 0),
        m(8, &[]),
    ];
    parts.extend(labels.iter().map(|(k, v)| entry(11, k, v)));
    m(1, &parts)
}

#[test]
fn configmap_with_data() {
    let body = envelope(
        "v1",
        "ConfigMap",
        &[
            meta("cm1", &[]),
            entry(2, "k", "v"),
            entry(2, "a", "b"),
            m(3, &[s(1, "bin"), b(2, &[0, 1, 0xff])]),
        ],
    );
    assert_eq!(
        decode_protobuf(&body).unwrap(),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1"},
               "data": {"k": "v", "a": "b"}, "binaryData": {"bin": "AAH/"}})
    );
}

#[test]
fn secret_with_bytes_data() {
    let body = envelope(
        "v1",
        "Secret",
        &[
            meta("s1", &[("app", "x")]),
            m(2, &[s(1, "password"), b(2, b"p@ss\n")]),
            m(2, &[s(1, "empty"), b(2, b"")]),
            s(3, "Opaque"),
            entry(4, "plain", "text"),
        ],
    );
    assert_eq!(
        decode_protobuf(&body).unwrap(),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "s1", "labels": {"app": "x"}},
               "data": {"password": "cEBzcwo=", "empty": ""},
               "type": "Opaque", "stringData": {"plain": "text"}})
    );
}

#[test]
fn deployment_with_container_port_env_and_intorstr() {
    let container = m(
        2,
        &[
            s(1, "web"),
            s(2, "nginx:1.27"),
            s(3, "nginx"), // command
            s(4, "-g"),    // args
            s(5, ""),      // workingDir (omitempty)
            m(6, &[s(1, "http"), v(2, 0), v(3, 80), s(4, "TCP"), s(5, "")]),
            m(7, &[s(1, "MODE"), s(2, "prod")]),
            m(7, &[s(1, "EMPTY"), s(2, "")]),
            m(8, &[m(2, &[s(1, "cpu"), m(2, &[s(1, "100m")])])]), // resources.requests
            s(13, ""),
            s(14, "IfNotPresent"),
            v(16, 0), // stdin false
        ],
    );
    let pod_spec = m(2, &[container, s(3, "Always"), v(4, 30)]); // terminationGracePeriodSeconds
    let template = m(3, &[meta("", &[("app", "web")]), pod_spec]);
    let strategy = m(
        4,
        &[
            s(1, "RollingUpdate"),
            m(
                2,
                &[m(1, &[v(1, 0), v(2, 1)]), m(2, &[v(1, 1), s(3, "25%")])],
            ),
        ],
    );
    let spec = m(
        2,
        &[
            v(1, 0), // replicas: a pointer, so an explicit 0 is kept
            m(2, &[entry(1, "app", "web")]),
            template,
            strategy,
            v(5, 0),  // minReadySeconds (omitempty)
            v(7, 0),  // paused (omitempty)
            v(6, 10), // revisionHistoryLimit
        ],
    );
    let body = envelope(
        "apps/v1",
        "Deployment",
        &[meta("web", &[]), spec, m(3, &[])],
    );
    assert_eq!(
        decode_protobuf(&body).unwrap(),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "web", "image": "nginx:1.27",
                            "command": ["nginx"], "args": ["-g"],
                            "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                            "env": [{"name": "MODE", "value": "prod"}, {"name": "EMPTY"}],
                            "resources": {"requests": {"cpu": "100m"}},
                            "imagePullPolicy": "IfNotPresent"
                        }],
                        "restartPolicy": "Always",
                        "terminationGracePeriodSeconds": 30
                    }
                },
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}},
                "revisionHistoryLimit": 10
            },
            "status": {}})
    );
}

#[test]
fn namespace_with_times() {
    // 2026-01-01T00:00:00Z, nanos dropped (metav1.Time keeps whole seconds)
    let meta = m(
        1,
        &[
            s(1, "ns1"),
            m(8, &[v(1, 1_767_225_600), v(2, 5)]),
            m(9, &[v(1, 0)]),
        ],
    );
    let body = envelope(
        "v1",
        "Namespace",
        &[meta, m(2, &[s(1, "kubernetes")]), m(3, &[])],
    );
    assert_eq!(
        decode_protobuf(&body).unwrap(),
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "ns1", "creationTimestamp": "2026-01-01T00:00:00Z",
                            "deletionTimestamp": "1970-01-01T00:00:00Z"},
               "spec": {"finalizers": ["kubernetes"]}, "status": {}})
    );
}

#[test]
fn lease_micro_time_and_unknown_fields() {
    let spec = m(
        2,
        &[
            s(1, "node-a"),
            v(2, 15),
            m(3, &[v(1, 1_767_225_600), v(2, 123_456_789)]),
            v(99, 7),                                             // unknown varint
            b(100, b"\x00\xff garbage"),                          // unknown bytes
            [key(101, 5), vec![1, 2, 3, 4]].concat(),             // unknown fixed32
            [key(102, 1), vec![1, 2, 3, 4, 5, 6, 7, 8]].concat(), // unknown fixed64
        ],
    );
    let body = envelope("coordination.k8s.io/v1", "Lease", &[meta("l", &[]), spec]);
    assert_eq!(
        decode_protobuf(&body).unwrap(),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
               "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 15,
                        "acquireTime": "2026-01-01T00:00:00.123456Z"}})
    );
}

#[test]
fn volumes_inline_and_packed_repeated() {
    // Volume{name, VolumeSource{configMap{LocalObjectReference{name}, defaultMode}}}
    let vol = m(
        1,
        &[
            s(1, "cfg"),
            m(2, &[m(19, &[m(1, &[s(1, "app-config")]), v(3, 0o644)])]),
        ],
    );
    // runAsUser, then supplementalGroups packed
    let ctx = m(14, &[v(2, 1000), b(4, &[1, 2, 0x80, 0x01])]);
    let body = envelope("v1", "Pod", &[meta("p", &[]), m(2, &[vol, ctx])]);
    assert_eq!(
        decode_protobuf(&body).unwrap(),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"volumes": [{"name": "cfg",
                                     "configMap": {"name": "app-config", "defaultMode": 420}}],
                        "securityContext": {"runAsUser": 1000,
                                            "supplementalGroups": [1, 2, 128]}}})
    );
}

#[test]
fn negative_int32_and_delete_options() {
    let mut neg = Vec::new();
    varint((-1i64) as u64, &mut neg);
    let body = envelope(
        "v1",
        "DeleteOptions",
        &[
            [vec![1 << 3], neg].concat(),
            s(4, "Foreground"),
            s(5, "All"),
        ],
    );
    assert_eq!(
        decode_protobuf(&body).unwrap(),
        json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": -1,
               "propagationPolicy": "Foreground", "dryRun": ["All"]})
    );
}

#[test]
fn envelope_errors() {
    assert!(decode_protobuf(b"").unwrap_err().contains("prefix"));
    assert!(decode_protobuf(b"{\"kind\":\"Pod\"}")
        .unwrap_err()
        .contains("prefix"));
    let no_kind = [MAGIC.to_vec(), m(1, &[s(1, "v1")])].concat();
    assert!(decode_protobuf(&no_kind).unwrap_err().contains("no kind"));
    let unknown = envelope("node.k8s.io/v1", "RuntimeClass", &[]);
    assert!(decode_protobuf(&unknown)
        .unwrap_err()
        .contains("RuntimeClass"));
    let wrong_group = envelope("apps/v2", "Deployment", &[]);
    assert!(decode_protobuf(&wrong_group).is_err());
    let gzip = [
        MAGIC.to_vec(),
        m(1, &[s(1, "v1"), s(2, "Pod")]),
        s(3, "gzip"),
    ]
    .concat();
    assert!(decode_protobuf(&gzip).unwrap_err().contains("gzip"));
}

#[test]
fn malformed_bodies_are_errors() {
    let good = envelope("v1", "ConfigMap", &[meta("cm1", &[]), entry(2, "k", "v")]);
    // every truncation of a valid body decodes or fails cleanly
    for n in 0..good.len() {
        let _ = decode_protobuf(&good[..n]);
    }
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // raw's length runs past the end
        (
            [MAGIC.to_vec(), vec![0x12, 0x7f, 1, 2]].concat(),
            "truncated",
        ),
        // a varint that never ends
        (
            [MAGIC.to_vec(), vec![0x08], vec![0xff; 11]].concat(),
            "varint",
        ),
        // wire type 3 (group start)
        ([MAGIC.to_vec(), vec![0x0b]].concat(), "wire type"),
        // field number 0
        ([MAGIC.to_vec(), vec![0x00, 0x00]].concat(), "field number"),
        // a string field sent as a varint
        (
            envelope("v1", "ConfigMap", &[m(1, &[v(1, 5)])]),
            "ObjectMeta.name",
        ),
        // invalid UTF-8 in a string
        (
            envelope("v1", "ConfigMap", &[m(1, &[b(1, &[0xff, 0xfe])])]),
            "UTF-8",
        ),
        // IntOrString with an impossible type
        (
            envelope(
                "policy/v1",
                "PodDisruptionBudget",
                &[m(2, &[m(1, &[v(1, 7)])])],
            ),
            "IntOrString",
        ),
        // nanos out of range
        (
            envelope(
                "v1",
                "Namespace",
                &[m(1, &[m(8, &[v(1, 1), v(2, 2_000_000_000)])])],
            ),
            "nanos",
        ),
        // a year past 9999
        (
            envelope("v1", "Namespace", &[m(1, &[m(8, &[v(1, 1 << 40)])])]),
            "Time",
        ),
    ];
    for (body, want) in cases {
        let err = decode_protobuf(&body).unwrap_err();
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds: Vec<Vec<u8>> = FIXTURES
        .iter()
        .map(|(_, pb, _)| pb.to_vec())
        .chain([MAGIC.to_vec()])
        .collect();
    for i in 0..20_000 {
        let mut body = seeds[i % seeds.len()].clone();
        if i % 4 == 0 {
            // pure noise after the prefix
            let len = (next() % 300) as usize;
            body.truncate(4);
            body.extend((0..len).map(|_| next() as u8));
        } else {
            // mutate a few bytes of a real body
            for _ in 0..1 + next() % 4 {
                let at = 4 + (next() as usize) % body.len().saturating_sub(4).max(1);
                if at < body.len() {
                    body[at] = next() as u8;
                }
            }
            if next() % 3 == 0 {
                body.truncate((next() as usize) % (body.len() + 1));
            }
        }
        let _ = decode_protobuf(&body);
    }
}

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("testdata/", $name, ".pb")),
            include_str!(concat!("testdata/", $name, ".json")),
        )
    };
}

/// Bodies captured from kubectl v1.33.1's typed `create` commands, paired with
/// the JSON the same command prints with `--dry-run=client -o json`.
const FIXTURES: &[(&str, &[u8], &str)] = &[
    fixture!("configmap"), // create configmap cm1 --from-literal=k=v --from-literal=a=b
    fixture!("configmap_file"), // create configmap cm2 --from-file=f.txt --from-file=bin.dat
    fixture!("secret"),    // create secret generic s1 --from-literal=...
    fixture!("secret_docker"), // create secret docker-registry reg ...
    fixture!("namespace"),
    fixture!("serviceaccount"),
    fixture!("deployment"), // create deployment web --image=nginx --replicas=2 --port=80
    fixture!("deployment_multi"), // create deployment multi --image=nginx --image=redis
    fixture!("service_clusterip"), // --tcp=80:8080 --tcp=443:https
    fixture!("service_nodeport"), // --tcp=80:8080 --node-port=30080
    fixture!("service_lb"),
    fixture!("service_externalname"),
    fixture!("job"),     // create job j1 --image=busybox -- echo hi
    fixture!("cronjob"), // create cronjob cj1 --image=busybox --schedule=... -- echo hi
    fixture!("quota"),   // create quota q1 --hard=cpu=1,memory=1Gi,pods=10 --scopes=BestEffort
    fixture!("pdb"),     // --selector=app=web --min-available=50%
    fixture!("pdb_int"), // --selector=app=web --max-unavailable=1
    fixture!("ingress"), // --rule=foo.com/bar*=svc1:8080,tls=my-cert --class=nginx ...
    fixture!("hpa_v2"),  // autoscale deployment web --min=2 --max=5 --cpu-percent=80
    // the body of the DELETE that `kubectl drain --disable-eviction` sends
    fixture!("delete_options"),
];

/// kubectl's JSON writes the zero `creationTimestamp` as null; the decoder
/// leaves it out, which the API server reads the same way.
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|_, v| !v.is_null());
            o.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

#[test]
fn kubectl_bodies_decode_to_kubectl_json() {
    for (name, pb, json) in FIXTURES {
        let got = decode_protobuf(pb).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut want: Value = serde_json::from_str(json).unwrap();
        drop_nulls(&mut want);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn kubectl_autoscale_v1_fallback() {
    // `kubectl autoscale` retries with autoscaling/v1 when v2 fails
    let got = decode_protobuf(include_bytes!("testdata/hpa_v1.pb")).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": "web"},
               "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                        "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80},
               "status": {"currentReplicas": 0, "desiredReplicas": 0}})
    );
}

/// `kubectl create role` sends protobuf; the RBAC kinds decode.
#[test]
fn kubectl_role_body_decodes() {
    let role = decode_protobuf(include_bytes!("testdata/role.pb")).unwrap();
    assert_eq!(role["kind"], "Role");
    assert_eq!(role["apiVersion"], "rbac.authorization.k8s.io/v1");
    let rules = role["rules"].as_array().expect("rules");
    assert!(!rules.is_empty(), "{role}");
    assert!(
        rules[0]["verbs"].as_array().is_some_and(|v| !v.is_empty()),
        "{role}"
    );
}

#[test]
fn certificate_signing_request_approval() {
    // What `kubectl certificate approve` PUTs: the CSR with an Approved
    // condition appended; spec.extra (field 6) is skipped.
    let spec = m(
        2,
        &[
            b(1, b"PEM"),
            s(2, "system:bootstrap:abcdef"),
            s(4, "system:bootstrappers"),
            s(5, "client auth"),
            m(6, &[s(1, "k"), m(2, &[s(1, "v")])]),
            s(7, "kubernetes.io/kube-apiserver-client-kubelet"),
        ],
    );
    let status = m(
        3,
        &[m(
            1,
            &[
                s(1, "Approved"),
                s(2, "KubectlApprove"),
                m(4, &[v(1, 1_767_225_600)]),
                s(6, "True"),
            ],
        )],
    );
    let body = envelope(
        "certificates.k8s.io/v1",
        "CertificateSigningRequest",
        &[meta("c", &[]), spec, status],
    );
    assert_eq!(
        decode_protobuf(&body).unwrap(),
        json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
               "metadata": {"name": "c"},
               "spec": {"request": "UEVN", "username": "system:bootstrap:abcdef",
                        "groups": ["system:bootstrappers"], "usages": ["client auth"],
                        "signerName": "kubernetes.io/kube-apiserver-client-kubelet"},
               "status": {"conditions": [{"type": "Approved", "reason": "KubectlApprove",
                                          "lastUpdateTime": "2026-01-01T00:00:00Z",
                                          "status": "True"}]}})
    );
}
