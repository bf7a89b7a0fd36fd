//! What a pod worker persists (`pods/<uid>/state.json`) so that a restarted
//! agent continues where the previous one stopped: restart counts, the last
//! termination of each container (`lastState`), and whether the init
//! containers completed. Running containers themselves are re-adopted from
//! the runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodState {
    #[serde(default)]
    pub restart_counts: BTreeMap<String, u32>,
    /// Container name → `ContainerStateTerminated` JSON of its previous run.
    #[serde(default)]
    pub last_terminated: BTreeMap<String, Value>,
    #[serde(default)]
    pub init_done: bool,
}

impl PodState {
    pub fn path(pod_dir: &Path) -> PathBuf {
        pod_dir.join("state.json")
    }

    /// The saved state, or the default when there is none (or it is corrupt:
    /// losing restart counts is better than not running the pod).
    pub fn load(pod_dir: &Path) -> Self {
        std::fs::read(Self::path(pod_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, pod_dir: &Path) {
        let path = Self::path(pod_dir);
        let tmp = path.with_extension("json.tmp");
        let result = std::fs::create_dir_all(pod_dir)
            .and_then(|()| serde_json::to_vec(self).map_err(std::io::Error::other))
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot save pod state");
        }
    }
}
