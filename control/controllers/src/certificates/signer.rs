//! The CSR signer (Kubernetes' csrsigning controller): issues a
//! certificate, signed by the cluster CA, for every approved CSR of
//! `kubernetes.io/kube-apiserver-client-kubelet`,
//! `kubernetes.io/kube-apiserver-client` or `kubernetes.io/kubelet-serving`
//! that has none yet.
//!
//! The certificate carries the request's subject (CN and up to two O) and
//! public key and nothing else the requester asked for: client auth only
//! and no SANs for the client signers; server auth only and the request's
//! DNS and IP names (checked by the signer's rules) for kubelet-serving;
//! valid from a little before now (clock skew) for the shorter of
//! the configured duration and the CSR's `expirationSeconds`. A request
//! that cannot be signed (its PEM no longer checks out against the
//! signer's rules) gets a `Failed` condition saying why, as Kubernetes'.
//!
//! The CA is read from files at each signing (kube-controller-manager's
//! `--cluster-signing-cert-file`/`--cluster-signing-key-file`), so an
//! out-of-process controller manager needs only those two files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::ByteString;
use keel_apimachinery::csr;
use kube::api::{Api, Patch, PatchParams};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, Issuer,
    KeyPair, KeyUsagePurpose,
};

use super::{has_condition, is_issued};
use crate::cache::{next_change, Caches, Change, Informer};
use crate::client::is_status;
use crate::reconcile::{enqueue_all, name, run_workers, Reconciled, WorkQueue, RESYNC};

const WORKERS: usize = 1;

/// Where the cluster CA is and how long issued certificates last.
#[derive(Debug, Clone)]
pub struct SigningConfig {
    pub ca_cert_file: PathBuf,
    pub ca_key_file: PathBuf,
    /// The longest validity issued (kube-controller-manager's
    /// `--cluster-signing-duration`); a CSR may ask for less.
    pub duration: Duration,
}

impl SigningConfig {
    /// Signs `c` (already approved): returns the certificate PEM, or why
    /// it cannot be signed.
    pub fn sign(&self, c: &CertificateSigningRequest) -> Result<String, String> {
        let usages = c.spec.usages.clone().unwrap_or_default();
        let req = csr::parse_pem(&c.spec.request.0)?;
        csr::check_signer(&c.spec.signer_name, &req, &usages)?;
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| format!("the CA file {}: {e}", p.display()))
        };
        let (ca_cert, ca_key) = (read(&self.ca_cert_file)?, read(&self.ca_key_file)?);
        let key = KeyPair::from_pem(&ca_key).map_err(|e| format!("the CA key: {e}"))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert, key)
            .map_err(|e| format!("the CA certificate: {e}"))?;
        let parsed = CertificateSigningRequestParams::from_der(&req.der.clone().into())
            .map_err(|e| format!("spec.request: {e}"))?;
        let mut validity = self.duration;
        if let Some(s) = c.spec.expiration_seconds {
            validity = validity.min(Duration::from_secs(s.max(0) as u64));
        }
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        p.distinguished_name
            .push(DnType::CommonName, req.common_name.as_str());
        if let Some(o) = req.organizations.first() {
            p.distinguished_name
                .push(DnType::OrganizationName, o.as_str());
        }
        if let Some(o) = req.organizations.get(1) {
            // A second O under its raw OID: the DN keeps one per type.
            p.distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 10]), o.as_str());
        }
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - backdate(validity);
        p.not_after = now + validity;
        if c.spec.signer_name == csr::KUBELET_SERVING_SIGNER {
            p.subject_alt_names = serving_names(&req)?;
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = p
            .signed_by(&parsed.public_key, &issuer)
            .map_err(|e| format!("signing: {e}"))?;
        Ok(cert.pem())
    }
}

/// The DNS and IP subjectAltNames of a kubelet-serving request.
fn serving_names(req: &csr::Request) -> Result<Vec<rcgen::SanType>, String> {
    let mut names = Vec::new();
    for d in &req.dns_names {
        let name = d
            .clone()
            .try_into()
            .map_err(|e| format!("subjectAltName {d:?}: {e}"))?;
        names.push(rcgen::SanType::DnsName(name));
    }
    names.extend(
        req.ip_addresses
            .iter()
            .map(|ip| rcgen::SanType::IpAddress(*ip)),
    );
    Ok(names)
}

/// How far before now a certificate is valid from, for clocks a little
/// behind: five minutes, but at most a tenth of the validity, so a short
/// certificate's renewal point (a share of its lifetime) stays ahead.
fn backdate(validity: Duration) -> Duration {
    (validity / 10).min(Duration::from_secs(300))
}

struct Controller {
    client: kube::Client,
    csrs: Informer<CertificateSigningRequest>,
    cfg: SigningConfig,
}

