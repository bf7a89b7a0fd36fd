//! keel-net: the transport seam between replicas.
//!
//! Peers exchange opaque byte payloads over one gRPC service
//! (`keelraft.RaftPeer`); what the bytes mean (openraft messages, forwarded
//! client requests) belongs to the layer above. This crate owns channels,
//! deadlines and keepalives, so that a partition makes calls fail fast
//! instead of hanging.

mod peer;
pub mod tls;
mod transport;

pub use peer::{peer_server, PeerClient, PeerError, PeerHandler, PeerMethod, MAX_MESSAGE_BYTES};
pub use tls::{TlsConfig, TlsError, TlsFiles};
pub use transport::{Conn, Incoming, Transport};
