//! The agent's OCI image store: content-addressed blobs, unpacked root
//! filesystems shared by pods, `docker save` / OCI-layout import, registry
//! pulls, `ls`/`rm` and garbage collection.
//!
//! One concept per module:
//! - [`reference`]: image references, normalised the way Docker does
//!   (`busybox` is `docker.io/library/busybox:latest`);
//! - [`digest`]: `sha256:<hex>` digests and a writer that verifies them;
//! - [`unpack`]: applying one layer tarball to a rootfs (whiteouts, opaque
//!   directories, no escaping the rootfs);
//! - [`store`]: the on-disk store, its lock, install/resolve/list/remove;
//! - [`import`]: `docker save` and OCI image-layout archives;
//! - [`pull`]: registries, through `oci-client`;
//! - [`leases`]: which images containers use (what `rm` and GC must keep);
//! - [`gc`]: removing unused images above a disk threshold.
//!
//! On-disk layout under the store root (default `<root-dir>/image-store`):
//! ```text
//! lock                          flock(2) held by every mutation
//! blobs/sha256/<hex>            manifests, configs, layers (verified on write)
//! images/<manifest-hex>/        one unpacked image: rootfs/ + image.json
//! tags.json                     "registry/repo:tag" (or "@sha256:...") -> manifest digest
//! users/<hash>                  pods directory of each agent using the store (leases)
//! tmp/<pid>-<n>/                staging; never visible as an image
//! ```
//! Atomicity: an image directory appears by one `rename` of a fully
//! unpacked staging directory, and `tags.json` is replaced by `rename`, so
//! a crash or a corrupt input never leaves a half image visible.

pub mod digest;
pub mod gc;
pub mod import;
pub mod leases;
pub mod pull;
pub mod reference;
pub mod store;
pub mod unpack;

pub use gc::GcPolicy;
pub use store::{ImageSummary, Store};

/// Everything that can go wrong with images. Messages name the image,
/// file or path at fault.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {0:?}: {1}")]
    Reference(String, String),
    #[error("image {0} not found in the image store")]
    NotFound(String),
    /// The input (archive, layer, manifest, blob) is damaged or malformed;
    /// nothing of it was imported.
    #[error("{0}")]
    Corrupt(String),
    /// A layer entry would land outside the rootfs.
    #[error("layer entry {path:?} escapes the rootfs: {reason}")]
    PathEscape { path: String, reason: String },
    #[error("image {image} is in use by {users}")]
    InUse { image: String, users: String },
    /// A setting that cannot work (e.g. GC thresholds out of order).
    #[error("{0}")]
    Invalid(String),
    #[error("pulling {image}: {reason}")]
    Pull { image: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// How an agent uses its image store (see [`crate::agent::pod::image`]).
#[derive(Debug, Clone)]
pub struct AgentImages {
    pub store: Store,
    pub gc: GcPolicy,
    /// Registry hosts (port ignored) the agent may pull from; empty means
    /// any. Lets a test cluster stay on loopback.
    pub allowed_registries: Vec<String>,
    /// The exec runtime's local image directory: its images are not
    /// looked up in the store.
    pub local_image_dir: Option<std::path::PathBuf>,
}

impl AgentImages {
    /// Whether pulling from `registry` (`host[:port]`) is allowed.
    pub fn registry_allowed(&self, registry: &str) -> bool {
        let host = registry.rsplit_once(':').map_or(registry, |(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                registry
            }
        });
        self.allowed_registries.is_empty()
            || self
                .allowed_registries
                .iter()
                .any(|a| a == host || a == registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_registries_match_hosts_with_any_port() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = AgentImages {
            store: Store::open(dir.path()).unwrap(),
            gc: GcPolicy::default(),
            allowed_registries: vec!["127.0.0.1".into(), "localhost".into()],
            local_image_dir: None,
        };
        assert!(a.registry_allowed("127.0.0.1:5000"));
        assert!(a.registry_allowed("localhost"));
        assert!(!a.registry_allowed("docker.io"));
        assert!(!a.registry_allowed("127.0.0.2:5000"));
        a.allowed_registries.clear();
        assert!(a.registry_allowed("docker.io"), "empty means any");
    }
}
