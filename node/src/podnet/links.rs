//! Netlink operations on links, addresses and routes (one namespace each:
//! the handle's). Each is idempotent where the agent retries it.

use std::net::Ipv4Addr;

use anyhow::{anyhow, Context as _};
use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// Route protocol number marking keel's host-gw routes (`ip route` shows
/// `proto 77`), so a reconcile finds exactly the routes it owns.
pub const ROUTE_PROTOCOL: u8 = 77;

/// The errno of a netlink error, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Ok for "already exists" (the state asked for is there).
fn exists_ok(r: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match r {
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// The link called `name`, if any.
pub async fn link(handle: &Handle, name: &str) -> anyhow::Result<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("look up link {name}")),
    }
}

async fn index_of(handle: &Handle, name: &str) -> anyhow::Result<u32> {
    link(handle, name)
        .await?
        .map(|l| l.header.index)
        .ok_or_else(|| anyhow!("link {name} does not exist"))
}

/// Ensures the bridge `name` exists, is up and holds `gateway` (with the
/// pod CIDR's prefix); returns its index.
pub async fn ensure_bridge(handle: &Handle, name: &str, gateway: Ipv4Net) -> anyhow::Result<u32> {
    if link(handle, name).await?.is_none() {
        exists_ok(
            handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await,
        )
        .with_context(|| format!("create bridge {name}"))?;
    }
    let index = index_of(handle, name).await?;
    exists_ok(
        handle
            .address()
            .add(index, gateway.addr().into(), gateway.prefix_len())
            .execute()
            .await,
    )
    .with_context(|| format!("add {gateway} to {name}"))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("set {name} up"))?;
    Ok(index)
}

/// Creates the veth pair `host`/`peer`, moves `peer` into the namespace of
/// `netns_fd`, and plugs `host` into the bridge `bridge_index`, up.
pub async fn create_veth(
    handle: &Handle,
    host: &str,
    peer: &str,
    bridge_index: u32,
    netns_fd: std::os::fd::RawFd,
) -> anyhow::Result<()> {
    handle
        .link()
        .add(LinkVeth::new(host, peer).build())
        .execute()
        .await
        .with_context(|| format!("create veth {host}"))?;
    let peer_index = index_of(handle, peer).await?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(peer_index)
                .setns_by_fd(netns_fd)
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("move {peer} into the pod's namespace"))?;
    let host_index = index_of(handle, host).await?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(host_index)
                .controller(bridge_index)
                .up()
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("attach {host} to the bridge"))?;
    Ok(())
}

/// Inside a pod's namespace: `lo` up, `peer` renamed to `eth0` with
/// `addr`, up, and a default route via `gateway`.
pub async fn configure_pod_side(
    handle: &Handle,
    peer: &str,
    addr: Ipv4Net,
    gateway: Ipv4Addr,
) -> anyhow::Result<()> {
    let lo = index_of(handle, "lo").await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .context("set lo up")?;
    let index = match link(handle, peer).await? {
        Some(l) => l.header.index,
        None => index_of(handle, "eth0").await?,
    };
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).name("eth0").build())
        .execute()
        .await
        .context("rename the pod's interface to eth0")?;
    exists_ok(
        handle
            .address()
            .add(index, addr.addr().into(), addr.prefix_len())
            .execute()
            .await,
    )
    .with_context(|| format!("add {addr} to eth0"))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .context("set eth0 up")?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(index)
        .build();
    exists_ok(handle.route().add(route).execute().await)
        .with_context(|| format!("default route via {gateway}"))?;
    Ok(())
}

/// Deletes the link `name`; a missing link is not an error.
pub async fn delete_link(handle: &Handle, name: &str) -> anyhow::Result<()> {
    let Some(l) = link(handle, name).await? else {
        return Ok(());
    };
    match handle.link().del(l.header.index).execute().await {
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        r => r.with_context(|| format!("delete link {name}")),
    }
}

/// Names of the veth links whose name starts with `prefix`.
pub async fn veths_with_prefix(handle: &Handle, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut links = handle.link().get().execute();
    while let Some(l) = links.try_next().await.context("list links")? {
        let mut name = None;
        let mut veth = false;
        for a in &l.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    veth |= infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                }
                _ => {}
            }
        }
        if let Some(n) = name.filter(|n| veth && n.starts_with(prefix)) {
            out.push(n);
        }
    }
    Ok(out)
}

/// A route keel owns: destination, gateway, and the message to delete it.
pub type OwnedRoute = (Ipv4Net, Ipv4Addr, RouteMessage);

/// keel's host-gw routes in the main table.
pub async fn owned_routes(handle: &Handle) -> anyhow::Result<Vec<OwnedRoute>> {
    let mut out = Vec::new();
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(r) = routes.try_next().await.context("list routes")? {
        if r.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
            continue;
        }
        let mut dst = None;
        let mut gw = None;
        for a in &r.attributes {
            match a {
                RouteAttribute::Destination(
                    rtnetlink::packet_route::route::RouteAddress::Inet(ip),
                ) => dst = Some(*ip),
                RouteAttribute::Gateway(rtnetlink::packet_route::route::RouteAddress::Inet(ip)) => {
                    gw = Some(*ip)
                }
                _ => {}
            }
        }
        if let (Some(dst), Some(gw)) = (dst, gw) {
            if let Ok(net) = Ipv4Net::new(dst, r.header.destination_prefix_length) {
                out.push((net, gw, r));
            }
        }
    }
    Ok(out)
}

/// Adds the host-gw route `dst via gw` (marked [`ROUTE_PROTOCOL`]).
pub async fn add_route(handle: &Handle, dst: Ipv4Net, gw: Ipv4Addr) -> anyhow::Result<()> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.network(), dst.prefix_len())
        .gateway(gw)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .build();
    exists_ok(handle.route().add(route).execute().await)
        .with_context(|| format!("route {dst} via {gw}"))
}

/// Deletes a route as listed by [`owned_routes`].
pub async fn delete_route(handle: &Handle, route: RouteMessage) -> anyhow::Result<()> {
    match handle.route().del(route).execute().await {
        Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
        r => r.context("delete route"),
    }
}
