//! TLS for the HTTPS listener: the certificate of each `spec.tls[].hosts`
//! entry of keel's Ingresses, from the `kubernetes.io/tls` Secret it names
//! (`tls.crt`, `tls.key`, in the Ingress' namespace), chosen by SNI.
//!
//! A host whose Secret is missing or unusable, a client without SNI, or an
//! unknown name get the router's default certificate: self-signed,
//! generated at start (as ingress-nginx's "Fake Certificate"). Problems are
//! logged when they first appear, not on every rebuild.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::matcher::{normalize_host, wildcard_of};
use super::table::Inputs;

/// The Secret type the router reads.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// host (precise or `*.wildcard`) → certificate.
pub type CertMap = HashMap<String, Arc<CertifiedKey>>;

/// The SNI resolver; [`CertResolver::set`] swaps the whole map.
#[derive(Debug)]
pub struct CertResolver {
    certs: RwLock<Arc<CertMap>>,
    default_cert: Arc<CertifiedKey>,
    /// The problems last logged, so a rebuild logs only new ones.
    logged: Mutex<BTreeSet<String>>,
}

impl CertResolver {
    /// A resolver with a fresh self-signed default certificate.
    /// Errors: key generation or signing failed.
    pub fn new(provider: &CryptoProvider) -> anyhow::Result<CertResolver> {
        let generated =
            rcgen::generate_simple_self_signed(vec!["keel-ingress-default".to_string()])?;
        let cert = generated.cert.der().clone();
        let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
            .map_err(|e| anyhow::anyhow!("default key: {e}"))?;
        let default_cert = Arc::new(CertifiedKey::from_der(vec![cert], key, provider)?);
        Ok(CertResolver {
            certs: RwLock::new(Arc::new(CertMap::new())),
            default_cert,
            logged: Mutex::new(BTreeSet::new()),
        })
    }

    /// Replaces the certificates with those of `inputs`, logging problems
    /// not logged before.
    pub fn update(&self, inputs: &Inputs, provider: &CryptoProvider) {
        let (certs, problems) = build(inputs, provider);
        self.set(certs);
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        for p in problems.difference(&logged) {
            tracing::warn!(problem = %p, "ingress TLS: serving the default certificate");
        }
        *logged = problems;
    }

    pub fn set(&self, certs: CertMap) {
        *self.certs.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certs);
    }

    /// The certificate for an SNI name: precise host, then its wildcard,
    /// then the default.
    pub fn lookup(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let certs = self.certs.read().unwrap_or_else(|p| p.into_inner()).clone();
        sni.map(normalize_host)
            .and_then(|host| {
                certs
                    .get(&host)
                    .or_else(|| wildcard_of(&host).and_then(|w| certs.get(&w)))
                    .cloned()
            })
            .unwrap_or_else(|| self.default_cert.clone())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lookup(hello.server_name()))
    }
}

/// The certificates of keel's Ingresses' TLS hosts, and a description of
/// each host left on the default certificate. The oldest Ingress wins a
/// host named twice.
pub fn build(inputs: &Inputs, provider: &CryptoProvider) -> (CertMap, BTreeSet<String>) {
    let secrets: HashMap<(&str, &str), &k8s_openapi::api::core::v1::Secret> = inputs
        .secrets
        .iter()
        .filter(|s| s.type_.as_deref() == Some(TLS_SECRET_TYPE))
        .map(|s| {
            let ns = s.metadata.namespace.as_deref().unwrap_or_default();
            let name = s.metadata.name.as_deref().unwrap_or_default();
            ((ns, name), s.as_ref())
        })
        .collect();
    let mut parsed: HashMap<(String, String), Result<Arc<CertifiedKey>, String>> = HashMap::new();
    let mut certs = CertMap::new();
    let mut problems = BTreeSet::new();
    for ing in inputs.keel_ingresses() {
        let ns = ing.metadata.namespace.as_deref().unwrap_or_default();
        for tls in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            let Some(secret_name) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let cert = parsed
                .entry((ns.to_string(), secret_name.to_string()))
                .or_insert_with(|| match secrets.get(&(ns, secret_name)) {
                    None => Err("no kubernetes.io/tls Secret of that name".to_string()),
                    Some(s) => certified_key(s, provider).map(Arc::new),
                });
            for host in tls.hosts.iter().flatten() {
                let host = normalize_host(host);
                match cert {
                    Ok(c) => {
                        certs.entry(host).or_insert_with(|| c.clone());
                    }
                    Err(e) => {
                        problems.insert(format!("host {host}: secret {ns}/{secret_name}: {e}"));
                    }
                }
            }
        }
    }
    (certs, problems)
}

