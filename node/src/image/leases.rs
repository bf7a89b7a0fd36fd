//! Which images containers use, so `keel image rm` and GC never remove one
//! in use — across processes (the CLI and the agent).
//!
//! A lease is a file `<root-dir>/pods/<uid>/image-leases/<container>`
//! holding the manifest digest and the pod's `namespace/name`. The agent
//! writes it (under the store lock) before it starts a container from a
//! store image; it disappears with the pod directory, which the agent
//! removes when the pod is gone. Readers take the store lock too, so a lease
//! is never written between a GC's check and its delete.
//!
//! Several agents may share one store (`--image-store`): each registers its
//! pods directory with the store ([`register`]), and [`in_use_by_all`]
//! reads the leases of every registered agent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::{ImageError, Result, Store};

const DIR: &str = "image-leases";
/// `<store>/users/<sha256 of the path>`: the pods directories of agents
/// using the store.
const USERS: &str = "users";

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    digest: String,
    pod: String,
}

/// Records that `container` of the pod in `pod_dir` uses image `digest`.
pub fn write(pod_dir: &Path, container: &str, digest: &str, pod: &str) -> Result<()> {
    let dir = pod_dir.join(DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|e| ImageError::io(format!("create {}", dir.display()), e))?;
    let bytes = serde_json::to_vec(&Lease {
        digest: digest.to_string(),
        pod: pod.to_string(),
    })
    .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let path = dir.join(container);
    let tmp = dir.join(format!(".{container}.tmp"));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| ImageError::io(format!("write {}", path.display()), e))
}

/// Records that the agent whose pods live in `pods_dir` uses `store`
/// (idempotent).
pub fn register(store: &Store, pods_dir: &Path) -> Result<()> {
    let dir = store.root().join(USERS);
    std::fs::create_dir_all(&dir)
        .map_err(|e| ImageError::io(format!("create {}", dir.display()), e))?;
    let abs = std::path::absolute(pods_dir)
        .map_err(|e| ImageError::io(format!("resolve {}", pods_dir.display()), e))?;
    let bytes = abs.as_os_str().as_encoded_bytes();
    let path = dir.join(Digest::of(bytes).hex());
    if path.exists() {
        return Ok(());
    }
    std::fs::write(&path, bytes).map_err(|e| ImageError::io(format!("write {}", path.display()), e))
}

/// Digest → users over every agent registered with `store`, plus
/// `extra_pods_dir` (e.g. the CLI's `--root-dir`, registered or not).
pub fn in_use_by_all(
    store: &Store,
    extra_pods_dir: Option<&Path>,
) -> BTreeMap<String, Vec<String>> {
    let mut dirs: Vec<PathBuf> = extra_pods_dir.map(Path::to_path_buf).into_iter().collect();
    if let Ok(entries) = std::fs::read_dir(store.root().join(USERS)) {
        for e in entries.flatten() {
            if let Ok(bytes) = std::fs::read(e.path()) {
                let p = PathBuf::from(String::from_utf8_lossy(&bytes).into_owned());
                let same = dirs
                    .iter()
                    .any(|d| std::path::absolute(d).ok().as_ref() == Some(&p));
                if !same {
                    dirs.push(p);
                }
            }
        }
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in dirs {
        for (digest, users) in in_use(&d) {
            out.entry(digest).or_default().extend(users);
        }
    }
    out
}

/// Digest → users (`namespace/name container`) for every pod under `pods_dir`.
pub fn in_use(pods_dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(pods) = std::fs::read_dir(pods_dir) else {
        return out;
    };
    for pod in pods.flatten() {
        let Ok(leases) = std::fs::read_dir(pod.path().join(DIR)) else {
            continue;
        };
        for l in leases.flatten() {
            let name = l.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Some(lease) = std::fs::read(l.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Lease>(&b).ok())
            {
                out.entry(lease.digest)
                    .or_default()
                    .push(format!("pod {} container {name}", lease.pod));
            }
        }
    }
    out
}
