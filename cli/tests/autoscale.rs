//! Resource metrics and the HorizontalPodAutoscaler end to end on `keel up
//! --agents 1`, with the real kubectl 1.33: `kubectl top nodes|pods`, the
//! agent's kubelet-style `/metrics/resource`, and `kubectl autoscale`
//! scaling a Deployment up under load and back down once the load stops
//! and the (shortened) downscale stabilization window has passed.
//!
//! The load is a `keel/host` container that spins a CPU while a file of the
//! test exists; only one replica (the one that wins a `mkdir` lock) spins,
//! so the test never asks for more than one core.

mod util;

use serde_json::Value;
use util::kubectl::Kubectl;
use util::up::{write, Up};
use util::wait_for;

fn deployment(dir: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: burn}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: burn}}}}
  template:
    metadata: {{labels: {{app: burn}}}}
    spec:
      containers:
      - name: main
        image: keel/host
        command: ["sh", "-c", "while [ ! -e {dir}/go ]; do sleep 0.2; done; if mkdir {dir}/lock 2>/dev/null; then while [ ! -e {dir}/stop ]; do :; done; fi; sleep 3600"]
        resources: {{requests: {{cpu: 100m, memory: 10Mi}}}}
        # The load switch lives on the host: the same path inside the pod
        # on an isolating runtime.
        volumeMounts: [{{name: load, mountPath: "{dir}"}}]
      volumes:
      - name: load
        hostPath: {{path: "{dir}"}}
"#
    )
}

fn replicas(k: &Kubectl) -> i64 {
    k.json(&["get", "deployment", "burn", "-o", "json"])["spec"]["replicas"]
        .as_i64()
        .unwrap_or(-1)
}

/// The HPA once its status says `desired` (it is written after the scale).
fn hpa_status(k: &Kubectl, up: &Up, desired: i64) -> Value {
    let mut last = Value::Null;
    wait_for(
        &format!("HPA status desiredReplicas {desired}"),
        30,
        || {
            last = k.json(&["get", "hpa", "burn", "-o", "json"]);
            last["status"]["desiredReplicas"] == desired
        },
        || up.log(),
    );
    last
}

fn condition<'a>(hpa: &'a Value, type_: &str) -> Option<&'a Value> {
    hpa["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

#[test]
fn top_and_the_hpa_scale_up_and_back_down() {
    let up = Up::start(
        1,
        &[
            "--agent-metrics-interval-ms",
            "1000",
            "--horizontal-pod-autoscaler-sync-period-s",
            "1",
            "--horizontal-pod-autoscaler-downscale-stabilization-s",
            "5",
        ],
    );
    let k = up.kubectl();
    let load = up.dir.path().join("load");
    std::fs::create_dir_all(&load).unwrap();
    let f = write(
        up.dir.path(),
        "burn.yaml",
        &deployment(load.to_str().unwrap()),
    );
    k.ok(&["apply", "-f", f.to_str().unwrap()]);

    // `kubectl top`: the node and the pod, once sampled twice.
    wait_for(
        "kubectl top nodes",
        60,
        || {
            let o = k.run(&["top", "nodes", "--no-headers"]);
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains('m')
        },
        || up.log(),
    );
    wait_for(
        "kubectl top pods",
        60,
        || {
            let o = k.run(&["top", "pods", "--no-headers"]);
            o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("burn-")
        },
        || up.log(),
    );
    let containers = k.ok(&["top", "pods", "-A", "--containers", "--no-headers"]);
    assert!(
        containers
            .lines()
            .any(|l| l.starts_with("default") && l.contains(" main ")),
        "{containers}"
    );
    let nm: Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"]))
            .unwrap();
    let usage = &nm["items"][0]["usage"];
    assert!(usage["cpu"].as_str().unwrap().ends_with('n'), "{nm}");
    assert!(usage["memory"].as_str().unwrap().ends_with("Ki"), "{nm}");
    let missing = k.run(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));

    // The agent's kubelet-style endpoint.
    let node = k.json(&["get", "nodes", "-o", "json"]);
    let port = node["items"][0]["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .unwrap();
    // Served to the API server's identity only (mutual TLS).
    let data = up.data_dir();
    let ca = util::agent_port::ca(&data);
    let apiserver = util::agent_port::apiserver(&data);
    let text = util::agent_port::https_get(
        &ca,
        Some(&apiserver),
        &up.node_ip(),
        port as u16,
        "/metrics/resource",
    )
    .unwrap_or_default();
    for name in [
        "node_cpu_usage_seconds_total ",
        "node_memory_working_set_bytes ",
        "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"burn-",
        "container_memory_working_set_bytes{container=\"main\",namespace=\"default\",pod=\"burn-",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }

    // Scale up under load.
    k.ok(&[
        "autoscale",
        "deployment",
        "burn",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    std::fs::write(load.join("go"), b"").unwrap();
    wait_for(
        "the HPA to scale to 3",
        90,
        || replicas(&k) == 3,
        || {
            format!(
                "{}\n{}",
                k.ok(&["get", "hpa", "burn", "-o", "yaml"]),
                up.log()
            )
        },
    );
    let hpa = hpa_status(&k, &up, 3);
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert!(hpa["status"]["lastScaleTime"].is_string(), "{hpa}");
    assert_eq!(
        condition(&hpa, "ScalingActive").unwrap()["reason"],
        "ValidMetricFound",
        "{hpa}"
    );
    let util = hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        util > 50,
        "under load the utilization is above target: {hpa}"
    );
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=HorizontalPodAutoscaler",
    ]);
    assert!(events.contains("SuccessfulRescale"), "{events}");

    // Load off: back down to minReplicas after the 5 s window.
    std::fs::write(load.join("stop"), b"").unwrap();
    wait_for(
        "the HPA to scale back to 1",
        90,
        || replicas(&k) == 1,
        || {
            format!(
                "{}\n{}",
                k.ok(&["get", "hpa", "burn", "-o", "yaml"]),
                up.log()
            )
        },
    );
    let hpa = hpa_status(&k, &up, 1);
    assert!(hpa["status"]["currentMetrics"].is_array(), "{hpa}");
    let row = k.ok(&["get", "hpa", "burn", "--no-headers"]);
    assert!(row.contains("Deployment/burn"), "{row}");
}
