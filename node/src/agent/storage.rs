//! Local-path volumes on this node: where they live, how the control
//! plane learns it, and removing the directories of deleted volumes.
//!
//! The local-path provisioner (keel-controllers) cannot see an agent's
//! disk, so the agent publishes its volume root as the Node annotation
//! [`ROOT_ANNOTATION`] at registration; a provisioned PersistentVolume is a
//! `hostPath` at `<root>/pvc-<claim uid>_<namespace>_<claim name>` pinned
//! to this node. The directory is created when a pod first mounts it
//! (`pod::volumes`).
//!
//! Reclaim: when such a PersistentVolume object is gone (the claim was
//! deleted with reclaim policy Delete, or an admin deleted a Released
//! volume), [`cleanup_loop`] removes its directory. A volume whose object
//! still exists (Bound, or Released under Retain) keeps its data. Only
//! entries named like provisioned volumes are ever touched, and only when
//! the control plane answered NotFound (never on an outage).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::client::ControlClient;

/// Node annotation holding the absolute directory under which this
/// agent's local-path volumes are created.
pub const ROOT_ANNOTATION: &str = "keel.dev/local-path-root";

/// How often the volume root is checked for volumes whose object is gone.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(3);

/// `<root_dir>/storage`, made absolute (relative to the working
/// directory) so the control plane can hand it back in a PV path.
pub fn volume_root(root_dir: &Path) -> PathBuf {
    let dir = root_dir.join("storage");
    std::path::absolute(&dir).unwrap_or(dir)
}

/// The PersistentVolume a directory under the volume root belongs to:
/// `pvc-<uid>_<ns>_<name>` → `pvc-<uid>`; None for anything else.
pub fn volume_of(dir_name: &str) -> Option<&str> {
    let (pv, rest) = dir_name.split_once('_')?;
    let uid = pv.strip_prefix("pvc-")?;
    let valid = !uid.is_empty()
        && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && !rest.is_empty();
    valid.then_some(pv)
}

/// Removes, every [`CLEANUP_INTERVAL`], the volume directories under
/// `root` whose PersistentVolume no longer exists. Runs until aborted.
pub async fn cleanup_loop(client: Arc<ControlClient>, root: PathBuf) {
    let mut tick = tokio::time::interval(CLEANUP_INTERVAL);
    loop {
        tick.tick().await;
        cleanup_once(&client, &root).await;
    }
}

async fn cleanup_once(client: &ControlClient, root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pv) = volume_of(&name) else {
            continue;
        };
        match client.get_object("PersistentVolume", "", pv).await {
            Ok(None) => {
                let path = entry.path();
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => {
                        tracing::info!(volume = %pv, path = %path.display(), "deleted the directory of a deleted volume")
                    }
                    Err(e) => {
                        tracing::warn!(volume = %pv, error = %e, "could not delete a volume directory")
                    }
                }
            }
            Ok(Some(_)) => {}
            Err(s) => {
                tracing::debug!(volume = %pv, error = %s.message(), "volume lookup failed; keeping it");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_provisioned_directories_name_a_volume() {
        assert_eq!(
            volume_of("pvc-0a1b-2c3d_default_data"),
            Some("pvc-0a1b-2c3d")
        );
        assert_eq!(volume_of("pvc-0a1b"), None);
        assert_eq!(volume_of("pvc-_default_data"), None);
        assert_eq!(volume_of("other_default_data"), None);
        assert_eq!(volume_of("pvc-xyz_default_data"), None);
        assert!(volume_root(Path::new("rel")).is_absolute());
    }
}
