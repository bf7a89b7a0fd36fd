//! keel-apiserver: the Kubernetes API server over raft-store, served by every
//! control-plane replica.
//!
//! It owns the REST API (routing, discovery, admission, validation,
//! defaults, patch, protobuf, tables, watch, logs), storage of objects in
//! raft-store, the cluster PKI and credentials, and the node service that
//! agents stream their assignments from. It must not run control loops
//! (those live in keel-controllers and reach this crate only over HTTP or
//! through [`local::LocalApi`], a `tower::Service`), and it must not touch
//! RocksDB: it speaks only the raft-store [`keel_store::Store`] API.
//!
//! Layering (etcd's and Kubernetes'): the API layer ([`api`]) decodes,
//! admits and answers requests; it reaches the state only through
//! [`storage::Objects`], which speaks the raft-store [`keel_store::Store`]
//! API (never RocksDB). Objects are k8s-openapi types stored as JSON under
//! `/registry/<resource>/<namespace>/<name>`; `metadata.resourceVersion` is
//! the store's mod revision.

// The node service's handlers await the whole API (through `LocalApi`):
// their futures nest deeper than rustc's default layout query depth.
#![recursion_limit = "256"]

pub mod admission;
pub mod agent_client;
pub mod api;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod cacerts;
pub mod client;
pub mod discovery;
pub mod events;
pub(crate) mod kinds;
pub mod kubernetes_service;
pub mod local;
pub mod metrics;
pub mod metricsapi;
pub mod nodeservice;
pub mod patch;
pub mod pki;
pub mod pod_router;
pub mod podexec;
pub mod podlogs;
pub mod protobuf;
pub mod readyz;
pub mod server;
pub mod server_join;
pub mod status;
pub mod storage;
pub mod table;
pub mod ui;

pub use keel_apimachinery::{meta, private_file, quantity, resources, selector};
