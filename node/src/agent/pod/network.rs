//! The pod's network in netns mode: its IP from the node's podCIDR and its
//! namespace and veth ([`crate::podnet`]), made before any container starts
//! (the containers join the namespace). Loopback mode and hostNetwork pods
//! need nothing here.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

use crate::agent::Ctx;
use crate::podnet::NetworkMode;

/// Whether pod `pod` gets a namespace of its own on this agent.
pub fn needs_netns(ctx: &Ctx, pod: &Pod) -> bool {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    ctx.cfg.network == NetworkMode::Netns && !host_network
}

/// Allocates pod `uid`'s IP and plugs its namespace; returns the IP.
/// Errors (shown as the containers' waiting message, retried): no podCIDR
/// yet, no free address in it, or a netlink failure.
pub async fn setup(ctx: &Ctx, uid: &str) -> Result<IpAddr, String> {
    let Some(net) = ctx.podnet.get() else {
        return Err("the node has no podCIDR yet (netns mode needs one)".into());
    };
    let ip = ctx
        .ipam
        .lock()
        .map_err(|_| "ipam lock poisoned".to_string())?
        .allocate(uid)
        .ok_or_else(|| {
            format!(
                "no free pod IP in the node's podCIDR {}",
                net.gateway.trunc()
            )
        })?;
    net.setup_pod(uid, ip)
        .await
        .map_err(|e| format!("pod network: {e:#}"))?;
    Ok(ip)
}

/// Removes pod `uid`'s veth and namespace pin (netns mode; a no-op for a
/// pod that has none). Failures are logged: the startup sweep retries.
pub async fn teardown(ctx: &Ctx, uid: &str) {
    if ctx.cfg.network != NetworkMode::Netns {
        return;
    }
    if let Err(e) = crate::podnet::teardown(&ctx.pods_root(), uid).await {
        tracing::warn!(pod_uid = %uid, error = %format!("{e:#}"), "cannot remove the pod network");
    }
}
