//! etcd v3 gRPC services over the [`Store`] API. This layer only translates
//! between wire messages and store calls; it never touches storage.

mod cluster;
mod http;
mod kv;
mod lease;
mod maintenance;
mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use keel_net::tls::tls_incoming;
use keel_net::{Incoming, TlsConfig, Transport};

use keel_proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};

use crate::store::Store;

/// How far past `max_request_bytes` a gRPC message may be before the
/// transport (rather than the store, with etcd's error) rejects it.
const GRPC_SLACK_BYTES: usize = 512 * 1024;

/// Serves the etcd client API on `listener` until `shutdown` resolves.
pub async fn serve_client(
    store: Store,
    listener: Incoming,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    client_router(store)
        .serve_with_incoming_shutdown(listener, shutdown)
        .await
}

/// [`serve_client`] over TLS (client certificates as `tls` requires).
pub async fn serve_client_tls(
    store: Store,
    listener: Incoming,
    tls: Arc<TlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    client_router(store)
        .serve_with_incoming_shutdown(tls_incoming(listener, tls), shutdown)
        .await
}

/// gRPC services plus etcd's `/health` and `/version` ([`http`]) on one
/// listener: HTTP/1.1 requests go to the HTTP routes, h2 to either by
/// path.
fn client_router(store: Store) -> tonic::transport::server::Router {
    let max = store.config().max_request_bytes + GRPC_SLACK_BYTES;
    let grpc = tonic::service::Routes::new(
        KvServer::new(kv::KvService::new(store.clone())).max_decoding_message_size(max),
    )
    .add_service(
        WatchServer::new(watch::WatchService::new(store.clone())).max_decoding_message_size(max),
    )
    .add_service(LeaseServer::new(lease::LeaseService::new(store.clone())))
    .add_service(ClusterServer::new(cluster::ClusterService::new(
        store.clone(),
    )))
    .add_service(
        MaintenanceServer::new(maintenance::MaintenanceService::new(store.clone()))
            .max_encoding_message_size(keel_net::MAX_MESSAGE_BYTES),
    );
    let routes = grpc.into_axum_router().merge(http::router(store));
    tonic::transport::Server::builder()
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .add_routes(routes.into())
}

/// Serves raft peer RPCs on `listener` until `shutdown` resolves.
pub async fn serve_peer(
    store: Store,
    listener: Incoming,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    peer_router(&store)
        .serve_with_incoming_shutdown(listener, shutdown)
        .await
}

/// [`serve_peer`] over mutual TLS: only current members get in.
pub async fn serve_peer_tls(
    store: Store,
    listener: Incoming,
    tls: Arc<TlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    peer_router(&store)
        .serve_with_incoming_shutdown(tls_incoming(listener, tls), shutdown)
        .await
}

fn peer_router(store: &Store) -> tonic::transport::server::Router {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(keel_net::peer_server(store.peer_handler()))
}

/// Binds an address (`ip:port`), naming it in the error. Accepted
/// connections have Nagle's algorithm off: small RPCs must not wait for
/// delayed ACKs.
pub async fn bind(transport: Transport, addr: &str) -> std::io::Result<Incoming> {
    let sa: SocketAddr = addr.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad address {addr:?}: {e}"),
        )
    })?;
    transport.incoming(sa).await
}
