//! Cluster DNS, served by every agent (CoreDNS' job in Kubernetes).
//!
//! - [`records`]: Services + EndpointSlices → the cluster zone's name index
//!   (pure);
//! - [`handler`]: the hickory request handler (zone answers, forwarding);
//! - [`forward`]: upstream servers and hickory's forwarder;
//! - [`listen`]: UDP + TCP sockets shared between agents (SO_REUSEPORT);
//! - [`watch`](mod@watch): reflector caches → index and kube-dns address;
//! - [`resolv_conf`]: each pod's resolv.conf.
//!
//! Where it listens: loopback (exec) mode has no per-pod network
//! namespace, so the agent binds `<kube-dns cluster IP>:53` itself (the
//! API server creates `kube-system/kube-dns` with the service range's
//! network + 10), or `--cluster-dns` when given. The address follows the
//! Service (rebinding on change). Binding port 53 needs root or
//! CAP_NET_BIND_SERVICE: a failure is logged once per address, and the
//! agent runs on without DNS.
//!
//! In netns mode ([`DnsConfig::at_pod_gateway`]) pods have namespaces of
//! their own and reach the node through the bridge: the agent serves on
//! the bridge's address (the pods' gateway, known once the node has its
//! podCIDR, see [`DnsInfo::set_pod_gateway`]). Pods' resolv.conf names the
//! kube-dns cluster IP (or `--cluster-dns`), as the kubelet writes it, and
//! the Service proxy DNATs that address's port 53 to the node's own server
//! ([`NodeLocalDns`], node-local like NodeLocal DNSCache). Without a proxy
//! on the node, or before any cluster IP is known, resolv.conf names the
//! bridge address itself.

pub mod forward;
pub mod handler;
pub mod listen;
pub mod records;
pub mod resolv_conf;
pub mod watch;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use tokio::sync::watch as channel;

pub use handler::{ClusterDns, SharedIndex};
pub use records::ZoneIndex;
pub use resolv_conf::DnsSettings;

/// The standard DNS port.
pub const DNS_PORT: u16 = 53;
/// Kubernetes' default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Cluster DNS settings of one agent.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Serve DNS at all (resolv.conf files are written either way).
    pub serve: bool,
    /// The zone served, e.g. `cluster.local` (`--cluster-domain`).
    pub cluster_domain: String,
    /// Fixed cluster DNS address (`--cluster-dns`); `None` follows the
    /// kube-dns Service.
    pub cluster_dns: Option<IpAddr>,
    /// Upstreams for other names (`--dns-upstream`); empty = the host's
    /// resolv.conf nameservers.
    pub upstreams: Vec<SocketAddr>,
    /// The port to listen on (53; other values for tests).
    pub port: u16,
    /// Netns mode: serve on the pod gateway (bridge) address instead of
    /// the cluster DNS address (kube-dns' cluster IP or `cluster_dns`).
    pub at_pod_gateway: bool,
    /// Netns mode: the Service proxy sends the cluster DNS address to the
    /// gateway ([`DnsInfo::node_local`]), so pods' resolv.conf names the
    /// cluster DNS address; false: it names the gateway.
    pub cluster_ip_redirected: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            serve: true,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
            cluster_dns: None,
            upstreams: vec![],
            port: DNS_PORT,
            at_pod_gateway: false,
            cluster_ip_redirected: false,
        }
    }
}

/// What pod workers need: the cluster DNS address as currently known.
#[derive(Clone, Debug)]
pub struct DnsInfo {
    domain: String,
    /// The cluster DNS address: `--cluster-dns`, else kube-dns' cluster IP.
    cluster: channel::Receiver<Option<IpAddr>>,
    /// Where the server listens (netns mode: the pod gateway).
    serving: channel::Receiver<Option<IpAddr>>,
    /// Netns mode: where the pod gateway address is announced.
    gateway: Option<std::sync::Arc<channel::Sender<Option<IpAddr>>>>,
    redirected: bool,
    port: u16,
}

/// Netns mode: the cluster DNS address (`from`) to send to the node's own
/// server (`to`, the bridge address, on `port`). Both change over time
/// (kube-dns' Service is watched, the bridge exists once the node has a
/// podCIDR); while either is unknown there is nothing to redirect.
#[derive(Clone, Debug)]
pub struct NodeLocalDns {
    pub from: channel::Receiver<Option<IpAddr>>,
    pub to: channel::Receiver<Option<IpAddr>>,
    pub port: u16,
}

impl DnsInfo {
    /// Settings for a pod's resolv.conf, with the host's file as read now.
    pub fn settings(&self) -> DnsSettings {
        DnsSettings {
            cluster_dns: self.pod_address(),
            cluster_domain: self.domain.clone(),
            host: std::fs::read_to_string(forward::HOST_RESOLV_CONF).unwrap_or_default(),
        }
    }

