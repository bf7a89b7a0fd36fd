//! The scheduler loop against an in-process API server, reading pods and
//! nodes from the shared caches as the controller manager runs it: binds
//! what fits, reports what does not (PodScheduled=False and an event),
//! retries when a node appears, and never binds more than fits while
//! bindings are in flight.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, Event, Node, NodeCondition, NodeStatus, Pod, PodCondition, PodSpec,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keel_controllers::cache::Caches;
use keel_controllers::scheduler;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use support::{bg, wait_for, Bg, TestServer};

const NS: &str = "default";

/// Runs the scheduler as the controller manager does: its own client for
/// writes, the manager's shared caches for reads.
fn start_scheduler(server: &TestServer) -> Bg {
    let caches = Caches::new(server.in_process("keel-controller-manager"));
    let client = server.in_process(scheduler::run::SCHEDULER_NAME);
    bg(scheduler::run::run(client, caches))
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    let q = |(k, v): &(&str, &str)| (k.to_string(), Quantity(v.to_string()));
    pairs.iter().map(q).collect()
}

/// Creates a Ready node with `cpu` allocatable.
async fn create_node(client: &kube::Client, name: &str, cpu: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let status = NodeStatus {
        allocatable: Some(quantities(&[
            ("cpu", cpu),
            ("memory", "8Gi"),
            ("pods", "110"),
        ])),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..NodeCondition::default()
        }]),
        ..NodeStatus::default()
    };
    let patch = Patch::Merge(serde_json::json!({ "status": status }));
    nodes
        .patch_status(name, &PatchParams::default(), &patch)
        .await
        .unwrap();
}

/// Creates a pod of one container requesting `cpu`.
async fn create_pod(client: &kube::Client, name: &str, cpu: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                resources: Some(ResourceRequirements {
                    requests: Some(quantities(&[("cpu", cpu)])),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

async fn get_pod(client: &kube::Client, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.get(name).await.unwrap()
}

fn node_of(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    spec.node_name.as_deref().filter(|n| !n.is_empty())
}

fn pod_scheduled(pod: &Pod) -> Option<&PodCondition> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "PodScheduled")
}

/// The Events about pod `name` with `reason`.
async fn events(client: &kube::Client, name: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let all = events.list(&ListParams::default()).await.unwrap().items;
    all.into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

async fn wait_bound(client: &kube::Client, name: &str) -> String {
    wait_for(&format!("{name} bound"), 20, || async {
        node_of(&get_pod(client, name).await).map(str::to_string)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_what_fits_reports_what_does_not_and_retries_on_a_new_node() {
    let server = TestServer::start().await;
    let c = server.in_process("scheduler-test");
    create_node(&c, "n1", "2").await;
    let _scheduler = start_scheduler(&server);
    create_pod(&c, "small", "500m").await;
    create_pod(&c, "huge", "8").await;

    assert_eq!(wait_bound(&c, "small").await, "n1");
    let small = get_pod(&c, "small").await;
    let uid = small.metadata.uid.clone();
    let scheduled = wait_for("the Scheduled event", 10, || async {
        events(&c, "small", "Scheduled").await.pop()
    })
    .await;
    assert_eq!(
        scheduled.message.as_deref(),
        Some("Successfully assigned default/small to n1")
    );
    assert_eq!(scheduled.type_.as_deref(), Some("Normal"));
    assert_eq!(scheduled.involved_object.kind.as_deref(), Some("Pod"));
    assert_eq!(scheduled.involved_object.uid, uid);
    let source = scheduled.source.and_then(|s| s.component);
    assert_eq!(source.as_deref(), Some("default-scheduler"));

    let want = "0/1 nodes are available: 1 Insufficient cpu.";
    let huge = wait_for("huge reported unschedulable", 10, || async {
        let p = get_pod(&c, "huge").await;
        let reported = pod_scheduled(&p).is_some_and(|c| c.status == "False");
        reported.then_some(p)
    })
    .await;
    let cond = pod_scheduled(&huge).unwrap();
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(cond.message.as_deref(), Some(want));
    assert!(cond.last_transition_time.is_some());
    let phase = huge.status.as_ref().and_then(|s| s.phase.as_deref());
    assert_eq!(phase, Some("Pending"));
    assert_eq!(node_of(&huge), None);
    let failed = wait_for("the FailedScheduling event", 10, || async {
        events(&c, "huge", "FailedScheduling").await.pop()
    })
    .await;
    assert_eq!(failed.message.as_deref(), Some(want));
    assert_eq!(failed.type_.as_deref(), Some("Warning"));

    // A node with room appears: the waiting pod is bound there, and the
    // binding replaces PodScheduled=False with True.
    create_node(&c, "n2", "16").await;
    assert_eq!(wait_bound(&c, "huge").await, "n2");
    let huge = get_pod(&c, "huge").await;
    let conditions = huge.status.and_then(|s| s.conditions).unwrap_or_default();
    let scheduled: Vec<_> = conditions
        .iter()
        .filter(|c| c.type_ == "PodScheduled")
        .collect();
    assert_eq!(scheduled.len(), 1, "{conditions:?}");
    assert_eq!(scheduled[0].status, "True");
}

/// A burst of pods decided before any binding is seen back: the assumed
/// pods count, so the node never takes more than its cpu allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_never_overcommits_a_node() {
    let server = TestServer::start().await;
    let c = server.in_process("scheduler-test");
    create_node(&c, "n1", "3").await;
    let names: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    for name in &names {
        create_pod(&c, name, "1").await;
    }
    let _scheduler = start_scheduler(&server);
    wait_for("three bound, five reported", 20, || async {
        let (mut bound, mut unschedulable) = (0, 0);
        for name in &names {
            let p = get_pod(&c, name).await;
            if node_of(&p).is_some() {
                bound += 1;
            } else if pod_scheduled(&p).is_some_and(|c| c.status == "False") {
                unschedulable += 1;
            }
        }
        assert!(bound <= 3, "{bound} pods of 1 cpu on a 3-cpu node");
        (bound == 3 && unschedulable == 5).then_some(())
    })
    .await;
    // Retries (back-off, a tick every 500 ms) never squeeze in a fourth.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    let list = pods.list(&ListParams::default()).await.unwrap().items;
    let bound = list.iter().filter(|p| node_of(p).is_some()).count();
    assert_eq!(bound, 3);
}
