//! Reading the connection settings out of a kubeconfig.
//!
//! keel writes kubeconfigs as simple block YAML (see keel-control's
//! `Bootstrap::kubeconfig`): one cluster with `server` and optionally
//! `certificate-authority-data`, one user with optionally `token` or
//! `client-certificate-data` and `client-key-data` (a node identity). This
//! reader handles exactly that shape by scanning `key: value` lines (the
//! first occurrence of each key wins), so it needs no YAML library.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;

/// What the agent needs from a kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigAuth {
    pub server: String,
    /// Decoded `certificate-authority-data` (PEM).
    pub ca_pem: Option<Vec<u8>>,
    pub token: Option<String>,
    /// Decoded `client-certificate-data` and `client-key-data` (PEM): the
    /// agent's own identity, e.g. `system:node:<name>`.
    pub identity: Option<ClientIdentity>,
}

/// A client certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

/// Reads `server`, `certificate-authority-data` and `token` from the
/// kubeconfig at `path`.
pub fn read_kubeconfig(path: &Path) -> anyhow::Result<KubeconfigAuth> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    parse_kubeconfig(&text).with_context(|| format!("kubeconfig {}", path.display()))
}

/// [`read_kubeconfig`] on text.
pub fn parse_kubeconfig(text: &str) -> anyhow::Result<KubeconfigAuth> {
    let server = value_of(text, "server").context("no `server` entry")?;
    let ca_pem = decoded(text, "certificate-authority-data")?;
    let identity = match (
        decoded(text, "client-certificate-data")?,
        decoded(text, "client-key-data")?,
    ) {
        (Some(cert_pem), Some(key_pem)) => Some(ClientIdentity { cert_pem, key_pem }),
        (None, None) => None,
        _ => anyhow::bail!("client-certificate-data and client-key-data come together"),
    };
    Ok(KubeconfigAuth {
        server,
        ca_pem,
        token: value_of(text, "token"),
        identity,
    })
}

/// The base64-decoded value of `key`, if present.
fn decoded(text: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    value_of(text, key)
        .map(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .with_context(|| format!("{key} is not base64"))
        })
        .transpose()
}

fn value_of(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim_start().trim_start_matches("- ");
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let value = rest.trim().trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keel_kubeconfig() {
        let ca = base64::engine::general_purpose::STANDARD.encode("PEM");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: keel\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: abc\ncontexts: []\n"
        );
        let k = parse_kubeconfig(&text).unwrap();
        assert_eq!(k.server, "https://127.0.0.1:6443");
        assert_eq!(k.ca_pem.as_deref(), Some(&b"PEM"[..]));
        assert_eq!(k.token.as_deref(), Some("abc"));
    }

    #[test]
    fn plain_http_has_no_token() {
        let text = "clusters:\n- name: keel\n  cluster:\n    server: http://127.0.0.1:6443\nusers:\n- name: admin\n  user: {}\n";
        let k = parse_kubeconfig(text).unwrap();
        assert_eq!(k.server, "http://127.0.0.1:6443");
        assert_eq!((k.ca_pem, k.token, k.identity), (None, None, None));
        assert!(parse_kubeconfig("kind: Config\n").is_err());
    }

    #[test]
    fn reads_a_client_certificate_identity() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "clusters:\n- name: keel\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {}\nusers:\n- name: system:node:n1\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64("CA"),
            b64("CERT"),
            b64("KEY")
        );
        let k = parse_kubeconfig(&text).unwrap();
        assert_eq!(k.ca_pem.as_deref(), Some(&b"CA"[..]));
        let id = k.identity.unwrap();
        assert_eq!(
            (&id.cert_pem[..], &id.key_pem[..]),
            (&b"CERT"[..], &b"KEY"[..])
        );
        assert_eq!(k.token, None);
        let half = format!(
            "clusters:\n- cluster:\n    server: https://x\nusers:\n- user:\n    client-certificate-data: {}\n",
            b64("CERT")
        );
        assert!(parse_kubeconfig(&half).is_err());
    }
}
