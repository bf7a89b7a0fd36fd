//! CertificateSigningRequest rules shared by the API server (admission)
//! and the controllers (approver and signer): what a PKCS#10 request in a
//! CSR's `spec.request` says, and which requests each built-in signer
//! accepts.
//!
//! The signers are Kubernetes' two client signers and the kubelet serving
//! signer: [`KUBELET_CLIENT_SIGNER`] issues node client certificates only
//! (`CN=system:node:<name>`, `O=system:nodes`, client auth, no SANs);
//! [`CLIENT_SIGNER`] issues user client certificates (client auth, any
//! subject but never a node's or `system:masters`);
//! [`KUBELET_SERVING_SIGNER`] issues the serving certificates of node
//! agents (`CN=system:node:<name>`, `O=system:nodes`, server auth, DNS
//! and IP subjectAltNames only, at least one).
//!
//! Errors: every refusal is a sentence naming the field or rule broken.

use x509_parser::prelude::FromDer;

/// Node client certificates (the kubelet's bootstrap and renewal CSRs).
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// User client certificates for the API server.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// Serving certificates of node agents (the kubelet's port).
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The user name prefix of node identities.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The group node identities are in.
pub const NODES_GROUP: &str = "system:nodes";
/// Shortest validity a CSR may ask for (`spec.expirationSeconds`), as
/// Kubernetes.
pub const MIN_EXPIRATION_S: i64 = 600;

/// What a PKCS#10 request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The subject's CommonName (the user name it would authenticate as).
    pub common_name: String,
    /// The subject's Organizations (the groups).
    pub organizations: Vec<String>,
    /// Whether it asks for any subjectAltName (DNS, IP, email, URI).
    pub has_sans: bool,
    /// The DNS subjectAltNames it asks for.
    pub dns_names: Vec<String>,
    /// The IP address subjectAltNames it asks for.
    pub ip_addresses: Vec<std::net::IpAddr>,
    /// Whether it asks for any other subjectAltName (email, URI, ...).
    pub other_sans: bool,
    /// The request's DER bytes.
    pub der: Vec<u8>,
}

/// Parses a PEM `CERTIFICATE REQUEST` block and checks its self-signature
/// (which proves the requester holds the key).
pub fn parse_pem(pem: &[u8]) -> Result<Request, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| format!("spec.request is not a PEM block: {e}"))?;
    if block.label != "CERTIFICATE REQUEST" && block.label != "NEW CERTIFICATE REQUEST" {
        return Err(format!(
            "spec.request holds a PEM {:?} block, not a CERTIFICATE REQUEST",
            block.label
        ));
    }
    parse_der(&block.contents)
}

/// [`parse_pem`] on the DER bytes.
pub fn parse_der(der: &[u8]) -> Result<Request, String> {
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| format!("spec.request is not a PKCS#10 certificate request: {e}"))?;
    csr.verify_signature()
        .map_err(|e| format!("spec.request's signature does not verify: {e}"))?;
    let subject = &csr.certification_request_info.subject;
    let text = |a: &x509_parser::x509::AttributeTypeAndValue| a.as_str().ok().map(str::to_string);
    let common_name = subject
        .iter_common_name()
        .find_map(text)
        .unwrap_or_default();
    let organizations = subject.iter_organization().filter_map(text).collect();
    let mut r = Request {
        common_name,
        organizations,
        has_sans: false,
        dns_names: vec![],
        ip_addresses: vec![],
        other_sans: false,
        der: der.to_vec(),
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
            r.has_sans = true;
            for name in &san.general_names {
                add_san(&mut r, name);
            }
        }
    }
    Ok(r)
}

/// Sorts one subjectAltName into the request's DNS names, IP addresses or
/// "other" (anything else, or an IP of neither 4 nor 16 bytes).
fn add_san(r: &mut Request, name: &x509_parser::extensions::GeneralName) {
    use x509_parser::extensions::GeneralName;
    match name {
        GeneralName::DNSName(d) => r.dns_names.push(d.to_string()),
        GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
            Ok(v4) => r.ip_addresses.push(std::net::IpAddr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*b) {
                Ok(v6) => r.ip_addresses.push(std::net::IpAddr::from(v6)),
                Err(_) => r.other_sans = true,
            },
        },
        _ => r.other_sans = true,
    }
}

