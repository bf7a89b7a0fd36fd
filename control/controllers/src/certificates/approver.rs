//! The CSR auto-approver (Kubernetes' csrapproving controller): approves
//! `kubernetes.io/kube-apiserver-client-kubelet` requests for
//! `CN=system:node:<name>, O=system:nodes` with client usages when
//!
//! - the requester joined with an agent join token (it is in
//!   [`AGENT_JOIN_GROUP`]): a node's first certificate, or
//! - the requester is that very node (`system:node:<name>`): a renewal.
//!
//! It also approves `kubernetes.io/kubelet-serving` requests (an agent's
//! serving certificate) when the requester is the node the subject names
//! (`system:node:<name>`, `O=system:nodes`) and every subjectAltName is
//! the node's name or one of the addresses in its Node status. This is
//! k3s-like: Kubernetes leaves kubelet-serving approval to an admin or a
//! third-party approver; keel can check the names against the Node the
//! node itself registered, which is all such approvers check.
//!
//! Anything else stays pending for an admin (`kubectl certificate
//! approve|deny`); a request that breaks the signer's rules never gets
//! here (the API server refuses it).

use std::sync::Arc;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::core::v1::Node;
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

/// How soon a serving request whose Node is not cached yet is looked at
/// again.
const NODE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The node a kubelet-serving request is for, when it is one this
/// approver may decide (pending, valid for the signer); None otherwise.
pub fn serving_node(c: &CertificateSigningRequest) -> Option<String> {
    if c.spec.signer_name != csr::KUBELET_SERVING_SIGNER
        || has_condition(c, "Approved")
        || has_condition(c, "Denied")
    {
        return None;
    }
    let req = csr::parse_pem(&c.spec.request.0).ok()?;
    let usages = c.spec.usages.clone().unwrap_or_default();
    csr::check_signer(csr::KUBELET_SERVING_SIGNER, &req, &usages).ok()?;
    let node = csr::node_subject(csr::KUBELET_SERVING_SIGNER, &req).ok()?;
    Some(node.to_string())
}

/// Why the approver approves the kubelet-serving request `c` for `node`
/// (see the module docs), or None.
pub fn decide_serving(c: &CertificateSigningRequest, node: &Node) -> Option<&'static str> {
    let name = serving_node(c)?;
    if node.metadata.name.as_deref() != Some(name.as_str())
        || c.spec.username.as_deref() != Some(format!("{}{name}", csr::NODE_USER_PREFIX).as_str())
    {
        return None;
    }
    let req = csr::parse_pem(&c.spec.request.0).ok()?;
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| a.iter().map(|a| a.address.clone()).collect::<Vec<_>>())
        .unwrap_or_default();
    let dns_ok = req
        .dns_names
        .iter()
        .all(|d| *d == name || addresses.contains(d));
    let ips_ok = req.ip_addresses.iter().all(|ip| {
        addresses
            .iter()
            .any(|a| a.parse::<std::net::IpAddr>().ok() == Some(*ip))
    });
    (dns_ok && ips_ok)
        .then_some("Auto approving self node serving certificate for the node's own names.")
}

struct Controller {
    client: kube::Client,
    csrs: Informer<CertificateSigningRequest>,
    nodes: Informer<Node>,
}

/// Runs the approver until the future is dropped.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Controller {
        client,
        csrs: caches.get::<CertificateSigningRequest>(),
        nodes: caches.get::<Node>(),
    });
    let queue = WorkQueue::new();
    let changes = watch(ctl.clone(), queue.clone());
    ctl.csrs.wait_synced().await;
    ctl.nodes.wait_synced().await;
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
        let message = match serving_node(&c) {
            Some(node) => match self.nodes.get(None, &node) {
                Some(n) => decide_serving(&c, &n),
                // The node registered just before asking; the cache lags.
                None => return Ok(Some(NODE_WAIT)),
            },
            None => decide(&c),
        };
        let Some(message) = message else {
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
                tracing::info!(csr = key, "approved node certificate request");
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

    fn serving(cn: &str, by: &str, sans: &[&str]) -> CertificateSigningRequest {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = sans.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut p = rcgen::CertificateParams::new(names).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: csr::KUBELET_SERVING_SIGNER.into(),
                usages: Some(vec!["server auth".into(), "digital signature".into()]),
                username: Some(by.into()),
                groups: Some(vec!["system:nodes".into()]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn node(name: &str, ip: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                     {"type": "Hostname", "address": "host-a"}]}
        }))
        .unwrap()
    }

    #[test]
    fn approves_serving_requests_of_the_node_for_its_own_names_only() {
        let n1 = node("n1", "10.0.0.1");
        let own = serving(
            "system:node:n1",
            "system:node:n1",
            &["n1", "host-a", "10.0.0.1"],
        );
        assert!(decide_serving(&own, &n1).unwrap().contains("serving"));
        assert_eq!(decide(&own), None, "not a client request");
        let other_ip = serving("system:node:n1", "system:node:n1", &["n1", "10.0.0.9"]);
        assert_eq!(decide_serving(&other_ip, &n1), None);
        let other_name = serving("system:node:n1", "system:node:n1", &["api.example.com"]);
        assert_eq!(decide_serving(&other_name, &n1), None);
        let by_other = serving("system:node:n1", "system:node:n2", &["n1"]);
        assert_eq!(decide_serving(&by_other, &n1), None);
        let by_admin = serving("system:node:n1", "admin", &["n1"]);
        assert_eq!(decide_serving(&by_admin, &n1), None);
        assert_eq!(decide_serving(&own, &node("n2", "10.0.0.1")), None);
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
