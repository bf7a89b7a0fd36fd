//! `keel agent`: flags mapped onto [`keel_node::agent::AgentConfig`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use keel_node::agent::AgentConfig;
use keel_node::ingress::IngressConfig;
use keel_node::podnet::NetworkMode;
use keel_node::runtime::docker::DockerRuntime;
use keel_node::runtime::Runtime;

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Kubeconfig with the control plane's URL, CA and token (as written
    /// by `keel server` into `<data-dir>/kubeconfig`) or node certificate.
    /// Not with --join, which writes `<root-dir>/kubeconfig`.
    #[arg(long, required_unless_present = "join", conflicts_with = "join")]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub join: crate::join::JoinArgs,
    /// Control-plane API URLs to use, in order of preference (repeatable;
    /// default: the kubeconfig's server). The agent moves to the next one
    /// when a replica stops answering.
    #[arg(long)]
    pub server: Vec<String>,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Where the agent keeps container state, logs and volumes. Kept
    /// across restarts: a new agent re-adopts the running containers.
    #[arg(long, default_value = "./keel-agent")]
    pub root_dir: PathBuf,
    /// Container runtime: `exec` runs containers as supervised processes
    /// (images from --image-dir and keel's built-in ones); `docker` runs
    /// them in the local Docker Engine (`DOCKER_HOST` or its default
    /// socket), from images already present there (nothing is pulled);
    /// `keel` (the default) isolates them (namespaces, image rootfs,
    /// cgroups; needs root, else falls back to `exec` and says why).
    #[arg(long, value_enum, default_value_t = RuntimeKind::Keel)]
    pub runtime: RuntimeKind,
    /// Local image directory for the exec runtime
    /// (`<dir>/<name>/<tag>/image.json`; default `<root-dir>/images`).
    #[arg(long)]
    pub image_dir: Option<PathBuf>,
    /// Address of the agent's log service (what `kubectl logs` reaches).
    #[arg(long, default_value = "127.0.0.1:10250")]
    pub listen_logs: SocketAddr,
    /// The node's address (InternalIP), also hostNetwork pods' IP.
    #[arg(long, default_value = "127.0.0.1")]
    pub node_ip: IpAddr,
    /// Extra node labels, `key=value` (repeatable).
    #[arg(long = "node-label")]
    pub node_labels: Vec<String>,
    /// How often the node lease is renewed, in ms.
    #[arg(long, default_value_t = 10_000)]
    pub heartbeat_interval_ms: u64,
    /// First restart back-off of a failed container, in ms (doubles up to
    /// 300 s, as the kubelet's).
    #[arg(long, default_value_t = 10_000)]
    pub restart_backoff_base_ms: u64,
    /// How often node and container CPU/memory are sampled, in ms; `kubectl
    /// top` and the HPA see the CPU rate between the last two samples.
    #[arg(long, default_value_t = 5_000)]
    pub metrics_interval_ms: u64,
    #[command(flatten)]
    pub ingress: IngressArgs,
    #[command(flatten)]
    pub dns: DnsArgs,
    #[command(flatten)]
    pub images: crate::image::AgentImageArgs,
    /// Do not run the Service proxy on this node (cluster IPs and
    /// NodePorts are then not served by this agent).
    #[arg(long)]
    pub disable_proxy: bool,
    /// Pod network: `loopback` (the default) shares the agent's network
    /// namespace, pods get 127.x IPs (safe on any host); `netns` gives each
    /// pod a network namespace on the `keel0` bridge with an IP from the
    /// node's podCIDR (the server's --cluster-cidr, e.g. 10.244.0.0/16) and
    /// routes other nodes' podCIDRs via their --node-ip (host-gw). netns
    /// changes the agent's network namespace: use it on a host dedicated to
    /// the cluster. Needs --runtime keel.
    #[arg(long, default_value = "loopback")]
    pub network: keel_node::podnet::NetworkMode,
}

/// The built-in Ingress router's listeners (class `keel`).
#[derive(Args, Debug, Clone, Default)]
pub struct IngressArgs {
    /// Address of the Ingress router's HTTP listener (default: the node
    /// IP, port 80). Several agents may share one address.
    #[arg(long)]
    pub ingress_http: Option<SocketAddr>,
    /// Address of the Ingress router's HTTPS listener (default: the node
    /// IP, port 443).
    #[arg(long)]
    pub ingress_https: Option<SocketAddr>,
    /// Run no Ingress router on this node.
    #[arg(long)]
    pub disable_ingress: bool,
}

impl IngressArgs {
    /// The router's listeners for a node at `node_ip`; `None` when disabled.
    pub fn config(&self, node_ip: IpAddr) -> Option<IngressConfig> {
        (!self.disable_ingress).then(|| IngressConfig {
            http: Some(self.ingress_http.unwrap_or(SocketAddr::new(node_ip, 80))),
            https: Some(self.ingress_https.unwrap_or(SocketAddr::new(node_ip, 443))),
        })
    }
}

