//! Bootstrap tokens and the join token that carries one.
//!
//! A bootstrap token is Kubernetes' `<id>.<secret>` credential (6 and 16
//! characters of `[a-z0-9]`), kept as a `kube-system/bootstrap-token-<id>`
//! Secret of type `bootstrap.kubernetes.io/token`, exactly as kubeadm
//! keeps them, so `kubectl` can list, create and delete them. It
//! authenticates as `system:bootstrap:<id>` in `system:bootstrappers`
//! plus the Secret's `auth-extra-groups`.
//!
//! A **join token** is what `keel server --init` prints and `--join`
//! takes: `K10<ca-sha256-hex>::<id>.<secret>`. The hash (of the cluster
//! CA certificate's DER bytes) lets a joining machine trust the CA it is
//! shown before it sends its secret, like k3s's `K10` tokens and kubeadm's
//! `--discovery-token-ca-cert-hash`. Which kind of join a token allows is
//! decided by its groups: [`SERVER_JOIN_GROUP`] for control-plane
//! replicas, [`AGENT_JOIN_GROUP`] for node agents.
//!
//! Errors: every refusal names what is wrong (format, unknown id, wrong
//! secret, expired, not for authentication); none reveals a secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use rand::Rng;
use sha2::{Digest, Sha256};

use super::UserInfo;
use crate::status::{ApiError, ApiResult};
use crate::storage::Objects;

