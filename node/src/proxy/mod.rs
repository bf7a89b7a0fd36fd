//! The Service proxy every agent runs (kube-proxy's job), in loopback mode:
//! pods share the host network namespace and have 127.x addresses, so a
//! cluster IP (also a 127.x address) is simply a local address the agent
//! listens on, and a connection to it is spliced to an endpoint.
//!
//! One concept per module:
//! - [`table`]: Services + EndpointSlices → one route per frontend address
//!   (pure; the kube-proxy rules are documented there);
//! - [`picker`]: the endpoint for a new connection (ready first, terminating
//!   fallback, round-robin, ClientIP affinity);
//! - [`listener`]: the listening sockets, reconciled to the table, and the
//!   TCP splice;
//! - [`udp`]: UDP frontends, per-client sessions with an idle timeout;
//! - [`run`] here: the watch wiring, on the agent's reflector caches.
//!
//! Guarantees: a change of a Service or EndpointSlice reaches the routes as
//! soon as the reflector applies its watch event (the table is rebuilt on
//! every change, then reconciled), so it applies to the next connection well
//! within a second; no route is served from a partial first list (the proxy
//! waits until both caches have listed once). What is not done: SCTP ports
//! (logged once and skipped), `externalIPs` and load-balancer ingress
//! addresses.

pub mod listener;
pub mod nft;
pub mod picker;
pub mod table;
pub mod udp;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::agent::cache::Cache;

pub use listener::Listeners;
pub use table::{Backend, Frontend, NodeInfo, Protocol, Route, Table};

/// Runs the proxy for `node` until dropped (which closes every listener).
pub async fn run(services: Cache<Service>, slices: Cache<EndpointSlice>, node: NodeInfo) {
    let mut svc_changes = services.changes();
    let mut slice_changes = slices.changes();
    // Both caches must have listed once, or the first table would lack
    // routes or backends.
    let first_svc = svc_changes.wait_for(|n| *n > 0).await.is_ok();
    let first_slice = slice_changes.wait_for(|n| *n > 0).await.is_ok();
    if !(first_svc && first_slice) {
        return;
    }
    tracing::info!(node = %node.name, "service proxy started");
    let mut listeners = Listeners::new();
    let mut last = Table::default();
    loop {
        svc_changes.mark_unchanged();
        slice_changes.mark_unchanged();
        let (svcs, eps) = (services.store().state(), slices.store().state());
        let table = table::build(
            svcs.iter().map(AsRef::as_ref),
            eps.iter().map(AsRef::as_ref),
            &node,
        );
        if table != last {
            listeners.apply(&table);
            tracing::debug!(
                frontends = table.routes.len(),
                "service proxy table applied"
            );
            last = table;
        }
        tokio::select! {
            r = svc_changes.changed() => if r.is_err() { return },
            r = slice_changes.changed() => if r.is_err() { return },
        }
    }
}
