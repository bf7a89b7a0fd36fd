//! The node agent (the kubelet's job): registers the node, keeps its lease,
//! follows the pods bound to it over `WatchPods`, runs them through a
//! [`Runtime`], reports their status, and serves container logs.
//!
//! One concept per module:
//! - [`kubeconfig`]: server URL, CA and token from the kubeconfig keel writes;
//! - [`client`]: the gRPC channel to the control plane (failover between
//!   servers, TLS, bearer token);
//! - [`register`]: the Node object, registration and the heartbeat loop;
//! - [`api`]: a `kube::Client` for the networking loops (typed watches);
//! - [`cache`]: reflector caches on it (Services for the pod environment
//!   and the Service proxy, EndpointSlices for the proxy);
//! - [`assign`]: the `WatchPods` stream (resume from the last revision);
//! - [`manager`]: one worker per pod, orphan cleanup after a snapshot;
//! - [`pod`]: the per-pod sync loop (containers, probes, volumes, status);
//! - [`events`]: core/v1 Events, sent in the background;
//! - [`ipam`]: pod IPs from the node's podCIDR, persisted;
//! - [`storage`]: local-path volumes (published root, reclaim of deleted ones);
//! - [`logs`]: the `AgentService` log server and its pod index;
//! - [`exec`]: `AgentService` exec, attach and port-forward;
//! - [`serving`]: the agent port's TLS (serving certificate from the
//!   cluster CA, only the API server's client certificate accepted);
//! - [`metrics`]: node and container CPU/memory samples, `AgentService.Stats`
//!   and the kubelet-style `/metrics/resource` on the same port;
//! - the Ingress router ([`crate::ingress`]) when [`AgentConfig::ingress`] is set;
//! - cluster DNS ([`crate::dns`]), spawned here too.
//!
//! On-disk layout under [`AgentConfig::root_dir`]:
//! ```text
//! runtime/                          exec runtime state (see [`exec_runtime`])
//! ipam.json                         pod uid -> IP
//! pods/<uid>/ns/net                 netns mode: the pod's pinned network namespace
//! pods/<uid>/state.json             restart counts, last exits, init progress
//! pods/<uid>/resolv.conf            the pod's DNS configuration (env KEEL_RESOLV_CONF)
//! pods/<uid>/volumes/<volume>/      emptyDir, configMap, secret contents
//! pods/<uid>/logs/<container>/<restartCount>.log
//! pods/<uid>/image-leases/<container>  store image a container uses (see [`crate::image::leases`])
//! storage/pvc-<uid>_<ns>_<claim>/   local-path persistent volumes
//! image-store/                      the OCI image store (default; see [`crate::image`])
//! ```
//!
//! Shutdown (the `shutdown` future of [`run`]) stops the agent only: the
//! containers keep running and the next agent on the same root directory
//! re-adopts them, like a kubelet restart.

pub mod api;
pub mod assign;
pub mod cache;
pub mod client;
pub mod events;
pub mod exec;
pub mod ipam;
pub mod join;
pub mod kubeconfig;
pub mod logs;
pub mod manager;
pub mod metrics;
pub mod node_cert;
pub mod pod;
pub mod register;
pub mod rotation;
pub mod serving;
pub mod storage;
mod tasks;
pub mod time;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::runtime::exec::{ExecConfig, ExecRuntime};
use crate::runtime::Runtime;

pub use kubeconfig::{read_kubeconfig, KubeconfigAuth};

