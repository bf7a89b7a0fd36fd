//! The data directory: one RocksDB holding the raft log, the vote and the
//! state machine in separate column families.
//!
//! All column families share one write-ahead log, so a synced write (a log
//! append, the vote) also makes every earlier unsynced write durable. The
//! state machine relies on that: its batches are unsynced, and whatever a
//! crash loses of them is re-applied from the durable log.
//!
//! Guarantee: opening never wipes or overwrites anything. A directory that
//! is not a keel store, belongs to another cluster or member, or has another
//! format version is refused with an error naming the problem.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, DB};

pub const CF_LOG: &str = "log";
pub const CF_RAFT: &str = "raft";
pub const CF_KV: &str = "kv";
pub const CF_META: &str = "meta";
pub const CF_LEASE: &str = "lease";
const ALL_CFS: [&str; 5] = [CF_LOG, CF_RAFT, CF_KV, CF_META, CF_LEASE];

/// Bumped when the on-disk layout changes incompatibly.
pub const FORMAT_VERSION: &str = "keel-store/1";
const KEY_FORMAT: &[u8] = b"format";
const KEY_CLUSTER: &[u8] = b"cluster";
const KEY_MEMBER: &[u8] = b"member";

/// Who this data dir belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// A token naming the cluster (derived from its initial membership).
    pub cluster: String,
    pub member: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data dir {0}: not a keel data dir (it is not empty and holds no keel store); refusing to use it")]
    Foreign(PathBuf),
    #[error("data dir {0}: holds no keel store")]
    NoStore(PathBuf),
    #[error("data dir {path}: format {found:?} is not supported by this keel ({FORMAT_VERSION}); refusing to start")]
    Format { path: PathBuf, found: String },
    #[error("data dir {path}: belongs to cluster {found:?}, not {expected:?}; refusing to start")]
    OtherCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("data dir {path}: belongs to member {found:?}, not {expected:?}; refusing to start")]
    OtherMember {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("data dir {path}: cannot open store (corrupt or in use?): {source}")]
    Rocks {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("data dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The opened store. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DB>,
    /// True when this open created the store (first start of this member).
    pub fresh: bool,
}

impl Db {
    /// Opens (or creates, if `data_dir` is absent or empty) the store under
    /// `data_dir/store`.
    pub fn open(data_dir: &Path, id: &Identity) -> Result<Db, OpenError> {
        let store = data_dir.join("store");
        let fresh = !store.join("CURRENT").exists();
        if fresh && !dir_is_empty_or_absent(data_dir, &["kubeconfig", "pki"])? {
            return Err(OpenError::Foreign(data_dir.to_path_buf()));
        }
        let mut opts = Options::default();
        opts.create_if_missing(fresh);
        opts.create_missing_column_families(fresh);
        opts.set_max_background_jobs(2);
        let cfs = ALL_CFS
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, Options::default()));
        let db =
            DB::open_cf_descriptors(&opts, &store, cfs).map_err(|source| OpenError::Rocks {
                path: store.clone(),
                source,
            })?;
        let db = Db {
            inner: Arc::new(db),
            fresh,
        };
        if fresh {
            db.write_identity(id).map_err(|source| OpenError::Rocks {
                path: store.clone(),
                source,
            })?;
        } else {
            db.check_identity(&store, id)?;
        }
        Ok(db)
    }

    /// Opens an existing store whatever cluster or member it belongs to,
    /// returning who it belongs to (for `--force-new-cluster`, which
    /// rewrites that identity). Refuses a dir without a keel store and a
    /// store of another format version.
    pub fn open_existing(data_dir: &Path) -> Result<(Db, Identity), OpenError> {
        let store = data_dir.join("store");
        if !store.join("CURRENT").exists() {
            return Err(OpenError::NoStore(data_dir.to_path_buf()));
        }
        let opts = Options::default();
        let cfs = ALL_CFS
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, Options::default()));
        let db =
            DB::open_cf_descriptors(&opts, &store, cfs).map_err(|source| OpenError::Rocks {
                path: store.clone(),
                source,
            })?;
        let db = Db {
            inner: Arc::new(db),
            fresh: false,
        };
        let id = db.stored_identity(&store)?;
        Ok((db, id))
    }

    fn write_identity(&self, id: &Identity) -> Result<(), rocksdb::Error> {
        let mut b = rocksdb::WriteBatch::default();
        let meta = self.cf(CF_META);
        b.put_cf(meta, KEY_FORMAT, FORMAT_VERSION);
        b.put_cf(meta, KEY_CLUSTER, &id.cluster);
        b.put_cf(meta, KEY_MEMBER, &id.member);
        self.write_synced(b)
    }

    /// The identity a store records, after checking its format version.
    fn stored_identity(&self, path: &Path) -> Result<Identity, OpenError> {
        let read = |k: &[u8]| -> Result<String, OpenError> {
            let v = self
                .inner
                .get_cf(self.cf(CF_META), k)
                .map_err(|source| OpenError::Rocks {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default())
        };
        let format = read(KEY_FORMAT)?;
        if format != FORMAT_VERSION {
            return Err(OpenError::Format {
                path: path.to_path_buf(),
                found: format,
            });
        }
        Ok(Identity {
            cluster: read(KEY_CLUSTER)?,
            member: read(KEY_MEMBER)?,
        })
    }

    fn check_identity(&self, path: &Path, id: &Identity) -> Result<(), OpenError> {
        let stored = self.stored_identity(path)?;
        let cluster = stored.cluster;
        if cluster != id.cluster {
            return Err(OpenError::OtherCluster {
                path: path.to_path_buf(),
                found: cluster,
                expected: id.cluster.clone(),
            });
        }
        let member = stored.member;
        if member != id.member {
            return Err(OpenError::OtherMember {
                path: path.to_path_buf(),
                found: member,
                expected: id.member.clone(),
            });
        }
        Ok(())
    }

    pub fn cf(&self, name: &str) -> &ColumnFamily {
        self.inner
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    pub fn raw(&self) -> &DB {
        &self.inner
    }

    /// Writes and fsyncs (the WAL), including every earlier unsynced write.
    pub fn write_synced(&self, batch: rocksdb::WriteBatch) -> Result<(), rocksdb::Error> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.inner.write_opt(batch, &wo)
    }

    /// Writes to the WAL without fsync; durable with the next synced write.
    pub fn write_unsynced(&self, batch: rocksdb::WriteBatch) -> Result<(), rocksdb::Error> {
        self.inner.write(batch)
    }
}

