//! Deterministic simulation of whole keel clusters under turmoil: the real
//! store code on simulated hosts, network and time, driven by a seed.

pub mod client;
pub mod cluster;
mod identify;
pub mod nemesis;
pub mod proxy;
pub mod real;
pub mod run;
pub mod watcher;

pub use keel_store::Mutation;
pub use nemesis::FaultKind;
pub use real::{run_real, ProcessFault, RealConfig};
pub use run::{run_seed, FaultSpan, LeaderChange, SeedResult, SimConfig};