/// Everything the agent needs. Build it with [`AgentConfig::new`] and
/// override fields as needed.
#[derive(Clone)]
pub struct AgentConfig {
    /// The Node object's name.
    pub node_name: String,
    /// Control-plane URLs (`https://host:port` or `http://host:port` for an
    /// API running with `--insecure-http`); tried in turn on failure.
    pub servers: Vec<String>,
    /// Bearer token sent with every call.
    pub token: Option<String>,
    /// The client certificate of the Ingress router's API client when it
    /// differs from the agent's: the router reads every Ingress and TLS
    /// Secret, which a node identity may not (`keel up` issues each
    /// agent's router an identity in `system:keel:ingress-routers`, bound
    /// to a read-only role). Not rotated: `keel up` issues a new one at
    /// every start.
    pub ingress_identity: Option<rotation::NodeIdentity>,
    /// PEM of the cluster CA, required for `https://` servers.
    pub ca_pem: Option<Vec<u8>>,
    /// Agent state (see the module docs); stable across agent restarts.
    pub root_dir: PathBuf,
    pub runtime: Arc<dyn Runtime>,
    /// Where the `AgentService` (logs, exec, port-forward, stats) and
    /// `GET /metrics/resource` listen; port 0 picks one, which is then
    /// advertised in the Node's `daemonEndpoints.kubeletEndpoint`. Served
    /// over TLS for the API server only (see [`serving`]); without a
    /// cluster CA, in plaintext and on a loopback address only.
    pub listen_logs: SocketAddr,
    /// InternalIP of the node; hostNetwork pods get it as their IP.
    pub node_ip: IpAddr,
    /// Extra Node labels (on top of hostname, os and arch).
    pub labels: BTreeMap<String, String>,
    /// Capacity overrides (Kubernetes quantities); `None` = measured.
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub max_pods: u32,
    /// How often the node lease is renewed.
    pub heartbeat_interval: Duration,
    pub lease_duration_s: i32,
    /// How often the full node status is sent (with a heartbeat).
    pub status_interval: Duration,
    /// Container restart back-off: first delay, cap, and how long a container
    /// must run before its back-off is forgotten.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub backoff_reset: Duration,
    /// How often each pod worker re-examines its containers.
    pub sync_interval: Duration,
    /// The Ingress router's listeners; `None` runs no router.
    pub ingress: Option<crate::ingress::IngressConfig>,
    /// Cluster DNS: the zone, its address, upstreams (see [`crate::dns`]).
    pub dns: crate::dns::DnsConfig,
    /// Run the Service proxy ([`crate::proxy`]) on this node.
    pub proxy: bool,
    /// The image store and pull settings; `None`: only built-in and
    /// local-directory images (nothing is pulled).
    pub images: Option<crate::image::AgentImages>,
    /// How often node and container usage is sampled; CPU rates served to
    /// the metrics API span the last two samples.
    pub metrics_interval: Duration,
    /// Loopback (pods share the agent's network namespace) or netns (a
    /// namespace per pod, bridge, host-gw routes: see [`crate::podnet`]).
    /// Netns mode needs the isolating runtime ([`keel_runtime_netns`]).
    pub network: crate::podnet::NetworkMode,
    /// The node's own client certificate (`keel agent --join`), used
    /// instead of the token and rotated before it expires when it names
    /// a kubeconfig.
    pub node_identity: Option<rotation::NodeIdentity>,
}

impl AgentConfig {
    /// A configuration with Kubernetes' defaults: 10 s heartbeats, 40 s
    /// lease, 110 pods, back-off 10 s doubling up to 300 s.
    pub fn new(
        node_name: impl Into<String>,
        servers: Vec<String>,
        root_dir: impl Into<PathBuf>,
        runtime: Arc<dyn Runtime>,
    ) -> Self {
        AgentConfig {
            node_name: node_name.into(),
            servers,
            token: None,
            ingress_identity: None,
            ca_pem: None,
            root_dir: root_dir.into(),
            runtime,
            listen_logs: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10250),
            node_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            labels: BTreeMap::new(),
            cpu: None,
            memory: None,
            max_pods: 110,
            heartbeat_interval: Duration::from_secs(10),
            lease_duration_s: 40,
            status_interval: Duration::from_secs(60),
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(300),
            backoff_reset: Duration::from_secs(600),
            sync_interval: Duration::from_millis(500),
            ingress: None,
            dns: crate::dns::DnsConfig::default(),
            proxy: true,
            images: None,
            metrics_interval: Duration::from_secs(5),
            network: crate::podnet::NetworkMode::Loopback,
            node_identity: None,
        }
    }
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("node_name", &self.node_name)
            .field("servers", &self.servers)
            .field("root_dir", &self.root_dir)
            .field("runtime", &self.runtime.name())
            .field("listen_logs", &self.listen_logs)
            .field("node_ip", &self.node_ip)
            .field("ingress", &self.ingress)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

