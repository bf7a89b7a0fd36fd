//! keel's snapshot file: what `Maintenance.Snapshot` streams and
//! `keel snapshot save` (or `etcdctl snapshot save`) writes.
//!
//! Layout, framed like etcd's so etcd clients accept it:
//! `payload ‖ zero padding to a multiple of 512 bytes ‖ SHA-256 of both`.
//! The payload is a versioned, bincode-encoded [`Payload`]: the raft
//! snapshot metadata and the state machine's snapshot body (every retained
//! key version, leases, the revision and the compaction point).
//!
//! Guarantee: [`SnapshotFile::read`] returns only a file whose trailer
//! matches its contents and whose format this keel understands; a
//! truncated, corrupt or foreign file is an error naming the problem.

use std::io::Write;
use std::path::{Path, PathBuf};

use openraft::alias::SnapshotMetaOf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::log_store::{decode, encode};
use crate::mvcc::Mvcc;
use crate::state_machine::SnapshotBody;
use crate::types::TypeConfig;

/// Names the payload's layout; bumped when it changes incompatibly.
pub const FORMAT: &str = "keel-snapshot/1";
/// etcd clients check that the body before the checksum is page-aligned.
const PAGE_BYTES: usize = 512;
const SHA256_BYTES: usize = 32;

#[derive(Serialize, Deserialize)]
struct Payload {
    format: String,
    meta: SnapshotMetaOf<TypeConfig>,
    body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot file {path}: {len} bytes is not a 512-byte-aligned body plus a sha256 trailer (truncated?)")]
    Truncated { path: PathBuf, len: usize },
    #[error("snapshot file {path}: sha256 hash mismatch (corrupt or truncated file)")]
    HashMismatch { path: PathBuf },
    #[error("snapshot file {path}: not a keel snapshot ({detail})")]
    NotKeel { path: PathBuf, detail: String },
    #[error("snapshot file {path}: format {found:?} is not supported by this keel ({FORMAT})")]
    Format { path: PathBuf, found: String },
}

/// A verified, decoded snapshot.
pub struct SnapshotFile {
    pub(crate) body: SnapshotBody,
    /// Size of the file in bytes.
    pub size_bytes: u64,
    /// The SHA-256 trailer, hex.
    pub sha256: String,
}

/// What `keel snapshot status` prints (etcdutl's columns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotStatus {
    /// etcd's HashKV of the state at `revision`: comparable with
    /// `etcdctl endpoint hashkv` on the cluster the snapshot came from.
    pub hash: u32,
    pub revision: i64,
    /// Key versions stored (etcd counts its backend's keys the same way).
    pub total_keys: usize,
    pub total_size: u64,
}

/// Frames a snapshot for the wire and for files.
pub(crate) fn encode_file(
    meta: SnapshotMetaOf<TypeConfig>,
    body: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    let mut out = encode(&Payload {
        format: FORMAT.into(),
        meta,
        body,
    })?;
    out.resize(out.len().div_ceil(PAGE_BYTES) * PAGE_BYTES, 0);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    Ok(out)
}

