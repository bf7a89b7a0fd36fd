//! keel-controllers: the scheduler and the control loops (ReplicaSet,
//! Deployment, node lifecycle, garbage collector, namespace), and the
//! controller manager that runs them on the replica holding the
//! `kube-system/keel-controller-manager` Lease.
//!
//! It owns reconciliation only. It reaches the API exclusively through a
//! `kube::Client`: in a replica, over the API server's in-process
//! `tower::Service`; elsewhere, over HTTPS from a kubeconfig. So every write
//! goes through admission exactly as kubectl's does, and the same code runs
//! in or out of process. It must not depend on the API server crate, the
//! store, or anything below them; what it shares with the API server
//! (metadata rules, selectors, quantities, the resource registry) comes
//! from keel-apimachinery.

pub mod cache;
pub mod certificates;
pub mod client;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod gc;
pub mod history;
pub mod hpa;
pub mod ingress;
pub mod job;
pub mod leader;
pub mod manager;
pub mod namespace;
pub mod nodelifecycle;
pub mod reconcile;
pub mod replicaset;
pub mod resourcequota;
pub mod rootca;
pub mod scheduler;
pub mod serviceaccount;
pub mod statefulset;
pub mod volume;

pub use keel_apimachinery::{meta, quantity, resources, selector};
