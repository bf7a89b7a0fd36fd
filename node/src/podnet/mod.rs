//! Pod networking in **netns mode**: one network namespace per pod, joined
//! to a node bridge by a veth pair, addressed from the node's podCIDR, with
//! host-gw routes to the other nodes' podCIDRs.
//!
//! Layout (in the agent's own network namespace, "the host"):
//! ```text
//! keel0            bridge holding the podCIDR's first address (the pods' gateway)
//! kv<hash(uid)>    host end of a pod's veth pair, plugged into keel0
//! <podCIDR of node N> via <InternalIP of N> proto 77   (one per other node)
//! ```
//! and in each pod's namespace (pinned at `<root>/pods/<uid>/ns/net`): `lo`
//! up, `eth0` with the pod IP, default route via the gateway.
//!
//! Why this is opt-in (`--network netns`): it creates addresses from the
//! cluster CIDR (e.g. 10.244.0.0/16) and routes in the namespace the agent
//! runs in. On a shared host that must stay in loopback mode; netns mode is
//! for machines (or test namespaces) dedicated to the cluster.
//!
//! Everything goes through netlink ([`rtnetlink`]); no `ip` commands.

pub mod hostgw;
pub mod links;
pub mod nft;
pub mod ns;
pub mod policy;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use ipnet::Ipv4Net;
use sha2::{Digest as _, Sha256};

/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "keel0";
/// Prefix of the host ends of pod veths (the sweep deletes stale ones).
pub const VETH_PREFIX: &str = "kv";
/// Prefix of a pod end before it is moved and renamed to `eth0`.
const PEER_PREFIX: &str = "kp";

/// How pods get their network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// Pods share the agent's network namespace and get 127.x addresses
    /// from the podCIDR (the default; safe on any host).
    #[default]
    Loopback,
    /// A network namespace per pod (see the module docs).
    Netns,
}

impl NetworkMode {
    /// The mode's name, as in `--network` and the Node's
    /// [`keel_apimachinery::pod_network::ANNOTATION`].
    pub fn as_str(self) -> &'static str {
        use keel_apimachinery::pod_network::{LOOPBACK, NETNS};
        match self {
            NetworkMode::Loopback => LOOPBACK,
            NetworkMode::Netns => NETNS,
        }
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "loopback" => Ok(NetworkMode::Loopback),
            "netns" => Ok(NetworkMode::Netns),
            other => Err(format!(
                "unknown network mode {other:?} (loopback or netns)"
            )),
        }
    }
}

/// Where a pod's network namespace is pinned: `<pods_root>/<uid>/ns/net`.
pub fn pin_path(pods_root: &Path, pod_uid: &str) -> PathBuf {
    pods_root.join(pod_uid).join("ns").join("net")
}

/// Host-side veth name of a pod: `kv` + 12 hex digits of the uid's hash
/// (interface names have at most 15 bytes).
pub fn veth_name(pod_uid: &str) -> String {
    let digest = Sha256::digest(pod_uid.as_bytes());
    format!("{VETH_PREFIX}{}", &hex::encode(digest)[..12])
}

fn peer_name(pod_uid: &str) -> String {
    let digest = Sha256::digest(pod_uid.as_bytes());
    format!("{PEER_PREFIX}{}", &hex::encode(digest)[..12])
}

/// The node's pod network: bridge, gateway and pin root.
#[derive(Debug, Clone)]
pub struct PodNet {
    /// `<agent root>/pods`: pins live at [`pin_path`] under it.
    pub pods_root: PathBuf,
    pub bridge: String,
    /// The podCIDR with the gateway (first host) as its address.
    pub gateway: Ipv4Net,
}

impl PodNet {
    /// The pod network of a node whose podCIDR is `cidr`.
    /// Errors: not IPv4 `a.b.c.d/len`, or too small to hold a pod (/8–/30).
    pub fn new(pods_root: PathBuf, cidr: &str) -> anyhow::Result<Self> {
        let net: Ipv4Net = cidr
            .parse()
            .with_context(|| format!("podCIDR {cidr:?} is not an IPv4 CIDR"))?;
        if !(8..=30).contains(&net.prefix_len()) {
            bail!("podCIDR {cidr:?}: the prefix must be /8 to /30");
        }
        let net = net.trunc();
        let Some(first) = net.hosts().next() else {
            bail!("podCIDR {cidr:?} has no host address");
        };
        Ok(PodNet {
            pods_root,
            bridge: DEFAULT_BRIDGE.into(),
            gateway: Ipv4Net::new(first, net.prefix_len())?,
        })
    }

    /// Prepares the node: the bridge with the gateway address, and IPv4
    /// forwarding in the agent's namespace (pods reach other nodes through
    /// it). Idempotent.
    pub async fn prepare_node(&self) -> anyhow::Result<()> {
        let bridge = self.bridge.clone();
        let gateway = self.gateway;
        ns::with_netlink(None, move |h| async move {
            links::ensure_bridge(&h, &bridge, gateway).await.map(|_| ())
        })
        .await?;
        enable_forwarding()
    }

