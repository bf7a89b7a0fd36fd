//! Image references, normalised as Docker and the kubelet do, so that
//! `busybox`, `library/busybox` and `docker.io/library/busybox:latest` name
//! the same image in the store.

use oci_client::Reference;

use super::{ImageError, Result};

/// Parses `[registry/]repository[:tag][@digest]`.
pub fn parse(image: &str) -> Result<Reference> {
    image
        .parse::<Reference>()
        .map_err(|e| ImageError::Reference(image.to_string(), e.to_string()))
}

/// `registry/repository`, e.g. `docker.io/library/busybox`.
pub fn repository(r: &Reference) -> String {
    format!("{}/{}", r.registry(), r.repository())
}

/// The key the store's tag index uses: `registry/repo@digest` for a
/// reference with a digest, otherwise `registry/repo:tag` (`latest` when
/// absent).
pub fn key(r: &Reference) -> String {
    match r.digest() {
        Some(d) => format!("{}@{d}", repository(r)),
        None => format!("{}:{}", repository(r), r.tag().unwrap_or("latest")),
    }
}

/// True when the registry host is on loopback (`localhost`, 127.0.0.0/8,
/// `::1`): the only registries reached over plain HTTP.
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