/// The Secret type Kubernetes gives bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The namespace bootstrap token Secrets live in.
pub const NAMESPACE: &str = "kube-system";
/// Every bootstrap token user is in this group.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The prefix of a bootstrap token's user name.
pub const USER_PREFIX: &str = "system:bootstrap:";
/// Tokens in this group may join a control-plane replica.
pub const SERVER_JOIN_GROUP: &str = "system:bootstrappers:keel:servers";
/// Tokens in this group may join a node agent (submit a node CSR).
pub const AGENT_JOIN_GROUP: &str = "system:bootstrappers:keel:agents";
/// The prefix of a join token's text.
pub const JOIN_PREFIX: &str = "K10";

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A bootstrap token: `<id>.<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

impl std::fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

impl BootstrapToken {
    /// A fresh random token.
    pub fn generate() -> BootstrapToken {
        let mut rng = rand::thread_rng();
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect()
        };
        let id = pick(ID_LEN);
        let secret = pick(SECRET_LEN);
        BootstrapToken { id, secret }
    }

    /// Parses `<id>.<secret>`.
    pub fn parse(s: &str) -> Result<BootstrapToken, String> {
        let (id, secret) = s
            .split_once('.')
            .ok_or("a bootstrap token has the form <id>.<secret>")?;
        let ok = |part: &str, len: usize| part.len() == len && part.bytes().all(is_token_char);
        if !ok(id, ID_LEN) || !ok(secret, SECRET_LEN) {
            return Err(format!(
                "a bootstrap token is {ID_LEN} and {SECRET_LEN} characters of [a-z0-9] joined by '.'"
            ));
        }
        Ok(BootstrapToken {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// Whether a bearer token has a bootstrap token's shape (so the
    /// authenticator looks it up instead of rejecting it).
    pub fn looks_like(s: &str) -> bool {
        BootstrapToken::parse(s).is_ok()
    }

    /// The name of the Secret that holds this token.
    pub fn secret_name(&self) -> String {
        format!("bootstrap-token-{}", self.id)
    }

    /// The Secret that makes this token valid for authentication, in
    /// `extra_groups` (each must start with `system:bootstrappers:`), until
    /// `expiration` (RFC 3339) if given.
    pub fn to_secret(
        &self,
        extra_groups: &[&str],
        expiration: Option<&str>,
        description: &str,
    ) -> Secret {
        debug_assert!(extra_groups
            .iter()
            .all(|g| g.starts_with("system:bootstrappers:")));
        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
        };
        put("token-id", &self.id);
        put("token-secret", &self.secret);
        put("usage-bootstrap-authentication", "true");
        put("usage-bootstrap-signing", "true");
        put("description", description);
        if !extra_groups.is_empty() {
            put("auth-extra-groups", &extra_groups.join(","));
        }
        if let Some(e) = expiration {
            put("expiration", e);
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name()),
                namespace: Some(NAMESPACE.to_string()),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE.to_string()),
            data: Some(data),
            ..Default::default()
        }
    }
}

/// A join token: the cluster CA's fingerprint and a bootstrap token.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct JoinToken {
    /// Lower-case hex SHA-256 of the CA certificate's DER bytes.
    pub ca_hash: String,
    pub token: BootstrapToken,
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{JOIN_PREFIX}{}::{}", self.ca_hash, self.token)
    }
}

impl JoinToken {
    /// Parses `K10<ca-sha256-hex>::<id>.<secret>`.
    pub fn parse(s: &str) -> Result<JoinToken, String> {
        let rest = s.trim().strip_prefix(JOIN_PREFIX).ok_or(
            "a join token starts with K10 (as printed by `keel server --init` or `keel token create`)",
        )?;
        let (hash, tok) = rest
            .split_once("::")
            .ok_or("a join token has the form K10<ca-sha256>::<id>.<secret>")?;
        if hash.len() != 64 || !hash.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err("the join token's CA fingerprint is not 64 hex digits".into());
        }
        Ok(JoinToken {
            ca_hash: hash.to_ascii_lowercase(),
            token: BootstrapToken::parse(tok)?,
        })
    }

    /// Whether `ca_der` is the CA this token names (constant time).
    pub fn trusts(&self, ca_der: &[u8]) -> bool {
        constant_time_eq(ca_hash(ca_der).as_bytes(), self.ca_hash.as_bytes())
    }
}

/// Lower-case hex SHA-256 of a CA certificate's DER bytes.
pub fn ca_hash(ca_der: &[u8]) -> String {
    Sha256::digest(ca_der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn data_str<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    let v = secret.data.as_ref()?.get(key)?;
    std::str::from_utf8(&v.0).ok()
}

/// The identity `presented` authenticates as, given its Secret, at
/// `now_unix_s`. Checks type, id, secret (constant time), expiration and
/// the authentication usage, as Kubernetes' bootstrap authenticator does.
pub fn validate(
    secret: &Secret,
    presented: &BootstrapToken,
    now_unix_s: i64,
) -> Result<UserInfo, String> {
    if secret.type_.as_deref() != Some(SECRET_TYPE) {
        return Err(format!(
            "{} is not of type {SECRET_TYPE}",
            presented.secret_name()
        ));
    }
    if data_str(secret, "token-id") != Some(presented.id.as_str()) {
        return Err(format!("bootstrap token {} is malformed", presented.id));
    }
    let stored = data_str(secret, "token-secret").unwrap_or_default();
    if !constant_time_eq(stored.as_bytes(), presented.secret.as_bytes()) {
        return Err(format!("bootstrap token {}: wrong secret", presented.id));
    }
    if let Some(exp) = data_str(secret, "expiration") {
        let at: jiff::Timestamp = exp.parse().map_err(|e| {
            format!(
                "bootstrap token {}: bad expiration {exp:?}: {e}",
                presented.id
            )
        })?;
        if at.as_second() <= now_unix_s {
            return Err(format!("bootstrap token {} expired at {exp}", presented.id));
        }
    }
    if data_str(secret, "usage-bootstrap-authentication") != Some("true") {
        return Err(format!(
            "bootstrap token {} is not for authentication",
            presented.id
        ));
    }
    let mut groups = vec![BOOTSTRAPPERS.to_string()];
    for g in data_str(secret, "auth-extra-groups")
        .unwrap_or_default()
        .split(',')
    {
        let g = g.trim();
        if g.starts_with("system:bootstrappers:") && !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
    }
    Ok(UserInfo::authenticated(
        &format!("{USER_PREFIX}{}", presented.id),
        "",
        &groups,
    ))
}

fn now_unix_s() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Authenticates a bearer token of bootstrap shape against its Secret in
/// the store (the local copy first, then a linearizable read, so a token
/// created a moment ago through another replica works).
pub async fn authenticate(objects: &Objects, bearer: &str) -> ApiResult<Result<UserInfo, String>> {
    let Ok(tok) = BootstrapToken::parse(bearer) else {
        return Ok(Err("not a bootstrap token".into()));
    };
    let Some(secret) = read_secret(objects, &tok.secret_name()).await? else {
        return Ok(Err(format!("bootstrap token {} does not exist", tok.id)));
    };
    Ok(validate(&secret, &tok, now_unix_s()))
}

/// The stored `kube-system/<name>` Secret, if any.
pub async fn read_secret(objects: &Objects, name: &str) -> ApiResult<Option<Secret>> {
    let info = crate::resources::find("", "v1", "secrets").expect("core resource is served");
    let key = info.key(Some(NAMESPACE), name);
    let found = match objects.get_local(&key).await? {
        Some(s) => Some(s),
        None => objects.get(&key).await?,
    };
    found
        .map(|s| {
            serde_json::from_value(s.obj).map_err(|e| {
                ApiError::internal(format!("stored Secret {name} does not decode: {e}"))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_token_round_trip_and_shape() {
        let t = BootstrapToken::generate();
        assert_eq!(BootstrapToken::parse(&t.to_string()).unwrap(), t);
        assert!(BootstrapToken::parse("abcdef.0123456789abcdef").is_ok());
        for bad in [
            "abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123",
        ] {
            assert!(BootstrapToken::parse(bad).is_err(), "{bad}");
        }
        assert!(!format!("{t:?}").contains(&t.secret));
    }

    #[test]
    fn join_token_round_trip_and_ca_check() {
        let ca = b"not really a certificate";
        let j = JoinToken {
            ca_hash: ca_hash(ca),
            token: BootstrapToken::generate(),
        };
        let parsed = JoinToken::parse(&j.to_string()).unwrap();
        assert_eq!(parsed, j);
        assert!(parsed.trusts(ca));
        assert!(!parsed.trusts(b"another CA"));
        assert!(JoinToken::parse("K10abc::abcdef.0123456789abcdef")
            .unwrap_err()
            .contains("fingerprint"));
        assert!(JoinToken::parse("abcdef.0123456789abcdef")
            .unwrap_err()
            .contains("K10"));
    }

    #[test]
    fn validate_checks_secret_expiry_usage_and_groups() {
        let t = BootstrapToken::generate();
        let s = t.to_secret(&[SERVER_JOIN_GROUP], Some("2030-01-01T00:00:00Z"), "test");
        let now = 1_800_000_000; // 2027
        let u = validate(&s, &t, now).unwrap();
        assert_eq!(u.name, format!("system:bootstrap:{}", t.id));
        assert!(u.in_group(BOOTSTRAPPERS) && u.in_group(SERVER_JOIN_GROUP));
        let wrong = BootstrapToken {
            id: t.id.clone(),
            secret: "0000000000000000".into(),
        };
        assert!(validate(&s, &wrong, now)
            .unwrap_err()
            .contains("wrong secret"));
        assert!(validate(&s, &t, 1_900_000_000)
            .unwrap_err()
            .contains("expired"));
        let mut no_auth = s.clone();
        no_auth.data.as_mut().unwrap().insert(
            "usage-bootstrap-authentication".into(),
            ByteString(b"false".to_vec()),
        );
        assert!(validate(&no_auth, &t, now)
            .unwrap_err()
            .contains("not for authentication"));
        let mut other_type = s;
        other_type.type_ = Some("Opaque".into());
        assert!(validate(&other_type, &t, now).is_err());
    }
}
