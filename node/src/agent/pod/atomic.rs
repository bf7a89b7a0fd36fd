//! Publishing a set of files into a volume directory atomically, with the
//! kubelet's layout (its `AtomicWriter`), so a reader of a projected
//! volume never sees a partial token or a mix of old and new files:
//!
//! ```text
//! dir/..1796634901123456789_0/token   the current files
//! dir/..data -> ..1796634901123456789_0
//! dir/token -> ..data/token                        one link per top-level name
//! ```
//!
//! A new set goes into a fresh hidden directory; then `..data` is replaced
//! by `rename(2)` of a new symlink (one atomic step that switches every
//! file at once), missing top-level links are added, links no longer in
//! the set are removed, and the old directory is deleted. Links are
//! relative, so they resolve inside a container that mounts `dir`
//! anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The symlink naming the current data directory.
const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// One file's content and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub bytes: Vec<u8>,
    pub mode: i32,
}

/// Whether `path` may name a file of a volume: relative, no `..`
/// component, and not starting with `..` (reserved for the layout).
pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with("..")
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Makes `files` (relative path → file) the content of `dir`, atomically.
/// Errors: an invalid path (nothing is written), or an I/O failure (the
/// previous set stays published).
pub fn publish(dir: &Path, files: &BTreeMap<String, File>) -> io::Result<()> {
    if let Some(bad) = files.keys().find(|p| !valid_path(p)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {bad:?} must be relative, without '..'"),
        ));
    }
    std::fs::create_dir_all(dir)?;
    let old = std::fs::read_link(dir.join(DATA)).ok();
    let name = fresh_name();
    let data_dir = dir.join(&name);
    std::fs::create_dir(&data_dir)?;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755))?;
    let written = write_all(&data_dir, files);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&data_dir);
        return Err(e);
    }
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&name, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA))?;
    let top: BTreeSet<&str> = files.keys().filter_map(|p| p.split('/').next()).collect();
    for t in &top {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA).join(t), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let n = entry.file_name();
        let n = n.to_string_lossy();
        if !n.starts_with("..") && !top.contains(n.as_ref()) && entry.file_type()?.is_symlink() {
            std::fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != name.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

/// `..<unix nanoseconds>_<sequence>`: unique within this process, and
/// different from the directory it replaces.
fn fresh_name() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("..{nanos}_{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

fn write_all(data_dir: &Path, files: &BTreeMap<String, File>) -> io::Result<()> {
    for (rel, f) in files {
        let path = data_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.bytes)?;
        let mode = u32::try_from(f.mode & 0o777).unwrap_or(0o644);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[(&str, &str)]) -> BTreeMap<String, File> {
        entries
            .iter()
            .map(|(p, c)| {
                let f = File {
                    bytes: c.as_bytes().to_vec(),
                    mode: 0o600,
                };
                (p.to_string(), f)
            })
            .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_new_set_replaces_the_old_one_through_the_data_link() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        publish(d, &set(&[("token", "one"), ("sub/a", "x"), ("gone", "g")])).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("token")).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(d.join("sub/a")).unwrap(), "x");
        assert_eq!(
            std::fs::read_link(d.join("token")).unwrap(),
            Path::new("..data/token")
        );
        let mode = std::fs::metadata(d.join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = std::fs::read_link(d.join(DATA)).unwrap();

        publish(d, &set(&[("token", "two"), ("sub/a", "y")])).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("token")).unwrap(), "two");
        assert_eq!(std::fs::read_to_string(d.join("sub/a")).unwrap(), "y");
        assert!(
            std::fs::symlink_metadata(d.join("gone")).is_err(),
            "stale link removed"
        );
        assert!(!d.join(&first).exists(), "old data directory removed");
        let n = names(d);
        assert_eq!(n.len(), 4, "{n:?}: one data dir, ..data, token, sub");
    }

    #[test]
    fn bad_paths_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x", "/abs", "..data", "a/../b", ""] {
            assert!(publish(dir.path(), &set(&[(bad, "x")])).is_err(), "{bad}");
        }
        assert!(names(dir.path()).is_empty());
        assert!(valid_path("a/b") && valid_path("token"));
    }
}
