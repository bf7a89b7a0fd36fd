//! The metrics API and the HorizontalPodAutoscaler controller against an
//! in-process API server and a fake agent: a loopback `AgentService` whose
//! `Stats` answer the test sets, registered as node `n1`'s kubelet
//! endpoint. So the usage the HPA sees is exact, and the replica counts,
//! conditions and events can be asserted without any real CPU load.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use keel_controllers::cache::Caches;
use keel_controllers::hpa::{self, HpaConfig};
use keel_proto::keelnode::agent_service_server::{AgentService, AgentServiceServer};
use keel_proto::keelnode::{
    ContainerUsage, ExecInput, ExecOutput, LogChunk, LogsRequest, PodUsage, PortForwardInput,
    PortForwardOutput, StatsRequest, StatsResponse, Usage,
};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use support::{bg, wait_for, TestServer};
use tonic::{Request, Response, Status};

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// An agent that only answers `Stats`, with what the test put in `stats`.
#[derive(Clone, Default)]
struct FakeAgent {
    stats: Arc<Mutex<StatsResponse>>,
}

#[tonic::async_trait]
impl AgentService for FakeAgent {
    type LogsStream = Out<LogChunk>;
    type ExecStream = Out<ExecOutput>;
    type PortForwardStream = Out<PortForwardOutput>;

    async fn logs(&self, _: Request<LogsRequest>) -> Result<Response<Out<LogChunk>>, Status> {
        Err(Status::unimplemented("fake agent"))
    }
    async fn exec(
        &self,
        _: Request<tonic::Streaming<ExecInput>>,
    ) -> Result<Response<Out<ExecOutput>>, Status> {
        Err(Status::unimplemented("fake agent"))
    }
    async fn port_forward(
        &self,
        _: Request<tonic::Streaming<PortForwardInput>>,
    ) -> Result<Response<Out<PortForwardOutput>>, Status> {
        Err(Status::unimplemented("fake agent"))
    }
    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        Ok(Response::new(self.stats.lock().unwrap().clone()))
    }
}

fn usage(milli_cpu: u64, mem_bytes: u64) -> Option<Usage> {
    Some(Usage {
        cpu_nano_cores: milli_cpu * 1_000_000,
        cpu_usage_ns: 1,
        memory_working_set_bytes: mem_bytes,
        timestamp_ms: jiff::Timestamp::now().as_millisecond(),
        window_ms: 5_000,
    })
}

impl FakeAgent {
    /// Every pod of `pods` uses `milli_cpu` and 8 MiB.
    fn set(&self, pods: &[&str], milli_cpu: u64) {
        *self.stats.lock().unwrap() = StatsResponse {
            node: usage(750, 1 << 30),
            pods: pods
                .iter()
                .map(|p| PodUsage {
                    namespace: "default".into(),
                    name: p.to_string(),
                    containers: vec![ContainerUsage {
                        name: "c".into(),
                        usage: usage(milli_cpu, 8 << 20),
                    }],
                })
                .collect(),
        };
    }
}

async fn start_agent(agent: FakeAgent) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(agent))
            .serve_with_incoming(incoming),
    );
    port
}

async fn create<K>(api: &Api<K>, v: Value) -> K
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + k8s_openapi::serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap()
}

async fn patch_status<K>(api: &Api<K>, name: &str, status: Value)
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();
}

