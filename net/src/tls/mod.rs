//! TLS for real sockets: peer RPC with mutual TLS and a membership check,
//! and the etcd client port with optional client certificates.
//!
//! Certificates come from PEM files (as etcd's flags name them), not from
//! the store: TLS must work before the store is up. [`TlsConfig`] reloads
//! them on demand ([`TlsConfig::reload`], e.g. on SIGHUP) or when a file's
//! modification time changes ([`TlsConfig::spawn_reload_watcher`]); every
//! new handshake (accepted or dialled) uses the newest configuration,
//! connections already established keep theirs.
//!
//! **The peer rule.** Both ends of a peer connection present a certificate
//! that chains to `--peer-trusted-ca-file`, and one of its subject
//! alternative names (a DNS name or an IP address) must equal, for some
//! *current* member of the raft membership (voters and learners), either
//! the member's name or the host of its peer URL. A removed member's
//! certificate therefore stops being accepted as soon as the removal is
//! applied on the checking replica. Simulations (turmoil) never use TLS.

mod accept;
mod connect;
mod etcd_client;
mod files;
mod members;
mod reload;
mod verify;

pub use accept::{tls_incoming, TlsConn, TlsIncoming};
pub use etcd_client::{
    connect_etcd_client, explain_failure, explain_status, name_endpoint, ClientTlsFiles, Dial,
};
pub use files::{TlsError, TlsFiles};
pub use members::{MemberSource, Members};
pub use reload::{Role, TlsConfig};

pub(crate) use connect::tls_connector;

/// The crypto provider every keel TLS config uses.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
