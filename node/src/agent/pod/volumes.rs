//! Pod volumes for the exec runtime.
//!
//! The exec runtime has no mount namespaces, so a volume cannot appear at
//! its `mountPath`. Instead each volume is a host directory and every
//! container that mounts it gets `KEEL_VOLUME_<NAME>=<dir>` (with `subPath`
//! appended) in its environment; nothing is ever created at `mountPath`.
//!
//! - emptyDir: `pods/<uid>/volumes/<name>/`, removed with the pod;
//! - hostPath: the path itself (created for `DirectoryOrCreate`);
//! - configMap / secret: `pods/<uid>/volumes/<name>/` holding one file per
//!   key (or per `items` entry, at its `path`), written at setup; a missing
//!   object is an error unless `optional`. Later changes of the object are
//!   not propagated;
//! - persistentVolumeClaim: the directory of the claim's PersistentVolume
//!   (its `hostPath` or `local` path, created if missing). A claim that is
//!   missing, not bound yet, being deleted, or bound to a volume that is
//!   not claimed by it is an error: the pod waits and setup is retried, as
//!   the kubelet waits for volumes;
//! - projected and downwardAPI: `pods/<uid>/volumes/<name>/`, written
//!   atomically by [`super::projected`] (service account tokens are
//!   requested for the pod and rewritten before they expire, see
//!   [`refresh`]);
//! - anything else: an empty directory (logged).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, KeyToPath, PersistentVolumeSpec, Volume};

use super::objects::{Data, FetchError, Objects};
use super::projected::{self, Projection, Tokens};

/// A pod's prepared volumes.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Volume name → host directory.
    pub dirs: BTreeMap<String, PathBuf>,
    /// When [`refresh`] must run (the earliest token near expiry).
    pub refresh_at: Option<Instant>,
}

/// Prepares every volume of the projection's pod.
pub async fn prepare<T: Tokens>(
    pod_dir: &Path,
    objs: &mut Objects<'_>,
    p: &Projection<'_, T>,
) -> Result<Prepared, String> {
    let mut out = Prepared::default();
    for v in p.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = pod_dir.join("volumes").join(safe_name(&v.name));
        let (dir, refresh_at) = prepare_one(v, &dir, objs, p)
            .await
            .map_err(|e| format!("volume {:?}: {e}", v.name))?;
        out.dirs.insert(v.name.clone(), dir);
        out.refresh_at = earliest(out.refresh_at, refresh_at);
    }
    Ok(out)
}

/// Writes the pod's projected volumes that hold tokens again, with fresh
/// tokens (and the current ConfigMap/Secret/downward values); returns when
/// to run again. On error the previous files stay in place.
pub async fn refresh<T: Tokens>(
    pod_dir: &Path,
    objs: &mut Objects<'_>,
    p: &Projection<'_, T>,
) -> Result<Option<Instant>, String> {
    let mut next = None;
    for v in p.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(proj) = &v.projected else { continue };
        let sources = proj.sources.as_deref().unwrap_or(&[]);
        if !sources.iter().any(|s| s.service_account_token.is_some()) {
            continue;
        }
        let dir = pod_dir.join("volumes").join(safe_name(&v.name));
        let at = projected::write(sources, proj.default_mode, &dir, objs, p)
            .await
            .map_err(|e| format!("volume {:?}: {e}", v.name))?;
        next = earliest(next, at);
    }
    Ok(next)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The host directories of `container`'s mounts, keyed by volume name.
pub fn mounts(
    container: &Container,
    volumes: &BTreeMap<String, PathBuf>,
) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for m in container.volume_mounts.iter().flatten() {
        if let Some(dir) = volumes.get(&m.name) {
            let path = match m.sub_path.as_deref().filter(|s| relative_inside(s)) {
                Some(sub) => dir.join(sub),
                None => dir.clone(),
            };
            out.insert(m.name.clone(), path);
        }
    }
    out
}