/// Node `n1` whose agent is the fake, and pods `p0`, `p1` of `web` on it,
/// running and ready for long enough that every CPU sample counts.
async fn cluster(s: &TestServer, port: u16) {
    let c = s.client.clone();
    let nodes: Api<Node> = Api::all(c.clone());
    create(&nodes, json!({"metadata": {"name": "n1"}})).await;
    patch_status(
        &nodes,
        "n1",
        json!({"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
               "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
               "allocatable": {"cpu": "2", "memory": "4Gi"}}),
    )
    .await;
    let rs: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    create(
        &rs,
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "keel/pause"}]}}}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(c, "default");
    let long_ago = "2026-01-01T00:00:00Z";
    for name in ["p0", "p1"] {
        create(
            &pods,
            json!({"metadata": {"name": name, "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "keel/pause",
                    "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}}}]}}),
        )
        .await;
        patch_status(
            &pods,
            name,
            json!({"phase": "Running", "startTime": long_ago,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": long_ago}]}),
        )
        .await;
    }
}

#[tokio::test]
async fn metrics_api_serves_what_the_agents_measure() {
    let s = TestServer::start().await;
    let agent = FakeAgent::default();
    let port = start_agent(agent.clone()).await;
    cluster(&s, port).await;
    agent.set(&["p0", "p1"], 150);

    let nodes = s.get("/apis/metrics.k8s.io/v1beta1/nodes").await;
    assert_eq!(nodes.code, 200, "{}", nodes.body);
    assert_eq!(nodes.body["kind"], "NodeMetricsList");
    assert_eq!(nodes.body["items"][0]["usage"]["cpu"], "750000000n");
    assert_eq!(nodes.body["items"][0]["usage"]["memory"], "1048576Ki");
    assert_eq!(nodes.body["items"][0]["window"], "5s");

    let pods = s
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dweb")
        .await;
    assert_eq!(pods.body["kind"], "PodMetricsList", "{}", pods.body);
    let items = pods.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["metadata"]["labels"]["app"], "web");
    assert_eq!(items[0]["containers"][0]["usage"]["cpu"], "150000000n");
    assert_eq!(items[0]["containers"][0]["usage"]["memory"], "8192Ki");
    let none = s
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dother")
        .await;
    assert_eq!(none.body["items"], json!([]));
    let one = s
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/p1")
        .await;
    assert_eq!(one.body["kind"], "PodMetrics");
    assert_eq!(one.body["metadata"]["name"], "p1");

    // Not found, read-only, not watchable, unknown version.
    let missing = s
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope")
        .await;
    assert_eq!(missing.code, 404);
    assert_eq!(missing.body["reason"], "NotFound");
    assert!(missing.body["message"]
        .as_str()
        .unwrap()
        .contains("podmetrics.metrics.k8s.io \"nope\""));
    let post = s
        .post("/apis/metrics.k8s.io/v1beta1/nodes", &json!({}))
        .await;
    assert_eq!(post.code, 405);
    let watch = s.get("/apis/metrics.k8s.io/v1beta1/nodes?watch=true").await;
    assert_eq!(watch.code, 405);
    assert_eq!(s.get("/apis/metrics.k8s.io/v1/nodes").await.code, 404);

    // Discovery, legacy and per version.
    let groups = s.get("/apis").await;
    let names: Vec<&str> = groups.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"metrics.k8s.io"), "{names:?}");
    let gv = s.get("/apis/metrics.k8s.io/v1beta1").await;
    assert_eq!(gv.body["resources"][1]["kind"], "PodMetrics");
}

#[tokio::test]
async fn hpa_scales_up_to_max_and_back_down_after_the_window() {
    let s = TestServer::start().await;
    let agent = FakeAgent::default();
    let port = start_agent(agent.clone()).await;
    cluster(&s, port).await;
    let c = s.client.clone();
    let cfg = HpaConfig {
        sync_period: Duration::from_millis(200),
        downscale_stabilization: Duration::from_secs(2),
        ..HpaConfig::default()
    };
    let _hpa = bg(hpa::run(c.clone(), Caches::new(c.clone()), cfg));

    // 150% of the requests against a 50% target: 3x => 6, capped at 5.
    agent.set(&["p0", "p1"], 150);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.clone(), "default");
    create(
        &hpas,
        json!({"metadata": {"name": "web"}, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}]}}),
    )
    .await;
    let rs: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    let replicas = || async {
        let r = rs.get("web").await.ok()?;
        r.spec.and_then(|s| s.replicas)
    };
    wait_for("scale up to 5", 20, || async {
        (replicas().await? == 5).then_some(())
    })
    .await;
    let h = wait_for("status after the rescale", 20, || async {
        let h = hpas.get("web").await.ok()?;
        let st = h.status.clone()?;
        (st.desired_replicas == 5 && st.last_scale_time.is_some()).then_some(h)
    })
    .await;
    let st = h.status.unwrap();
    let cond = |t: &str| {
        st.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .cloned()
            .unwrap_or_else(|| panic!("no {t} condition"))
    };
    assert_eq!(
        cond("ScalingActive").reason.as_deref(),
        Some("ValidMetricFound")
    );
    assert_eq!(cond("ScalingLimited").status, "True");
    assert_eq!(
        cond("ScalingLimited").reason.as_deref(),
        Some("TooManyReplicas")
    );
    let metric = &st.current_metrics.unwrap()[0];
    let current = &metric.resource.as_ref().unwrap().current;
    assert_eq!(current.average_utilization, Some(150));
    assert_eq!(current.average_value.as_ref().unwrap().0, "150m");
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    let ev = wait_for("the SuccessfulRescale event", 10, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("SuccessfulRescale"))
    })
    .await;
    assert_eq!(
        ev.message.as_deref(),
        Some("New size: 5; reason: cpu resource utilization (percentage of request) above target")
    );

    // Idle: 10% => 1 replica, once the 2 s window has passed.
    agent.set(&["p0", "p1"], 10);
    wait_for("scale down to 1", 30, || async {
        (replicas().await? == 1).then_some(())
    })
    .await;
    // The status is written after the scale.
    wait_for("desiredReplicas 1", 10, || async {
        let h = hpas.get("web").await.ok()?;
        (h.status?.desired_replicas == 1).then_some(())
    })
    .await;

    // No metrics at all: ScalingActive goes False, the size stays.
    agent.set(&[], 0);
    let h = wait_for("ScalingActive False", 20, || async {
        let h = hpas.get("web").await.ok()?;
        let c = h
            .status
            .as_ref()?
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "ScalingActive")?
            .clone();
        (c.status == "False").then_some(c)
    })
    .await;
    assert_eq!(h.reason.as_deref(), Some("FailedGetResourceMetric"));
    assert!(
        h.message
            .as_deref()
            .unwrap()
            .contains("did not receive metrics"),
        "{h:?}"
    );
    assert_eq!(replicas().await, Some(1));
}

#[tokio::test]
async fn hpa_reports_a_missing_target() {
    let s = TestServer::start().await;
    let c = s.client.clone();
    let cfg = HpaConfig {
        sync_period: Duration::from_millis(200),
        ..HpaConfig::default()
    };
    let _hpa = bg(hpa::run(c.clone(), Caches::new(c.clone()), cfg));
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c, "default");
    create(
        &hpas,
        json!({"metadata": {"name": "ghost"}, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ghost"},
            "maxReplicas": 3}}),
    )
    .await;
    let cond = wait_for("AbleToScale False", 20, || async {
        let h = hpas.get("ghost").await.ok()?;
        h.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "AbleToScale" && c.status == "False")
    })
    .await;
    assert_eq!(cond.reason.as_deref(), Some("FailedGetScale"));
    assert!(
        cond.message
            .as_deref()
            .unwrap()
            .contains("deployments.apps \"ghost\" not found"),
        "{cond:?}"
    );
}
