//! keel-control: the Kubernetes API server over raft-store, served by every
//! control-plane replica.
//!
//! Layering (etcd's and Kubernetes'): the API layer ([`api`]) decodes,
//! admits and answers requests; it reaches the state only through
//! [`storage::Objects`], which speaks the raft-store [`keel_store::Store`]
//! API (never RocksDB). Objects are k8s-openapi types stored as JSON under
//! `/registry/<resource>/<namespace>/<name>`; `metadata.resourceVersion` is
//! the store's mod revision.

pub mod admission;
pub mod api;
pub mod bootstrap;
pub mod client;
pub mod controllers;
pub mod discovery;
pub mod events;
pub mod informer;
pub mod leader;
pub mod manager;
pub mod meta;
pub mod metrics;
pub mod nodeservice;
pub mod patch;
pub mod pki;
pub mod podlogs;
pub mod protobuf;
pub mod resources;
pub mod scheduler;
pub mod selector;
pub mod server;
pub mod status;
pub mod storage;
pub mod table;
pub mod watch;
