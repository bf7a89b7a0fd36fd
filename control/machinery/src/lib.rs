//! keel-apimachinery: what every part of keel's control plane must agree on
//! about Kubernetes objects, with no I/O and no knowledge of the store, the
//! server or the controllers.
//!
//! It owns object metadata helpers ([`meta`]), label and field selectors
//! ([`selector`]), resource quantities ([`quantity`]) and the registry of
//! served resources ([`resources`]), the single list of kinds that routing,
//! discovery, storage keys, admission and the garbage collector read. It
//! must not depend on the API server, the controllers, raft-store, or any
//! network crate: both the API server and the controllers build on it, and
//! it stays cheap to compile.

pub mod cron;
pub mod csr;
pub mod events;
pub mod ingress_class;
pub mod meta;
pub mod pod_network;
pub mod private_file;
pub mod quantity;
pub mod quota;
pub mod resources;
pub mod selector;
