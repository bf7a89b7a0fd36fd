//! The `keel` binary: clap wiring only; the work lives in the crates.

mod agent;
mod certs;
mod chaos;
mod controller_manager;
mod image;
mod join;
mod kubeconfig;
mod member;
mod server;
mod server_join;
mod server_tls;
mod server_token;
mod snapshot;
mod token;
mod up;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc for every Rust allocation of the
/// process (RocksDB's C++ keeps its own): the API server, controllers and
/// store allocate and free many small short-lived objects (JSON trees,
/// protobuf messages), where glibc's free lists and consolidation cost
/// about a third of the CPU in a profile of 3 replicas under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "keel",
    version,
    about = "keel: a Kubernetes-compatible orchestrator with an embedded Raft-replicated store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a control-plane replica: the raft-store (etcd v3 API) and the
    /// Kubernetes API server.
    Server(Box<server::ServerArgs>),
    /// Run the scheduler and controllers against an API server through a
    /// kubeconfig (when replicas run with --disable-controllers).
    ControllerManager(Box<controller_manager::ControllerManagerArgs>),
    /// Run a node agent: registers the node and runs the pods bound to it.
    Agent(Box<agent::AgentArgs>),
    /// One control replica and N agents in one process, data in ./keel-data.
    Up(Box<up::UpArgs>),
    /// Run deterministic fault simulations of raft-store clusters and check
    /// the recorded histories (linearizability, watch, durability, liveness).
    Chaos(chaos::ChaosArgs),
    /// Back up and restore the store: `save` a snapshot from a replica,
    /// `status` of a file, `restore` it into a new cluster's data dirs.
    Snapshot(snapshot::SnapshotArgs),
    /// The OCI image store of an agent's --root-dir: import, ls, rm, pull.
    Image(image::ImageArgs),
    /// List, add, remove or promote control-plane replicas (the etcd
    /// Cluster API of a replica's client port).
    Member(member::MemberArgs),
    /// Print a kubeconfig for a user (a client certificate signed by the
    /// cluster CA): `keel kubeconfig --user alice --group dev`.
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Certificates for TLS between replicas and for etcd clients:
    /// `init-ca` for a static cluster, `issue` peer/server/client certs.
    Certs(certs::CertsArgs),
    /// Create, list or delete bootstrap tokens (the join tokens agents and
    /// replicas join with), as `kubeadm token` does.
    Token(token::TokenArgs),
}

fn main() -> anyhow::Result<()> {
    // Container supervisors and built-in images are this same binary
    // (`keel __supervise`, `keel image echo|pause`): one binary ships all.
    keel_node::run_internal_mode(&std::env::args().collect::<Vec<_>>());
    let cli = Cli::parse();
    // Simulated replicas log every injected fault; show that only when asked.
    let default_filter = match cli.command {
        Command::Chaos(_) | Command::Kubeconfig(_) | Command::Certs(_) | Command::Token(_) => "off",
        _ => "info,openraft=warn",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default_filter.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Server(args) => rt.block_on(server::run(*args)),
        Command::ControllerManager(args) => rt.block_on(controller_manager::run(*args)),
        Command::Agent(args) => rt.block_on(agent::run(*args)),
        Command::Up(args) => rt.block_on(up::run(*args)),
        Command::Chaos(args) => chaos::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Snapshot(args) => rt.block_on(snapshot::run(args)),
        Command::Image(args) => rt.block_on(image::run(args)),
        Command::Member(args) => rt.block_on(member::run(args)),
        Command::Kubeconfig(args) => kubeconfig::run(args),
        Command::Token(args) => rt.block_on(token::run(args)),
    }
}
