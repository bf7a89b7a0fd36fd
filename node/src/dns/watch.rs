//! Keeps the zone index current from kube-runtime reflector caches of all
//! Services and EndpointSlices, and tells which address the cluster DNS
//! has (the `kube-system/kube-dns` Service's cluster IP).
//!
//! The index is rebuilt from the caches after each burst of changes (all
//! events already waiting are applied first), never per object of an
//! initial list; a watch error is retried by the watcher's back-off and
//! the last good index keeps answering meanwhile.

use std::net::IpAddr;

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt as _;
use kube::Api;
use tokio::sync::watch;

use super::handler::{publish, SharedIndex};
use super::records::ZoneIndex;

/// Namespace and name of the Service whose cluster IP the DNS server has.
pub const DNS_SERVICE: (&str, &str) = ("kube-system", "kube-dns");

/// Which stream an event came from, and whether it changes the answers.
enum Change {
    /// Part of an initial list: applied, rebuilt at its end.
    Listing,
    Changed,
    Error(String),
}

fn change<K>(r: Result<Event<K>, watcher::Error>) -> Change {
    match r {
        Ok(Event::Init | Event::InitApply(_)) => Change::Listing,
        Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => Change::Changed,
        Err(e) => Change::Error(e.to_string()),
    }
}

/// The cluster IP of the kube-dns Service in `services`, if any.
pub fn dns_address(services: &Store<Service>) -> Option<IpAddr> {
    let key = ObjectRef::new(DNS_SERVICE.1).within(DNS_SERVICE.0);
    let svc = services.get(&key)?;
    svc.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok()
}

/// Watches until the client's streams end (never, in practice): each
/// change publishes a new index into `index` and the kube-dns address
/// into `dns_ip`.
pub async fn run(
    client: kube::Client,
    zone: String,
    index: SharedIndex,
    dns_ip: watch::Sender<Option<IpAddr>>,
) {
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, eps_writer) = reflector::store::<EndpointSlice>();
    let svc_events = reflector::reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .map(change);
    let eps_events = reflector::reflector(
        eps_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .map(change);
    let mut events = std::pin::pin!(futures::stream::select(svc_events, eps_events));
    let mut last_error: Option<String> = None;
    while let Some(first) = events.next().await {
        let mut dirty = false;
        let mut next = Some(first);
        while let Some(c) = next.take() {
            match c {
                Change::Listing => {}
                Change::Changed => dirty = true,
                Change::Error(e) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, "cluster DNS: watching Services/EndpointSlices failed; retrying");
                        last_error = Some(e);
                    }
                }
            }
            next = events.next().now_or_never().flatten();
        }
        if !dirty {
            continue;
        }
        last_error = None;
        match ZoneIndex::build(&zone, &services.state(), &slices.state()) {
            Ok(ix) => publish(&index, ix),
            Err(e) => tracing::warn!(error = %e, "cluster DNS: could not build the zone"),
        }
        let ip = dns_address(&services);
        dns_ip.send_if_modified(|cur| {
            let changed = *cur != ip;
            *cur = ip;
            changed
        });
    }
}
