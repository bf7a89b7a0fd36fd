//! `keel server`'s TLS flags, with etcd's names and meaning, checked
//! before anything binds:
//!
//! - a plaintext (`http://` or bare) peer or client URL is allowed on a
//!   loopback address only;
//! - an `https://` URL needs its certificate and key files (and, for
//!   peers, `--peer-trusted-ca-file`); on a non-loopback address it also
//!   needs client certificate auth (`--peer-client-cert-auth`,
//!   `--client-cert-auth`);
//! - unreadable files, or a key not matching its certificate, are refused.
//!
//! For https peer URLs without `--peer-cert-file`, the files a joining
//! replica writes are used when present: `<data-dir>/pki/peer.crt`,
//! `peer.key` and `ca.crt`, with peer client cert auth on.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use keel_store::tls::{Members, Role};
use keel_store::{TlsConfig, TlsFiles};

#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Peer TLS certificate (PEM), presented to and by peers.
    #[arg(long)]
    peer_cert_file: Option<PathBuf>,
    /// Key of --peer-cert-file (PEM).
    #[arg(long)]
    peer_key_file: Option<PathBuf>,
    /// CA bundle peers' certificates must chain to.
    #[arg(long)]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Require connecting peers to present a certificate from
    /// --peer-trusted-ca-file that names a current member.
    #[arg(long)]
    peer_client_cert_auth: bool,
    /// Client port TLS certificate (PEM).
    #[arg(long)]
    cert_file: Option<PathBuf>,
    /// Key of --cert-file (PEM).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// CA bundle client certificates must chain to.
    #[arg(long)]
    trusted_ca_file: Option<PathBuf>,
    /// Require clients to present a certificate from --trusted-ca-file.
    #[arg(long)]
    client_cert_auth: bool,
    /// How often, in seconds, the certificate files are checked for
    /// changes (they are also reloaded on SIGHUP).
    #[arg(long, default_value_t = 5)]
    tls_reload_interval_s: u64,
}

/// A listen or advertise URL: `http://host:port`, `https://host:port`,
/// or a bare `host:port` (plaintext).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// `host:port`, as the store and the socket layer take it.
    pub addr: String,
    pub host: String,
}

impl Url {
    pub fn parse(flag: &str, s: &str) -> anyhow::Result<Url> {
        let s = s.trim().trim_end_matches('/');
        let (https, rest) = match s.split_once("://") {
            None => (false, s),
            Some(("http", r)) => (false, r),
            Some(("https", r)) => (true, r),
            Some((scheme, _)) => bail!("{flag} {s}: scheme must be http or https, not {scheme}"),
        };
        let host = match rest.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => rest.rsplit_once(':').map_or("", |(h, _)| h),
        };
        if host.is_empty() || rest.rsplit_once(':').is_none() {
            bail!("{flag} {s}: expected host:port");
        }
        Ok(Url {
            https,
            addr: rest.to_string(),
            host: host.to_string(),
        })
    }

    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// As published in the member list.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.addr
        )
    }
}

/// The checked TLS configuration of a server.
pub struct ServerTls {
    pub peer: Option<Arc<TlsConfig>>,
    pub client: Option<Arc<TlsConfig>>,
}

/// The URLs the rules apply to.
pub struct Urls<'a> {
    pub listen_peer: &'a Url,
    pub advertise_peer: &'a Url,
    pub listen_client: &'a Url,
    pub advertise_client: &'a Url,
    /// `(name, url)` of `--initial-cluster`, as given.
    pub initial_cluster: &'a [(String, String)],
}

const PEER_HINT: &str = "use https:// with --peer-cert-file, --peer-key-file, --peer-trusted-ca-file and --peer-client-cert-auth";
const CLIENT_HINT: &str =
    "use https:// with --cert-file, --key-file, --trusted-ca-file and --client-cert-auth";