/// The exec runtime with its state in `<root_dir>/runtime`, the layout the
/// agent documents. `keel_binary` runs supervisors and built-in images.
pub fn exec_runtime(
    root_dir: &Path,
    keel_binary: PathBuf,
    image_dir: Option<PathBuf>,
) -> anyhow::Result<Arc<dyn Runtime>> {
    let rt = ExecRuntime::new(ExecConfig {
        state_dir: root_dir.join("runtime"),
        keel_binary,
        image_dir,
    })?;
    Ok(Arc::new(rt))
}

/// The isolating runtime (`--runtime keel`) with its state in
/// `<root_dir>/runtime`, or, when this host cannot run it (not root, no
/// overlayfs, a cgroup controller missing), the exec runtime, after
/// printing what is missing.
pub fn keel_runtime(
    root_dir: &Path,
    keel_binary: PathBuf,
    image_dir: Option<PathBuf>,
) -> anyhow::Result<Arc<dyn Runtime>> {
    use crate::runtime::isolated::{missing_features, IsolatedConfig, IsolatedRuntime};
    let config = IsolatedConfig::new(ExecConfig {
        state_dir: root_dir.join("runtime"),
        keel_binary: keel_binary.clone(),
        image_dir: image_dir.clone(),
    });
    let missing = missing_features(&config.cgroup_mount);
    if !missing.is_empty() {
        let why = missing.join(", ");
        eprintln!("keel agent: the keel runtime is unavailable ({why}); using the exec runtime");
        tracing::warn!(missing = %why, "keel runtime unavailable, using exec");
        return exec_runtime(root_dir, keel_binary, image_dir);
    }
    let runtime = IsolatedRuntime::new(config)?;
    // Leftovers of pods whose agent and supervisors were killed; running
    // pods are re-adopted and left alone.
    let swept = runtime.sweep_stale()?;
    let removed = swept.pod_dirs.len() + swept.cgroups.len() + swept.mounts.len();
    if removed > 0 {
        tracing::info!(
            pod_dirs = swept.pod_dirs.len(),
            cgroups = swept.cgroups.len(),
            mounts = swept.mounts.len(),
            "removed leftovers of stopped pods"
        );
    }
    for e in &swept.errors {
        tracing::warn!("startup sweep: {e}");
    }
    Ok(Arc::new(runtime))
}

/// The isolating runtime for netns mode: containers join the network
/// namespaces the agent pins under `<root_dir>/pods`. Unlike
/// [`keel_runtime`] there is no fallback: the exec runtime cannot put a
/// pod in a namespace, so a host that cannot isolate is an error naming
/// what is missing.
pub fn keel_runtime_netns(
    root_dir: &Path,
    keel_binary: PathBuf,
    image_dir: Option<PathBuf>,
) -> anyhow::Result<Arc<dyn Runtime>> {
    use crate::runtime::isolated::{missing_features, IsolatedConfig, IsolatedRuntime};
    let mut config = IsolatedConfig::new(ExecConfig {
        state_dir: root_dir.join("runtime"),
        keel_binary,
        image_dir,
    });
    let missing = missing_features(&config.cgroup_mount);
    if !missing.is_empty() {
        anyhow::bail!(
            "--network netns needs the keel runtime, which is unavailable here ({})",
            missing.join(", ")
        );
    }
    config.pod_netns_root = Some(root_dir.join("pods"));
    Ok(Arc::new(IsolatedRuntime::new(config)?))
}

