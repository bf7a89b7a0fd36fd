//! A node's certificates: requesting one through a
//! CertificateSigningRequest (the kubelet's TLS bootstrap and rotation),
//! reading one's validity, and the kubeconfig that carries a client one.
//!
//! The key is generated here and never leaves the node; the CSR asks for
//! `CN=system:node:<name>, O=system:nodes` from signer
//! `kubernetes.io/kube-apiserver-client-kubelet` (the client certificate,
//! [`request`]) or `kubernetes.io/kubelet-serving` (the agent port's
//! serving certificate, [`request_serving`], with the node's names), and
//! the control plane's approver and signer answer it (or an admin does,
//! with `kubectl certificate approve`).
//!
//! Errors: the API refusing the CSR (its message), a Denied or Failed
//! condition (its reason and message), or no certificate within the
//! timeout (saying how to approve by hand).

use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};

/// The signer of node client certificates.
pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of the agents' serving certificates.
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
const POLL: Duration = Duration::from_millis(300);

/// A node's credentials: certificate and private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCert { .. }") // never log keys
    }
}

/// The validity window of a certificate, Unix seconds, and its CN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    pub not_before_s: i64,
    pub not_after_s: i64,
    pub common_name: String,
}

impl Validity {
    /// When to renew: at 80% of the lifetime (the kubelet renews between
    /// 70% and 90%).
    pub fn renew_at_s(&self) -> i64 {
        self.not_before_s + (self.not_after_s - self.not_before_s) * 4 / 5
    }
}

/// Reads the validity of the first certificate in `pem`.
pub fn validity(pem: &str) -> anyhow::Result<Validity> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the node certificate is not PEM: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("the node certificate does not parse: {e}"))?;
    let v = cert.validity();
    let common_name = cert
        .subject()
        .iter_common_name()
        .find_map(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok(Validity {
        not_before_s: v.not_before.timestamp(),
        not_after_s: v.not_after.timestamp(),
        common_name,
    })
}

/// Seconds since the Unix epoch, now.
pub fn now_unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The user name of node `node`.
pub fn node_user(node: &str) -> String {
    format!("system:node:{node}")
}

/// Requests a certificate for `node` through the API `client` reaches
/// (authenticated as a bootstrap token or as the node itself) and waits up
/// to `timeout` for it to be issued.
pub async fn request(
    client: kube::Client,
    node: &str,
    timeout: Duration,
) -> anyhow::Result<NodeCert> {
    let usages = ["digital signature", "key encipherment", "client auth"];
    let kind = Kind {
        signer: SIGNER,
        names: vec![],
        usages: &usages,
        approve: false,
    };
    request_kind(client, node, kind, timeout).await
}

/// Requests a serving certificate for `node` naming `names` (DNS names or
/// IP addresses) and waits up to `timeout` for it. `approve`: approve the
/// request with the same client too, for an agent running with an admin's
/// credentials (as the admin would with `kubectl certificate approve`); a
/// refusal of that approval is only logged.
pub async fn request_serving(
    client: kube::Client,
    node: &str,
    names: Vec<String>,
    approve: bool,
    timeout: Duration,
) -> anyhow::Result<NodeCert> {
    let usages = ["digital signature", "key encipherment", "server auth"];
    let kind = Kind {
        signer: SERVING_SIGNER,
        names,
        usages: &usages,
        approve,
    };
    request_kind(client, node, kind, timeout).await
}

/// What one CSR asks for.
struct Kind<'a> {
    signer: &'a str,
    /// subjectAltNames (DNS names or IP addresses).
    names: Vec<String>,
    usages: &'a [&'a str],
    /// Approve it with the requesting client.
    approve: bool,
}

async fn request_kind(
    client: kube::Client,
    node: &str,
    kind: Kind<'_>,
    timeout: Duration,
) -> anyhow::Result<NodeCert> {
    let key = rcgen::KeyPair::generate()?;
    let mut p = rcgen::CertificateParams::new(kind.names.clone())?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, node_user(node));
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let csr_pem = p.serialize_request(&key)?.pem()?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(format!("node-csr-{node}-")),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.into_bytes()),
            signer_name: kind.signer.into(),
            usages: Some(kind.usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .context("submitting the node's CertificateSigningRequest")?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(csr = %name, node, signer = kind.signer, "submitted certificate signing request");
    if kind.approve {
        approve(&api, &name).await;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let c = api
            .get(&name)
            .await
            .with_context(|| format!("reading CertificateSigningRequest {name}"))?;
        let status = c.status.unwrap_or_default();
        for cond in status.conditions.unwrap_or_default() {
            if cond.type_ == "Denied" || cond.type_ == "Failed" {
                bail!(
                    "CertificateSigningRequest {name} was {}: {} {}",
                    cond.type_.to_lowercase(),
                    cond.reason.unwrap_or_default(),
                    cond.message.unwrap_or_default()
                );
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            let cert_pem = String::from_utf8(cert.0).with_context(|| {
                format!("CertificateSigningRequest {name}: certificate is not PEM text")
            })?;
            return Ok(NodeCert {
                cert_pem,
                key_pem: key.serialize_pem(),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "CertificateSigningRequest {name} was not issued within {}s (approve it with `kubectl certificate approve {name}`)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Approves CSR `name` (see [`request_serving`]); a refusal is logged.
async fn approve(api: &Api<CertificateSigningRequest>, name: &str) {
    let patch = serde_json::json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "AgentSelfApproved",
        "message": "approved by the agent's own (administrator) credentials"}]}});
    let params = kube::api::PatchParams::default();
    if let Err(e) = api
        .patch_approval(name, &params, &kube::api::Patch::Merge(&patch))
        .await
    {
        tracing::info!(csr = name, error = %e, "cannot approve the serving certificate request; it waits for the approver or an admin");
    }
}

/// A kubeconfig for node `node` at `server`, trusting `ca_pem`.
pub fn kubeconfig(server: &str, ca_pem: &str, node: &str, cert: &NodeCert) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = node_user(node);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: keel\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    \
         client-key-data: {}\ncontexts:\n- name: {user}@keel\n  context:\n    cluster: keel\n    user: {user}\n\
         current-context: {user}@keel\npreferences: {{}}\n",
        b64(ca_pem),
        b64(&cert.cert_pem),
        b64(&cert.key_pem)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_and_renewal_point() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let start = rcgen::date_time_ymd(2030, 1, 1);
        p.not_before = start;
        p.not_after = start + time::Duration::seconds(1000);
        let pem = p.self_signed(&key).unwrap().pem();
        let v = validity(&pem).unwrap();
        assert_eq!(v.common_name, "system:node:n1");
        assert_eq!(v.not_after_s - v.not_before_s, 1000);
        assert_eq!(v.renew_at_s(), v.not_before_s + 800);
        assert!(validity("nope").is_err());
    }

    #[test]
    fn kubeconfig_carries_the_client_certificate() {
        let cert = NodeCert {
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
        };
        let text = kubeconfig("https://127.0.0.1:6443", "CA", "n1", &cert);
        let k = super::super::kubeconfig::parse_kubeconfig(&text).unwrap();
        assert_eq!(k.server, "https://127.0.0.1:6443");
        assert_eq!(k.client_cert_pem.as_deref(), Some(&b"CERT"[..]));
        assert_eq!(k.client_key_pem.as_deref(), Some(&b"KEY"[..]));
        assert!(text.contains("system:node:n1"));
    }
}