/// Cluster DNS flags (kubelet's names where it has them).
#[derive(Args, Debug, Clone, Default)]
pub struct DnsArgs {
    /// The cluster's DNS domain, served by every agent and written into
    /// pods' resolv.conf search lists.
    #[arg(long, default_value = keel_node::dns::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// The cluster DNS address, where the agent listens (port 53) and pods'
    /// resolv.conf points (default: the kube-system/kube-dns Service's
    /// cluster IP, followed as it changes).
    #[arg(long)]
    pub cluster_dns: Option<IpAddr>,
    /// Upstream server for names outside the cluster domain, `IP` or
    /// `IP:PORT` (repeatable; default: the nameservers of the host's
    /// /etc/resolv.conf, minus the cluster DNS address).
    #[arg(long = "dns-upstream", value_parser = parse_upstream)]
    pub dns_upstreams: Vec<SocketAddr>,
}

/// `IP` (port 53) or `IP:PORT`, as `--dns-upstream` takes it.
fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, keel_node::dns::DNS_PORT));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

impl DnsArgs {
    /// The agent's DNS configuration.
    pub fn config(&self) -> keel_node::dns::DnsConfig {
        keel_node::dns::DnsConfig {
            cluster_domain: self.cluster_domain.clone(),
            cluster_dns: self.cluster_dns,
            upstreams: self.dns_upstreams.clone(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum RuntimeKind {
    Exec,
    Docker,
    /// keel's isolating runtime (namespaces, rootfs, cgroups); falls back to
    /// `exec`, saying why, when not root or the kernel lacks a feature.
    Keel,
}

/// The host name, the default node name (as the kubelet's).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "keel-node".to_string())
}

impl AgentArgs {
    /// The agent's configuration; `node_name` overrides `--node-name`.
    /// Errors: an unreadable kubeconfig, a root dir that cannot be
    /// created, a bad --node-label, or (docker) an unreachable daemon.
    pub async fn config(&self, node_name: Option<String>) -> anyhow::Result<AgentConfig> {
        let name = node_name
            .or_else(|| self.node_name.clone())
            .unwrap_or_else(hostname);
        std::fs::create_dir_all(&self.root_dir)
            .with_context(|| format!("--root-dir {}", self.root_dir.display()))?;
        let kubeconfig = match &self.kubeconfig {
            Some(k) => k.clone(),
            None => self.join.ensure_joined(&name, &self.root_dir).await?,
        };
        let auth = keel_node::agent::read_kubeconfig(&kubeconfig)
            .with_context(|| format!("--kubeconfig {}", kubeconfig.display()))?;
        let servers = match self.server.is_empty() {
            true => vec![auth.server.clone()],
            false => self.server.clone(),
        };
        let identity = crate::join::node_identity(&auth, &kubeconfig);
        let exe = std::env::current_exe().context("locating the keel binary")?;
        if self.network == NetworkMode::Netns && self.runtime != RuntimeKind::Keel {
            bail!("--network netns needs --runtime keel (pods join per-pod network namespaces)");
        }
        let runtime: Arc<dyn Runtime> = match self.runtime {
            RuntimeKind::Exec => {
                keel_node::agent::exec_runtime(&self.root_dir, exe, self.image_dir.clone())?
            }
            RuntimeKind::Docker => {
                Arc::new(DockerRuntime::connect(&name).await?.with_keel_binary(exe))
            }
            RuntimeKind::Keel if self.network == NetworkMode::Netns => {
                keel_node::agent::keel_runtime_netns(&self.root_dir, exe, self.image_dir.clone())?
            }
            RuntimeKind::Keel => {
                keel_node::agent::keel_runtime(&self.root_dir, exe, self.image_dir.clone())?
            }
        };
        let mut cfg = AgentConfig::new(name, servers, &self.root_dir, runtime);
        cfg.token = auth.token;
        cfg.ca_pem = auth.ca_pem;
        cfg.node_identity = identity;
        cfg.listen_logs = self.listen_logs;
        cfg.node_ip = self.node_ip;
        cfg.ingress = self.ingress.config(self.node_ip);
        for l in &self.node_labels {
            let Some((k, v)) = l.split_once('=') else {
                bail!("--node-label {l:?} is not key=value");
            };
            cfg.labels.insert(k.to_string(), v.to_string());
        }
        cfg.heartbeat_interval = Duration::from_millis(self.heartbeat_interval_ms.max(100));
        cfg.backoff_base = Duration::from_millis(self.restart_backoff_base_ms.max(100));
        cfg.metrics_interval = Duration::from_millis(self.metrics_interval_ms.max(100));
        cfg.dns = self.dns.config();
        cfg.dns.at_pod_gateway = self.network == NetworkMode::Netns;
        cfg.proxy = !self.disable_proxy;
        // The proxy's nft table sends the cluster DNS address to the bridge.
        cfg.dns.cluster_ip_redirected = cfg.dns.at_pod_gateway && cfg.proxy;
        cfg.network = self.network;
        cfg.images = Some(self.images.config(&self.root_dir, self.image_dir.clone())?);
        Ok(cfg)
    }
}

/// `keel agent`: runs until SIGINT/SIGTERM; containers keep running and
/// the next agent on the same --root-dir re-adopts them.
pub async fn run(a: AgentArgs) -> anyhow::Result<()> {
    let cfg = a.config(None).await?;
    keel_node::agent::run(cfg, crate::server::shutdown_signal()).await
}
