//! keel's built-in images (`keel/pause`, `keel/echo`) on the docker
//! runtime, made on the agent's machine instead of pulled.
//!
//! Why: these machines have no registry, and the built-ins are served by
//! the keel binary itself (`keel image <name>`), so the agent can make
//! them from what it already has. The first container of a built-in makes
//! its Docker image with `POST /images/create?fromSrc=-` (`docker import`):
//! a tar streamed from the keel binary (as `/keel`) and every shared
//! library `ldd` lists for it, with `ENTRYPOINT ["/keel","image","<name>"]`.
//!
//! Guarantees:
//! - The image is tagged `keel/<name>:bin-<path>-<build>`, digests of the
//!   binary's path and of its size and modification time: a rebuilt keel
//!   makes a new image (the old one holds the old binary), an unchanged one
//!   reuses it across agent restarts. Older builds of the same path are
//!   removed once the new one is made (not forced: Docker keeps those a
//!   container still uses); other installations sharing the engine keep
//!   theirs.
//! - If the image vanishes after it was made (`docker rmi`), the next
//!   container create finds it missing and the runtime makes it again.
//! - One import per built-in and runtime instance at a time; concurrent
//!   starts wait for it. A failed import is retried by the next start.
//! - Any tag of a built-in name means the built-in, as with the other
//!   runtimes (`keel/echo:v2` is `keel/echo`).
//! - Errors are [`RuntimeError::ImagePull`] naming the image and what
//!   could not be done (no keel binary configured, `ldd` failed, a file
//!   unreadable, the engine refused the import).
//!
//! Not done: `keel/host` (the host's userland) has no Docker equivalent and
//! stays a missing image on this runtime.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::models::ImageSummary;
use bollard::query_parameters::{CreateImageOptions, ListImagesOptions, RemoveImageOptions};
use bollard::{body_try_stream, Docker};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Mutex};

use super::docker::{message_of, status_of};
use super::images::ImageRef;
use super::{Result, RuntimeError};

/// Where the keel binary sits inside a built-in image.
const BINARY_IN_IMAGE: &str = "/keel";
/// Tag prefix of images made here; see the module docs.
const TAG_PREFIX: &str = "bin-";
/// Size of the chunks streamed to the engine.
const CHUNK_BYTES: usize = 1 << 20;

/// The built-in served by `image`, if it names one (`pause`, `echo`).
pub fn builtin_name(image: &str) -> Option<&'static str> {
    match ImageRef::parse(image).ok()?.name.as_str() {
        "keel/pause" => Some("pause"),
        "keel/echo" => Some("echo"),
        _ => None,
    }
}

/// Makes and remembers the built-in images of one runtime instance.
#[derive(Debug)]
pub struct Builtins {
    /// The binary copied into the images; `None`: built-ins are missing
    /// images (e.g. a library user without a keel binary).
    binary: Option<PathBuf>,
    /// Docker references already known to exist, by built-in name. The
    /// lock is held for the whole make, so concurrent starts wait.
    made: Mutex<HashMap<&'static str, String>>,
}

impl Builtins {
    pub fn new(binary: Option<PathBuf>) -> Self {
        Builtins {
            binary,
            made: Mutex::new(HashMap::new()),
        }
    }

    /// The Docker reference of built-in `name` (`pause`, `echo`), made
    /// first if the engine does not have it. `image` is the spec's image,
    /// for error messages.
    pub async fn ensure(&self, docker: &Docker, name: &'static str, image: &str) -> Result<String> {
        let fail = |reason: String| RuntimeError::ImagePull {
            image: image.to_string(),
            reason: format!("cannot make the built-in image locally: {reason}"),
        };
        let binary = self
            .binary
            .as_deref()
            .ok_or_else(|| fail("this docker runtime has no keel binary to copy into it".into()))?;
        let mut made = self.made.lock().await;
        if let Some(reference) = made.get(name) {
            return Ok(reference.clone());
        }
        let tag = binary_tag(binary).map_err(&fail)?;
        let repo = format!("keel/{name}");
        let reference = format!("{repo}:{tag}");
        match docker.inspect_image(&reference).await {
            Ok(_) => {}
            Err(e) if status_of(&e) == Some(404) => {
                tracing::info!(image = %reference, binary = %binary.display(), "making built-in docker image");
                import(docker, binary, name, &repo, &tag)
                    .await
                    .map_err(&fail)?;
                docker
                    .inspect_image(&reference)
                    .await
                    .map_err(|e| fail(format!("imported, but {reference} is not there: {e}")))?;
                remove_stale(docker, &repo, &reference).await;
            }
            Err(e) => return Err(fail(format!("inspect {reference}: {}", message_of(&e)))),
        }
        made.insert(name, reference.clone());
        Ok(reference)
    }