impl SnapshotFile {
    /// Reads and verifies `path`.
    pub fn read(path: &Path) -> Result<SnapshotFile, SnapshotFileError> {
        let bytes = std::fs::read(path).map_err(|source| SnapshotFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::decode(path, &bytes)
    }

    /// Verifies and decodes file contents; `path` only names them in errors.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<SnapshotFile, SnapshotFileError> {
        let p = || path.to_path_buf();
        let len = bytes.len();
        if len < PAGE_BYTES + SHA256_BYTES || !(len - SHA256_BYTES).is_multiple_of(PAGE_BYTES) {
            return Err(SnapshotFileError::Truncated { path: p(), len });
        }
        let (content, trailer) = bytes.split_at(len - SHA256_BYTES);
        if Sha256::digest(content).as_slice() != trailer {
            return Err(SnapshotFileError::HashMismatch { path: p() });
        }
        let payload: Payload = decode(content).map_err(|e| SnapshotFileError::NotKeel {
            path: p(),
            detail: e.to_string(),
        })?;
        if payload.format != FORMAT {
            return Err(SnapshotFileError::Format {
                path: p(),
                found: payload.format,
            });
        }
        let body: SnapshotBody = decode(&payload.body).map_err(|e| SnapshotFileError::NotKeel {
            path: p(),
            detail: format!("snapshot body: {e}"),
        })?;
        Ok(SnapshotFile {
            body,
            size_bytes: len as u64,
            sha256: trailer.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    pub fn revision(&self) -> i64 {
        self.body.current_rev
    }

    /// Hash, revision, key versions and size.
    pub fn status(&self) -> SnapshotStatus {
        let mvcc = self.to_mvcc();
        SnapshotStatus {
            hash: mvcc.hash_at(mvcc.current_revision()),
            revision: self.body.current_rev,
            total_keys: self.body.versions.len(),
            total_size: self.size_bytes,
        }
    }

    fn to_mvcc(&self) -> Mvcc {
        use keel_proto::mvccpb::KeyValue;
        use prost::Message;
        let mut mvcc = Mvcc::new();
        for (id, ttl) in &self.body.leases {
            mvcc.restore_lease(*id, *ttl);
        }
        for (rev, key, kv) in &self.body.versions {
            let kv = kv
                .as_ref()
                .and_then(|b| KeyValue::decode(b.as_slice()).ok());
            mvcc.restore_version(*rev, key.clone(), kv);
        }
        mvcc.restore_meta(self.body.current_rev, self.body.compact_rev);
        mvcc
    }
}

/// Streams a snapshot from the first of `endpoints` (`http://host:port`,
/// `https://host:port` or `host:port`) that serves one into `path`,
/// verifies it, and only then moves it into place (like etcdctl:
/// `path.part`, fsync, rename). Refuses to overwrite an existing `path`.
/// `tls`: etcdctl's `--cacert/--cert/--key`, for a client port that
/// requires TLS (see [`keel_net::tls::connect_etcd_client`]).
pub async fn save(
    endpoints: &[String],
    path: &Path,
    tls: &keel_net::tls::ClientTlsFiles,
) -> Result<SnapshotStatus, SaveError> {
    use keel_proto::etcdserverpb::{maintenance_client::MaintenanceClient, SnapshotRequest};
    if path.exists() {
        return Err(SaveError::Exists(path.to_path_buf()));
    }
    if endpoints.is_empty() {
        return Err(SaveError::NoEndpoints);
    }
    let dial = keel_net::tls::Dial::from_files(tls);
    let tls = tls
        .client_config()
        .map_err(|e| SaveError::Tls(e.to_string()))?;
    let mut errors = Vec::new();
    for ep in endpoints {
        let fetch = async {
            let ch = keel_net::tls::connect_etcd_client(
                ep,
                tls.clone(),
                std::time::Duration::from_secs(3),
                // A large store takes a while to stream.
                std::time::Duration::from_secs(600),
            )
            .await?;
            let mut client = MaintenanceClient::new(ch).max_decoding_message_size(usize::MAX);
            let mut stream = client
                .snapshot(SnapshotRequest {})
                .await
                .map_err(|s| keel_net::tls::explain_status(ep, &s, dial))?
                .into_inner();
            let mut bytes = Vec::new();
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|s| keel_net::tls::explain_status(ep, &s, dial))?
            {
                bytes.extend_from_slice(&chunk.blob);
            }
            Ok::<_, String>(bytes)
        };
        match fetch.await {
            Ok(bytes) => {
                let snap = SnapshotFile::decode(path, &bytes)?;
                let part = path.with_extension("part");
                let write = || -> std::io::Result<()> {
                    let mut f = std::fs::File::create(&part)?;
                    f.write_all(&bytes)?;
                    f.sync_all()?;
                    std::fs::rename(&part, path)
                };
                write().map_err(|source| SaveError::Write {
                    path: path.to_path_buf(),
                    source,
                })?;
                return Ok(snap.status());
            }
            Err(e) => errors.push(keel_net::tls::name_endpoint(ep, e)),
        }
    }
    Err(SaveError::NoEndpointServed(errors.join("; ")))
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("{0}: already exists; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("no --endpoints given")]
    NoEndpoints,
    #[error("{0}")]
    Tls(String),
    #[error("no endpoint served a snapshot: {0}")]
    NoEndpointServed(String),
    #[error("the snapshot received is unusable: {0}")]
    Received(#[from] SnapshotFileError),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}
