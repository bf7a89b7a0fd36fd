//! A TLS configuration rebuilt from its files on demand or when they
//! change; handshakes always take the current one.

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};

use super::files::{Loaded, TlsError, TlsFiles};
use super::verify::{MemberClientVerifier, MemberServerVerifier};
use super::{provider, Members};

/// What the certificates are for.
#[derive(Clone)]
pub enum Role {
    /// Peer RPC. Dialled peers must present a member's certificate; with
    /// `client_cert_auth`, so must connecting peers. Needs a trusted CA.
    Peer {
        members: Arc<Members>,
        client_cert_auth: bool,
    },
    /// The etcd client port. With `client_cert_auth`, clients must present
    /// a certificate signed by the trusted CA (any name, as in etcd).
    Client { client_cert_auth: bool },
}

struct Built {
    server: Arc<ServerConfig>,
    client: Option<Arc<ClientConfig>>,
}

/// Current server (and, for peers, client) TLS configuration.
pub struct TlsConfig {
    files: TlsFiles,
    role: Role,
    current: RwLock<Arc<Built>>,
    seen_mtimes: Mutex<Vec<Option<SystemTime>>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn h2() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec()]
}

/// What a listener offers in ALPN: peers speak only gRPC (h2); the etcd
/// client port also answers `GET /health` and `/version` over HTTP/1.1, so a
/// probe that offers only `http/1.1` (a load balancer, Prometheus' blackbox
/// exporter) must not be refused at the handshake.
fn server_alpn(role: &Role) -> Vec<Vec<u8>> {
    match role {
        Role::Client { .. } => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Role::Peer { .. } => h2(),
    }
}

fn build(files: &TlsFiles, role: &Role) -> Result<Built, TlsError> {
    let Loaded { chain, key, roots } = files.load()?;
    let p = provider();
    let ca_flag = format!("--{}trusted-ca-file", files.flag_prefix);
    let need_roots = || {
        roots.clone().map(Arc::new).ok_or_else(|| {
            TlsError(format!(
                "{ca_flag} is required to verify {}",
                match role {
                    Role::Peer { .. } => "peers",
                    Role::Client { .. } => "client certificates (--client-cert-auth)",
                }
            ))
        })
    };
    let err = |e: rustls::Error| {
        TlsError(format!(
            "--{}cert-file {}: {e}",
            files.flag_prefix,
            files.cert.display()
        ))
    };
    let client_verifier = match role {
        Role::Peer {
            members,
            client_cert_auth: true,
        } => {
            let inner = WebPkiClientVerifier::builder_with_provider(need_roots()?, p.clone())
                .build()
                .map_err(|e| TlsError(format!("{ca_flag}: {e}")))?;
            Arc::new(MemberClientVerifier {
                inner,
                members: members.clone(),
            }) as Arc<dyn rustls::server::danger::ClientCertVerifier>
        }
        Role::Client {
            client_cert_auth: true,
        } => WebPkiClientVerifier::builder_with_provider(need_roots()?, p.clone())
            .build()
            .map_err(|e| TlsError(format!("{ca_flag}: {e}")))?,
        _ => WebPkiClientVerifier::no_client_auth(),
    };
    let mut server = ServerConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(err)?;
    server.alpn_protocols = server_alpn(role);
    let client = match role {
        Role::Client { .. } => None,
        Role::Peer { members, .. } => {
            let inner = WebPkiServerVerifier::builder_with_provider(need_roots()?, p.clone())
                .build()
                .map_err(|e| TlsError(format!("{ca_flag}: {e}")))?;
            let mut c = ClientConfig::builder_with_provider(p)
                .with_safe_default_protocol_versions()
                .map_err(err)?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(MemberServerVerifier {
                    inner,
                    members: members.clone(),
                }))
                .with_client_auth_cert(chain, key)
                .map_err(err)?;
            c.alpn_protocols = h2();
            Some(Arc::new(c))
        }
    };
    Ok(Built {
        server: Arc::new(server),
        client,
    })
}

impl TlsConfig {
    /// Loads and checks the files now: a bad file is an error naming its
    /// flag, so a server refuses to start rather than failing handshakes.
    pub fn load(files: TlsFiles, role: Role) -> Result<Arc<TlsConfig>, TlsError> {
        let seen = files.mtimes();
        let built = build(&files, &role)?;
        Ok(Arc::new(TlsConfig {
            files,
            role,
            current: RwLock::new(Arc::new(built)),
            seen_mtimes: Mutex::new(seen),
        }))
    }

    /// The members peer certificates are checked against (peer role).
    pub fn members(&self) -> Option<&Arc<Members>> {
        match &self.role {
            Role::Peer { members, .. } => Some(members),
            Role::Client { .. } => None,
        }
    }

    /// For accepting connections.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .expect("tls lock poisoned")
            .server
            .clone()
    }

    /// For dialling peers (peer role only).
    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.current
            .read()
            .expect("tls lock poisoned")
            .client
            .clone()
    }

    /// Re-reads the files. On error the previous configuration stays in
    /// use, so a half-written replacement never breaks new handshakes.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.seen_mtimes.lock().expect("tls lock poisoned") = self.files.mtimes();
        let built = build(&self.files, &self.role)?;
        *self.current.write().expect("tls lock poisoned") = Arc::new(built);
        Ok(())
    }

    /// Reloads if any file's modification time changed since the last
    /// load. `Ok(true)`: reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = self.files.mtimes();
        if *self.seen_mtimes.lock().expect("tls lock poisoned") == now {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// Checks the files every `every` and reloads changed ones, until the
    /// config is dropped. Needs a tokio runtime.
    pub fn spawn_reload_watcher(self: &Arc<Self>, every: Duration) {
        let weak: Weak<TlsConfig> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(cfg) = weak.upgrade() else { return };
                match cfg.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(cert = %cfg.files.cert.display(), "reloaded TLS certificates")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but cannot be loaded; keeping the previous ones")
                    }
                }
            }
        });
    }
}