    /// Forgets a made image the engine no longer has, so the next
    /// [`Builtins::ensure`] checks and makes it again.
    pub async fn forget(&self, name: &str) {
        self.made.lock().await.remove(name);
    }
}

/// `bin-<8 hex>-<8 hex>`: digests of the binary's canonical path, and of
/// its size and mtime. The first part names "this keel installation", so
/// only its own older builds are garbage (see [`remove_stale`]).
fn binary_tag(binary: &Path) -> std::result::Result<String, String> {
    let path = binary
        .canonicalize()
        .map_err(|e| format!("keel binary {}: {e}", binary.display()))?;
    let meta =
        std::fs::metadata(&path).map_err(|e| format!("keel binary {}: {e}", path.display()))?;
    let short = |bytes: &[u8]| hex::encode(Sha256::digest(bytes))[..8].to_string();
    let mut build = Vec::new();
    build.extend(meta.len().to_le_bytes());
    build.extend(meta.mtime().to_le_bytes());
    build.extend(meta.mtime_nsec().to_le_bytes());
    Ok(format!(
        "{TAG_PREFIX}{}-{}",
        short(path.as_os_str().as_encoded_bytes()),
        short(&build)
    ))
}

/// The shared libraries (and the dynamic loader) `ldd` lists for
/// `binary`; none for a static binary.
pub fn shared_libraries(binary: &Path) -> std::result::Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("cannot run ldd to find the keel binary's libraries: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if format!("{stdout}{stderr}").contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(format!(
            "ldd {} failed: {}",
            binary.display(),
            stderr.trim()
        ));
    }
    if stdout.contains("not found") {
        return Err(format!(
            "ldd {}: a shared library is missing: {}",
            binary.display(),
            stdout.trim()
        ));
    }
    let mut libs: Vec<PathBuf> = stdout
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// Streams the image tar to the engine and waits for the import to end.
async fn import(
    docker: &Docker,
    binary: &Path,
    name: &str,
    repo: &str,
    tag: &str,
) -> std::result::Result<(), String> {
    let libs = {
        let binary = binary.to_path_buf();
        tokio::task::spawn_blocking(move || shared_libraries(&binary))
            .await
            .map_err(|e| format!("ldd task: {e}"))??
    };
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    let writer_binary = binary.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        let sink = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK_BYTES),
        };
        let result = write_tar(sink, &writer_binary, &libs);
        if let Err(e) = &result {
            // Makes the engine see a failed upload rather than a short tar.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.clone())));
        }
        result
    });
    let body = body_try_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let entrypoint = serde_json::to_string(&[BINARY_IN_IMAGE, crate::IMAGE_ARG, name])
        .map_err(|e| e.to_string())?;
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
        message: Some(format!("keel built-in image {name}, made by the agent")),
        changes: vec![
            format!("ENTRYPOINT {entrypoint}"),
            "WORKDIR /".into(),
            format!("LABEL io.keel.builtin={name}"),
        ],
        ..Default::default()
    };
    let mut progress = docker.create_image(Some(options), Some(body), None);
    let mut engine_error = None;
    while let Some(item) = progress.next().await {
        if let Err(e) = item {
            engine_error = Some(format!(
                "the Docker engine refused the import: {}",
                message_of(&e)
            ));
            break;
        }
    }
    drop(progress);
    let written = writer.await.map_err(|e| format!("tar task: {e}"))?;
    written?;
    match engine_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The image's files: directories first, `/keel`, the libraries at their