    /// Gives pod `uid` its namespace, veth and `ip`. Idempotent: a pod whose
    /// namespace is pinned and whose veth exists is left as it is (agent
    /// restart keeps the running pod's network). A half-made veth is
    /// deleted so the next call starts over.
    pub async fn setup_pod(&self, uid: &str, ip: IpAddr) -> anyhow::Result<()> {
        let IpAddr::V4(ip) = ip else {
            bail!("pod IP {ip} is not IPv4");
        };
        if !self.gateway.contains(&ip) || ip == self.gateway.addr() {
            bail!(
                "pod IP {ip} is not a pod address of {}",
                self.gateway.trunc()
            );
        }
        let pin = pin_path(&self.pods_root, uid);
        let host = veth_name(uid);
        let pinned = ns::is_pinned(&pin);
        if pinned {
            let name = host.clone();
            let exists = ns::with_netlink(None, move |h| async move {
                Ok(links::link(&h, &name).await?.is_some())
            })
            .await?;
            if exists {
                return Ok(());
            }
        }
        ns::create_pinned(&pin)?;
        let result = self.plug(uid, &pin, ip).await;
        if result.is_err() {
            let name = host.clone();
            let _ = ns::with_netlink(
                None,
                move |h| async move { links::delete_link(&h, &name).await },
            )
            .await;
        }
        result
    }

    async fn plug(&self, uid: &str, pin: &Path, ip: Ipv4Addr) -> anyhow::Result<()> {
        let host = veth_name(uid);
        let peer = peer_name(uid);
        let bridge = self.bridge.clone();
        let gateway = self.gateway;
        let netns = std::fs::File::open(pin).with_context(|| format!("open {}", pin.display()))?;
        let peer_moved = peer.clone();
        ns::with_netlink(None, move |h| async move {
            let bridge_index = links::ensure_bridge(&h, &bridge, gateway).await?;
            links::delete_link(&h, &host).await?;
            links::delete_link(&h, &peer_moved).await?;
            links::create_veth(&h, &host, &peer_moved, bridge_index, netns.as_raw_fd()).await
        })
        .await?;
        let addr = Ipv4Net::new(ip, self.gateway.prefix_len())?;
        let gw = self.gateway.addr();
        ns::with_netlink(Some(pin.to_path_buf()), move |h| async move {
            links::configure_pod_side(&h, &peer, addr, gw).await
        })
        .await
    }

    /// Removes pod `uid`'s veth and unpins its namespace (its processes,
    /// already stopped, held the last other references).
    pub async fn teardown_pod(&self, uid: &str) -> anyhow::Result<()> {
        teardown(&self.pods_root, uid).await
    }
}

/// [`PodNet::teardown_pod`] without a podCIDR (cleanup before the node is
/// registered, or of pods of an earlier configuration).
pub async fn teardown(pods_root: &Path, uid: &str) -> anyhow::Result<()> {
    let host = veth_name(uid);
    ns::with_netlink(
        None,
        move |h| async move { links::delete_link(&h, &host).await },
    )
    .await?;
    let pin = pin_path(pods_root, uid);
    ns::remove_pin(&pin).with_context(|| format!("unpin {}", pin.display()))?;
    if let Some(ns_dir) = pin.parent() {
        let _ = std::fs::remove_dir(ns_dir);
    }
    Ok(())
}

/// Deletes the pod veths (`kv…`) of pods not in `live` (by uid): what an
/// agent that died mid-deletion left behind. Returns the names deleted.
pub async fn sweep_veths(live: &HashSet<String>) -> anyhow::Result<Vec<String>> {
    let keep: HashSet<String> = live.iter().map(|u| veth_name(u)).collect();
    ns::with_netlink(None, move |h| async move {
        let mut deleted = Vec::new();
        for name in links::veths_with_prefix(&h, VETH_PREFIX).await? {
            if !keep.contains(&name) {
                links::delete_link(&h, &name).await?;
                deleted.push(name);
            }
        }
        Ok(deleted)
    })
    .await
}

/// Turns on IPv4 forwarding in the calling process's network namespace.
fn enable_forwarding() -> anyhow::Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => Ok(()),
        _ => std::fs::write(path, "1").with_context(|| format!("enable IPv4 forwarding ({path})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_limits() {
        let uid = "0b6c3f0e-7a4d-4c4e-9a55-123456789abc";
        let v = veth_name(uid);
        assert!(v.len() <= 15 && v.starts_with("kv"), "{v}");
        assert_eq!(v, veth_name(uid), "stable across restarts");
        assert_ne!(v, veth_name("other"));
        assert!(peer_name(uid).len() <= 15);
    }

    #[test]
    fn gateway_is_the_first_host() {
        let n = PodNet::new("/x".into(), "10.244.1.0/24").unwrap();
        assert_eq!(n.gateway.to_string(), "10.244.1.1/24");
        let err = PodNet::new("/x".into(), "10.244.1.0/31").unwrap_err();
        assert!(format!("{err:#}").contains("/8 to /30"), "{err:#}");
        assert!(PodNet::new("/x".into(), "fd00::/64").is_err());
        assert_eq!("netns".parse::<NetworkMode>(), Ok(NetworkMode::Netns));
        assert!("bridge"
            .parse::<NetworkMode>()
            .unwrap_err()
            .contains("bridge"));
    }

    #[test]
    fn pins_live_in_the_pod_directory() {
        assert_eq!(
            pin_path(Path::new("/s/pods"), "u1"),
            PathBuf::from("/s/pods/u1/ns/net")
        );
    }
}