/// Runs the signer until the future is dropped.
pub async fn run(client: kube::Client, caches: Caches, cfg: SigningConfig) {
    let ctl = Arc::new(Controller {
        client,
        csrs: caches.get::<CertificateSigningRequest>(),
        cfg,
    });
    let queue = WorkQueue::new();
    let changes = watch(ctl.clone(), queue.clone());
    ctl.csrs.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

async fn watch(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut rx = ctl.csrs.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut rx) => match c {
                Some(Change::Applied(c)) => queue.add(name(&c.metadata)),
                Some(Change::Deleted(_)) => {}
                Some(Change::Resync) => enqueue_all(&queue, &ctl.csrs),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.csrs),
        }
    }
}

/// Whether the signer has work on `c`.
pub fn wants(c: &CertificateSigningRequest) -> bool {
    csr::is_known_signer(&c.spec.signer_name)
        && has_condition(c, "Approved")
        && !has_condition(c, "Denied")
        && !has_condition(c, "Failed")
        && !is_issued(c)
}

impl Controller {
    async fn reconcile(&self, key: &str) -> Reconciled {
        let Some(c) = self.csrs.get(None, key) else {
            return Ok(None);
        };
        if !wants(&c) {
            return Ok(None);
        }
        let status = match self.cfg.sign(&c) {
            Ok(pem) => {
                let cert = ByteString(pem.into_bytes());
                serde_json::json!({"status": {"certificate": cert}})
            }
            Err(why) => {
                tracing::warn!(csr = key, %why, "cannot sign certificate request");
                let mut conditions = c
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default();
                conditions.push(CertificateSigningRequestCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    reason: Some("SignerValidationFailure".into()),
                    message: Some(why),
                    last_update_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        jiff::Timestamp::now(),
                    )),
                    last_transition_time: None,
                });
                serde_json::json!({"status": {"conditions": conditions}})
            }
        };
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        match api
            .patch_status(key, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => {
                tracing::info!(csr = key, "certificate request handled by the signer");
                Ok(None)
            }
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestSpec, CertificateSigningRequestStatus,
    };

    fn ca(dir: &std::path::Path) -> SigningConfig {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "test-ca");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("ca.key"), key.serialize_pem()).unwrap();
        SigningConfig {
            ca_cert_file: dir.join("ca.crt"),
            ca_key_file: dir.join("ca.key"),
            duration: Duration::from_secs(3600),
        }
    }

    fn request(cn: &str, signer: &str, expiration_s: Option<i32>) -> CertificateSigningRequest {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: signer.into(),
                usages: Some(vec!["client auth".into(), "digital signature".into()]),
                expiration_seconds: expiration_s,
                ..Default::default()
            },
            status: Some(CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                certificate: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn signs_subject_and_validity_from_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ca(dir.path());
        let c = request("system:node:n1", csr::KUBELET_CLIENT_SIGNER, Some(600));
        assert!(wants(&c));
        let pem = cfg.sign(&c).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "system:node:n1");
        let org = cert.subject().iter_organization().next().unwrap();
        assert_eq!(org.as_str().unwrap(), "system:nodes");
        let v = cert.validity();
        let lifetime_s = v.not_after.timestamp() - v.not_before.timestamp();
        assert_eq!(lifetime_s, 600 + 60, "expirationSeconds caps the duration");
        assert!(cert.issuer().to_string().contains("test-ca"));
    }

    #[test]
    fn serving_certificates_carry_the_requested_names_and_server_auth() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ca(dir.path());
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(vec!["n1".to_string(), "127.0.0.3".to_string()]).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "system:node:n1");
        p.distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        let mut c = request("system:node:n1", csr::KUBELET_SERVING_SIGNER, None);
        c.spec.request = ByteString(
            p.serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap()
                .into_bytes(),
        );
        c.spec.usages = Some(vec!["server auth".into(), "digital signature".into()]);
        let pem = cfg.sign(&c).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        let text = format!("{:?}", san.general_names);
        assert!(text.contains("n1") && text.contains("127"), "{text}");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
    }

    #[test]
    fn refuses_requests_that_break_the_signers_rules() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ca(dir.path());
        let c = request("alice", csr::KUBELET_CLIENT_SIGNER, None);
        assert!(cfg.sign(&c).unwrap_err().contains("system:node:"));
        let mut denied = request("system:node:n1", csr::KUBELET_CLIENT_SIGNER, None);
        denied
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
            .push(CertificateSigningRequestCondition {
                type_: "Denied".into(),
                status: "True".into(),
                ..Default::default()
            });
        assert!(!wants(&denied));
        assert!(!wants(&request(
            "system:node:n1",
            "example.com/other",
            None
        )));
    }
}
