//! The CSR auto-approver (Kubernetes' csrapproving controller): approves
//! `kubernetes.io/kube-apiserver-client-kubelet` requests for
//! `CN=system:node:<name>, O=system:nodes` with client usages when
//!
//! - the requester joined with an agent join token (it is in
//!   [`AGENT_JOIN_GROUP`]): a node's first certificate, or
//! - the requester is that very node (`system:node:<name>`): a renewal.
//!
//! Anything else stays pending for an admin (`kubectl certificate
//! approve|deny`); a request that breaks the signer's rules never gets
//! here (the API server refuses it).

use std::sync::Arc;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use keel_apimachinery::csr;
use kube::api::{Api, Patch, PatchParams};

use super::has_condition;
use crate::cache::{next_change, Caches, Change, Informer};
use crate::client::is_status;
use crate::reconcile::{enqueue_all, name, run_workers, Reconciled, WorkQueue, RESYNC};

/// The group agent join tokens authenticate in (mirrors the API server's
/// `bootstrap_token::AGENT_JOIN_GROUP`).
pub const AGENT_JOIN_GROUP: &str = "system:bootstrappers:keel:agents";
const WORKERS: usize = 1;

/// Why the approver approved, or None when it leaves the CSR alone.
pub fn decide(c: &CertificateSigningRequest) -> Option<&'static str> {
    if c.spec.signer_name != csr::KUBELET_CLIENT_SIGNER
        || has_condition(c, "Approved")
        || has_condition(c, "Denied")
    {
        return None;
    }
    let pem = &c.spec.request.0;
    let req = csr::parse_pem(pem).ok()?;
    let usages = c.spec.usages.clone().unwrap_or_default();
    csr::check_signer(csr::KUBELET_CLIENT_SIGNER, &req, &usages).ok()?;
    let groups = c.spec.groups.as_deref().unwrap_or_default();
    if groups.iter().any(|g| g == AGENT_JOIN_GROUP) {
        return Some("Auto approving node client certificate requested with an agent join token.");
    }
    if c.spec.username.as_deref() == Some(req.common_name.as_str()) {
        return Some("Auto approving self node client certificate renewal.");
    }
    None
}

struct Controller {
    client: kube::Client,
    csrs: Informer<CertificateSigningRequest>,
}

/// Runs the approver until the future is dropped.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Controller {
        client,
        csrs: caches.get::<CertificateSigningRequest>(),
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

impl Controller {
    async fn reconcile(&self, key: &str) -> Reconciled {
        let Some(c) = self.csrs.get(None, key) else {
            return Ok(None);
        };
        let Some(message) = decide(&c) else {
            return Ok(None);
        };
        let mut conditions = c
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions.push(CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("AutoApproved".into()),
            message: Some(message.into()),
            last_update_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::now(),
            )),
            last_transition_time: None,
        });
        let patch = serde_json::json!({"status": {"conditions": conditions}});
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        match api
            .patch_approval(key, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(csr = key, "approved node client certificate request");
                Ok(None)
            }
            // Gone, or someone decided first (our cache lagged).
            Err(e) if is_status(&e, 404) || is_status(&e, 409) || is_status(&e, 422) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::ByteString;

    fn request(cn: &str, by: &str, groups: &[&str]) -> CertificateSigningRequest {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: csr::KUBELET_CLIENT_SIGNER.into(),
                usages: Some(vec!["client auth".into()]),
                username: Some(by.into()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn approves_join_token_bootstraps_and_self_renewals_only() {
        let join = request(
            "system:node:n1",
            "system:bootstrap:abcdef",
            &[AGENT_JOIN_GROUP],
        );
        assert!(decide(&join).unwrap().contains("join token"));
        let renew = request("system:node:n1", "system:node:n1", &["system:nodes"]);
        assert!(decide(&renew).unwrap().contains("renewal"));
        let other_node = request("system:node:n2", "system:node:n1", &["system:nodes"]);
        assert_eq!(decide(&other_node), None);
        let server_token = request(
            "system:node:n1",
            "system:bootstrap:abcdef",
            &["system:bootstrappers", "system:bootstrappers:keel:servers"],
        );
        assert_eq!(decide(&server_token), None);
        let mut user_signer = join.clone();
        user_signer.spec.signer_name = csr::CLIENT_SIGNER.into();
        assert_eq!(decide(&user_signer), None);
    }
}