/// Applies the rules of the module docs; `members` seeds the peer member
/// check until the store follows its live membership.
pub fn configure(
    a: &TlsArgs,
    data_dir: &Path,
    urls: &Urls,
    members: Vec<(String, String)>,
) -> anyhow::Result<ServerTls> {
    for (flag, u) in [
        ("--listen-peer-urls", urls.listen_peer),
        ("--initial-advertise-peer-urls", urls.advertise_peer),
    ] {
        if !u.https && !u.is_loopback() {
            bail!("{flag} {}: plaintext peer traffic is allowed on loopback addresses only; {PEER_HINT}", u.url());
        }
    }
    for (flag, u) in [
        ("--listen-client-urls", urls.listen_client),
        ("--advertise-client-urls", urls.advertise_client),
    ] {
        if !u.https && !u.is_loopback() {
            bail!("{flag} {}: plaintext client traffic is allowed on loopback addresses only; {CLIENT_HINT}", u.url());
        }
    }
    if urls.advertise_peer.https != urls.listen_peer.https {
        bail!("--initial-advertise-peer-urls and --listen-peer-urls must both be http:// or both https://");
    }
    if urls.advertise_client.https != urls.listen_client.https {
        bail!("--advertise-client-urls and --listen-client-urls must both be http:// or both https://");
    }
    let peer_https = urls.listen_peer.https;
    for (name, url) in urls.initial_cluster {
        if url.contains("://") && url.trim().starts_with("https://") != peer_https {
            bail!(
                "--initial-cluster entry {name}={url}: this replica's peer URLs are {}, so every peer URL must be too",
                if peer_https { "https://" } else { "http://" }
            );
        }
    }
    let peer = if peer_https {
        Some(peer_tls(a, data_dir, urls.listen_peer, members)?)
    } else {
        for (flag, set) in [
            ("--peer-cert-file", a.peer_cert_file.is_some()),
            ("--peer-key-file", a.peer_key_file.is_some()),
            ("--peer-trusted-ca-file", a.peer_trusted_ca_file.is_some()),
            ("--peer-client-cert-auth", a.peer_client_cert_auth),
        ] {
            if set {
                bail!("{flag} is set but --listen-peer-urls is not https://");
            }
        }
        None
    };
    let client = if urls.listen_client.https {
        Some(client_tls(a, urls.listen_client)?)
    } else {
        for (flag, set) in [
            ("--cert-file", a.cert_file.is_some()),
            ("--key-file", a.key_file.is_some()),
            ("--trusted-ca-file", a.trusted_ca_file.is_some()),
            ("--client-cert-auth", a.client_cert_auth),
        ] {
            if set {
                bail!("{flag} is set but --listen-client-urls is not https://");
            }
        }
        None
    };
    Ok(ServerTls { peer, client })
}

fn peer_tls(
    a: &TlsArgs,
    data_dir: &Path,
    listen: &Url,
    members: Vec<(String, String)>,
) -> anyhow::Result<Arc<TlsConfig>> {
    let pki = data_dir.join("pki");
    let from_pki = a.peer_cert_file.is_none()
        && a.peer_key_file.is_none()
        && pki.join("peer.crt").exists()
        && pki.join("peer.key").exists();
    let pick = |flag: &Option<PathBuf>, file: &str, name: &str| -> anyhow::Result<PathBuf> {
        match (flag, from_pki) {
            (Some(p), _) => Ok(p.clone()),
            (None, true) if pki.join(file).exists() => Ok(pki.join(file)),
            _ => bail!(
                "--listen-peer-urls {} is https:// but {name} is not set (nor is {} present)",
                listen.url(),
                pki.join(file).display()
            ),
        }
    };
    let files = TlsFiles {
        cert: pick(&a.peer_cert_file, "peer.crt", "--peer-cert-file")?,
        key: pick(&a.peer_key_file, "peer.key", "--peer-key-file")?,
        trusted_ca: Some(pick(
            &a.peer_trusted_ca_file,
            "ca.crt",
            "--peer-trusted-ca-file",
        )?),
        flag_prefix: "peer-",
    };
    let client_cert_auth = a.peer_client_cert_auth || from_pki;
    if !client_cert_auth && !listen.is_loopback() {
        bail!(
            "--listen-peer-urls {} is not a loopback address: --peer-client-cert-auth is required",
            listen.url()
        );
    }
    let cfg = TlsConfig::load(
        files,
        Role::Peer {
            members: Arc::new(Members::fixed(members)),
            client_cert_auth,
        },
    )?;
    cfg.spawn_reload_watcher(Duration::from_secs(a.tls_reload_interval_s.max(1)));
    Ok(cfg)
}

