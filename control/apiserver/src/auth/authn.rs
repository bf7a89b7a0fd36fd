//! Authentication: who a request is from.
//!
//! - A client certificate signed by the cluster CA (the TLS layer verified
//!   the chain and validity): the subject's CommonName is the user, each
//!   Organization a group (Kubernetes' x509 authenticator).
//! - A bearer token: the cluster's admin token is user `admin` in
//!   `system:masters`; tokens from `--token-auth-file` are the users and
//!   groups that file names.
//!
//! Every authenticated user is also in `system:authenticated`. A request
//! with no credentials is anonymous (it may reach only what
//! `system:unauthenticated` is granted: the health and version
//! endpoints); a wrong token is rejected outright (401).

use axum::http::{header, HeaderMap};

use super::UserInfo;

/// One accepted bearer token and who it is.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticToken {
    pub token: String,
    pub user: UserInfo,
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticToken({})", self.user.name) // never log tokens
    }
}

impl StaticToken {
    /// One line of Kubernetes' static token file:
    /// `token,user,uid[,"group1,group2"]`.
    pub fn parse_line(line: &str) -> Result<StaticToken, String> {
        let mut parts = line.splitn(4, ',');
        let token = parts.next().unwrap_or("").trim();
        let user = parts.next().unwrap_or("").trim();
        let uid = parts.next().unwrap_or("").trim();
        if token.is_empty() || user.is_empty() {
            return Err("expected token,user,uid[,\"group1,group2\"]".into());
        }
        let groups: Vec<String> = parts
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"')
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        Ok(StaticToken {
            token: token.to_string(),
            user: UserInfo::authenticated(user, uid, &groups),
        })
    }
}

/// What authentication concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authn {
    User(UserInfo),
    /// No credentials at all.
    Anonymous,
    /// Credentials that are not valid (401).
    Rejected,
}

/// The user a client certificate names, or an error naming what is
/// missing. `der` is the leaf the TLS layer already verified.
pub fn cert_user(der: &[u8]) -> Result<UserInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the client certificate cannot be parsed: {e}"))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or("the client certificate has no CommonName")?;
    let groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Ok(UserInfo::authenticated(name, "", &groups))
}

/// Authenticates by certificate first, then by bearer token, as
/// kube-apiserver's union authenticator orders them.
pub fn authenticate(tokens: &[StaticToken], cert: Option<&UserInfo>, headers: &HeaderMap) -> Authn {
    if let Some(u) = cert {
        return Authn::User(u.clone());
    }
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Authn::Anonymous;
    };
    let Some(tok) = v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
        return Authn::Rejected;
    };
    token_user(tokens, tok.trim()).map_or(Authn::Rejected, Authn::User)
}

/// The user a bearer token belongs to (constant-time comparisons).
pub fn token_user(tokens: &[StaticToken], tok: &str) -> Option<UserInfo> {
    tokens
        .iter()
        .find(|t| constant_time_eq(t.token.as_bytes(), tok.as_bytes()))
        .map(|t| t.user.clone())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn token_file_lines() {
        let t = StaticToken::parse_line(r#"abc,alice,42,"dev,ops""#).unwrap();
        assert_eq!(t.user.name, "alice");
        assert_eq!(t.user.uid, "42");
        assert_eq!(t.user.groups, vec!["dev", "ops", "system:authenticated"]);
        let t = StaticToken::parse_line("abc,bob,1").unwrap();
        assert_eq!(t.user.groups, vec!["system:authenticated"]);
        assert!(StaticToken::parse_line("abc").is_err());
    }

    #[test]
    fn tokens_and_anonymous() {
        let tokens = vec![StaticToken {
            token: "t1".into(),
            user: UserInfo::admin(),
        }];
        let mut h = HeaderMap::new();
        assert_eq!(authenticate(&tokens, None, &h), Authn::Anonymous);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t1"));
        assert_eq!(
            authenticate(&tokens, None, &h),
            Authn::User(UserInfo::admin())
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t2"));
        assert_eq!(authenticate(&tokens, None, &h), Authn::Rejected);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic x"));
        assert_eq!(authenticate(&tokens, None, &h), Authn::Rejected);
    }

    #[test]
    fn certificates_name_user_and_groups() {
        let ca = crate::pki::Bootstrap::generate().unwrap();
        let (cert_pem, _key) = ca
            .client_cert(
                "alice",
                &["dev".into(), "ops".into()],
                std::time::Duration::from_secs(3600),
            )
            .unwrap();
        let der = crate::pki::pem_to_der(&cert_pem).unwrap();
        let u = cert_user(&der).unwrap();
        assert_eq!(u.name, "alice");
        assert_eq!(u.groups, vec!["dev", "ops", "system:authenticated"]);
    }
}
