//! host-gw routing: every agent routes each other node's podCIDR via that
//! node's InternalIP, so pods reach pods on any node without encapsulation
//! (the nodes must share a layer-2 segment, as flannel's host-gw requires).
//!
//! Routes are reconciled from the Node objects: added when a node appears
//! (or its podCIDR/IP changes), deleted when it goes. keel's routes carry
//! protocol [`links::ROUTE_PROTOCOL`], so the reconcile owns exactly those
//! and leaves every other route alone, including after an agent restart.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;

use super::{links, ns};
use crate::agent::cache::Cache;

/// How often routes are re-checked without a Node change (repairs routes
/// removed by hand).
const RESYNC: Duration = Duration::from_secs(10);

/// The routes this node should have: other nodes' podCIDR → InternalIP.
/// Nodes without a podCIDR or an IPv4 InternalIP are skipped, and so is a
/// node whose podCIDR is `own_cidr` (ours, delivered on the bridge).
pub fn desired(nodes: &[Node], self_name: &str, own_cidr: Ipv4Net) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    let mut out = BTreeMap::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(self_name) {
            continue;
        }
        let cidr = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse::<Ipv4Net>().ok())
            .map(|c| c.trunc());
        let ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .and_then(|a| a.address.parse::<IpAddr>().ok());
        if let (Some(cidr), Some(IpAddr::V4(ip))) = (cidr, ip) {
            if cidr != own_cidr.trunc() && !ip.is_loopback() {
                out.insert(cidr, ip);
            }
        }
    }
    out
}

/// Makes keel's routes equal `want`: deletes stale or changed ones, adds
/// missing ones. Returns (added, deleted) counts.
pub async fn reconcile(want: BTreeMap<Ipv4Net, Ipv4Addr>) -> anyhow::Result<(usize, usize)> {
    ns::with_netlink(None, move |h| async move {
        let have = links::owned_routes(&h).await?;
        let mut deleted = 0;
        let mut kept = Vec::new();
        for (dst, gw, msg) in have {
            if want.get(&dst) == Some(&gw) {
                kept.push(dst);
            } else {
                links::delete_route(&h, msg).await?;
                deleted += 1;
            }
        }
        let mut added = 0;
        for (dst, gw) in &want {
            if !kept.contains(dst) {
                links::add_route(&h, *dst, *gw).await?;
                added += 1;
            }
        }
        Ok((added, deleted))
    })
    .await
}

/// Reconciles on every Node change and every [`RESYNC`]; errors (e.g. a
/// gateway not yet reachable) are logged and retried on the next round.
pub async fn run(nodes: Cache<Node>, self_name: String, own_cidr: Ipv4Net) {
    let mut changes = nodes.changes();
    loop {
        let list: Vec<Node> = nodes
            .store()
            .state()
            .iter()
            .map(|n| (**n).clone())
            .collect();
        // Before the first list the cache is empty: deleting every route
        // then would cut running pods off until the list arrives.
        if nodes.sync_state() == crate::agent::cache::SyncState::Synced {
            match reconcile(desired(&list, &self_name, own_cidr)).await {
                Ok((0, 0)) => {}
                Ok((added, deleted)) => tracing::info!(added, deleted, "host-gw routes updated"),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "host-gw routes"),
            }
        }
        let _ = tokio::time::timeout(RESYNC, changes.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use kube::api::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(str::to_string),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn routes_other_nodes_only() {
        let own: Ipv4Net = "10.244.0.0/24".parse().unwrap();
        let nodes = vec![
            node("a", Some("10.244.0.0/24"), "192.168.7.1"),
            node("b", Some("10.244.1.0/24"), "192.168.7.2"),
            node("c", None, "192.168.7.3"),
            node("d", Some("10.244.3.0/24"), "127.0.0.1"),
            node("e", Some("10.244.4.0/24"), "fd00::1"),
        ];
        let want = desired(&nodes, "a", own);
        assert_eq!(want.len(), 1, "{want:?}");
        assert_eq!(
            want.get(&"10.244.1.0/24".parse().unwrap()),
            Some(&"192.168.7.2".parse().unwrap())
        );
    }
}
