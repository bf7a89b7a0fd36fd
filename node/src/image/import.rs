//! `keel image import FILE`: `docker save` archives (the classic layout with
//! `<id>/layer.tar`, and the OCI-in-docker-save layout of Docker 25+ with
//! `blobs/sha256/...`), and OCI image-layout archives (`oci-layout` +
//! `index.json`), optionally gzip-compressed.
//!
//! Every file of the archive is staged and hashed first; blobs named by
//! digest are verified; layers are unpacked into staging. Only then, under
//! the store lock, do images and tags appear. A corrupt archive is refused
//! with a message and leaves nothing behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path};

use serde::Deserialize;
use serde_json::Value;

use super::digest::Digest;
use super::reference;
use super::store::{NewImage, StagedBlob, Staging, Store};
use super::{ImageError, Result};

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// One image an import installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub digest: String,
    /// Store keys, e.g. `docker.io/library/busybox:latest`.
    pub tags: Vec<String>,
}

/// The files of the archive, by normalised path.
struct Files {
    blobs: BTreeMap<String, StagedBlob>,
    links: BTreeMap<String, String>,
}

impl Files {
    fn get(&self, path: &str) -> Result<&StagedBlob> {
        let mut p = normalise(Path::new(path))
            .ok_or_else(|| ImageError::Corrupt(format!("archive path {path:?} is not valid")))?;
        for _ in 0..8 {
            if let Some(b) = self.blobs.get(&p) {
                return Ok(b);
            }
            match self.links.get(&p) {
                Some(target) => p = target.clone(),
                None => break,
            }
        }
        Err(ImageError::Corrupt(format!(
            "the archive lacks {path:?}, which its manifest names"
        )))
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        let b = self.get(path)?;
        std::fs::read(&b.path).map_err(|e| ImageError::io(format!("read staged {path}"), e))
    }

    /// An OCI layout blob: `blobs/<alg>/<hex>`, verified against its name.
    fn oci_blob(&self, digest: &str) -> Result<&StagedBlob> {
        let d = Digest::parse(digest)?;
        let b = self.get(&format!("blobs/sha256/{}", d.hex()))?;
        if b.digest != d {
            return Err(ImageError::Corrupt(format!(
                "blob {d} is corrupt: its content hashes to {}",
                b.digest
            )));
        }
        Ok(b)
    }
}

/// Imports every image of the archive at `path` into `store`.
pub fn import(store: &Store, path: &Path) -> Result<Vec<Imported>> {
    let file =
        File::open(path).map_err(|e| ImageError::io(format!("open {}", path.display()), e))?;
    let mut staging = store.staging()?;
    let files = stage_archive(&mut staging, file, path)?;
    let plans = if files.blobs.contains_key("manifest.json") {
        docker_save(&files)?
    } else if files.blobs.contains_key("index.json") {
        oci_layout(&files)?
    } else {
        return Err(ImageError::Corrupt(format!(
            "{}: not a docker save or OCI image-layout archive (no manifest.json or index.json)",
            path.display()
        )));
    };
    if plans.is_empty() {
        return Err(ImageError::Corrupt(format!(
            "{}: the archive holds no image",
            path.display()
        )));
    }
    let lock = store.lock()?;
    let mut out = Vec::new();
    // Unpack everything before tagging anything: a bad second image must
    // not leave the first one imported.
    let mut installed = Vec::new();
    for (image, tags) in plans {
        let digest = store.install(&lock, &staging, image, &[])?;
        installed.push((digest, tags));
    }
    let mut index = store.tags()?;
    for (digest, tags) in installed {
        for t in &tags {
            index.insert(t.clone(), digest.to_string());
        }
        out.push(Imported {
            digest: digest.to_string(),
            tags,
        });
    }
    store.set_tags(&lock, &index)?;
    Ok(out)
}

fn stage_archive(staging: &mut Staging, file: File, path: &Path) -> Result<Files> {
    let corrupt = |e: std::io::Error| ImageError::Corrupt(format!("{}: {e}", path.display()));
    let mut reader = BufReader::new(file);
    let gz = reader
        .fill_buf()
        .map_err(corrupt)?
        .starts_with(&[0x1f, 0x8b]);
    let input: Box<dyn Read> = match gz {
        true => Box::new(flate2::read::GzDecoder::new(reader)),
        false => Box::new(reader),
    };
    let mut archive = tar::Archive::new(input);
    let mut files = Files {
        blobs: BTreeMap::new(),
        links: BTreeMap::new(),
    };
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let Some(name) = normalise(&raw) else {
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let what = format!("{}: {name}", path.display());
                let blob = staging.blob(&mut entry, None, &what)?;
                files.blobs.insert(name, blob);
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let Some(target) = entry.link_name().map_err(corrupt)? else {
                    continue;
                };
                let joined = match entry.header().entry_type() {
                    tar::EntryType::Symlink => Path::new(&name)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(&target),
                    _ => target.into_owned(),
                };
                if let Some(t) = normalise(&joined) {
                    files.links.insert(name, t);
                }
            }
            _ => {}
        }
    }
    if files.blobs.is_empty() {
        return Err(ImageError::Corrupt(format!(
            "{}: empty or not a tar archive",
            path.display()
        )));
    }
    Ok(files)
}