/// `container`'s volume mounts as bind mounts for runtimes with mount
/// namespaces: the volume's host directory (with `subPath` applied and
/// created if missing, as the kubelet does) at `mountPath`, honouring
/// `readOnly`. Errors: an unknown volume, or a `subPath` that is absolute,
/// contains `..`, or leaves the volume through a symlink.
pub fn bind_mounts(
    container: &Container,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<Vec<crate::runtime::Mount>, String> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let dir = volumes
            .get(&m.name)
            .ok_or_else(|| format!("volumeMount {:?}: no such volume", m.name))?;
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            None => dir.clone(),
            Some(sub) if relative_inside(sub) => {
                let path = dir.join(sub);
                if !path.exists() {
                    // With the volume's permissions, so a non-root
                    // container can write to a subPath of an emptyDir.
                    std::fs::create_dir_all(&path)
                        .and_then(|()| std::fs::metadata(dir))
                        .and_then(|meta| std::fs::set_permissions(&path, meta.permissions()))
                        .map_err(|e| format!("subPath {sub:?} of {:?}: {e}", m.name))?;
                }
                let inside = std::fs::canonicalize(&path)
                    .and_then(|p| Ok(p.starts_with(std::fs::canonicalize(dir)?)))
                    .map_err(|e| format!("subPath {sub:?} of {:?}: {e}", m.name))?;
                if !inside {
                    return Err(format!("subPath {sub:?} of {:?} leaves the volume", m.name));
                }
                path
            }
            Some(sub) => {
                return Err(format!(
                    "subPath {sub:?} of {:?} must be a relative path without '..'",
                    m.name
                ))
            }
        };
        out.push(crate::runtime::Mount {
            name: m.name.clone(),
            source,
            destination: PathBuf::from(&m.mount_path),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    Ok(out)
}

/// One volume's directory, and when it must be refreshed.
async fn prepare_one<T: Tokens>(
    v: &Volume,
    dir: &Path,
    objs: &mut Objects<'_>,
    p: &Projection<'_, T>,
) -> Result<(PathBuf, Option<Instant>), String> {
    if let Some(proj) = &v.projected {
        let sources = proj.sources.as_deref().unwrap_or(&[]);
        let at = projected::write(sources, proj.default_mode, dir, objs, p).await?;
        return Ok((dir.to_path_buf(), at));
    }
    if let Some(d) = &v.downward_api {
        let items = d.items.as_deref().unwrap_or(&[]);
        let files = projected::downward_files(items, d.default_mode, p)?;
        super::atomic::publish(dir, &files).map_err(|e| e.to_string())?;
        return Ok((dir.to_path_buf(), None));
    }
    prepare_plain(v, dir, objs).await.map(|d| (d, None))
}

async fn prepare_plain(v: &Volume, dir: &Path, objs: &mut Objects<'_>) -> Result<PathBuf, String> {
    if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        if h.type_.as_deref() == Some("DirectoryOrCreate") {
            std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        }
        return Ok(path);
    }
    if let Some(c) = &v.persistent_volume_claim {
        return claim_dir(&c.claim_name, objs).await;
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let (data, items, optional, mode) = if let Some(c) = &v.config_map {
        (
            objs.config_map(&c.name).await,
            &c.items,
            c.optional.unwrap_or(false),
            c.default_mode,
        )
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        (
            objs.secret(&name).await,
            &s.items,
            s.optional.unwrap_or(false),
            s.default_mode,
        )
    } else {
        if v.empty_dir.is_none() {
            tracing::warn!(volume = %v.name, "unsupported volume type: using an empty directory");
        }
        // World-writable as the kubelet makes emptyDirs: containers may run
        // as any user (runAsUser) on the isolating runtime.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        return Ok(dir.to_path_buf());
    };
    match data {
        Ok(d) => write_keys(dir, &d, items.as_deref(), mode)?,
        Err(FetchError::Missing(_)) if optional => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(dir.to_path_buf())
}

/// The directory of the volume bound to claim `name`, created if missing.
async fn claim_dir(name: &str, objs: &Objects<'_>) -> Result<PathBuf, String> {
    let pvc = objs.claim(name).await.map_err(|e| e.to_string())?;
    let what = format!("persistentvolumeclaim {name:?}");
    if pvc.metadata.deletion_timestamp.is_some() {
        return Err(format!("{what} is being deleted"));
    }
    let spec = pvc.spec.unwrap_or_default();
    let phase = pvc.status.and_then(|s| s.phase).unwrap_or_default();
    let volume_name = spec.volume_name.unwrap_or_default();
    if volume_name.is_empty() || phase != "Bound" {
        return Err(format!("{what} is not bound yet"));
    }
    let pv = objs.volume(&volume_name).await.map_err(|e| e.to_string())?;
    let claimed_by = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    if claimed_by.and_then(|r| r.uid.as_deref()) != pvc.metadata.uid.as_deref() {
        return Err(format!(
            "persistentvolume {volume_name:?} is not bound to {what}"
        ));
    }
    let path = pv.spec.as_ref().and_then(volume_path).ok_or_else(|| {
        format!("persistentvolume {volume_name:?}: only hostPath and local volumes can be mounted")
    })?;
    std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The host path of a `hostPath` or `local` PersistentVolume.
fn volume_path(spec: &PersistentVolumeSpec) -> Option<PathBuf> {
    let path = spec
        .host_path
        .as_ref()
        .map(|h| h.path.as_str())
        .or(spec.local.as_ref().map(|l| l.path.as_str()))?;
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Writes each key (or each listed item) as a file, atomically.
fn write_keys(
    dir: &Path,
    data: &Data,
    items: Option<&[KeyToPath]>,
    mode: Option<i32>,
) -> Result<(), String> {
    let files: Vec<(String, String, Option<i32>)> = match items {
        Some(items) => items
            .iter()
            .map(|i| (i.key.clone(), i.path.clone(), i.mode.or(mode)))
            .collect(),
        None => data.keys().map(|k| (k.clone(), k.clone(), mode)).collect(),
    };
    for (key, rel, mode) in files {
        let Some(value) = data.get(&key) else {
            return Err(format!("key {key:?} not found"));
        };
        if !relative_inside(&rel) {
            return Err(format!(
                "item path {rel:?} must be relative and stay inside the volume"
            ));
        }
        let path = dir.join(&rel);
        write_file(&path, value.as_bytes(), mode.unwrap_or(0o644))
            .map_err(|e| format!("write {rel}: {e}"))?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: i32) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("keel-tmp");
    std::fs::write(&tmp, bytes)?;
    let mode = u32::try_from(mode & 0o777).unwrap_or(0o644);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// A relative path with no `..`, so it cannot escape its directory.
fn relative_inside(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

fn safe_name(name: &str) -> String {
    let name = name
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                true => c,
                false => '_',
            },
        )
        .collect::<String>()
        .trim_start_matches('.')
        .to_string();
    match name.is_empty() {
        true => "_".to_string(),
        false => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_mounts_apply_sub_path_and_refuse_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink("/etc", vol.join("out")).unwrap();
        let volumes = BTreeMap::from([("v".to_string(), vol.clone())]);
        let container = |sub: Option<&str>, ro: Option<bool>| -> Container {
            serde_json::from_value(serde_json::json!({
                "name": "c",
                "volumeMounts": [{"name": "v", "mountPath": "/m", "subPath": sub, "readOnly": ro}]
            }))
            .unwrap()
        };
        let m = bind_mounts(&container(None, Some(true)), &volumes).unwrap();
        assert_eq!(
            (m[0].source.as_path(), m[0].read_only),
            (vol.as_path(), true)
        );
        assert_eq!(m[0].destination, PathBuf::from("/m"));
        let m = bind_mounts(&container(Some("a/b"), None), &volumes).unwrap();
        assert_eq!(m[0].source, vol.join("a/b"));
        let mode = std::fs::metadata(vol.join("a/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o777, "created with the volume's permissions");
        for bad in ["../x", "/abs", "out"] {
            let err = bind_mounts(&container(Some(bad), None), &volumes).unwrap_err();
            assert!(err.contains(bad), "{bad}: {err}");
        }
        let unknown: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/m"}]
        }))
        .unwrap();
        assert!(bind_mounts(&unknown, &volumes)
            .unwrap_err()
            .contains("nope"));
    }

    #[test]
    fn keys_become_files_and_paths_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let data: Data = [("a".to_string(), "1".to_string())].into();
        write_keys(dir.path(), &data, None, None).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "1");
        let items = [KeyToPath {
            key: "a".into(),
            path: "sub/x".into(),
            mode: None,
        }];
        write_keys(dir.path(), &data, Some(&items), None).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sub/x")).unwrap(),
            "1"
        );
        let bad = [KeyToPath {
            key: "a".into(),
            path: "../x".into(),
            mode: None,
        }];
        assert!(write_keys(dir.path(), &data, Some(&bad), None).is_err());
        assert!(!relative_inside("/etc") && !relative_inside("a/../../b"));
        assert_eq!(safe_name("../x"), "_x");
        assert_eq!(safe_name(""), "_");
    }
}
