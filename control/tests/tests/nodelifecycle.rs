//! The node lifecycle controller against an in-process API server: a node
//! whose lease stops moving is tainted unreachable and marked Unknown with
//! a NodeNotReady event, its pods are evicted once their toleration runs
//! out and removed when already terminating, and the taint goes again once
//! the lease moves.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Container, Event, Node, NodeCondition, NodeStatus, Pod, PodSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use keel_controllers::cache::Caches;
use keel_controllers::nodelifecycle::{self, NodeLifecycleConfig, TAINT_UNREACHABLE};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use support::{bg, wait_for, TestServer};

const NODE: &str = "n1";
const NS: &str = "default";

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        ..ObjectMeta::default()
    }
}

/// A pod bound to [`NODE`] with `tolerations`.
fn pod_on_node(name: &str, tolerations: Vec<Toleration>) -> Pod {
    Pod {
        metadata: meta(name),
        spec: Some(PodSpec {
            node_name: Some(NODE.to_string()),
            tolerations: Some(tolerations),
            containers: vec![Container {
                name: "c".to_string(),
                image: Some("keel/pause".to_string()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

fn tolerate_unreachable(seconds: Option<i64>) -> Toleration {
    Toleration {
        key: Some(TAINT_UNREACHABLE.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some("NoExecute".to_string()),
        toleration_seconds: seconds,
        value: None,
    }
}

/// Sets the node lease's renewTime to now, as the node agent does.
async fn renew(leases: &Api<Lease>) {
    let patch = Lease {
        metadata: ObjectMeta::default(),
        spec: Some(LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    leases
        .patch(NODE, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("renew the node lease");
}

/// A node with a Ready=True condition and a fresh lease.
async fn create_ready_node(c: &kube::Client) {
    let nodes: Api<Node> = Api::all(c.clone());
    nodes
        .create(
            &PostParams::default(),
            &Node {
                metadata: meta(NODE),
                ..Node::default()
            },
        )
        .await
        .expect("create the node");
    let ready = Node {
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".to_string(),
                status: "True".to_string(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
        ..Node::default()
    };
    nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .expect("post the node's status");
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    let lease = Lease {
        metadata: meta(NODE),
        spec: Some(LeaseSpec {
            holder_identity: Some(NODE.to_string()),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create the node lease");
}

fn unreachable_taints(node: &Node) -> Vec<String> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone());
    let mut effects: Vec<String> = taints
        .into_iter()
        .flatten()
        .filter(|t| t.key == TAINT_UNREACHABLE)
        .map(|t| t.effect)
        .collect();
    effects.sort();
    effects
}

fn ready_condition(node: &Node) -> Option<NodeCondition> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Ready").cloned()
}

#[tokio::test]
async fn a_silent_node_is_tainted_and_its_pods_evicted_until_its_lease_moves() {
    let s = TestServer::start().await;
    let c = s.in_process("node-lifecycle-test");
    create_ready_node(&c).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    let pp = PostParams::default();
    let short = pod_on_node("short", vec![tolerate_unreachable(Some(0))]);
    let forever = pod_on_node("forever", vec![tolerate_unreachable(None)]);
    let default = pod_on_node("default", vec![]);
    let stopping = pod_on_node("stopping", vec![tolerate_unreachable(None)]);
    for p in [&short, &forever, &default, &stopping] {
        pods.create(&pp, p).await.expect("create a pod");
    }
    // Terminating: with a node to confirm it, it waits for its agent.
    pods.delete("stopping", &DeleteParams::default())
        .await
        .expect("delete the stopping pod");
    let cfg = NodeLifecycleConfig {
        grace: Duration::from_secs(1),
        default_eviction_s: 3600,
    };
    let _lifecycle = bg(nodelifecycle::run(c.clone(), Caches::new(c.clone()), cfg));

    let nodes: Api<Node> = Api::all(c.clone());
    let node = wait_for("the node to be tainted unreachable", 20, || async {
        let n = nodes.get(NODE).await.expect("get the node");
        (unreachable_taints(&n) == ["NoExecute", "NoSchedule"]).then_some(n)
    })
    .await;
    let ready = wait_for("the node to turn Unknown", 20, || async {
        let n = nodes.get(NODE).await.expect("get the node");
        ready_condition(&n).filter(|c| c.status == "Unknown")
    })
    .await;
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    assert!(ready.last_transition_time.is_some());
    let events: Api<Event> = Api::namespaced(c.clone(), NS);
    wait_for("a NodeNotReady event", 20, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list events");
        list.items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("NodeNotReady")
                    && e.involved_object.kind.as_deref() == Some("Node")
                    && e.involved_object.name.as_deref() == Some(NODE)
                    && e.involved_object.uid == node.metadata.uid
            })
            .map(|_| ())
    })
    .await;
    for gone in ["short", "stopping"] {
        wait_for(&format!("pod {gone} to be removed"), 20, || async {
            pods.get_opt(gone)
                .await
                .expect("get a pod")
                .is_none()
                .then_some(())
        })
        .await;
    }
    for kept in ["forever", "default"] {
        let p = pods
            .get(kept)
            .await
            .expect("a pod still tolerating the taint");
        assert!(
            p.metadata.deletion_timestamp.is_none(),
            "{kept} was evicted"
        );
    }

    // The agent is back: its lease moves again, the taint goes.
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    let _agent = bg(async move {
        loop {
            renew(&leases).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    wait_for("the unreachable taint to go", 20, || async {
        let n = nodes.get(NODE).await.expect("get the node");
        unreachable_taints(&n).is_empty().then_some(())
    })
    .await;
    for kept in ["forever", "default"] {
        let p = pods
            .get(kept)
            .await
            .expect("a pod on a node that came back");
        assert!(
            p.metadata.deletion_timestamp.is_none(),
            "{kept} was evicted"
        );
    }
}
