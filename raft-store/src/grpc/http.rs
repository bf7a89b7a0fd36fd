//! etcd's plain-HTTP endpoints on the client port, next to gRPC on the same
//! listener (HTTP/1.1 or h2, plaintext or TLS as the port is): load
//! balancers, `curl` and monitoring probe these rather than gRPC.
//!
//! - `GET /health`: `{"health":"true","reason":""}` with 200 when this
//!   replica knows a leader that a quorum follows and a linearizable read
//!   completes; otherwise 503 with `"false"` and etcd's reason (`RAFT NO
//!   LEADER`, `QGET ERROR: ...`). `?serializable=true` skips the read, as in
//!   etcd.
//! - `GET /version`: `{"etcdserver":...,"etcdcluster":...}` as etcd
//!   answers, with the etcd API version keel implements.

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::maintenance::ETCD_API_VERSION;
use crate::store::Store;

/// The HTTP routes, to be merged with the gRPC services.
pub(super) fn router(store: Store) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .with_state(store)
}

/// A JSON body with `code`.
fn json(code: StatusCode, body: serde_json::Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Whether `?serializable=true` was given (etcd: skip the quorum read).
fn serializable(uri: &Uri) -> bool {
    uri.query()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv == "serializable=true")
}

/// This replica's health as etcd reports it: `Err(reason)` when unhealthy.
pub(super) async fn check(store: &Store, serializable: bool) -> Result<(), String> {
    if store.current_leader().is_none() {
        return Err("RAFT NO LEADER".into());
    }
    if !serializable {
        // Bounded by the store's request timeout.
        store
            .read_barrier()
            .await
            .map_err(|e| format!("QGET ERROR: {e}"))?;
    }
    Ok(())
}

async fn health(State(store): State<Store>, uri: Uri) -> Response {
    match check(&store, serializable(&uri)).await {
        Ok(()) => json(
            StatusCode::OK,
            serde_json::json!({"health": "true", "reason": ""}),
        ),
        Err(reason) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"health": "false", "reason": reason}),
        ),
    }
}

async fn version() -> Response {
    json(
        StatusCode::OK,
        serde_json::json!({"etcdserver": ETCD_API_VERSION, "etcdcluster": ETCD_API_VERSION}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializable_flag_is_read_from_the_query() {
        assert!(serializable(&"/health?serializable=true".parse().unwrap()));
        assert!(serializable(
            &"/health?a=b&serializable=true".parse().unwrap()
        ));
        assert!(!serializable(&"/health".parse().unwrap()));
        assert!(!serializable(
            &"/health?serializable=false".parse().unwrap()
        ));
    }
}