/// What every part of the agent shares once the node is registered.
pub struct Ctx {
    pub cfg: AgentConfig,
    pub client: Arc<client::ControlClient>,
    pub events: events::Recorder,
    pub ipam: Mutex<ipam::Ipam>,
    pub index: Arc<logs::PodIndex>,
    /// The cluster DNS address for pods' resolv.conf.
    pub dns: crate::dns::DnsInfo,
    /// Every Service of the cluster, for the pods' Service environment
    /// variables; `None` when no API client could be built.
    pub services: Option<cache::Cache<Service>>,
    /// Netns mode: the node's pod network, set once the node is registered
    /// with a podCIDR (pods wait for it).
    pub podnet: std::sync::OnceLock<crate::podnet::PodNet>,
    /// The agent's API client for TokenRequests (pods' service account
    /// tokens); `None` when none could be built.
    pub api: Option<kube::Client>,
}

impl Ctx {
    pub fn runtime(&self) -> &dyn Runtime {
        self.cfg.runtime.as_ref()
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_root().join(uid)
    }

    /// `<root>/pods`, the parent of every pod directory.
    pub fn pods_root(&self) -> PathBuf {
        self.cfg.root_dir.join("pods")
    }
}

/// Runs the agent until `shutdown` completes (or a fatal setup error).
///
/// Control-plane outages are not errors: every loop retries with back-off
/// and moves on to the next server. On shutdown the containers keep running,
/// and the Service proxy's listeners close (other agents on the host keep
/// serving the same cluster IPs).
pub async fn run(cfg: AgentConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    std::fs::create_dir_all(cfg.root_dir.join("pods"))
        .with_context(|| format!("create {}", cfg.root_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(cfg.listen_logs)
        .await
        .with_context(|| format!("listen on {}", cfg.listen_logs))?;
    let logs_port = listener.local_addr()?.port();
    let client = Arc::new(
        client::ControlClient::new(cfg.servers.clone(), cfg.token.clone(), cfg.ca_pem.clone())?
            .with_identity(cfg.node_identity.clone()),
    );
    let tasks = tasks::Tasks::default();
    if let (Some(identity), Some(ca), Some(server)) =
        (&cfg.node_identity, &cfg.ca_pem, cfg.servers.first())
    {
        tasks.spawn(rotation::run(
            identity.clone(),
            cfg.node_name.clone(),
            server.clone(),
            ca.clone(),
            client.clone(),
        ));
    }
    let index = Arc::new(logs::PodIndex::new(cfg.root_dir.clone()));
    let sampler = Arc::new(metrics::Sampler::new(cfg.runtime.clone()));
    tasks.spawn(sampler.clone().run(cfg.metrics_interval));
    start_agent_port(&cfg, &tasks, listener, index.clone(), sampler)?;
    let events = events::Recorder::start(&tasks, client.clone(), cfg.node_name.clone());
    let ipam = ipam::Ipam::load(&cfg.root_dir)?;
    let dns = start_dns(&cfg, &tasks)?;
    let services = start_networking(&cfg, &dns, &tasks);
    let api = api::client(&cfg, "keel-agent")
        .inspect_err(|e| tracing::error!(error = %e, "no API client: no service account tokens"))
        .ok();
    let ctx = Ctx {
        api,
        cfg,
        client,
        events,
        ipam: Mutex::new(ipam),
        index,
        dns,
        services,
        podnet: std::sync::OnceLock::new(),
    };
    let result = tokio::select! {
        () = shutdown => Ok(()),
        r = run_registered(ctx, logs_port, tasks.clone()) => r,
    };
    tasks.shutdown().await;
    result
}

/// Serves the agent port: over TLS once its serving certificate is
/// issued, or, without a cluster CA, in plaintext on loopback only (see
/// [`serving`]). Errors: plaintext on another address, a bad CA.
fn start_agent_port(
    cfg: &AgentConfig,
    tasks: &tasks::Tasks,
    listener: tokio::net::TcpListener,
    index: Arc<logs::PodIndex>,
    sampler: Arc<metrics::Sampler>,
) -> anyhow::Result<()> {
    let runtime = cfg.runtime.clone();
    let Some(ca) = &cfg.ca_pem else {
        let addr = listener.local_addr()?;
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the agent port {addr} would serve exec, logs and port-forward without \
             authentication: there is no cluster CA (the control plane is on plain HTTP); \
             listen on a loopback address or use a control plane with TLS"
        );
        tracing::warn!(%addr, "no cluster CA: the agent port serves plaintext without authentication (loopback only)");
        tasks.spawn(logs::serve(listener, index, runtime, sampler, None));
        return Ok(());
    };
    let slot = Arc::new(serving::CertSlot::default());
    let tls = serving::server_config(ca, slot.clone())?;
    let (ready, issued) = tokio::sync::oneshot::channel();
    tasks.spawn(serving::run(cfg.clone(), slot, ready));
    tasks.spawn(async move {
        if issued.await.is_ok() {
            logs::serve(listener, index, runtime, sampler, Some(tls)).await;
        }
    });
    Ok(())
}

/// Starts the cluster DNS loops (watch + server). A client that cannot be
/// built only costs the cluster zone (logged); a bad domain is an error.
fn start_dns(cfg: &AgentConfig, tasks: &tasks::Tasks) -> anyhow::Result<crate::dns::DnsInfo> {
    let client = match api::client(cfg, "keel-dns") {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "cluster DNS: no API client; serving an empty zone");
            None
        }
    };
    let (info, loops) = crate::dns::start(&cfg.dns, client).context("--cluster-domain")?;
    for l in loops {
        tasks.spawn(l);
    }
    Ok(info)
}

