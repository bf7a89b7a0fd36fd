//! Reading certificate, key and CA files, with errors that name the flag
//! that pointed at the bad file.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A TLS misconfiguration; the message names the flag to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The files of one TLS endpoint and the flags they came from
/// (`flag_prefix` is `"peer-"` for peer TLS, `""` for the client port,
/// giving `--peer-cert-file` or `--cert-file`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub trusted_ca: Option<PathBuf>,
    pub flag_prefix: &'static str,
}

/// What [`TlsFiles::load`] read.
pub(crate) struct Loaded {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub roots: Option<rustls::RootCertStore>,
}

impl TlsFiles {
    fn flag(&self, what: &str) -> String {
        format!("--{}{what}", self.flag_prefix)
    }

    /// Modification times of the files, to notice replacements.
    pub(crate) fn mtimes(&self) -> Vec<Option<SystemTime>> {
        [Some(&self.cert), Some(&self.key), self.trusted_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Reads and checks all files: each must be readable PEM of the right
    /// kind, and the key must belong to the certificate.
    pub(crate) fn load(&self) -> Result<Loaded, TlsError> {
        let cert_flag = self.flag("cert-file");
        let key_flag = self.flag("key-file");
        let chain = read_certs(&self.cert, &cert_flag)?;
        let key = read_key(&self.key, &key_flag)?;
        let provider = super::provider();
        let certified =
            CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(|e| {
                TlsError(format!(
                    "{key_flag} {} does not match {cert_flag} {}: {e}",
                    self.key.display(),
                    self.cert.display()
                ))
            })?;
        drop(certified);
        let roots = match &self.trusted_ca {
            None => None,
            Some(p) => {
                let ca_flag = self.flag("trusted-ca-file");
                let mut store = rustls::RootCertStore::empty();
                for c in read_certs(p, &ca_flag)? {
                    store.add(c).map_err(|e| {
                        TlsError(format!(
                            "{ca_flag} {}: bad CA certificate: {e}",
                            p.display()
                        ))
                    })?;
                }
                Some(store)
            }
        };
        Ok(Loaded { chain, key, roots })
    }
}

fn read(p: &Path, flag: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(p).map_err(|e| TlsError(format!("{flag} {}: cannot read: {e}", p.display())))
}

/// The PEM private key in `p`; errors name `flag` and the file.
pub(crate) fn read_key(p: &Path, flag: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(p, flag)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        TlsError(format!(
            "{flag} {}: no usable PEM private key: {e}",
            p.display()
        ))
    })
}

/// The PEM certificates in `p` (at least one); errors name `flag` and the
/// file.
pub(crate) fn read_certs(p: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(p, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{flag} {}: bad PEM: {e}", p.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{flag} {}: no PEM certificate in the file",
            p.display()
        )));
    }
    Ok(certs)
}