fn client_tls(a: &TlsArgs, listen: &Url) -> anyhow::Result<Arc<TlsConfig>> {
    let need = |p: &Option<PathBuf>, flag: &str| -> anyhow::Result<PathBuf> {
        p.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "--listen-client-urls {} is https:// but {flag} is not set",
                listen.url()
            )
        })
    };
    if !a.client_cert_auth && !listen.is_loopback() {
        bail!(
            "--listen-client-urls {} is not a loopback address: --client-cert-auth (with --trusted-ca-file) is required",
            listen.url()
        );
    }
    let files = TlsFiles {
        cert: need(&a.cert_file, "--cert-file")?,
        key: need(&a.key_file, "--key-file")?,
        trusted_ca: a.trusted_ca_file.clone(),
        flag_prefix: "",
    };
    let cfg = TlsConfig::load(
        files,
        Role::Client {
            client_cert_auth: a.client_cert_auth,
        },
    )?;
    cfg.spawn_reload_watcher(Duration::from_secs(a.tls_reload_interval_s.max(1)));
    Ok(cfg)
}

/// Reloads every config on SIGHUP, for as long as the server runs.
pub fn reload_on_sighup(configs: Vec<Arc<TlsConfig>>) {
    if configs.is_empty() {
        return;
    }
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot handle SIGHUP; certificates reload on file changes only");
            return;
        };
        while hup.recv().await.is_some() {
            for c in &configs {
                match c.reload() {
                    Ok(()) => tracing::info!("SIGHUP: reloaded TLS certificates"),
                    Err(e) => {
                        tracing::warn!(error = %e, "SIGHUP: cannot reload; keeping the previous certificates")
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse("--x", s).unwrap()
    }

    fn check(listen_peer: &str, listen_client: &str, a: &TlsArgs) -> anyhow::Result<ServerTls> {
        let (lp, lc) = (u(listen_peer), u(listen_client));
        configure(
            a,
            Path::new("/nonexistent"),
            &Urls {
                listen_peer: &lp,
                advertise_peer: &lp,
                listen_client: &lc,
                advertise_client: &lc,
                initial_cluster: &[],
            },
            vec![],
        )
    }

    #[test]
    fn urls_parse() {
        assert_eq!(
            u("https://10.0.0.1:2380/"),
            Url {
                https: true,
                addr: "10.0.0.1:2380".into(),
                host: "10.0.0.1".into()
            }
        );
        assert!(!u("127.0.0.1:2379").https);
        assert!(u("http://[::1]:2379").is_loopback());
        assert!(!u("http://0.0.0.0:2379").is_loopback());
        assert!(Url::parse("--x", "ftp://a:1")
            .unwrap_err()
            .to_string()
            .contains("scheme"));
        assert!(Url::parse("--x", "http://a")
            .unwrap_err()
            .to_string()
            .contains("host:port"));
    }

    #[test]
    fn plaintext_off_loopback_is_refused() {
        let d = TlsArgs::default();
        let e = check("http://10.0.0.1:2380", "http://127.0.0.1:2379", &d)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--listen-peer-urls") && e.contains("loopback"),
            "{e}"
        );
        let e = check("http://127.0.0.1:2380", "http://0.0.0.0:2379", &d)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--listen-client-urls") && e.contains("loopback"),
            "{e}"
        );
        assert!(check("127.0.0.1:2380", "127.0.0.1:2379", &d).is_ok());
    }

    #[test]
    fn https_needs_files_and_client_auth() {
        let d = TlsArgs::default();
        let e = check("https://127.0.0.1:2380", "127.0.0.1:2379", &d)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--peer-cert-file"), "{e}");
        let e = check("127.0.0.1:2380", "https://127.0.0.1:2379", &d)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--cert-file"), "{e}");
        let e = check("127.0.0.1:2380", "https://10.0.0.1:2379", &d)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--client-cert-auth"), "{e}");
        let with_cert = TlsArgs {
            cert_file: Some("/x".into()),
            ..Default::default()
        };
        let e = check("127.0.0.1:2380", "http://127.0.0.1:2379", &with_cert)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--cert-file is set"), "{e}");
    }
}