/// Starts the Service cache and, when configured, the Service proxy on
/// an EndpointSlice cache of its own. An API client that cannot be built
/// is logged, not fatal: pods then start without Service variables.
fn start_networking(
    cfg: &AgentConfig,
    dns: &crate::dns::DnsInfo,
    tasks: &tasks::Tasks,
) -> Option<cache::Cache<Service>> {
    let client = match api::client(cfg, "keel-agent") {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no API client: no Service proxy or Service variables");
            return None;
        }
    };
    let (services, feed) = cache::Cache::start(kube::Api::<Service>::all(client.clone()));
    tasks.spawn(feed);
    if cfg.proxy {
        let (slices, feed) = cache::Cache::start(kube::Api::<EndpointSlice>::all(client));
        tasks.spawn(feed);
        let node = crate::proxy::NodeInfo {
            name: cfg.node_name.clone(),
            ip: cfg.node_ip,
        };
        match cfg.network {
            // Pods in namespaces of their own: DNAT in the kernel.
            crate::podnet::NetworkMode::Netns => tasks.spawn(crate::proxy::nft::run(
                services.clone(),
                slices,
                node,
                dns.node_local(),
            )),
            crate::podnet::NetworkMode::Loopback => {
                tasks.spawn(crate::proxy::run(services.clone(), slices, node))
            }
        }
    }
    Some(services)
}

