//! The on-disk image store (layout in the [module docs](super)).
//!
//! Concurrency: every mutation (install, tag, remove, GC) holds an exclusive
//! `flock` on `<root>/lock`, so `keel image import` and a running agent can
//! share one store. Reads of installed images need no lock: an image
//! directory is complete from the moment it is visible.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci_client::Reference;
use serde::{Deserialize, Serialize};

use super::digest::{Digest, HashingWriter};
use super::reference;
use super::unpack::{self, remove_any};
use super::{ImageError, Result};
use crate::runtime::ImageRoot;

const RECORD: &str = "image.json";
const ROOTFS: &str = "rootfs";
const LAST_USED: &str = "last-used";

/// The store root; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Held while mutating; dropping it unlocks.
pub struct StoreLock {
    _file: File,
}

/// What the store keeps about one installed image (`images/<hex>/image.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub digest: String,
    pub config_digest: String,
    pub layers: Vec<String>,
    /// Blob bytes (manifest, config, layers) plus unpacked file bytes.
    pub size_bytes: u64,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// One row of `keel image ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// `registry/repository`, or `<none>` for an untagged image.
    pub repository: String,
    /// Tag, or `<none>` (untagged, or named by digest only).
    pub tag: String,
    pub digest: String,
    pub size_bytes: u64,
}

/// A blob written to staging and verified; moved into `blobs/` on install.
#[derive(Debug, Clone)]
pub struct StagedBlob {
    pub digest: Digest,
    pub size_bytes: u64,
    pub path: PathBuf,
}

/// An image ready to install: the manifest, its config, the layers in
/// order (all staged or already in `blobs/`).
pub struct NewImage {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layers: Vec<StagedBlob>,
}

