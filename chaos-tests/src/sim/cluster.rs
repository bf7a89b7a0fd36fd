//! Replicas as turmoil hosts: the real keel store and its etcd gRPC
//! services, over simulated sockets, with RocksDB in a per-host directory
//! that survives a crash and restart of that host.
//!
//! Fault model of the disk: a simulated crash drops the host's tasks, not
//! the OS page cache, so writes RocksDB handed to the OS survive it. The
//! simulation therefore tests raft's durability logic (what was acked,
//! what is re-applied), not torn or lost unsynced writes; those are for the
//! real-process mode with SIGKILL.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_store::{grpc, Durability, Mutation, Store, StoreConfig, Transport};

thread_local! {
    /// Leadership probes of the simulated replicas, by name (the whole
    /// simulation runs on one thread).
    static LEADER_PROBES: RefCell<BTreeMap<String, Box<dyn Fn() -> bool>>> = RefCell::new(BTreeMap::new());
}

/// The running replica that believes it is the leader, if any.
pub fn leader(sim: &mut turmoil::Sim<'_>) -> Option<String> {
    let names: Vec<String> = LEADER_PROBES.with(|p| {
        p.borrow()
            .iter()
            .filter(|(_, is_leader)| is_leader())
            .map(|(n, _)| n.clone())
            .collect()
    });
    names.into_iter().find(|n| sim.is_host_running(n.as_str()))
}

/// Forgets the probes of a finished simulation.
pub fn clear_probes() {
    LEADER_PROBES.with(|p| p.borrow_mut().clear());
}

pub const PEER_PORT: u16 = 2380;
pub const CLIENT_PORT: u16 = 2379;

pub fn replica_name(i: usize) -> String {
    format!("r{i}")
}

pub fn client_addr(i: usize) -> String {
    format!("{}:{CLIENT_PORT}", replica_name(i))
}

/// Adds `n` replicas named `r0..r{n-1}` with their data under `root`.
pub fn add_replicas(sim: &mut turmoil::Sim<'_>, n: usize, root: &Path, mutation: Mutation) {
    let initial: Vec<(String, String)> = (0..n)
        .map(|i| (replica_name(i), format!("{}:{PEER_PORT}", replica_name(i))))
        .collect();
    for i in 0..n {
        let name = replica_name(i);
        let dir = root.join(&name);
        let initial = initial.clone();
        sim.host(name.clone(), move || {
            let mut cfg = config(&name, dir.clone(), initial.clone());
            cfg.mutation = mutation;
            serve_replica(cfg)
        });
    }
}

fn config(name: &str, dir: PathBuf, initial: Vec<(String, String)>) -> StoreConfig {
    let mut cfg = StoreConfig::new(
        name,
        dir,
        &format!("{name}:{PEER_PORT}"),
        &format!("{name}:{CLIENT_PORT}"),
    );
    cfg.initial_cluster = initial;
    cfg.transport = Transport::Sim;
    cfg.durability = Durability::Inline;
    cfg.heartbeat_ms = 50;
    cfg.election_timeout_ms = 300;
    cfg.request_timeout = Duration::from_secs(2);
    // Small, so snapshots, purges and catch-up by snapshot happen in runs.
    cfg.snapshot_logs = 200;
    cfg
}

async fn serve_replica(cfg: StoreConfig) -> turmoil::Result {
    let peer = grpc::bind(Transport::Sim, &format!("0.0.0.0:{PEER_PORT}")).await?;
    let client = grpc::bind(Transport::Sim, &format!("0.0.0.0:{CLIENT_PORT}")).await?;
    let name = cfg.name.clone();
    let store = Store::open(cfg).await?;
    let probe = store.leadership_probe();
    LEADER_PROBES.with(|p| p.borrow_mut().insert(name, Box::new(probe)));
    tokio::spawn(grpc::serve_peer(
        store.clone(),
        peer,
        std::future::pending(),
    ));
    grpc::serve_client(store, client, std::future::pending()).await?;
    Ok(())
}
