//! Who a replica is: from its data dir, from `--initial-cluster`, or, when
//! joining, from a peer; and etcd's "already bootstrapped" refusal.

use std::path::Path;
use std::time::Duration;

use keel_net::{PeerClient, PeerMethod};
use tokio::time::Instant;

use super::*;
use crate::db::{Db, CF_META};
use crate::log_store::{decode, encode};
use crate::store::{ForwardRequest, ForwardResponse, OpenStoreError, StoreConfig};
use crate::types::{member_id, NodeId};

// ---- identity ----

/// Who this replica is, resolved before its store opens.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub id: NodeId,
    pub cluster_id: u64,
    /// Joined a running cluster: record the identity, never bootstrap.
    pub joined: bool,
}

struct Persisted {
    cluster: String,
    member: String,
    member_id: Option<u64>,
    removed: bool,
}

/// Reads the identity in an existing data dir without taking its lock.
fn peek(data_dir: &Path) -> Result<Option<Persisted>, OpenStoreError> {
    let store = data_dir.join("store");
    if !store.join("CURRENT").exists() {
        return Ok(None);
    }
    let opts = rocksdb::Options::default();
    let db = rocksdb::DB::open_cf_for_read_only(&opts, &store, [CF_META], false)
        .map_err(|e| OpenStoreError::Config(format!("data dir {}: {e}", store.display())))?;
    let cf = db.cf_handle(CF_META).expect("opened with meta");
    let get = |k: &[u8]| -> Result<Option<Vec<u8>>, OpenStoreError> {
        db.get_cf(cf, k)
            .map_err(|e| OpenStoreError::Config(format!("data dir {}: {e}", store.display())))
    };
    let text = |v: Option<Vec<u8>>| v.map(|v| String::from_utf8_lossy(&v).into_owned());
    Ok(Some(Persisted {
        cluster: text(get(KEY_CLUSTER)?).unwrap_or_default(),
        member: text(get(b"member")?).unwrap_or_default(),
        member_id: get(KEY_MEMBER_ID)?.and_then(|v| Some(u64::from_be_bytes(v.try_into().ok()?))),
        removed: get(KEY_REMOVED)?.is_some(),
    }))
}

fn removed_message(data_dir: &Path, name: &str, id: u64) -> String {
    format!(
        "member {name:?} ({id:x}) was removed from the cluster; data dir {} keeps that identity and \
         cannot rejoin. Add the replica again as a new member (`keel member add` or `etcdctl \
         member add`) and start it with an empty --data-dir and --initial-cluster-state existing",
        data_dir.display()
    )
}

/// Resolves this replica's member id and cluster id: from the data dir when
/// it has them, from `initial_cluster` when bootstrapping, or from a peer
/// when joining a running cluster.
pub(crate) async fn resolve_identity(
    cfg: &StoreConfig,
    peers: &PeerClient,
) -> Result<Resolved, OpenStoreError> {
    let static_identity = Resolved {
        id: member_id(&cfg.name),
        cluster_id: cfg.cluster_id(),
        joined: false,
    };
    match peek(&cfg.data_dir)? {
        Some(p) if p.removed => {
            let id = p.member_id.unwrap_or_else(|| member_id(&p.member));
            Err(OpenStoreError::Config(removed_message(
                &cfg.data_dir,
                &p.member,
                id,
            )))
        }
        Some(p) => match p.member_id {
            Some(id) => Ok(Resolved {
                id,
                cluster_id: u64::from_str_radix(&p.cluster, 16).map_err(|_| {
                    OpenStoreError::Config(format!(
                        "data dir {}: bad cluster id {:?}",
                        cfg.data_dir.display(),
                        p.cluster
                    ))
                })?,
                joined: true,
            }),
            None => Ok(static_identity),
        },
        None if cfg.initial_cluster_state == InitialClusterState::New => {
            refuse_rebootstrap(cfg, peers, &static_identity).await?;
            Ok(static_identity)
        }
        None => join_lookup(cfg, peers).await,
    }
}

