//! Hollow nodes (Kubernetes' kubemark): simulated agents, thousands of them
//! in one process, for scale tests of the control plane.
//!
//! A hollow node speaks the real node protocol with the real agent's code:
//! it registers through [`register_until_ok`], renews its Lease in
//! `kube-node-lease` (and re-sends its status) through [`heartbeat_loop`],
//! and follows the pods bound to it through [`assign::watch_loop`]. Only the
//! runtime is missing: a pod it is given is reported Running at once (with
//! every container running and ready, a pod IP from the node's podCIDR) and
//! a pod being deleted is removed at once, as if its containers stopped.
//!
//! Hollow nodes share HTTP/2 connections ([`HollowConfig::client`]): one
//! [`ControlClient`] carries the calls and pod streams of many nodes, so a
//! few thousand nodes need tens of connections, not thousands.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use keel_proto::keelnode::PodStatusReport;
use serde_json::{json, Value};
use tonic::Code;

use crate::agent::assign::{self, PodSink};
use crate::agent::client::ControlClient;
use crate::agent::register::{heartbeat_loop, pod_cidr, register_until_ok, NodeBuilder};

/// Status reports retried this many times (with a short pause) before the
/// pod is given up; the watch brings it back after a resync.
const REPORT_TRIES: u32 = 10;
const REPORT_RETRY: Duration = Duration::from_millis(500);

/// What every hollow node of one process shares.
#[derive(Clone, Debug)]
pub struct HollowConfig {
    /// Control-plane URLs; node groups start on different ones.
    pub servers: Vec<String>,
    pub token: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
    /// Capacity every node reports (Kubernetes quantities).
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    /// Lease renewal period (the kubelet's default: 10 s).
    pub heartbeat_interval: Duration,
    /// How often the full NodeStatus rides along a renewal.
    pub status_interval: Duration,
    pub lease_duration_s: i32,
}

impl HollowConfig {
    /// Kubelet-like defaults: 10 s lease renewals, status every minute,
    /// 40 s leases.
    pub fn new(servers: Vec<String>, token: Option<String>, ca_pem: Option<Vec<u8>>) -> Self {
        HollowConfig {
            servers,
            token,
            ca_pem,
            cpu: "32".into(),
            memory: "128Gi".into(),
            max_pods: 110,
            heartbeat_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(60),
            lease_duration_s: 40,
        }
    }

    /// The `i`th shared connection: its server list starts at server
    /// `i % servers`, so groups of nodes spread over the replicas (and
    /// fail over like any agent).
    pub fn client(&self, i: usize) -> anyhow::Result<ControlClient> {
        let mut servers = self.servers.clone();
        if !servers.is_empty() {
            let n = servers.len();
            servers.rotate_left(i % n);
        }
        ControlClient::new(servers, self.token.clone(), self.ca_pem.clone())
    }
}

/// Called with each pod whose Running status the control plane accepted,
/// and when.
pub type OnRunning = Arc<dyn Fn(&Pod, Instant) + Send + Sync>;

/// A registered hollow node, ready to [`HollowNode::run`].
pub struct HollowNode {
    client: Arc<ControlClient>,
    cfg: Arc<HollowConfig>,
    builder: NodeBuilder,
    /// The first address of the node's podCIDR (pod IPs count up from it).
    cidr_base: Ipv4Addr,
    on_running: OnRunning,
}

impl HollowNode {
    /// Registers node `name` through `client` (retrying until it works),
    /// as an agent does at start.
    pub async fn register(
        client: Arc<ControlClient>,
        cfg: Arc<HollowConfig>,
        name: &str,
        on_running: OnRunning,
    ) -> HollowNode {
        let builder = NodeBuilder::hollow(name, &cfg.cpu, &cfg.memory, cfg.max_pods);
        let stored = register_until_ok(&client, &builder).await;
        let cidr_base = pod_cidr(&stored)
            .and_then(|c| c.parse::<ipnet::Ipv4Net>().ok())
            .map_or(Ipv4Addr::LOCALHOST, |n| n.network());
        HollowNode {
            client,
            cfg,
            builder,
            cidr_base,
            on_running,
        }
    }

    pub fn name(&self) -> &str {
        self.builder.name()
    }

    /// Heartbeats and follows the node's pods until dropped (aborted).
    pub async fn run(self) {
        let beats = heartbeat_loop(
            self.client.clone(),
            self.builder.clone(),
            self.cfg.heartbeat_interval,
            self.cfg.status_interval,
            self.cfg.lease_duration_s,
        );
        let name = self.builder.name().to_string();
        let sink = Pods {
            client: self.client.clone(),
            node: name.clone(),
            cidr_base: self.cidr_base,
            next_ip: 0,
            reported: HashSet::new(),
            on_running: self.on_running.clone(),
        };
        let watch = assign::watch_loop(self.client.clone(), &name, sink);
        tokio::join!(beats, watch);
    }
}