    /// The nameserver pods are given: the cluster DNS address, except in
    /// netns mode without a redirect (or before the address is known),
    /// where it is the server's own (the bridge) address.
    fn pod_address(&self) -> Option<IpAddr> {
        let serving = *self.serving.borrow();
        if self.gateway.is_some() && self.redirected {
            self.cluster.borrow().or(serving)
        } else {
            serving
        }
    }

    /// Netns mode with a redirect: what the Service proxy must send to
    /// the node's server. `None` in loopback mode (the server binds the
    /// cluster DNS address itself).
    pub fn node_local(&self) -> Option<NodeLocalDns> {
        (self.gateway.is_some() && self.redirected).then(|| NodeLocalDns {
            from: self.cluster.clone(),
            to: self.serving.clone(),
            port: self.port,
        })
    }

    /// Netns mode: the bridge address `ip` is now where the server listens
    /// (and what pods' resolv.conf names when the cluster DNS address is
    /// not redirected to it, see [`DnsInfo::node_local`]). Does nothing unless
    /// the configuration asked for [`DnsConfig::at_pod_gateway`].
    pub fn set_pod_gateway(&self, ip: IpAddr) {
        if let Some(tx) = &self.gateway {
            tx.send_replace(Some(ip));
        }
    }
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Sets up cluster DNS: returns the pod-facing [`DnsInfo`] and the tasks
/// to run (watch and serve). Without a client only a `--cluster-dns`
/// address can be known, and the zone stays empty.
///
/// Errors: an invalid cluster domain.
pub fn start(
    cfg: &DnsConfig,
    client: Option<kube::Client>,
) -> anyhow::Result<(DnsInfo, Vec<Task>)> {
    let index = handler::shared(ZoneIndex::empty(&cfg.cluster_domain)?);
    let (watched_tx, watched_rx) = channel::channel(None);
    let mut tasks: Vec<Task> = Vec::new();
    if let Some(client) = client {
        tasks.push(Box::pin(watch::run(
            client,
            cfg.cluster_domain.clone(),
            index.clone(),
            watched_tx,
        )));
    }
    let cluster = match cfg.cluster_dns {
        Some(ip) => {
            let (tx, rx) = channel::channel(Some(ip));
            // Hold the sender so the address never reads as closed.
            tasks.push(Box::pin(async move {
                let _keep = tx;
                std::future::pending::<()>().await
            }));
            rx
        }
        None => watched_rx,
    };
    let (serving, gateway) = if cfg.at_pod_gateway {
        let (tx, rx) = channel::channel(None);
        (rx, Some(std::sync::Arc::new(tx)))
    } else {
        (cluster.clone(), None)
    };
    if cfg.serve {
        tasks.push(Box::pin(serve_loop(cfg.clone(), index, serving.clone())));
    }
    let info = DnsInfo {
        domain: cfg.cluster_domain.clone(),
        cluster,
        serving,
        gateway,
        redirected: cfg.cluster_ip_redirected,
        port: cfg.port,
    };
    Ok((info, tasks))
}

/// Binds the server on each new address (dropping the old one).
async fn serve_loop(
    cfg: DnsConfig,
    index: SharedIndex,
    mut address: channel::Receiver<Option<IpAddr>>,
) {
    let mut current: Option<listen::Listening> = None;
    loop {
        let ip = *address.borrow_and_update();
        let want = ip.map(|ip| SocketAddr::new(ip, cfg.port));
        if current.as_ref().map(|l| l.addr) != want {
            if let Some(old) = current.take() {
                old.stop().await;
            }
            if let Some(addr) = want {
                current = bind(&cfg, &index, addr);
            }
        }
        if address.changed().await.is_err() {
            // No more changes: keep serving the last address.
            std::future::pending::<()>().await;
        }
    }
}

fn bind(cfg: &DnsConfig, index: &SharedIndex, addr: SocketAddr) -> Option<listen::Listening> {
    let upstreams = forward::upstreams(&cfg.upstreams, Some(addr));
    let catalog = match forward::catalog(&upstreams) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "cluster DNS: names outside {} will be refused", cfg.cluster_domain);
            None
        }
    };
    match listen::serve(addr, ClusterDns::new(index.clone(), catalog)) {
        Ok(l) => {
            tracing::info!(%addr, ?upstreams, "cluster DNS serving");
            Some(l)
        }
        Err(e) => {
            tracing::warn!(
                %addr,
                error = %e,
                "cluster DNS: cannot listen (port 53 needs root or CAP_NET_BIND_SERVICE); pods will not resolve cluster names through this agent"
            );
            None
        }
    }
}
