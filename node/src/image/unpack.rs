//! Applying one layer tarball (plain, gzip, zstd) to a root filesystem the way
//! overlay-based runtimes present it:
//! - `.wh.<name>` removes `<name>` of lower layers;
//! - `.wh..wh..opq` in a directory hides everything lower layers put there
//!   (entries of the same layer stay, wherever they appear in the tar);
//! - modes, owners (when running as root), mtimes, symlinks and hardlinks are
//!   kept; devices are skipped (a rootless store cannot create them).
//!
//! Safety: entry paths and hardlink targets must stay inside the rootfs —
//! `..` components are refused, and so is any path whose parent directory is
//! a symlink (writing through it could land anywhere on the host). A symlink
//! entry itself is created as-is: its target is only ever resolved inside the
//! container's own mount namespace.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use super::{ImageError, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// What one layer put on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub content_bytes: u64,
}

/// Applies the layer read from `layer` (compression detected from its first
/// bytes) on top of `rootfs`. On error the rootfs is partly written: callers
/// unpack into a staging directory and discard it.
pub fn apply_layer(rootfs: &Path, layer: impl Read, what: &str) -> Result<Applied> {
    let mut reader = BufReader::new(layer);
    let head = reader
        .fill_buf()
        .map_err(|e| ImageError::Corrupt(format!("layer {what}: {e}")))?
        .to_vec();
    if head.starts_with(&GZIP_MAGIC) {
        apply_tar(rootfs, flate2::read::GzDecoder::new(reader), what)
    } else if head.starts_with(&ZSTD_MAGIC) {
        let decoder = ruzstd::decoding::StreamingDecoder::new(reader)
            .map_err(|e| ImageError::Corrupt(format!("layer {what}: zstd: {e}")))?;
        apply_tar(rootfs, decoder, what)
    } else {
        apply_tar(rootfs, reader, what)
    }
}

fn apply_tar(rootfs: &Path, input: impl Read, what: &str) -> Result<Applied> {
    let corrupt = |e: std::io::Error| ImageError::Corrupt(format!("layer {what}: {e}"));
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    // SAFETY: geteuid has no preconditions.
    archive.set_preserve_ownerships(unsafe { libc::geteuid() } == 0);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut written: HashSet<PathBuf> = HashSet::new();
    let mut applied = Applied::default();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let Some(rel) = clean(&raw)? else { continue };
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        applied.entries += 1;
        if name != OPAQUE {
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                // A whiteout only removes what exists; it never creates its
                // parents, and never reaches through a symlink.
                ensure_no_symlink_parents(rootfs, parent_rel, &raw)?;
                if hidden.is_empty() || hidden == "." || hidden == ".." {
                    return Err(escape(&raw, "whiteout of '.' or '..'"));
                }
                if !hidden.starts_with(".wh.") {
                    remove_any(&rootfs.join(parent_rel).join(hidden))?;
                }
                continue;
            }
        }
        let parent = ensure_parents(rootfs, parent_rel, &raw)?;
        if name == OPAQUE {
            hide_lower(&parent, &written)?;
            continue;
        }
        let target = rootfs.join(&rel);
        let existing = std::fs::symlink_metadata(&target).ok();
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                if existing.is_some_and(|m| !m.is_dir()) {
                    remove_any(&target)?;
                }
                entry.unpack(&target).map_err(corrupt)?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| {
                        ImageError::Corrupt(format!("layer {what}: hardlink {raw:?} has no target"))
                    })?
                    .into_owned();
                let Some(link_rel) = clean(&link)? else {
                    return Err(escape(&link, "hardlink to the rootfs itself"));
                };
                ensure_no_symlink_parents(
                    rootfs,
                    link_rel.parent().unwrap_or(Path::new("")),
                    &link,
                )?;
                let source = rootfs.join(&link_rel);
                if std::fs::symlink_metadata(&source).is_err() {
                    return Err(ImageError::Corrupt(format!(
                        "layer {what}: hardlink {raw:?} points to {link:?}, which does not exist"
                    )));
                }
                if existing.is_some() {
                    remove_any(&target)?;
                }
                std::fs::hard_link(&source, &target)
                    .map_err(|e| ImageError::io(format!("hardlink {}", target.display()), e))?;
            }
            tar::EntryType::Block | tar::EntryType::Char => {
                tracing::debug!(path = %raw.display(), "skipping device node in layer");
                continue;
            }
            _ => {
                if existing.is_some() {
                    remove_any(&target)?;
                }
                applied.content_bytes += entry.header().size().unwrap_or(0);
                entry.unpack(&target).map_err(corrupt)?;
            }
        }
        written.insert(target);
    }
    Ok(applied)
}

fn escape(path: &Path, reason: &str) -> ImageError {
    ImageError::PathEscape {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The entry path relative to the rootfs: leading `/` and `.` dropped,
/// `..` refused. `None` for the rootfs itself (`./`).
fn clean(raw: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => return Err(escape(raw, "contains '..'")),
            Component::Prefix(_) => return Err(escape(raw, "has a path prefix")),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Creates the missing parent directories of an entry (mode 0755) and
/// refuses to go through a symlink or a non-directory.
fn ensure_parents(rootfs: &Path, parent_rel: &Path, raw: &Path) -> Result<PathBuf> {
    let mut dir = rootfs.to_path_buf();
    for c in parent_rel.components() {
        dir.push(c);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(escape(
                    raw,
                    &format!("parent {} is a symlink", dir.display()),
                ))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ImageError::Corrupt(format!(
                    "layer entry {raw:?}: parent {} is not a directory",
                    dir.display()
                )))
            }
            Err(_) => std::fs::create_dir(&dir)
                .map_err(|e| ImageError::io(format!("create {}", dir.display()), e))?,
        }
    }
    Ok(dir)
}

fn ensure_no_symlink_parents(rootfs: &Path, parent_rel: &Path, raw: &Path) -> Result<()> {
    let mut dir = rootfs.to_path_buf();
    for c in parent_rel.components() {
        dir.push(c);
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(escape(
                raw,
                &format!("parent {} is a symlink", dir.display()),
            ));
        }
    }
    Ok(())
}

/// Removes a file, symlink or directory tree; absent is fine. Never
/// follows a symlink.
pub(crate) fn remove_any(path: &Path) -> Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return Ok(()),
    };
    r.map_err(|e| ImageError::io(format!("remove {}", path.display()), e))
}

/// Opaque directory: everything under `dir` that this layer did not write
/// goes (recursively, so lower contents of a re-created subdirectory go too).
fn hide_lower(dir: &Path, written: &HashSet<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| ImageError::io(format!("read {}", dir.display()), e))?;
    for e in entries {
        let e = e.map_err(|e| ImageError::io(format!("read {}", dir.display()), e))?;
        let path = e.path();
        if !written.contains(&path) {
            remove_any(&path)?;
        } else if e.file_type().is_ok_and(|t| t.is_dir()) {
            hide_lower(&path, written)?;
        }
    }
    Ok(())
}