/// The certificate chain and key of a TLS Secret. Errors: missing keys,
/// bad PEM, or a key that does not fit the certificate.
fn certified_key(
    secret: &k8s_openapi::api::core::v1::Secret,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let data = secret.data.as_ref().ok_or("the Secret has no data")?;
    let crt = data.get("tls.crt").ok_or("no tls.crt")?;
    let key = data.get("tls.key").ok_or("no tls.key")?;
    let chain = CertificateDer::pem_slice_iter(&crt.0)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key.0).map_err(|e| format!("tls.key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| format!("tls.key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    fn secret(name: &str, hosts: &[&str]) -> Arc<k8s_openapi::api::core::v1::Secret> {
        let c = rcgen::generate_simple_self_signed(
            hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let mut s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"}, "type": TLS_SECRET_TYPE,
        }))
        .unwrap();
        s.data = Some(
            [
                ("tls.crt".to_string(), ByteString(c.cert.pem().into_bytes())),
                (
                    "tls.key".to_string(),
                    ByteString(c.signing_key.serialize_pem().into_bytes()),
                ),
            ]
            .into(),
        );
        Arc::new(s)
    }

    fn inputs(secrets: Vec<Arc<k8s_openapi::api::core::v1::Secret>>) -> Inputs {
        let ing = serde_json::from_value(json!({
            "metadata": {"name": "i", "namespace": "ns"},
            "spec": {"ingressClassName": "keel", "tls": [
                {"hosts": ["a.test", "*.w.test"], "secretName": "good"},
                {"hosts": ["b.test"], "secretName": "missing"},
                {"hosts": ["c.test"], "secretName": "broken"},
            ]},
        }))
        .unwrap();
        Inputs {
            ingresses: vec![Arc::new(ing)],
            secrets,
            ..Inputs::default()
        }
    }

    #[test]
    fn sni_picks_the_secret_certificate_else_the_default() {
        let p = provider();
        let mut broken = (*secret("broken", &["c.test"])).clone();
        broken
            .data
            .as_mut()
            .unwrap()
            .insert("tls.key".into(), ByteString(b"junk".to_vec()));
        let good = secret("good", &["a.test"]);
        let r = CertResolver::new(&p).unwrap();
        let (certs, problems) = build(&inputs(vec![good.clone(), Arc::new(broken)]), &p);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("b.test") && p.contains("no kubernetes.io/tls Secret")));
        assert!(problems
            .iter()
            .any(|p| p.contains("c.test") && p.contains("tls.key")));
        r.set(certs);
        let good_der = CertificateDer::pem_slice_iter(&good.data.as_ref().unwrap()["tls.crt"].0)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(r.lookup(Some("A.test")).cert[0], good_der);
        assert_eq!(r.lookup(Some("x.w.test")).cert[0], good_der);
        let default = r.lookup(None);
        assert_ne!(default.cert[0], good_der);
        assert_eq!(r.lookup(Some("b.test")).cert[0], default.cert[0]);
        assert_eq!(r.lookup(Some("c.test")).cert[0], default.cert[0]);
        assert_eq!(r.lookup(Some("y.x.w.test")).cert[0], default.cert[0]);
    }
}
