//! `keel controller-manager`: the same control loops a replica runs in
//! process, run as their own process against a replica started with
//! `--disable-controllers`, through the kubeconfig the replica wrote (HTTPS
//! with the cluster CA and the admin token).

mod util;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use util::Cluster;

/// Kills the controller manager when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubeconfig(c: &Cluster) -> PathBuf {
    let _ = c.api_addr(0); // waits until the replica serves and wrote it
    c.replicas[0].data_dir.join("kubeconfig")
}

async fn client(path: &PathBuf) -> Client {
    let kc = Kubeconfig::read_from(path).expect("the replica's kubeconfig parses");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(cfg).expect("client builds")
}

fn replica_set(name: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "keel/pause"}]}
            }
        }
    }))
    .expect("a valid ReplicaSet")
}

async fn wait_until<F, Fut>(what: &str, secs: u64, log: impl Fn() -> String, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_run_out_of_process_through_a_kubeconfig() {
    let cluster = Cluster::start(1, &["--disable-controllers"]);
    let path = kubeconfig(&cluster);
    let c = client(&path).await;
    let rs: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    rs.create(&PostParams::default(), &replica_set("web", 3))
        .await
        .expect("create the ReplicaSet");
    // Without controllers anywhere, nothing acts on it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let web = ListParams::default().labels("app=web");
    assert!(pods.list(&web).await.unwrap().items.is_empty());

    let log_path = cluster.replicas[0].data_dir.with_extension("cm.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let _cm = Killed(
        Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("controller-manager")
            .arg("--kubeconfig")
            .arg(&path)
            .args(["--identity", "outside-1"])
            .args(["--leader-elect-lease-duration-s", "3"])
            .args(["--leader-elect-retry-period-ms", "200"])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start keel controller-manager"),
    );
    let log = || {
        format!(
            "controller-manager:\n{}\nreplica:\n{}",
            util::tail(&std::fs::read_to_string(&log_path).unwrap_or_default(), 40),
            util::tail(&cluster.log(0), 40)
        )
    };
    wait_until("3 pods of the ReplicaSet", 60, log, || async {
        pods.list(&web)
            .await
            .map(|l| l.items.len() == 3)
            .unwrap_or(false)
    })
    .await;
    // They were written over HTTPS by the out-of-process loop, which the
    // API server recorded as their field manager.
    for p in pods.list(&web).await.unwrap().items {
        let managers: Vec<String> = p
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect();
        assert!(
            managers.iter().any(|m| m == "replicaset-controller"),
            "{managers:?}"
        );
    }
    let lease: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
    let held = lease.get("keel-controller-manager").await.unwrap();
    assert_eq!(
        held.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("outside-1")
    );
    // The ReplicaSet's status comes from the same loop.
    wait_until("status.replicas = 3", 30, log, || async {
        rs.get("web")
            .await
            .map(|r| r.status.map(|s| s.replicas) == Some(3))
            .unwrap_or(false)
    })
    .await;
}
