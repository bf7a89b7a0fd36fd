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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_like_docker() {
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("library/busybox:1.36", "docker.io/library/busybox:1.36"),
            ("docker.io/team/app:v1", "docker.io/team/app:v1"),
            ("127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app:latest"),
        ] {
            assert_eq!(key(&parse(input).unwrap()), want, "{input}");
        }
        let d = format!("sha256:{}", "b".repeat(64));
        let r = parse(&format!("localhost:5000/app@{d}")).unwrap();
        assert_eq!(key(&r), format!("localhost:5000/app@{d}"));
        let err = parse("UPPER/Case").unwrap_err();
        assert!(err.to_string().contains("invalid image reference"), "{err}");
    }

    #[test]
    fn only_loopback_registries_are_loopback() {
        for r in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.9.9.9",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback_registry(r), "{r}");
        }
        for r in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:5000",
        ] {
            assert!(!is_loopback_registry(r), "{r}");
        }
    }
}
