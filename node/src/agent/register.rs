//! The Node object: registration and the heartbeat loop.
//!
//! The node is registered (retrying forever, with back-off, across servers)
//! before anything else, because the stored Node carries the podCIDR pod IPs
//! come from. Afterwards the lease is renewed every heartbeat interval and
//! the full status (refreshed `lastHeartbeatTime`) rides along every status
//! interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::ControlClient;
use super::AgentConfig;

/// The kubelet version keel reports.
pub const KUBELET_VERSION: &str = "v1.33.0-keel";
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Builds the Node (and its status) from the configuration and the host.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: String,
    labels: Value,
    /// The local-path volume root (see [`super::storage`]) and the Ingress
    /// router's addresses.
    annotations: Value,
    capacity: Value,
    addresses: Value,
    node_info: Value,
    logs_port: u16,
    /// When the Ready condition last changed: the agent is Ready from start.
    since: String,
}

impl NodeBuilder {
    pub fn new(cfg: &AgentConfig, logs_port: u16) -> Self {
        let hostname =
            read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| cfg.node_name.clone());
        let arch = go_arch();
        let mut labels = serde_json::Map::new();
        labels.insert("kubernetes.io/hostname".into(), json!(cfg.node_name));
        labels.insert("kubernetes.io/os".into(), json!("linux"));
        labels.insert("kubernetes.io/arch".into(), json!(arch));
        labels.insert("beta.kubernetes.io/os".into(), json!("linux"));
        labels.insert("beta.kubernetes.io/arch".into(), json!(arch));
        for (k, v) in &cfg.labels {
            labels.insert(k.clone(), json!(v));
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let capacity = json!({
            "cpu": cfg.cpu.clone().unwrap_or_else(|| cpus.to_string()),
            "memory": cfg.memory.clone().unwrap_or_else(memory_ki),
            "pods": cfg.max_pods.to_string(),
            "ephemeral-storage": "0",
        });
        let volume_root = super::storage::volume_root(&cfg.root_dir);
        let mut annotations = serde_json::Map::new();
        annotations.insert(
            super::storage::ROOT_ANNOTATION.into(),
            json!(volume_root.to_string_lossy()),
        );
        // How pods are networked here: the API server warns that a
        // NetworkPolicy is not enforced while a node is in loopback mode.
        annotations.insert(
            keel_apimachinery::pod_network::ANNOTATION.into(),
            json!(cfg.network.as_str()),
        );
        // Where this node's Ingress router listens, for Ingress status.
        let ingress = cfg.ingress.iter();
        for (key, addr) in ingress.flat_map(|i| {
            [
                (crate::ingress::HTTP_ANNOTATION, i.http),
                (crate::ingress::HTTPS_ANNOTATION, i.https),
            ]
        }) {
            if let Some(addr) = addr {
                annotations.insert(key.into(), json!(addr.to_string()));
            }
        }
        NodeBuilder {
            name: cfg.node_name.clone(),
            labels: Value::Object(labels),
            annotations: Value::Object(annotations),
            capacity,
            addresses: json!([
                {"type": "InternalIP", "address": cfg.node_ip.to_string()},
                {"type": "Hostname", "address": hostname},
            ]),
            node_info: node_info(arch),
            logs_port,
            since: super::time::now(),
        }
    }