/// etcd's "member has already been bootstrapped": an empty data dir with
/// `New` for a member the running cluster knows as started means its data
/// was lost. Rejoining under the old id could break raft's promises (its
/// votes are gone), so it is refused; it must come back as a new member.
/// Peers that do not answer are skipped (a normal first bootstrap).
async fn refuse_rebootstrap(
    cfg: &StoreConfig,
    peers: &PeerClient,
    me: &Resolved,
) -> Result<(), OpenStoreError> {
    // Not in simulations: they never lose a data dir, and these lookups,
    // racing peers that are still starting, made a seed's replays differ
    // (the `same_seed_same_history_*` tests caught it).
    if !matches!(cfg.transport, keel_net::Transport::Tcp) {
        return Ok(());
    }
    let req = ForwardRequest::Membership(MembershipRequest::Lookup {
        peer_addr: cfg.peer_addr.clone(),
    });
    let data = encode(&req).map_err(OpenStoreError::State)?;
    for (name, addr) in cfg.initial_cluster.iter().filter(|(n, _)| *n != cfg.name) {
        let r = peers
            .call(
                addr,
                PeerMethod::Forward,
                data.clone(),
                Duration::from_secs(1),
            )
            .await;
        if let Ok(Ok(ForwardResponse::Membership(Ok(MembershipReply::Found {
            cluster_id,
            id: Some(id),
            published: true,
        })))) = r.map(|b| decode::<ForwardResponse>(&b))
        {
            if cluster_id == me.cluster_id && id == me.id {
                return Err(OpenStoreError::Config(format!(
                    "member {:?} ({id:x}) has already been bootstrapped (member {name:?} knows                      it), but data dir {} is empty: its data was lost. Remove it (`keel member                      remove {}`), add it back as a new member (`keel member add`) and start it                      with --initial-cluster-state existing",
                    cfg.name,
                    cfg.data_dir.display(),
                    cfg.name
                )));
            }
        }
    }
    Ok(())
}

/// Asks the other replicas of `initial_cluster` which member id was added
/// for this replica's peer address.
async fn join_lookup(cfg: &StoreConfig, peers: &PeerClient) -> Result<Resolved, OpenStoreError> {
    let others: Vec<&(String, String)> = cfg
        .initial_cluster
        .iter()
        .filter(|(n, _)| *n != cfg.name)
        .collect();
    if others.is_empty() {
        return Err(OpenStoreError::Config(
            "--initial-cluster-state existing needs the running members in --initial-cluster"
                .into(),
        ));
    }
    let req = ForwardRequest::Membership(MembershipRequest::Lookup {
        peer_addr: cfg.peer_addr.clone(),
    });
    let data = encode(&req).map_err(OpenStoreError::State)?;
    let deadline = Instant::now() + cfg.request_timeout.max(Duration::from_secs(5));
    let mut last_err = String::new();
    while Instant::now() < deadline {
        for (name, addr) in &others {
            let r = peers
                .call(
                    addr,
                    PeerMethod::Forward,
                    data.clone(),
                    Duration::from_secs(2),
                )
                .await;
            match r.map(|b| decode::<ForwardResponse>(&b)) {
                Ok(Ok(ForwardResponse::Membership(Ok(MembershipReply::Found {
                    cluster_id,
                    id,
                    ..
                })))) => {
                    return match id {
                        Some(id) => Ok(Resolved {
                            id,
                            cluster_id,
                            joined: true,
                        }),
                        None => Err(OpenStoreError::Config(format!(
                            "the cluster has no member with peer URL http://{}; add it first \
                             (`keel member add {} --peer-url http://{}` or `etcdctl member add`)",
                            cfg.peer_addr, cfg.name, cfg.peer_addr
                        ))),
                    };
                }
                Ok(other) => last_err = format!("{name} ({addr}): unexpected answer {other:?}"),
                Err(e) => last_err = format!("{name}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(OpenStoreError::Config(format!(
        "cannot join: no member of --initial-cluster answered ({last_err})"
    )))
}

/// Records a joined identity in a fresh data dir, so a restart needs no
/// peer and keeps the id.
pub(crate) fn record_identity(db: &Db, r: &Resolved) -> Result<(), OpenStoreError> {
    if !r.joined {
        return Ok(());
    }
    let mut b = rocksdb::WriteBatch::default();
    b.put_cf(db.cf(CF_META), KEY_MEMBER_ID, r.id.to_be_bytes());
    b.put_cf(
        db.cf(CF_META),
        KEY_CLUSTER,
        format!("{:016x}", r.cluster_id),
    );
    db.write_synced(b)
        .map_err(|e| OpenStoreError::State(std::io::Error::other(e)))
}
