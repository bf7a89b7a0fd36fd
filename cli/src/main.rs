//! The `keel` binary: clap wiring only; the work lives in the crates.

mod chaos;
mod server;

use clap::{Parser, Subcommand};

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
    /// Run a control-plane replica: the raft-store, serving etcd's v3 API.
    Server(server::ServerArgs),
    /// Run deterministic fault simulations of raft-store clusters and check
    /// the recorded histories (linearizability, watch, durability, liveness).
    Chaos(chaos::ChaosArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Server(args) => rt.block_on(server::run(args)),
        Command::Chaos(args) => chaos::run(args),
    }
}
