//! The `default/kubernetes` Service, its Endpoints and its EndpointSlice:
//! how pods reach the API server (`https://kubernetes.default.svc`), kept
//! by the API server itself as Kubernetes' endpoint reconciler does.
//!
//! The Service has no selector (no controller touches its endpoints), the
//! range's first usable address (`.1`, which allocation never hands out)
//! and port `https` 443/TCP → the API port. The Endpoints and the
//! EndpointSlice (named `kubernetes`, labelled
//! `kubernetes.io/service-name=kubernetes`) list this replica's advertised
//! address and port.
//!
//! Guarantees: every write goes through the API (admission, defaulting,
//! the `.1` claim) as the `kube-apiserver` user agent; run at start (in
//! the background, retried until it succeeds) it
//! creates what is missing and replaces addresses and ports that differ,
//! so a replica restarted on another address fixes them; running it again
//! with nothing changed writes nothing. Errors are returned, never panics.
//!
//! HA: each replica writes only itself, so with several replicas the one
//! that started last wins. Kubernetes keeps a TTL'd lease per replica
//! (`/masterleases/<ip>`) and lists every live one; keel needs the same
//! (a store lease per replica, refreshed, and a periodic pass listing
//! them) before several replicas can all be in the Service.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::services::ServiceRange;
use crate::client::{path, Client, ClientResult};

/// The Service's name and namespace.
pub const NAME: &str = "kubernetes";
pub const NAMESPACE: &str = "default";
/// The names pods reach the Service by (in the API serving certificate).
pub const SERVICE_DNS_NAMES: &[&str] = &[
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];
/// Who writes the EndpointSlice (its `managed-by` label): the endpoint
/// slice controller leaves slices of other managers alone.
pub const MANAGED_BY: &str = "kube-apiserver";

/// The address and port pods reach this replica's API on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiEndpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl ApiEndpoint {
    /// From the advertised URL when its host is an IPv4 address, else
    /// the listening address (`127.0.0.1` when it is unspecified or IPv6:
    /// EndpointSlices here are IPv4).
    pub fn new(advertise_url: Option<&str>, local: SocketAddr) -> ApiEndpoint {
        let advertised = advertise_url.and_then(|u| u.parse::<axum::http::Uri>().ok());
        let ip = advertised
            .as_ref()
            .and_then(|u| u.host())
            .and_then(|h| h.parse::<Ipv4Addr>().ok())
            .or(match local.ip() {
                IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
                _ => None,
            })
            .unwrap_or(Ipv4Addr::LOCALHOST);
        let port = advertised
            .as_ref()
            .and_then(|u| u.port_u16())
            .unwrap_or(local.port());
        ApiEndpoint { ip, port }
    }
}

/// How long a failed [`ensure`] waits before trying again.
const RETRY: Duration = Duration::from_secs(2);

/// [`ensure`] in the background of a starting replica, retried until it
/// succeeds (a store without quorum must not delay serving the API).
pub async fn keep(client: Client, range: ServiceRange, endpoint: ApiEndpoint) {
    let mut warned = false;
    while let Err(e) = ensure(&client, range, endpoint).await {
        if !warned {
            tracing::warn!(error = %e, "could not keep the default/kubernetes service; retrying");
            warned = true;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Creates the Service, Endpoints and EndpointSlice when absent and
/// corrects them when they differ from `endpoint`.
pub async fn ensure(
    client: &Client,
    range: ServiceRange,
    endpoint: ApiEndpoint,
) -> ClientResult<()> {
    ensure_service(client, range, endpoint).await?;
    let endpoints = endpoints(endpoint);
    put_if_changed(client, "v1", "endpoints", &endpoints, &["subsets"]).await?;
    let slice = endpoint_slice(endpoint);
    put_if_changed(
        client,
        "discovery.k8s.io/v1",
        "endpointslices",
        &slice,
        &["addressType", "endpoints", "ports"],
    )
    .await
}

/// The Service, created at `.1` when absent. An existing one is left as
/// it is except for its target port (its cluster IP is immutable; an
/// admin who recreated it elsewhere keeps that).
async fn ensure_service(
    client: &Client,
    range: ServiceRange,
    endpoint: ApiEndpoint,
) -> ClientResult<()> {
    let uri = path("v1", "services", Some(NAMESPACE), Some(NAME));
    let ip = range.api_service_ip().to_string();
    let want_ports = json!([{
        "name": "https", "port": 443, "protocol": "TCP", "targetPort": endpoint.port,
    }]);
    match client.get(&uri).await? {
        None => {
            let svc = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {
                    "component": "apiserver", "provider": "kubernetes",
                }},
                "spec": {"type": "ClusterIP", "clusterIP": ip, "ports": want_ports,
                         "sessionAffinity": "None"},
            });
            let collection = path("v1", "services", Some(NAMESPACE), None);
            ignore_exists(client.create(&collection, &svc).await)
        }
        Some(mut svc) => {
            if svc["spec"]["ports"] == want_ports {
                return Ok(());
            }
            svc["spec"]["ports"] = want_ports;
            client.update(&uri, &svc).await.map(|_| ())
        }
    }
}