/// The hollow node's pods: what has been reported Running.
struct Pods {
    client: Arc<ControlClient>,
    node: String,
    cidr_base: Ipv4Addr,
    next_ip: u32,
    /// Uids reported (or being reported) Running.
    reported: HashSet<String>,
    on_running: OnRunning,
}

impl Pods {
    /// The next pod IP: .2 to .254 of the node's /24, round robin.
    fn pod_ip(&mut self) -> Ipv4Addr {
        let host = 2 + self.next_ip % 253;
        self.next_ip += 1;
        Ipv4Addr::from(u32::from(self.cidr_base) + host)
    }
}

impl PodSink for Pods {
    fn update(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            // Nothing runs: the containers are stopped already.
            self.reported.remove(&uid);
            tokio::spawn(delete(self.client.clone(), pod));
            return;
        }
        if finished(&pod) || !self.reported.insert(uid) {
            return;
        }
        let status = running_status(&pod, self.pod_ip());
        let on_running = self.on_running.clone();
        tokio::spawn(report(self.client.clone(), pod, status, on_running));
        tracing::trace!(node = %self.node, "hollow pod started");
    }

    fn removed(&mut self, uid: &str) {
        self.reported.remove(uid);
    }

    fn synced(&mut self, seen: &HashSet<String>) {
        self.reported.retain(|u| seen.contains(u));
    }
}

fn finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// The status a kubelet reports once every container of `pod` runs.
pub fn running_status(pod: &Pod, pod_ip: Ipv4Addr) -> Value {
    let now = crate::agent::time::now();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let containers = pod.spec.as_ref().map(|s| &s.containers[..]);
    let statuses: Vec<Value> = containers
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            json!({
                "name": c.name, "ready": true, "started": true, "restartCount": 0,
                "image": image, "imageID": format!("hollow://{image}"),
                "containerID": format!("hollow://{uid}/{}", c.name),
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    json!({
        "phase": "Running",
        "conditions": [cond("Initialized"), cond("Ready"), cond("ContainersReady")],
        "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": pod_ip.to_string(), "podIPs": [{"ip": pod_ip.to_string()}],
        "startTime": now,
        "containerStatuses": statuses,
        "qosClass": "Burstable",
    })
}

/// Reports `status`, retrying transient failures; a pod that is gone (or
/// replaced) is not retried.
async fn report(client: Arc<ControlClient>, pod: Pod, status: Value, on_running: OnRunning) {
    let meta = &pod.metadata;
    let req = PodStatusReport {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        status_json: status.to_string().into_bytes(),
    };
    for _ in 0..REPORT_TRIES {
        match client.report_status(req.clone()).await {
            Ok(()) => return on_running(&pod, Instant::now()),
            Err(s) if s.code() == Code::NotFound => return,
            Err(s) => {
                tracing::debug!(pod = %req.name, error = %s.message(), "hollow status report failed");
                tokio::time::sleep(REPORT_RETRY).await;
            }
        }
    }
    tracing::warn!(pod = %req.name, "hollow status report gave up");
}

async fn delete(client: Arc<ControlClient>, pod: Pod) {
    let meta = &pod.metadata;
    let (ns, name) = (meta.namespace.as_deref(), meta.name.as_deref());
    let uid = meta.uid.as_deref().unwrap_or_default();
    if let Err(s) = client
        .delete_pod(ns.unwrap_or_default(), name.unwrap_or_default(), uid)
        .await
    {
        tracing::debug!(pod = ?name, error = %s.message(), "hollow pod delete failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "a", "image": "keel/pause"},
                                    {"name": "b", "image": "keel/echo"}]},
        }))
        .unwrap()
    }

    #[test]
    fn running_status_has_every_container_ready() {
        let s = running_status(&pod(), Ipv4Addr::new(127, 16, 0, 2));
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "127.16.0.2");
        let names: Vec<&str> = s["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(s["containerStatuses"][1]["state"]["running"].is_object());
        let ready = s["conditions"].as_array().unwrap().iter();
        assert!(ready
            .clone()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"));
    }

    #[test]
    fn pod_ips_stay_in_the_node_block() {
        let mut pods = Pods {
            client: Arc::new(
                ControlClient::new(vec!["http://127.0.0.1:1".into()], None, None).unwrap(),
            ),
            node: "n".into(),
            cidr_base: Ipv4Addr::new(127, 16, 3, 0),
            next_ip: 0,
            reported: HashSet::new(),
            on_running: Arc::new(|_, _| {}),
        };
        let ips: Vec<Ipv4Addr> = (0..300).map(|_| pods.pod_ip()).collect();
        assert_eq!(ips[0], Ipv4Addr::new(127, 16, 3, 2));
        assert_eq!(ips[252], Ipv4Addr::new(127, 16, 3, 254));
        assert_eq!(ips[253], Ipv4Addr::new(127, 16, 3, 2));
    }
}
