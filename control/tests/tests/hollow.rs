//! Hollow nodes (`keel_node::hollow`, what `keel-bench hollow` runs by the
//! thousand) against an in-process API server and the real scheduler:
//! they register over the node gRPC protocol, renew their Leases, receive
//! the pods the scheduler binds to them, report them Running, and finish
//! a pod's graceful deletion.

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use keel_controllers::cache::Caches;
use keel_controllers::scheduler;
use keel_node::hollow::{HollowConfig, HollowNode, OnRunning};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use support::{bg, wait_for, Bg, TestServer};

const NODES: usize = 20;
const PODS: usize = 100;
const NODES_PER_CONN: usize = 8;

fn start_scheduler(server: &TestServer) -> Bg {
    let caches = Caches::new(server.in_process("keel-controller-manager"));
    let client = server.in_process(scheduler::run::SCHEDULER_NAME);
    bg(scheduler::run::run(client, caches))
}

/// Registers and runs `NODES` hollow nodes; returns their tasks and the
/// names of the pods they reported Running.
async fn start_hollow(server: &TestServer) -> (Vec<Bg>, Arc<Mutex<HashSet<String>>>) {
    let mut cfg = HollowConfig::new(vec![server.url.clone()], None, None);
    cfg.heartbeat_interval = Duration::from_secs(1);
    let cfg = Arc::new(cfg);
    let reported = Arc::new(Mutex::new(HashSet::new()));
    let on_running: OnRunning = {
        let reported = reported.clone();
        Arc::new(move |pod, _| {
            let name = pod.metadata.name.clone().unwrap_or_default();
            reported.lock().unwrap().insert(name);
        })
    };
    let mut tasks = Vec::new();
    let conns: Vec<_> = (0..NODES.div_ceil(NODES_PER_CONN))
        .map(|i| Arc::new(cfg.client(i).unwrap()))
        .collect();
    for i in 0..NODES {
        let client = conns[i / NODES_PER_CONN].clone();
        let name = format!("hollow-{i:02}");
        let node = HollowNode::register(client, cfg.clone(), &name, on_running.clone()).await;
        assert_eq!(node.name(), name);
        tasks.push(bg(node.run()));
    }
    (tasks, reported)
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "keel/pause",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }))
    .unwrap()
}

fn running_on_hollow(p: &Pod) -> bool {
    let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
    let status = p.status.as_ref();
    node.is_some_and(|n| n.starts_with("hollow-"))
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status.and_then(|s| s.pod_ip.as_deref()).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hollow_nodes_register_run_pods_and_finish_deletions() {
    let server = TestServer::start().await;
    let _scheduler = start_scheduler(&server);
    let (_nodes, reported) = start_hollow(&server).await;
    let client = server.client.clone();

    // Every node is registered Ready and holds a Lease it renews.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renewed = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
    let first = wait_for("every hollow node's lease", 20, || async {
        let list = leases.list(&ListParams::default()).await.ok()?;
        let ours: Vec<_> = list
            .items
            .iter()
            .filter(|l| {
                l.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("hollow-"))
            })
            .filter_map(renewed)
            .collect();
        (ours.len() == NODES).then_some(ours)
    })
    .await;
    wait_for("a lease renewal", 20, || async {
        let l = leases.get("hollow-00").await.ok()?;
        (renewed(&l)? != first[0]).then_some(())
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..PODS {
        pods.create(&PostParams::default(), &pod(&format!("p-{i:03}")))
            .await
            .unwrap();
    }
    let listed = wait_for("every pod Running on a hollow node", 25, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let running = list.items.iter().filter(|p| running_on_hollow(p)).count();
        (running == PODS).then_some(list.items)
    })
    .await;
    let nodes_used: HashSet<_> = listed
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    assert!(nodes_used.len() > 1, "pods spread over the hollow nodes");
    assert_eq!(reported.lock().unwrap().len(), PODS);

    // A graceful delete: the hollow node finishes it (nothing to stop).
    pods.delete("p-000", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("p-000 removed by its hollow node", 20, || async {
        matches!(pods.get_opt("p-000").await, Ok(None)).then_some(())
    })
    .await;
}
