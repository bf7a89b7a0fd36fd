//! Service account tokens: ES256 JWTs signed by one cluster key, shaped
//! as Kubernetes issues them (`iss`, `sub`, `aud`, `exp`, `iat`, `nbf` and
//! the private `kubernetes.io` claim naming the namespace, the account and
//! the pod the token is bound to).
//!
//! The signing key is generated once and kept in the store
//! ([`SIGNING_KEY`], written only if absent), so every replica signs and
//! verifies the same tokens.
//!
//! A token authenticates only while it verifies (signature, issuer, one
//! of the API audiences, `exp`/`nbf` with a minute of clock skew) *and*
//! the objects it names still exist with the same uids: deleting the
//! account, or the pod a token is bound to, revokes it.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::UserInfo;
use crate::resources;
use crate::status::ApiResult;
use crate::storage::Objects;

/// Where the signing key lives in the store.
pub const SIGNING_KEY: &str = "/keel/service-account-key/v1";
/// Kubernetes' (and k3s') default issuer and API audience.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Every service account is in it.
pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// `extra` keys Kubernetes sets for a pod-bound token.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// A name and uid, as the `kubernetes.io` claim carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The private claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeClaims {
    pub namespace: String,
    pub serviceaccount: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
}

/// Every claim of a service account token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    #[serde(rename = "kubernetes.io")]
    pub kube: KubeClaims,
}

/// The stored key: PKCS#8 DER of a P-256 key, base64.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    pkcs8: String,
}

/// Signs and verifies the cluster's service account tokens.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The key's id (`kid`): base64url of the SHA-256 of its public point.
    kid: String,
    /// The public point's coordinates, base64url (the JWKS `x`/`y`).
    x: String,
    y: String,
    pub issuer: String,
    /// Tokens must carry one of these; new ones carry them all by default.
    pub audiences: Vec<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens(kid={})", self.kid) // never log keys
    }
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Seconds since the epoch.
pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A fresh P-256 key, PKCS#8 DER.
pub fn generate_key() -> anyhow::Result<Vec<u8>> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("generating the service account signing key failed"))?;
    Ok(doc.as_ref().to_vec())
}

impl Tokens {
    /// The signer for a PKCS#8 P-256 key.
    pub fn new(pkcs8: &[u8], issuer: &str, audiences: &[String]) -> anyhow::Result<Tokens> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| anyhow::anyhow!("the service account signing key is invalid: {e}"))?;
        let point = pair.public_key().as_ref();
        // Uncompressed SEC1: 0x04 || x (32) || y (32).
        anyhow::ensure!(
            point.len() == 65 && point[0] == 4,
            "unexpected public key encoding"
        );
        let (x, y) = (b64url(&point[1..33]), b64url(&point[33..]));
        let decoding = DecodingKey::from_ec_components(&x, &y)?;
        use sha2::Digest;
        let kid = b64url(&sha2::Sha256::digest(point));
        anyhow::ensure!(!audiences.is_empty(), "at least one API audience is needed");
        Ok(Tokens {
            encoding: EncodingKey::from_ec_der(pkcs8),
            decoding,
            kid,
            x,
            y,
            issuer: issuer.to_string(),
            audiences: audiences.to_vec(),
        })
    }

    /// Loads the cluster's key, creating it on first start (the first
    /// writer wins; every replica reads the same key).
    pub async fn load_or_create(
        objects: &Objects,
        issuer: &str,
        audiences: &[String],
    ) -> anyhow::Result<Tokens> {
        let fresh = StoredKey {
            pkcs8: base64::engine::general_purpose::STANDARD.encode(generate_key()?),
        };
        let stored = objects
            .put_raw_if_absent(SIGNING_KEY, serde_json::to_vec(&fresh)?)
            .await
            .map_err(|e| anyhow::anyhow!("service account signing key: {}", e.message))?;
        let key: StoredKey = serde_json::from_slice(&stored)
            .map_err(|e| anyhow::anyhow!("the stored service account key is unreadable: {e}"))?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(key.pkcs8)
            .map_err(|e| anyhow::anyhow!("the stored service account key is unreadable: {e}"))?;
        Tokens::new(&der, issuer, audiences)
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&h, claims, &self.encoding)?)
    }

    /// The claims of a new token for `sa` (and the bound pod), valid from
    /// `now_s` for `expiration_s`.
    pub fn claims(
        &self,
        namespace: &str,
        sa: Ref,
        pod: Option<Ref>,
        audiences: &[String],
        now_s: i64,
        expiration_s: i64,
    ) -> Claims {
        Claims {
            iss: self.issuer.clone(),
            sub: format!("{}{namespace}:{}", super::SERVICE_ACCOUNT_PREFIX, sa.name),
            aud: audiences.to_vec(),
            exp: now_s + expiration_s,
            iat: now_s,
            nbf: now_s,
            kube: KubeClaims {
                namespace: namespace.to_string(),
                serviceaccount: sa,
                pod,
            },
        }
    }

    /// The claims of a token that verifies: our key, our issuer, one of
    /// our audiences, not expired and already valid. The error says why
    /// not (for logs; clients only see 401).
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&self.audiences);
        v.set_issuer(&[&self.issuer]);
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(|e| format!("service account token: {e}"))?;
        let c = data.claims;
        let want_sub = format!(
            "{}{}:{}",
            super::SERVICE_ACCOUNT_PREFIX,
            c.kube.namespace,
            c.kube.serviceaccount.name
        );
        if c.sub != want_sub {
            return Err("service account token: sub does not match its kubernetes.io claim".into());
        }
        Ok(c)
    }

    /// The JSON Web Key Set verifiers fetch (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "use": "sig", "kty": "EC", "crv": "P-256", "alg": "ES256",
            "kid": self.kid, "x": self.x, "y": self.y,
        }]})
    }

    /// The OpenID provider configuration (`/.well-known/openid-configuration`).
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// The user a bearer token is, when it is a valid service account
    /// token whose account (and bound pod) still exist with the same uids.
    pub async fn authenticate(&self, objects: &Objects, token: &str) -> Result<UserInfo, String> {
        let c = self.verify(token)?;
        let ns = &c.kube.namespace;
        let sa_uid = current_uid(objects, "serviceaccounts", ns, &c.kube.serviceaccount.name)
            .await
            .map_err(|e| e.message)?;
        let pod_uid = match &c.kube.pod {
            Some(p) => current_uid(objects, "pods", ns, &p.name)
                .await
                .map_err(|e| e.message)?,
            None => None,
        };
        still_bound(&c, sa_uid.as_deref(), pod_uid.as_deref())?;
        Ok(user_of(&c))
    }
}