/// Whether `signer` is one keel signs for.
pub fn is_known_signer(signer: &str) -> bool {
    signer == KUBELET_CLIENT_SIGNER || signer == CLIENT_SIGNER || signer == KUBELET_SERVING_SIGNER
}

/// Checks `req` and `usages` against `signer`'s rules (Kubernetes'
/// `ValidateKubeletClientCSR` and the kube-apiserver-client signer's).
/// Unknown signers are not checked: another signer may handle them.
pub fn check_signer(signer: &str, req: &Request, usages: &[String]) -> Result<(), String> {
    match signer {
        KUBELET_CLIENT_SIGNER => check_node_client(req, usages),
        CLIENT_SIGNER => check_user_client(req, usages),
        KUBELET_SERVING_SIGNER => check_node_serving(req, usages),
        _ => Ok(()),
    }
}

/// The node a `CN=system:node:<name>, O=system:nodes` subject names, or
/// why the subject is not a node's for `signer`.
pub fn node_subject<'a>(signer: &str, req: &'a Request) -> Result<&'a str, String> {
    let Some(node) = req.common_name.strip_prefix(NODE_USER_PREFIX) else {
        return Err(format!(
            "signer {signer} signs only subjects CN=system:node:<name>, not CN={:?}",
            req.common_name
        ));
    };
    if node.is_empty() {
        return Err("the subject's CN names no node (system:node:<name>)".into());
    }
    if req.organizations != [NODES_GROUP] {
        return Err(format!(
            "signer {signer} signs only subjects with O={NODES_GROUP}, not {:?}",
            req.organizations
        ));
    }
    Ok(node)
}

/// Kubernetes' `ValidateKubeletServingCSR`: a node subject, DNS or IP
/// names only (at least one), and server auth usages.
fn check_node_serving(req: &Request, usages: &[String]) -> Result<(), String> {
    node_subject(KUBELET_SERVING_SIGNER, req)?;
    if req.other_sans {
        return Err(format!(
            "signer {KUBELET_SERVING_SIGNER} signs only DNS and IP subjectAltNames"
        ));
    }
    if req.dns_names.is_empty() && req.ip_addresses.is_empty() {
        return Err(format!(
            "signer {KUBELET_SERVING_SIGNER} needs at least one DNS or IP subjectAltName"
        ));
    }
    if !usages.iter().any(|u| u == "server auth") {
        return Err(format!(
            "signer {KUBELET_SERVING_SIGNER} needs spec.usages to include \"server auth\""
        ));
    }
    if let Some(u) = usages
        .iter()
        .find(|u| !["server auth", "digital signature", "key encipherment"].contains(&u.as_str()))
    {
        return Err(format!(
            "signer {KUBELET_SERVING_SIGNER} does not allow usage {u:?} (only \"server auth\", \"digital signature\", \"key encipherment\")"
        ));
    }
    Ok(())
}

fn check_node_client(req: &Request, usages: &[String]) -> Result<(), String> {
    node_subject(KUBELET_CLIENT_SIGNER, req)?;
    if req.has_sans {
        return Err(format!(
            "signer {KUBELET_CLIENT_SIGNER} does not sign subjectAltNames"
        ));
    }
    check_client_usages(KUBELET_CLIENT_SIGNER, usages)
}

fn check_user_client(req: &Request, usages: &[String]) -> Result<(), String> {
    if req.common_name.is_empty() {
        return Err("the subject has no CommonName (the user name)".into());
    }
    if req.organizations.iter().any(|o| o == "system:masters") {
        return Err(format!(
            "signer {CLIENT_SIGNER} does not sign certificates in system:masters"
        ));
    }
    if req.common_name.starts_with(NODE_USER_PREFIX) {
        return Err(format!(
            "signer {CLIENT_SIGNER} does not sign node identities; use {KUBELET_CLIENT_SIGNER}"
        ));
    }
    check_client_usages(CLIENT_SIGNER, usages)
}

