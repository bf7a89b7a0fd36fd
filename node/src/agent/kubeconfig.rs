//! Reading the connection settings out of a kubeconfig.
//!
//! keel writes kubeconfigs as simple block YAML (see keel-control's
//! `Bootstrap::kubeconfig`): one cluster with `server` and optionally
//! `certificate-authority-data`, one user with optionally `token`. This
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
    /// Decoded `client-certificate-data` and `client-key-data` (PEM): a
    /// node's own identity (`keel agent --join`).
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
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
    let data = |key: &str| -> anyhow::Result<Option<Vec<u8>>> {
        match value_of(text, key) {
            Some(b64) => Ok(Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .with_context(|| format!("{key} is not base64"))?,
            )),
            None => Ok(None),
        }
    };
    Ok(KubeconfigAuth {
        server,
        ca_pem: data("certificate-authority-data")?,
        token: value_of(text, "token"),
        client_cert_pem: data("client-certificate-data")?,
        client_key_pem: data("client-key-data")?,
    })
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
        assert_eq!((k.ca_pem, k.token), (None, None));
        assert!(parse_kubeconfig("kind: Config\n").is_err());
    }
}