/// Netns mode: the bridge, forwarding and the host-gw route loop for a
/// node with podCIDR `cidr`. Without one (or on a netlink failure) pods of
/// this node wait, with the reason in their status.
async fn start_pod_network(ctx: &Ctx, cidr: Option<&str>, tasks: &tasks::Tasks) {
    let Some(cidr) = cidr else {
        tracing::error!("netns mode: the node has no podCIDR; pods cannot start");
        return;
    };
    let net = match crate::podnet::PodNet::new(ctx.pods_root(), cidr) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "netns mode: unusable podCIDR");
            return;
        }
    };
    if let Err(e) = net.prepare_node().await {
        tracing::error!(error = %format!("{e:#}"), "netns mode: cannot set up the node bridge");
        return;
    }
    match api::client(&ctx.cfg, "keel-hostgw") {
        Ok(client) => {
            let (nodes, feed) = cache::Cache::start(kube::Api::<Node>::all(client));
            tasks.spawn(feed);
            tasks.spawn(crate::podnet::hostgw::run(
                nodes,
                ctx.cfg.node_name.clone(),
                net.gateway.trunc(),
            ));
        }
        Err(e) => tracing::error!(error = %e, "no API client: no host-gw routes"),
    }
    start_network_policies(ctx, net.gateway.trunc(), tasks);
    ctx.dns.set_pod_gateway(IpAddr::V4(net.gateway.addr()));
    tracing::info!(bridge = %net.bridge, gateway = %net.gateway, "pod network ready (netns mode)");
    let _ = ctx.podnet.set(net);
}

/// Netns mode: NetworkPolicy enforcement for this node's pods (podCIDR
/// `local`), on caches of policies, pods and namespaces of its own.
fn start_network_policies(ctx: &Ctx, local: ipnet::Ipv4Net, tasks: &tasks::Tasks) {
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    if let Err(e) = crate::podnet::policy::enable_bridge_netfilter() {
        tracing::warn!(error = %format!("{e:#}"), "bridge netfilter");
    }
    let client = match api::client(&ctx.cfg, "keel-netpol") {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no API client: network policies are not enforced");
            return;
        }
    };
    let (policies, feed) = cache::Cache::start(kube::Api::<NetworkPolicy>::all(client.clone()));
    tasks.spawn(feed);
    let (pods, feed) = cache::Cache::start(kube::Api::<Pod>::all(client.clone()));
    tasks.spawn(feed);
    let (namespaces, feed) = cache::Cache::start(kube::Api::<Namespace>::all(client));
    tasks.spawn(feed);
    tasks.spawn(crate::podnet::policy::run(
        policies, pods, namespaces, local,
    ));
}

async fn run_registered(ctx: Ctx, logs_port: u16, tasks: tasks::Tasks) -> anyhow::Result<()> {
    let builder = register::NodeBuilder::new(&ctx.cfg, logs_port);
    let node = register::register_until_ok(&ctx.client, &builder).await;
    let pod_cidr = register::pod_cidr(&node);
    tracing::info!(node = %ctx.cfg.node_name, ?pod_cidr, "node registered");
    ctx.ipam
        .lock()
        .map_err(|_| anyhow::anyhow!("ipam lock poisoned"))?
        .set_cidr(pod_cidr.clone());
    if ctx.cfg.network == crate::podnet::NetworkMode::Netns {
        start_pod_network(&ctx, pod_cidr.as_deref(), &tasks).await;
    }
    tasks.spawn(register::heartbeat_loop(
        ctx.client.clone(),
        builder,
        ctx.cfg.heartbeat_interval,
        ctx.cfg.status_interval,
        ctx.cfg.lease_duration_s,
    ));
    tasks.spawn(storage::cleanup_loop(
        ctx.client.clone(),
        storage::volume_root(&ctx.cfg.root_dir),
    ));
    if let Some(ingress) = ctx.cfg.ingress {
        let mut ingress_cfg = ctx.cfg.clone();
        if let Some(id) = &ctx.cfg.ingress_identity {
            ingress_cfg.token = None;
            ingress_cfg.node_identity = Some(id.clone());
        }
        match api::client(&ingress_cfg, "keel-ingress") {
            Ok(client) => tasks.spawn(crate::ingress::run(ingress, client)),
            Err(e) => tracing::error!(error = %e, "no API client: the ingress router is off"),
        }
    }
    let ctx = Arc::new(ctx);
    let manager = manager::Manager::new(ctx.clone(), tasks);
    assign::watch_loop(ctx.client.clone(), &ctx.cfg.node_name, manager).await;
    Ok(())
}