/// Client certificates: `client auth` is required; besides it only
/// `digital signature` and `key encipherment` are allowed.
fn check_client_usages(signer: &str, usages: &[String]) -> Result<(), String> {
    if !usages.iter().any(|u| u == "client auth") {
        return Err(format!(
            "signer {signer} needs spec.usages to include \"client auth\""
        ));
    }
    if let Some(u) = usages
        .iter()
        .find(|u| !["client auth", "digital signature", "key encipherment"].contains(&u.as_str()))
    {
        return Err(format!(
            "signer {signer} does not allow usage {u:?} (only \"client auth\", \"digital signature\", \"key encipherment\")"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(cn: &str, orgs: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        p.serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
            .into_bytes()
    }

    fn usages(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_subject_of_a_signed_request() {
        let r = parse_pem(&csr("system:node:n1", &["system:nodes"])).unwrap();
        assert_eq!(r.common_name, "system:node:n1");
        assert_eq!(r.organizations, vec!["system:nodes".to_string()]);
        assert!(!r.has_sans);
    }

    #[test]
    fn refuses_what_is_not_a_request() {
        assert!(parse_pem(b"hello").unwrap_err().contains("PEM"));
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse_pem(cert).unwrap_err().contains("CERTIFICATE REQUEST"));
        let junk =
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        assert!(parse_pem(junk).unwrap_err().contains("PKCS#10"));
    }

    #[test]
    fn node_signer_takes_only_node_subjects() {
        let client = usages(&["client auth", "digital signature"]);
        let ok = parse_pem(&csr("system:node:n1", &["system:nodes"])).unwrap();
        check_signer(KUBELET_CLIENT_SIGNER, &ok, &client).unwrap();
        let user = parse_pem(&csr("alice", &["system:nodes"])).unwrap();
        let e = check_signer(KUBELET_CLIENT_SIGNER, &user, &client).unwrap_err();
        assert!(e.contains("CN=system:node:"), "{e}");
        let masters = parse_pem(&csr("system:node:n1", &["system:masters"])).unwrap();
        let e = check_signer(KUBELET_CLIENT_SIGNER, &masters, &client).unwrap_err();
        assert!(e.contains("O=system:nodes"), "{e}");
        let e = check_signer(KUBELET_CLIENT_SIGNER, &ok, &usages(&["server auth"])).unwrap_err();
        assert!(e.contains("client auth"), "{e}");
    }

    fn serving_csr(cn: &str, sans: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = sans.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut p = rcgen::CertificateParams::new(names).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, NODES_GROUP);
        p.serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
            .into_bytes()
    }

    #[test]
    fn serving_signer_takes_node_subjects_with_names_and_server_auth() {
        let serving = usages(&["server auth", "digital signature", "key encipherment"]);
        let ok = parse_pem(&serving_csr("system:node:n1", &["n1", "127.0.0.2"])).unwrap();
        assert_eq!(ok.dns_names, vec!["n1".to_string()]);
        assert_eq!(
            ok.ip_addresses,
            vec!["127.0.0.2".parse::<std::net::IpAddr>().unwrap()]
        );
        check_signer(KUBELET_SERVING_SIGNER, &ok, &serving).unwrap();
        let e = check_signer(KUBELET_SERVING_SIGNER, &ok, &usages(&["client auth"])).unwrap_err();
        assert!(e.contains("server auth"), "{e}");
        let bare = parse_pem(&serving_csr("system:node:n1", &[])).unwrap();
        let e = check_signer(KUBELET_SERVING_SIGNER, &bare, &serving).unwrap_err();
        assert!(e.contains("at least one"), "{e}");
        let user = parse_pem(&serving_csr("alice", &["n1"])).unwrap();
        let e = check_signer(KUBELET_SERVING_SIGNER, &user, &serving).unwrap_err();
        assert!(e.contains("CN=system:node:"), "{e}");
    }

    #[test]
    fn user_signer_refuses_masters_and_nodes() {
        let client = usages(&["client auth"]);
        let alice = parse_pem(&csr("alice", &["dev"])).unwrap();
        check_signer(CLIENT_SIGNER, &alice, &client).unwrap();
        let root = parse_pem(&csr("eve", &["system:masters"])).unwrap();
        assert!(check_signer(CLIENT_SIGNER, &root, &client)
            .unwrap_err()
            .contains("system:masters"));
        let node = parse_pem(&csr("system:node:n1", &["system:nodes"])).unwrap();
        assert!(check_signer(CLIENT_SIGNER, &node, &client).is_err());
    }
}
