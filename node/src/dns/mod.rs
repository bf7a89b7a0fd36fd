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
//! podCIDR, see [`DnsInfo::set_pod_gateway`]), and pods' resolv.conf names
//! that address.

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
    /// the kube-dns cluster IP; ignored when `cluster_dns` is set.
    pub at_pod_gateway: bool,
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
        }
    }
}

/// What pod workers need: the cluster DNS address as currently known.
#[derive(Clone, Debug)]
pub struct DnsInfo {
    domain: String,
    address: channel::Receiver<Option<IpAddr>>,
    /// Netns mode: where the pod gateway address is announced.
    gateway: Option<std::sync::Arc<channel::Sender<Option<IpAddr>>>>,
}

impl DnsInfo {
    /// Settings for a pod's resolv.conf, with the host's file as read now.
    pub fn settings(&self) -> DnsSettings {
        DnsSettings {
            cluster_dns: *self.address.borrow(),
            cluster_domain: self.domain.clone(),
            host: std::fs::read_to_string(forward::HOST_RESOLV_CONF).unwrap_or_default(),
        }
    }

    /// Netns mode: the bridge address `ip` is now the cluster DNS address
    /// (served and written into pods' resolv.conf). Does nothing unless
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
    let mut gateway = None;
    let address = match cfg.cluster_dns {
        None if cfg.at_pod_gateway => {
            let (tx, rx) = channel::channel(None);
            gateway = Some(std::sync::Arc::new(tx));
            rx
        }
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
    if cfg.serve {
        tasks.push(Box::pin(serve_loop(cfg.clone(), index, address.clone())));
    }
    let info = DnsInfo {
        domain: cfg.cluster_domain.clone(),
        address,
        gateway,
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
