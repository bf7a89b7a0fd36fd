//! `keel certs`: certificates for TLS between replicas and for etcd
//! clients. `init-ca` makes a CA for a static TLS cluster; `issue` signs
//! peer, server and etcd client certificates with it, or with the cluster
//! CA a running replica keeps in `<data-dir>/pki/`.
//!
//! Only CAs made by keel can sign: the issuer name is keel's fixed CA name
//! (`CN=keel-ca, O=keel`), the same for `init-ca` and the cluster CA.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Args, Debug)]
pub struct CertsArgs {
    #[command(subcommand)]
    cmd: CertsCmd,
}

#[derive(Subcommand, Debug)]
enum CertsCmd {
    /// Create a CA: `<out>/ca.crt` and `<out>/ca.key` (owner-only).
    InitCa {
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a certificate signed by a CA into `<out>/`: `peer.crt/.key`,
    /// `server.crt/.key` or `client.crt/.key` by kind, plus `ca.crt`.
    Issue {
        #[arg(long, value_enum)]
        kind: Kind,
        /// Member name (peer, server) or client name (the CN).
        #[arg(long)]
        name: String,
        /// Extra DNS names or IPs the certificate is valid for, e.g. the
        /// host of the peer or client URL (repeatable).
        #[arg(long)]
        host: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        /// A directory with `ca.crt` and `ca.key` (from `init-ca`).
        #[arg(long, conflicts_with = "data_dir")]
        ca_dir: Option<PathBuf>,
        /// A replica's data dir: sign with the cluster CA in `pki/`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Kind {
    /// For `--peer-cert-file`: server and client auth, SANs = name + hosts.
    Peer,
    /// For `--cert-file` (the client port): server auth, SANs = name + hosts.
    Server,
    /// For etcdctl `--cert`: client auth, CN = name.
    EtcdClient,
}

pub fn run(a: CertsArgs) -> anyhow::Result<()> {
    match a.cmd {
        CertsCmd::InitCa { out, days } => {
            let (cert, key) = init_ca(days)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("--out {}: cannot create", out.display()))?;
            keel_apiserver::private_file::write(&out.join("ca.crt"), &cert)?;
            keel_apiserver::private_file::write(&out.join("ca.key"), &key)?;
            println!("wrote {0}/ca.crt and {0}/ca.key", out.display());
        }
        CertsCmd::Issue {
            kind,
            name,
            host,
            out,
            ca_dir,
            data_dir,
            days,
        } => {
            let dir = match (ca_dir, data_dir) {
                (Some(d), _) => d,
                (None, Some(d)) => d.join("pki"),
                (None, None) => bail!("pass --ca-dir (from `keel certs init-ca`) or --data-dir (a replica's, for the cluster CA)"),
            };
            let read = |f: &str| {
                let p = dir.join(f);
                std::fs::read_to_string(&p)
                    .with_context(|| format!("{}: cannot read the CA", p.display()))
            };
            let (ca_cert, ca_key) = (read("ca.crt")?, read("ca.key")?);
            let (cert, key) = issue(&ca_key, kind, &name, &host, days)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("--out {}: cannot create", out.display()))?;
            let base = match kind {
                Kind::Peer => "peer",
                Kind::Server => "server",
                Kind::EtcdClient => "client",
            };
            // Key first: a reloading server that sees the new key with the
            // old certificate refuses the pair and keeps its previous one
            // until the certificate arrives too.
            keel_apiserver::private_file::write(&out.join(format!("{base}.key")), &key)?;
            keel_apiserver::private_file::write(&out.join(format!("{base}.crt")), &cert)?;
            keel_apiserver::private_file::write(&out.join("ca.crt"), &ca_cert)?;
            println!(
                "wrote {0}/{base}.crt, {0}/{base}.key and {0}/ca.crt",
                out.display()
            );
        }
    }
    Ok(())
}

/// keel's CA name and constraints; must match the cluster CA's
/// (`keel_apiserver::pki`), since issuing rebuilds the issuer from them.
fn ca_params(days: u32) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "keel-ca");
    dn.push(DnType::OrganizationName, "keel");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut p, days);
    Ok(p)
}

fn set_validity(p: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(days.into());
}

/// A new CA: (certificate PEM, key PEM).
pub fn init_ca(days: u32) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let cert = ca_params(days)?.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A certificate of `kind` signed by the CA key: (certificate PEM, key PEM).
pub fn issue(
    ca_key_pem: &str,
    kind: Kind,
    name: &str,
    hosts: &[String],
    days: u32,
) -> anyhow::Result<(String, String)> {
    if name.trim().is_empty() {
        bail!("--name is empty");
    }
    let ca_key = KeyPair::from_pem(ca_key_pem).context("the CA key is not a PEM private key")?;
    let issuer = Issuer::new(ca_params(3650)?, ca_key);
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, name);
    if kind != Kind::EtcdClient {
        for h in std::iter::once(name).chain(hosts.iter().map(String::as_str)) {
            let san = match h.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    h.to_string()
                        .try_into()
                        .with_context(|| format!("{h:?} is not a DNS name or IP address"))?,
                ),
            };
            if !p.subject_alt_names.contains(&san) {
                p.subject_alt_names.push(san);
            }
        }
    }
    p.extended_key_usages = match kind {
        Kind::Peer => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Kind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Kind::EtcdClient => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    set_validity(&mut p, days);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}