/// own paths (symlinks followed: the tar holds regular files), and `/tmp`.
fn write_tar(
    sink: ChannelWriter,
    binary: &Path,
    libs: &[PathBuf],
) -> std::result::Result<(), String> {
    let mut tar = tar::Builder::new(sink);
    tar.follow_symlinks(true);
    // Docker's unpacker rejects GNU sparse entries (type `S`).
    tar.sparse(false);
    let mut dirs: Vec<PathBuf> = libs
        .iter()
        .flat_map(|l| {
            l.ancestors()
                .skip(1)
                .map(Path::to_path_buf)
                .collect::<Vec<_>>()
        })
        .filter(|d| d != Path::new("/"))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        append_dir(&mut tar, dir, 0o755)?;
    }
    append_dir(&mut tar, Path::new("/tmp"), 0o1777)?;
    tar.append_path_with_name(binary, BINARY_IN_IMAGE.trim_start_matches('/'))
        .map_err(|e| format!("read {}: {e}", binary.display()))?;
    for lib in libs {
        let inside = lib.strip_prefix("/").unwrap_or(lib);
        tar.append_path_with_name(lib, inside)
            .map_err(|e| format!("read {}: {e}", lib.display()))?;
    }
    let mut sink = tar
        .into_inner()
        .map_err(|e| format!("finish the image tar: {e}"))?;
    sink.flush().map_err(|e| format!("send the image tar: {e}"))
}

fn append_dir(
    tar: &mut tar::Builder<ChannelWriter>,
    dir: &Path,
    mode: u32,
) -> std::result::Result<(), String> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(mode);
    header.set_size(0);
    header.set_mtime(0);
    let inside = dir.strip_prefix("/").unwrap_or(dir);
    tar.append_data(&mut header, inside, std::io::empty())
        .map_err(|e| format!("image tar: {e}"))
}

/// Removes `repo`'s tags made from older builds of the binary `keep` was
/// made from; failures (e.g. still in use) are only logged.
async fn remove_stale(docker: &Docker, repo: &str, keep: &str) {
    let filters = HashMap::from([("reference".to_string(), vec![repo.to_string()])]);
    let options = ListImagesOptions {
        filters: Some(filters),
        ..Default::default()
    };
    let images: Vec<ImageSummary> = match docker.list_images(Some(options)).await {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list old built-in images");
            return;
        }
    };
    // `keel/pause:bin-<path>-`: older builds of the same binary path.
    let Some(prefix) = keep.rsplit_once('-').map(|(p, _)| format!("{p}-")) else {
        return;
    };
    for reference in images.iter().flat_map(|i| i.repo_tags.iter()) {
        if reference == keep || !reference.starts_with(&prefix) {
            continue;
        }
        let options = RemoveImageOptions {
            force: false,
            ..Default::default()
        };
        match docker.remove_image(reference, Some(options), None).await {
            Ok(_) => tracing::info!(image = %reference, "removed an older built-in image"),
            Err(e) => {
                tracing::debug!(image = %reference, error = %message_of(&e), "older built-in image kept")
            }
        }
    }
}

/// A blocking writer feeding an async body stream in `CHUNK_BYTES` chunks.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the Docker engine stopped reading the image"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_ignore_tag_and_registry() {
        assert_eq!(builtin_name("keel/pause"), Some("pause"));
        assert_eq!(builtin_name("keel/pause:3.9"), Some("pause"));
        assert_eq!(builtin_name("docker.io/keel/echo:v2"), Some("echo"));
        assert_eq!(builtin_name("keel/host"), None);
        assert_eq!(builtin_name("busybox"), None);
        assert_eq!(builtin_name(""), None);
    }

    #[test]
    fn tag_follows_the_binary_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("keel");
        std::fs::write(&bin, b"one").unwrap();
        let a = binary_tag(&bin).unwrap();
        assert!(
            a.starts_with(TAG_PREFIX) && a.len() == TAG_PREFIX.len() + 17,
            "{a}"
        );
        assert_eq!(binary_tag(&bin).unwrap(), a);
        std::fs::write(&bin, b"longer").unwrap();
        let b = binary_tag(&bin).unwrap();
        assert_ne!(b, a, "a rebuilt binary gets a new tag");
        assert_eq!(b[..13], a[..13], "same path, same prefix");
        let err = binary_tag(&dir.path().join("nope")).unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn ldd_lists_absolute_libraries_or_fails_clearly() {
        let libs = shared_libraries(Path::new("/bin/sh")).unwrap();
        assert!(libs.iter().all(|l| l.is_absolute()), "{libs:?}");
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc")),
            "{libs:?}"
        );
        let err = shared_libraries(Path::new("/nonexistent/keel")).unwrap_err();
        assert!(err.contains("/nonexistent/keel"), "{err}");
    }
}