    /// A simulated node's (see [`crate::hollow`]): the given capacity, the
    /// standard labels, a loopback address and no host facts (no volume
    /// root, no Ingress router, no agent port), so thousands of them cost
    /// nothing to build.
    pub fn hollow(name: &str, cpu: &str, memory: &str, max_pods: u32) -> Self {
        let arch = go_arch();
        NodeBuilder {
            name: name.to_string(),
            labels: json!({
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "node.keel.dev/hollow": "true",
            }),
            annotations: json!({
                keel_apimachinery::pod_network::ANNOTATION:
                    crate::podnet::NetworkMode::Loopback.as_str(),
            }),
            capacity: json!({
                "cpu": cpu, "memory": memory, "pods": max_pods.to_string(),
                "ephemeral-storage": "0",
            }),
            addresses: json!([
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ]),
            node_info: node_info(arch),
            logs_port: 0,
            since: super::time::now(),
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full Node for Register.
    pub fn node(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": self.labels,
                "annotations": self.annotations,
            },
            "spec": {},
            "status": self.status(),
        })
    }

    /// The NodeStatus with `lastHeartbeatTime` = now.
    pub fn status(&self) -> Value {
        let now = super::time::now();
        let cond = |t: &str, status: &str, reason: &str, message: &str| {
            json!({
                "type": t, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": self.since,
            })
        };
        json!({
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "addresses": self.addresses,
            "nodeInfo": self.node_info,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.logs_port}},
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
        })
    }
}

/// `spec.podCIDR` of a stored Node.
pub fn pod_cidr(node: &Value) -> Option<String> {
    node.pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Registers until it succeeds; returns the stored Node.
pub async fn register_until_ok(client: &ControlClient, builder: &NodeBuilder) -> Value {
    let mut delay = Duration::from_millis(500);
    loop {
        let body = builder.node().to_string().into_bytes();
        match client.register(body).await {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(node) => return node,
                Err(e) => tracing::warn!(error = %e, "Register answered with invalid JSON"),
            },
            Err(s) => {
                tracing::warn!(code = ?s.code(), error = %s.message(), "register failed; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

/// Renews the lease forever; sends the status at least every
/// `status_interval`. Failures retry sooner (from 500 ms, doubling up to the
/// heartbeat interval) so a failover renews the lease promptly.
pub async fn heartbeat_loop(
    client: Arc<ControlClient>,
    builder: NodeBuilder,
    interval: Duration,
    status_interval: Duration,
    lease_duration_s: i32,
) {
    let mut last_status: Option<Instant> = Some(Instant::now());
    let mut retry = Duration::from_millis(500);
    loop {
        let send_status = last_status.is_none_or(|t| t.elapsed() >= status_interval);
        let status = match send_status {
            true => builder.status().to_string().into_bytes(),
            false => Vec::new(),
        };
        match client
            .heartbeat(&builder.name, lease_duration_s, status)
            .await
        {
            Ok(()) => {
                if send_status {
                    last_status = Some(Instant::now());
                }
                retry = Duration::from_millis(500);
                tokio::time::sleep(interval).await;
            }
            Err(s) => {
                tracing::warn!(code = ?s.code(), error = %s.message(), "heartbeat failed");
                // After an outage, send the status with the next success.
                last_status = None;
                tokio::time::sleep(retry.min(interval)).await;
                retry = (retry * 2).min(interval);
            }
        }
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Kubernetes' (Go's) name for the architecture.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// MemTotal from /proc/meminfo as a `Ki` quantity.
fn memory_ki() -> String {
    let kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!("{kib}Ki")
}

fn node_info(arch: &str) -> Value {
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    json!({
        "machineID": read_trimmed("/etc/machine-id").unwrap_or_default(),
        "systemUUID": read_trimmed("/sys/class/dmi/id/product_uuid").unwrap_or_default(),
        "bootID": read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
        "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        "osImage": os_image,
        "containerRuntimeVersion": "exec://keel",
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": "",
        "operatingSystem": "linux",
        "architecture": arch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_in_ki() {
        let m = memory_ki();
        assert!(m.ends_with("Ki") && m.len() > 2, "{m}");
    }

    #[test]
    fn pod_cidr_reads_spec() {
        assert_eq!(
            pod_cidr(&json!({"spec": {"podCIDR": "127.16.3.0/24"}})).as_deref(),
            Some("127.16.3.0/24")
        );
        assert_eq!(pod_cidr(&json!({"spec": {}})), None);
    }
}
