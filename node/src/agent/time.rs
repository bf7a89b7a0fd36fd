//! Kubernetes timestamps (RFC 3339, whole seconds, UTC).

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::jiff::Timestamp;

/// `t` as Kubernetes writes it, e.g. `2025-01-02T03:04:05Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(0),
        Err(_) => 0,
    };
    Timestamp::from_second(secs)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

pub fn now() -> String {
    rfc3339(SystemTime::now())
}