/// The parts of an OCI/Docker image config the runtime uses.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ProcessConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating) the store at `root` and removes staging directories
    /// left by processes that no longer exist.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for d in ["blobs/sha256", "images", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p)
                .map_err(|e| ImageError::io(format!("create {}", p.display()), e))?;
        }
        let store = Store { root };
        store.clean_stale_staging();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Blocks until this process holds the store's exclusive lock.
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ImageError::io(format!("open {}", path.display()), e))?;
        flock_exclusive(&file)
            .map_err(|e| ImageError::io(format!("lock {}", path.display()), e))?;
        Ok(StoreLock { _file: file })
    }

    fn clean_stale_staging(&self) {
        let Ok(entries) = std::fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<i32>().ok());
            // SAFETY: kill with signal 0 only checks that the process exists.
            let alive = pid.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0);
            if !alive {
                let _ = remove_any(&e.path());
            }
        }
    }

    /// A fresh staging directory, removed when the guard drops.
    pub fn staging(&self) -> Result<Staging> {
        let n = STAGING_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .root
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| ImageError::io(format!("create {}", dir.display()), e))?;
        Ok(Staging { dir, next: 0 })
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    fn image_dir(&self, d: &Digest) -> PathBuf {
        self.root.join("images").join(d.hex())
    }

    /// Installs `image` under `tags` (store keys, see [`reference::key`]).
    /// Unpacks into staging and renames, so either the whole image appears
    /// or nothing does. Returns the manifest digest.
    pub fn install(
        &self,
        _lock: &StoreLock,
        staging: &Staging,
        image: NewImage,
        tags: &[String],
    ) -> Result<Digest> {
        let digest = Digest::of(&image.manifest);
        let dir = self.image_dir(&digest);
        if !dir.join(RECORD).is_file() {
            let work = staging.dir.join(format!("unpack-{}", digest.hex()));
            let rootfs = work.join(ROOTFS);
            std::fs::create_dir_all(&rootfs)
                .map_err(|e| ImageError::io(format!("create {}", rootfs.display()), e))?;
            let mut size_bytes = (image.manifest.len() + image.config.len()) as u64;
            for layer in &image.layers {
                // A layer shared with an image installed earlier in the same
                // operation has already moved into blobs/.
                let path = match layer.path.exists() {
                    true => layer.path.clone(),
                    false => self.blob_path(&layer.digest),
                };
                let file = File::open(&path)
                    .map_err(|e| ImageError::io(format!("open {}", path.display()), e))?;
                let applied = unpack::apply_layer(&rootfs, file, layer.digest.as_str())?;
                size_bytes += layer.size_bytes + applied.content_bytes;
            }
            let record = record_of(&digest, &image, size_bytes)?;
            write_json(&work.join(RECORD), &record)?;
            std::fs::rename(&work, &dir).map_err(|e| {
                ImageError::io(format!("rename {} to {}", work.display(), dir.display()), e)
            })?;
        }
        self.put_blob_bytes(&Digest::of(&image.config), &image.config)?;
        self.put_blob_bytes(&digest, &image.manifest)?;
        for layer in &image.layers {
            let dest = self.blob_path(&layer.digest);
            if layer.path != dest && !dest.exists() && layer.path.exists() {
                std::fs::rename(&layer.path, &dest)
                    .map_err(|e| ImageError::io(format!("store blob {}", layer.digest), e))?;
            }
        }
        let mut index = self.tags()?;
        for t in tags {
            index.insert(t.clone(), digest.to_string());
        }
        self.write_tags(&index)?;
        touch(&dir.join(LAST_USED));
        Ok(digest)
    }

    fn put_blob_bytes(&self, d: &Digest, bytes: &[u8]) -> Result<()> {
        let path = self.blob_path(d);
        if path.exists() {
            return Ok(());
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| ImageError::io(format!("write blob {d}"), e))
    }

    /// The tag index (`key -> manifest digest`).
    pub fn tags(&self) -> Result<BTreeMap<String, String>> {
        let path = self.root.join("tags.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ImageError::Corrupt(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(ImageError::io(format!("read {}", path.display()), e)),
        }
    }

    /// Replaces the tag index (under the lock).
    pub fn set_tags(&self, _lock: &StoreLock, index: &BTreeMap<String, String>) -> Result<()> {
        self.write_tags(index)
    }

    fn write_tags(&self, index: &BTreeMap<String, String>) -> Result<()> {
        write_json(&self.root.join("tags.json"), index)
    }

    /// The manifest digest `image` names in this store, if installed.
    pub fn lookup(&self, image: &Reference) -> Result<Option<Digest>> {
        if let Some(d) = self.tags()?.get(&reference::key(image)) {
            let d = Digest::parse(d)?;
            return Ok(self.record(&d).is_ok().then_some(d));
        }
        if let Some(d) = image.digest() {
            let d = Digest::parse(d)?;
            return Ok(self.record(&d).is_ok().then_some(d));
        }
        Ok(None)
    }

    pub fn record(&self, d: &Digest) -> Result<ImageRecord> {
        let path = self.image_dir(d).join(RECORD);
        let bytes = std::fs::read(&path).map_err(|_| ImageError::NotFound(d.to_string()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Corrupt(format!("{}: {e}", path.display())))
    }

    /// What a runtime needs to run installed image `d`; marks it used now
    /// (GC removes the least recently used first).
    pub fn image_root(&self, d: &Digest) -> Result<ImageRoot> {
        let r = self.record(d)?;
        let dir = self.image_dir(d);
        touch(&dir.join(LAST_USED));
        Ok(ImageRoot {
            digest: r.digest,
            rootfs: dir.join(ROOTFS),
            entrypoint: r.entrypoint,
            cmd: r.cmd,
            env: r.env,
            working_dir: r.working_dir,
            user: r.user,
        })
    }

    /// Every installed image's manifest digest.
    pub fn installed(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("images");
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| ImageError::io(format!("read {}", dir.display()), e))?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(d) = Digest::parse(&format!("sha256:{name}")) {
                if e.path().join(RECORD).is_file() {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// When image `d` was last resolved for a container (or installed).
    pub fn last_used(&self, d: &Digest) -> std::time::SystemTime {
        std::fs::metadata(self.image_dir(d).join(LAST_USED))
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH)
    }

    /// `keel image ls`: one row per tag, plus untagged images.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let tags = self.tags()?;
        let mut rows = Vec::new();
        let mut tagged = BTreeSet::new();
        for (key, digest) in &tags {
            let Ok(d) = Digest::parse(digest) else {
                continue;
            };
            let Ok(rec) = self.record(&d) else { continue };
            tagged.insert(d);
            let (repository, tag) = match key.split_once('@') {
                Some((repo, _)) => (repo.to_string(), "<none>".to_string()),
                None => match key.rsplit_once(':') {
                    Some((repo, tag)) if !tag.contains('/') => (repo.into(), tag.into()),
                    _ => (key.clone(), "<none>".into()),
                },
            };
            rows.push(ImageSummary {
                repository,
                tag,
                digest: digest.clone(),
                size_bytes: rec.size_bytes,
            });
        }
        for d in self.installed()? {
            if !tagged.contains(&d) {
                let rec = self.record(&d)?;
                rows.push(ImageSummary {
                    repository: "<none>".into(),
                    tag: "<none>".into(),
                    digest: d.to_string(),
                    size_bytes: rec.size_bytes,
                });
            }
        }
        Ok(rows)
    }

    /// `keel image rm`: `name` is a reference or a bare `sha256:` digest.
    /// A tag that shares its image with other tags is only untagged; the
    /// last name of an image removes the image, unless a container uses it
    /// (`users` maps digests in use to who uses them), which is refused.
    /// Returns the digests deleted.
    pub fn remove(
        &self,
        lock: &StoreLock,
        name: &str,
        users: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<Digest>> {
        let mut tags = self.tags()?;
        let (digest, keys): (Digest, Vec<String>) = if name.starts_with("sha256:") {
            let d = Digest::parse(name)?;
            let keys = tags
                .iter()
                .filter(|(_, v)| **v == d.as_str())
                .map(|(k, _)| k.clone())
                .collect();
            (d, keys)
        } else {
            let r = reference::parse(name)?;
            let d = self
                .lookup(&r)?
                .ok_or_else(|| ImageError::NotFound(name.to_string()))?;
            let key = reference::key(&r);
            (
                d,
                tags.contains_key(&key).then_some(key).into_iter().collect(),
            )
        };
        if self.record(&digest).is_err() {
            return Err(ImageError::NotFound(name.to_string()));
        }
        let remaining = tags
            .iter()
            .filter(|(k, v)| **v == digest.as_str() && !keys.contains(k))
            .count();
        if remaining == 0 {
            if let Some(u) = users.get(digest.as_str()) {
                return Err(ImageError::InUse {
                    image: name.to_string(),
                    users: u.join(", "),
                });
            }
        }
        for k in &keys {
            tags.remove(k);
        }
        self.write_tags(&tags)?;
        if remaining > 0 {
            return Ok(Vec::new());
        }
        self.delete_images(lock, std::slice::from_ref(&digest))?;
        Ok(vec![digest])
    }

    /// Deletes images (and their tags) and then every blob no remaining
    /// image references. The caller has checked they are unused.
    pub fn delete_images(&self, _lock: &StoreLock, digests: &[Digest]) -> Result<()> {
        let mut tags = self.tags()?;
        tags.retain(|_, v| !digests.iter().any(|d| d.as_str() == v));
        self.write_tags(&tags)?;
        for d in digests {
            // Rename first so a crash mid-delete never leaves a half image visible.
            let dir = self.image_dir(d);
            let doomed =
                self.root
                    .join("tmp")
                    .join(format!("{}-rm-{}", std::process::id(), d.hex()));
            if std::fs::rename(&dir, &doomed).is_ok() {
                remove_any(&doomed)?;
            }
        }
        let mut keep = BTreeSet::new();
        for d in self.installed()? {
            let r = self.record(&d)?;
            keep.insert(r.digest.clone());
            keep.insert(r.config_digest.clone());
            keep.extend(r.layers.iter().cloned());
        }
        let blobs = self.root.join("blobs/sha256");
        if let Ok(entries) = std::fs::read_dir(&blobs) {
            for e in entries.flatten() {
                let name = format!("sha256:{}", e.file_name().to_string_lossy());
                if !keep.contains(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }
}

/// A per-operation staging directory under `tmp/`, removed on drop.
pub struct Staging {
    dir: PathBuf,
    next: u64,
}

impl Staging {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Copies `input` into a staged blob, verifying it against `expected`
    /// when given; a mismatch is [`ImageError::Corrupt`].
    pub fn blob(
        &mut self,
        mut input: impl Read,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<StagedBlob> {
        self.next += 1;
        let path = self.dir.join(format!("blob-{}", self.next));
        let file = File::create(&path)
            .map_err(|e| ImageError::io(format!("create {}", path.display()), e))?;
        let mut w = HashingWriter::new(std::io::BufWriter::new(file));
        std::io::copy(&mut input, &mut w)
            .map_err(|e| ImageError::Corrupt(format!("{what}: {e}")))?;
        w.flush()
            .map_err(|e| ImageError::io(format!("write {}", path.display()), e))?;
        let (digest, size_bytes, _) = w.finish();
        if let Some(want) = expected {
            if *want != digest {
                return Err(ImageError::Corrupt(format!(
                    "{what}: content is {digest}, expected {want} (corrupt or truncated)"
                )));
            }
        }
        Ok(StagedBlob {
            digest,
            size_bytes,
            path,
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = remove_any(&self.dir);
    }
}

fn record_of(digest: &Digest, image: &NewImage, size_bytes: u64) -> Result<ImageRecord> {
    let config: ConfigFile = serde_json::from_slice(&image.config)
        .map_err(|e| ImageError::Corrupt(format!("image config: {e}")))?;
    let p = config.config.unwrap_or_default();
    let env = p
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    Ok(ImageRecord {
        digest: digest.to_string(),
        config_digest: Digest::of(&image.config).to_string(),
        layers: image.layers.iter().map(|l| l.digest.to_string()).collect(),
        size_bytes,
        entrypoint: p.entrypoint.unwrap_or_default(),
        cmd: p.cmd.unwrap_or_default(),
        env,
        working_dir: p.working_dir.filter(|w| !w.is_empty()),
        user: p.user.filter(|u| !u.is_empty()),
    })
}

/// Writes JSON to a temporary file and renames it over `path`.
fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| ImageError::Corrupt(e.to_string()))?;
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| ImageError::io(format!("write {}", path.display()), e))
}

/// flock(2), retried on EINTR (std's `File::lock` is newer than the MSRV).
fn flock_exclusive(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: the fd is open for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn touch(path: &Path) {
    if let Ok(f) = File::create(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}