/// A create that lost a race to another replica is not an error.
fn ignore_exists(r: ClientResult<Value>) -> ClientResult<()> {
    match r {
        Err(e) if e.code == 409 => Ok(()),
        other => other.map(|_| ()),
    }
}

fn endpoints(ep: ApiEndpoint) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {
            // Kubernetes' mark that no mirroring controller may copy it.
            "endpointslice.kubernetes.io/skip-mirror": "true",
        }},
        "subsets": [{
            "addresses": [{"ip": ep.ip.to_string()}],
            "ports": [{"name": "https", "port": ep.port, "protocol": "TCP"}],
        }],
    })
}

fn endpoint_slice(ep: ApiEndpoint) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {
            "kubernetes.io/service-name": NAME,
            "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
        }},
        "addressType": "IPv4",
        "endpoints": [{
            "addresses": [ep.ip.to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
        }],
        "ports": [{"name": "https", "port": ep.port, "protocol": "TCP"}],
    })
}

/// Creates `want` when absent; when present, replaces `fields` and the
/// labels if any differs (at the version read, so a concurrent writer
/// makes it fail with 409 rather than be overwritten).
async fn put_if_changed(
    client: &Client,
    group_version: &str,
    resource: &str,
    want: &Value,
    fields: &[&str],
) -> ClientResult<()> {
    let uri = path(group_version, resource, Some(NAMESPACE), Some(NAME));
    let Some(mut have) = client.get(&uri).await? else {
        let collection = path(group_version, resource, Some(NAMESPACE), None);
        return ignore_exists(client.create(&collection, want).await);
    };
    let labels_same = want["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| have["metadata"]["labels"][k] == *v);
    if labels_same && fields.iter().all(|f| have[*f] == want[*f]) {
        return Ok(());
    }
    for f in fields {
        have[*f] = want[*f].clone();
    }
    for (k, v) in want["metadata"]["labels"].as_object().into_iter().flatten() {
        have["metadata"]["labels"][k] = v.clone();
    }
    client.update(&uri, &have).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_advertised_ipv4_address_else_the_listening_one() {
        let local: SocketAddr = "127.0.0.5:6443".parse().unwrap();
        let e = ApiEndpoint::new(Some("https://127.9.0.1:7443"), local);
        assert_eq!((e.ip, e.port), (Ipv4Addr::new(127, 9, 0, 1), 7443));
        let e = ApiEndpoint::new(Some("https://api.example:7443"), local);
        assert_eq!((e.ip, e.port), (Ipv4Addr::new(127, 0, 0, 5), 7443));
        let e = ApiEndpoint::new(None, local);
        assert_eq!((e.ip, e.port), (Ipv4Addr::new(127, 0, 0, 5), 6443));
        let any: SocketAddr = "0.0.0.0:6443".parse().unwrap();
        assert_eq!(ApiEndpoint::new(None, any).ip, Ipv4Addr::LOCALHOST);
    }
}