/// A path inside the archive without `.`/leading `/`, with `..` resolved
/// lexically; `None` if it climbs out or is empty.
fn normalise(p: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            _ => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn docker_save(files: &Files) -> Result<Vec<(NewImage, Vec<String>)>> {
    let entries: Vec<SaveEntry> = serde_json::from_slice(&files.read("manifest.json")?)
        .map_err(|e| ImageError::Corrupt(format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let config = files.read(&e.config)?;
        serde_json::from_slice::<Value>(&config)
            .map_err(|err| ImageError::Corrupt(format!("{}: {err}", e.config)))?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let b = files.get(l)?;
            if let Some(hex) = l.strip_prefix("blobs/sha256/") {
                if b.digest.hex() != hex {
                    return Err(ImageError::Corrupt(format!(
                        "layer {l} is corrupt: its content hashes to {}",
                        b.digest
                    )));
                }
            }
            layers.push(b.clone());
        }
        let manifest = synthesize_manifest(&config, &layers)?;
        let mut tags = Vec::new();
        for t in e.repo_tags.unwrap_or_default() {
            tags.push(reference::key(&reference::parse(&t)?));
        }
        out.push((
            NewImage {
                manifest,
                config,
                layers,
            },
            tags,
        ));
    }
    Ok(out)
}

/// An OCI manifest for an image that came without one (classic `docker
/// save`): its digest names the image in the store.
fn synthesize_manifest(config: &[u8], layers: &[StagedBlob]) -> Result<Vec<u8>> {
    let mut ls = Vec::new();
    for l in layers {
        let mut head = [0u8; 2];
        let gz = File::open(&l.path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
            && head == [0x1f, 0x8b];
        ls.push(serde_json::json!({
            "mediaType": if gz { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" },
            "digest": l.digest.as_str(),
            "size": l.size_bytes,
        }));
    }
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of(config).as_str(),
            "size": config.len(),
        },
        "layers": ls,
    });
    serde_json::to_vec(&m).map_err(|e| ImageError::Corrupt(e.to_string()))
}

fn oci_layout(files: &Files) -> Result<Vec<(NewImage, Vec<String>)>> {
    let index: Value = serde_json::from_slice(&files.read("index.json")?)
        .map_err(|e| ImageError::Corrupt(format!("index.json: {e}")))?;
    let descriptors = index["manifests"]
        .as_array()
        .ok_or_else(|| ImageError::Corrupt("index.json has no manifests".into()))?;
    let mut out = Vec::new();
    for desc in descriptors {
        let tags = names_of(desc)?;
        let manifest_digest = manifest_for_platform(files, desc)?;
        let manifest = std::fs::read(&files.oci_blob(&manifest_digest)?.path)
            .map_err(|e| ImageError::io("read staged manifest", e))?;
        out.push((image_from_manifest(files, &manifest)?, tags));
    }
    Ok(out)
}

/// Store keys from a descriptor's annotations: containerd's full
/// `io.containerd.image.name`, or `org.opencontainers.image.ref.name` when
/// it is a full reference (a bare tag names no repository: untagged).
fn names_of(desc: &Value) -> Result<Vec<String>> {
    let a = &desc["annotations"];
    let name = a["io.containerd.image.name"].as_str().or_else(|| {
        a["org.opencontainers.image.ref.name"]
            .as_str()
            .filter(|n| n.contains('/') || n.contains(':'))
    });
    match name {
        Some(n) => Ok(vec![reference::key(&reference::parse(n)?)]),
        None => Ok(Vec::new()),
    }
}

/// Follows an index descriptor down to the manifest for this host's
/// platform.
fn manifest_for_platform(files: &Files, desc: &Value) -> Result<String> {
    let mut desc = desc.clone();
    for _ in 0..4 {
        let digest = desc["digest"]
            .as_str()
            .ok_or_else(|| ImageError::Corrupt("a descriptor has no digest".into()))?
            .to_string();
        let media = desc["mediaType"].as_str().unwrap_or_default();
        let bytes = std::fs::read(&files.oci_blob(&digest)?.path)
            .map_err(|e| ImageError::io("read staged blob", e))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Corrupt(format!("{digest}: {e}")))?;
        let is_index = INDEX_TYPES.contains(&media)
            || INDEX_TYPES.contains(&v["mediaType"].as_str().unwrap_or_default())
            || (v["manifests"].is_array() && v["layers"].is_null());
        if !is_index {
            return Ok(digest);
        }
        desc = pick_platform(&v)
            .ok_or_else(|| {
                ImageError::Corrupt(format!(
                    "index {digest} has no image for linux/{}",
                    host_arch()
                ))
            })?
            .clone();
    }
    Err(ImageError::Corrupt("indexes nested too deep".into()))
}

/// The entry of an image index for linux/<host arch>.
pub fn pick_platform(index: &Value) -> Option<&Value> {
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == host_arch())
}

/// The host architecture in OCI/Go spelling (`amd64`, `arm64`).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn image_from_manifest(files: &Files, manifest: &[u8]) -> Result<NewImage> {
    let m: Value = serde_json::from_slice(manifest)
        .map_err(|e| ImageError::Corrupt(format!("manifest: {e}")))?;
    let config_digest = m["config"]["digest"]
        .as_str()
        .ok_or_else(|| ImageError::Corrupt("manifest has no config digest".into()))?;
    let config = std::fs::read(&files.oci_blob(config_digest)?.path)
        .map_err(|e| ImageError::io("read staged config", e))?;
    let mut layers = Vec::new();
    for l in m["layers"].as_array().into_iter().flatten() {
        let d = l["digest"]
            .as_str()
            .ok_or_else(|| ImageError::Corrupt("a layer has no digest".into()))?;
        layers.push(files.oci_blob(d)?.clone());
    }
    Ok(NewImage {
        manifest: manifest.to_vec(),
        config,
        layers,
    })
}
