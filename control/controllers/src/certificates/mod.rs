//! The CertificateSigningRequest controllers (Kubernetes'
//! `pkg/controller/certificates`): the [`approver`] approves node client
//! CSRs that bootstrap or renew a node's identity and nodes' serving CSRs
//! for their own names, and the [`signer`] issues certificates for
//! approved CSRs of the two client signers and the kubelet-serving signer
//! with the cluster CA.
//!
//! Both reconcile one CSR (key: its name) from the shared CSR cache and
//! write only through the API (`/approval`, `/status`), so a CSR an admin
//! approved by hand with `kubectl certificate approve` is signed the same
//! way.

pub mod approver;
pub mod signer;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;

/// Whether the CSR has a condition of type `ty` (Approved, Denied and
/// Failed are only ever True).
pub fn has_condition(csr: &CertificateSigningRequest, ty: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == ty))
}

/// Whether a certificate was issued.
pub fn is_issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}