/// The uid of `resource` `ns/name` now (None: it does not exist). The
/// local copy first, a linearizable read when it misses (created a moment
/// ago through another replica).
pub async fn current_uid(
    objects: &Objects,
    resource: &str,
    ns: &str,
    name: &str,
) -> ApiResult<Option<String>> {
    let info = resources::find("", "v1", resource).expect("core resource is served");
    let key = info.key(Some(ns), name);
    let found = match objects.get_local(&key).await? {
        Some(s) => Some(s),
        None => objects.get(&key).await?,
    };
    Ok(found.map(|s| crate::meta::uid(&s.obj).to_string()))
}

/// Whether the objects a token names are still the ones it was issued
/// for: `sa_uid`/`pod_uid` are their current uids (None: deleted).
pub fn still_bound(c: &Claims, sa_uid: Option<&str>, pod_uid: Option<&str>) -> Result<(), String> {
    let sa = &c.kube.serviceaccount;
    match sa_uid {
        None => {
            return Err(format!(
                "service account {}/{} has been deleted",
                c.kube.namespace, sa.name
            ))
        }
        Some(u) if u != sa.uid => {
            return Err(format!(
                "service account {}/{} was recreated (uid {u}, the token names {})",
                c.kube.namespace, sa.name, sa.uid
            ))
        }
        Some(_) => {}
    }
    if let Some(p) = &c.kube.pod {
        match pod_uid {
            None => {
                return Err(format!(
                    "pod {}/{} has been deleted",
                    c.kube.namespace, p.name
                ))
            }
            Some(u) if u != p.uid => {
                return Err(format!(
                    "pod {}/{} was recreated (uid {u}, the token names {})",
                    c.kube.namespace, p.name, p.uid
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// `system:serviceaccount:<ns>:<name>` in `system:serviceaccounts` and
/// `system:serviceaccounts:<ns>`, with the bound pod in `extra`.
pub fn user_of(c: &Claims) -> UserInfo {
    let ns = &c.kube.namespace;
    let mut u = UserInfo::authenticated(
        &c.sub,
        &c.kube.serviceaccount.uid,
        &[
            SERVICE_ACCOUNTS.to_string(),
            format!("{SERVICE_ACCOUNTS}:{ns}"),
        ],
    );
    if let Some(p) = &c.kube.pod {
        u.extra.insert(EXTRA_POD_NAME.into(), vec![p.name.clone()]);
        u.extra.insert(EXTRA_POD_UID.into(), vec![p.uid.clone()]);
    }
    u
}

/// Whether a bearer token looks like a JWT (three dot-separated parts),
/// so only those are tried as service account tokens.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(aud: &str) -> Tokens {
        Tokens::new(&generate_key().unwrap(), DEFAULT_ISSUER, &[aud.to_string()]).unwrap()
    }

    fn sa() -> Ref {
        Ref {
            name: "default".into(),
            uid: "sa-1".into(),
        }
    }

    fn pod() -> Ref {
        Ref {
            name: "web".into(),
            uid: "pod-1".into(),
        }
    }

    #[test]
    fn a_signed_token_verifies_to_the_service_account_user() {
        let t = tokens(DEFAULT_ISSUER);
        let c = t.claims("ns1", sa(), Some(pod()), &t.audiences, now_s(), 3600);
        let jwt = t.sign(&c).unwrap();
        assert!(looks_like_jwt(&jwt));
        let back = t.verify(&jwt).unwrap();
        assert_eq!(back, c);
        let u = user_of(&back);
        assert_eq!(u.name, "system:serviceaccount:ns1:default");
        assert_eq!(u.uid, "sa-1");
        assert_eq!(
            u.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );
        assert_eq!(u.extra[EXTRA_POD_NAME], vec!["web"]);
    }

    #[test]
    fn expired_tokens_are_refused() {
        let t = tokens(DEFAULT_ISSUER);
        // Issued two hours ago for one hour: past the minute of skew.
        let c = t.claims("ns1", sa(), None, &t.audiences, now_s() - 7200, 3600);
        let err = t.verify(&t.sign(&c).unwrap()).unwrap_err();
        assert!(err.contains("Expired"), "{err}");
    }

    #[test]
    fn tokens_not_yet_valid_are_refused() {
        let t = tokens(DEFAULT_ISSUER);
        let c = t.claims("ns1", sa(), None, &t.audiences, now_s() + 7200, 3600);
        let err = t.verify(&t.sign(&c).unwrap()).unwrap_err();
        assert!(err.contains("Immature"), "{err}");
    }

    #[test]
    fn a_wrong_audience_is_refused() {
        let t = tokens(DEFAULT_ISSUER);
        let c = t.claims("ns1", sa(), None, &["vault".to_string()], now_s(), 3600);
        let err = t.verify(&t.sign(&c).unwrap()).unwrap_err();
        assert!(err.contains("Audience"), "{err}");
    }

    #[test]
    fn another_key_or_issuer_is_refused() {
        let ours = tokens(DEFAULT_ISSUER);
        let theirs = tokens(DEFAULT_ISSUER);
        let c = theirs.claims("ns1", sa(), None, &theirs.audiences, now_s(), 3600);
        let err = ours.verify(&theirs.sign(&c).unwrap()).unwrap_err();
        assert!(err.contains("Signature"), "{err}");
        let mut c = ours.claims("ns1", sa(), None, &ours.audiences, now_s(), 3600);
        c.iss = "https://elsewhere".into();
        let err = ours.verify(&ours.sign(&c).unwrap()).unwrap_err();
        assert!(err.contains("Issuer"), "{err}");
        // A tampered payload no longer matches the signature.
        let jwt = ours
            .sign(&ours.claims("ns1", sa(), None, &ours.audiences, now_s(), 3600))
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        let mut forged = ours.claims("kube-system", sa(), None, &ours.audiences, now_s(), 3600);
        forged.sub = "system:serviceaccount:kube-system:default".into();
        let body = b64url(&serde_json::to_vec(&forged).unwrap());
        assert!(ours
            .verify(&format!("{}.{body}.{}", parts[0], parts[2]))
            .is_err());
    }

    #[test]
    fn deleted_or_recreated_objects_revoke_the_token() {
        let t = tokens(DEFAULT_ISSUER);
        let c = t.claims("ns1", sa(), Some(pod()), &t.audiences, now_s(), 3600);
        assert!(still_bound(&c, Some("sa-1"), Some("pod-1")).is_ok());
        let err = still_bound(&c, Some("sa-1"), None).unwrap_err();
        assert!(err.contains("pod ns1/web has been deleted"), "{err}");
        assert!(still_bound(&c, Some("sa-1"), Some("pod-2")).is_err());
        assert!(still_bound(&c, None, Some("pod-1")).is_err());
        assert!(still_bound(&c, Some("sa-2"), Some("pod-1")).is_err());
        let unbound = t.claims("ns1", sa(), None, &t.audiences, now_s(), 3600);
        assert!(still_bound(&unbound, Some("sa-1"), None).is_ok());
    }

    #[test]
    fn the_jwks_names_the_signing_key() {
        let t = tokens(DEFAULT_ISSUER);
        let jwt = t
            .sign(&t.claims("ns1", sa(), None, &t.audiences, now_s(), 600))
            .unwrap();
        let h = jsonwebtoken::decode_header(&jwt).unwrap();
        let jwks = t.jwks();
        assert_eq!(h.kid.as_deref(), jwks["keys"][0]["kid"].as_str());
        let k = &jwks["keys"][0];
        let d = DecodingKey::from_ec_components(k["x"].as_str().unwrap(), k["y"].as_str().unwrap())
            .unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&t.audiences);
        assert!(jsonwebtoken::decode::<Claims>(&jwt, &d, &v).is_ok());
        assert_eq!(
            t.openid_configuration()["jwks_uri"],
            format!("{DEFAULT_ISSUER}/openid/v1/jwks")
        );
    }
}