fn dir_is_empty_or_absent(dir: &Path, allowed: &[&str]) -> Result<bool, OpenError> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(source) => Err(OpenError::Io {
            path: dir.to_path_buf(),
            source,
        }),
        Ok(entries) => {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if !allowed.contains(&name.as_ref()) && name != "store" {
                    return Ok(false);
                }
                if name == "store"
                    && std::fs::read_dir(e.path())
                        .map(|mut d| d.next().is_some())
                        .unwrap_or(true)
                {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: &str, m: &str) -> Identity {
        Identity {
            cluster: c.into(),
            member: m.into(),
        }
    }

    #[test]
    fn refuses_foreign_other_cluster_and_other_member() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        let db = Db::open(&d, &id("c1", "a")).unwrap();
        assert!(db.fresh);
        drop(db);
        let db = Db::open(&d, &id("c1", "a")).unwrap();
        assert!(!db.fresh);
        drop(db);
        let e = Db::open(&d, &id("c2", "a")).err().unwrap();
        assert!(e.to_string().contains("belongs to cluster"), "{e}");
        let e = Db::open(&d, &id("c1", "b")).err().unwrap();
        assert!(e.to_string().contains("belongs to member"), "{e}");

        let foreign = dir.path().join("foreign");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join("important.txt"), "keep me").unwrap();
        let e = Db::open(&foreign, &id("c1", "a")).err().unwrap();
        assert!(e.to_string().contains("not a keel data dir"), "{e}");
        assert_eq!(
            std::fs::read_to_string(foreign.join("important.txt")).unwrap(),
            "keep me"
        );
    }

    #[test]
    fn refuses_other_format_version() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        let db = Db::open(&d, &id("c1", "a")).unwrap();
        db.raw()
            .put_cf(db.cf(CF_META), KEY_FORMAT, "keel-store/0")
            .unwrap();
        drop(db);
        let e = Db::open(&d, &id("c1", "a")).err().unwrap();
        assert!(
            e.to_string()
                .contains("format \"keel-store/0\" is not supported"),
            "{e}"
        );
    }

    #[test]
    fn refuses_corrupt_store() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        drop(Db::open(&d, &id("c1", "a")).unwrap());
        // Clobber the manifest pointer.
        std::fs::write(d.join("store/CURRENT"), "garbage\n").unwrap();
        let e = Db::open(&d, &id("c1", "a")).err().unwrap();
        assert!(e.to_string().contains("cannot open store"), "{e}");
        assert_eq!(
            std::fs::read_to_string(d.join("store/CURRENT")).unwrap(),
            "garbage\n"
        );
    }
}
