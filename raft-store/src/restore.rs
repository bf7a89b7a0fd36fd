//! Disaster recovery: `keel snapshot restore` and `keel server
//! --force-new-cluster`.
//!
//! Both write a data dir whose state machine holds the recovered keys,
//! leases, revision and compaction point, and whose raft state is empty: no
//! log, no vote, no membership. Such a dir belongs to a new cluster (its
//! identity is derived from the new `--initial-cluster`, like a fresh
//! one's), and on its first start [`crate::Store::open`] bootstraps raft
//! with that membership, a log starting from the restored state. Every
//! member restored from the same snapshot starts from the same state, so
//! they agree from the first entry on.
//!
//! Guarantees: nothing is written before the snapshot is verified; a
//! restore never writes into a non-empty data dir; force-new-cluster never
//! deletes the old store, it moves it aside (`store.before-force-new-cluster.<unix-s>`).

use std::path::{Path, PathBuf};

use openraft::alias::{SnapshotMetaOf, StoredMembershipOf};
use openraft::storage::RaftStateMachine;
use openraft::{RaftLogReader, RaftSnapshotBuilder};

use crate::db::{Db, Identity, OpenError};
use crate::log_store::{encode, Durability, LogStore};
use crate::mvcc::TxnLimits;
use crate::snapshot_file::{SnapshotFile, SnapshotFileError};
use crate::state_machine::{SnapshotBody, StateMachine};
use crate::store::StoreConfig;
use crate::types::TypeConfig;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    File(#[from] SnapshotFileError),
    #[error("data dir {0}: not empty; restore only into a new or empty dir (nothing was changed)")]
    NotEmpty(PathBuf),
    #[error("invalid restore configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Db(#[from] OpenError),
    #[error("data dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a restore produced.
#[derive(Debug, Clone)]
pub struct Restored {
    pub cluster_id: u64,
    pub member_id: u64,
    pub revision: i64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Restores `file` into `data_dir` as member `name` of the new cluster
/// `initial_cluster` (`(name, peer_addr)` pairs), like `etcdutl snapshot
/// restore`. `data_dir` must be absent or empty.
pub async fn restore(
    file: &Path,
    data_dir: &Path,
    name: &str,
    initial_cluster: Vec<(String, String)>,
) -> Result<Restored, RestoreError> {
    let snap = SnapshotFile::read(file)?;
    let cfg = new_cluster_config(name, data_dir, initial_cluster)?;
    match std::fs::read_dir(data_dir) {
        Ok(mut d) => {
            if d.next().is_some() {
                return Err(RestoreError::NotEmpty(data_dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(data_dir)(e)),
    }
    write_store(data_dir, &cfg, snap.body).await
}

/// The config whose identity a recovered dir takes.
fn new_cluster_config(
    name: &str,
    data_dir: &Path,
    initial_cluster: Vec<(String, String)>,
) -> Result<StoreConfig, RestoreError> {
    let Some((_, peer)) = initial_cluster.iter().find(|(n, _)| n == name) else {
        return Err(RestoreError::Config(format!(
            "--initial-cluster does not name this member {name:?}"
        )));
    };
    let mut cfg = StoreConfig::new(name, data_dir, &peer.clone(), "");
    cfg.initial_cluster = initial_cluster;
    Ok(cfg)
}

/// Creates `dir/store` holding `body` as the state of a member of `cfg`'s
/// cluster whose raft is not bootstrapped yet.
async fn write_store(
    dir: &Path,
    cfg: &StoreConfig,
    mut body: SnapshotBody,
) -> Result<Restored, RestoreError> {
    let cluster_id = cfg.cluster_id();
    let db = Db::open(
        dir,
        &Identity {
            cluster: format!("{cluster_id:016x}"),
            member: cfg.name.clone(),
        },
    )?;
    // Client addresses are re-published by the new members.
    body.client_addrs.clear();
    let revision = body.current_rev;
    let bytes = encode(&body).map_err(io_err(dir))?;
    let mut sm = StateMachine::open(
        db,
        TxnLimits {
            max_ops: usize::MAX,
        },
    )
    .map_err(io_err(dir))?;
    // No applied log id and no membership: raft starts from nothing on top
    // of this state (see the module docs).
    let meta = SnapshotMetaOf::<TypeConfig> {
        last_log_id: None,
        last_membership: StoredMembershipOf::<TypeConfig>::default(),
    };
    sm.install_snapshot(&meta, bytes)
        .await
        .map_err(io_err(dir))?;
    Ok(Restored {
        cluster_id,
        member_id: crate::types::member_id(&cfg.name),
        revision,
    })
}

/// Rewrites the store in `data_dir` into a one-member cluster of just
/// `name` at `peer_addr`, keeping every key, lease and the revision, after
/// applying the entries it had committed but not applied. The old store is
/// kept under `store.before-force-new-cluster.<unix-s>`. A store that
/// already is a one-member cluster of `name` is left as it is (so the flag
/// may stay on across restarts). Returns whether it rewrote anything.
pub async fn force_new_cluster(
    data_dir: &Path,
    name: &str,
    peer_addr: &str,
) -> Result<bool, RestoreError> {
    let cfg = new_cluster_config(name, data_dir, vec![(name.into(), peer_addr.into())])?;
    let (db, id) = Db::open_existing(data_dir)?;
    if id.member != name {
        return Err(RestoreError::Config(format!(
            "data dir {} belongs to member {:?}, not {name:?}",
            data_dir.display(),
            id.member
        )));
    }
    if id.cluster == format!("{:016x}", cfg.cluster_id()) {
        return Ok(false);
    }
    let body = {
        let mut log = LogStore::new(db.clone(), Durability::Inline);
        let mut sm = StateMachine::open(
            db,
            TxnLimits {
                max_ops: usize::MAX,
            },
        )
        .map_err(io_err(data_dir))?;
        let (applied, _) = sm.applied_state().await.map_err(io_err(data_dir))?;
        let committed = openraft::storage::RaftLogStorage::read_committed(&mut log)
            .await
            .map_err(io_err(data_dir))?;
        let from = applied.map_or(0, |l| l.index + 1);
        if let Some(c) = committed.filter(|c| c.index >= from) {
            let entries = log
                .try_get_log_entries(from..=c.index)
                .await
                .map_err(io_err(data_dir))?;
            tracing::info!(
                entries = entries.len(),
                "force-new-cluster: applying committed entries"
            );
            sm.apply_committed_offline(&entries)
                .map_err(io_err(data_dir))?;
        }
        let snap = sm.build_snapshot().await.map_err(io_err(data_dir))?;
        crate::log_store::decode::<SnapshotBody>(&snap.snapshot).map_err(io_err(data_dir))?
        // Every handle on the old store is dropped here.
    };
    let tmp = data_dir.join(".force-new-cluster.tmp");
    if tmp.exists() {
        return Err(RestoreError::Config(format!(
            "{} exists (an interrupted --force-new-cluster?); move it away first",
            tmp.display()
        )));
    }
    let restored = write_store(&tmp, &cfg, body).await?;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let old = data_dir.join(format!("store.before-force-new-cluster.{now_s}"));
    std::fs::rename(data_dir.join("store"), &old).map_err(io_err(data_dir))?;
    std::fs::rename(tmp.join("store"), data_dir.join("store")).map_err(io_err(data_dir))?;
    std::fs::remove_dir(&tmp).map_err(io_err(&tmp))?;
    tracing::warn!(
        old_store = %old.display(),
        revision = restored.revision,
        cluster_id = format!("{:x}", restored.cluster_id),
        "force-new-cluster: membership rewritten to this member alone"
    );
    Ok(true)
}
