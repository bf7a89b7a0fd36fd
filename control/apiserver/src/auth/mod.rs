//! Who is asking and may they: authentication turns a request's
//! credentials into a [`UserInfo`], authorization decides on Kubernetes'
//! request attributes ([`Attributes`]) as kube-apiserver does.
//!
//! The seams are traits so later authenticators (service account JWTs,
//! bootstrap tokens) and authorizers plug in beside
//! the ones here without touching the request path:
//! - [`authn`]: client certificates signed by the cluster CA and static
//!   bearer tokens;
//! - [`node`]: the Node authorizer (a node's own pods and what they
//!   reference), asked before RBAC;
//! - [`rbac`]: rbac.authorization.k8s.io/v1 over the stored roles and
//!   bindings, behind [`Masters`] (`system:masters` is always allowed);
//! - [`request_info`]: the attributes of a URL, as Kubernetes'
//!   RequestInfoFactory reads them;
//! - [`reviews`]: the access and identity reviews kubectl's `auth` uses;
//! - [`impersonate`]: `Impersonate-User` / `Impersonate-Group` headers;
//! - [`escalation`]: no one grants what they do not hold.

pub mod authn;
pub mod bootstrap_policy;
pub mod bootstrap_token;
pub mod escalation;
pub mod forbidden;
pub mod impersonate;
pub mod node;
pub mod rbac;
pub mod request_info;
pub mod reviews;
pub mod sa_token;
pub mod token_request;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::status::ApiResult;

/// The group whose members every authorizer chain allows everything.
pub const MASTERS: &str = "system:masters";
/// Every authenticated user is in it.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Requests without credentials (only for the public endpoints).
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
pub const ANONYMOUS: &str = "system:anonymous";
/// The prefix of a service account's user name:
/// `system:serviceaccount:<namespace>:<name>`.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// An authenticated identity, shaped like Kubernetes' `user.Info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user in `groups` plus `system:authenticated` (added once).
    pub fn authenticated(name: &str, uid: &str, groups: &[String]) -> UserInfo {
        let mut groups: Vec<String> = groups.to_vec();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.to_string());
        }
        UserInfo {
            name: name.to_string(),
            uid: uid.to_string(),
            groups,
            extra: BTreeMap::new(),
        }
    }

    /// The cluster's admin (the admin token, and plain-HTTP development).
    pub fn admin() -> UserInfo {
        UserInfo::authenticated("admin", "", &[MASTERS.to_string()])
    }

    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: ANONYMOUS.to_string(),
            groups: vec![UNAUTHENTICATED.to_string()],
            ..Default::default()
        }
    }

    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    /// `userInfo` of SelfSubjectReview and TokenReview.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = self.uid.clone().into();
        }
        if !self.extra.is_empty() {
            v["extra"] = serde_json::json!(self.extra);
        }
        v
    }
}

/// Kubernetes' authorizer.Attributes: one request, as authorization sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub user: UserInfo,
    /// `get`, `list`, `watch`, `create`, ... for resources; the lowercase
    /// HTTP method for other paths.
    pub verb: String,
    pub resource_request: bool,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The URL path (what non-resource rules match).
    pub path: String,
    /// The request's raw `fieldSelector` (as sent): the Node authorizer
    /// lets a node list and watch only pods selected by its own name.
    pub field_selector: String,
}

/// What one authorizer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Neither allows nor denies: the next authorizer decides. The text
    /// (possibly empty) is the reason kubectl shows.
    NoOpinion(String),
}

/// Decides on one request. Errors are the store's (503/504), never a
/// denial.
pub trait Authorizer: Send + Sync {
    fn authorize<'a>(&'a self, a: &'a Attributes) -> BoxFuture<'a, ApiResult<Decision>>;
}

/// `system:masters` may do anything, without reading any policy
/// (kube-apiserver's privileged-group authorizer).
pub struct Masters;

impl Authorizer for Masters {
    fn authorize<'a>(&'a self, a: &'a Attributes) -> BoxFuture<'a, ApiResult<Decision>> {
        let d = if a.user.in_group(MASTERS) {
            Decision::Allow
        } else {
            Decision::NoOpinion(String::new())
        };
        Box::pin(async move { Ok(d) })
    }
}

/// Authorizers asked in order; the first Allow wins, else the last reason.
pub struct Chain(pub Vec<Arc<dyn Authorizer>>);

impl Authorizer for Chain {
    fn authorize<'a>(&'a self, a: &'a Attributes) -> BoxFuture<'a, ApiResult<Decision>> {
        Box::pin(async move {
            let mut reason = String::new();
            for z in &self.0 {
                match z.authorize(a).await? {
                    Decision::Allow => return Ok(Decision::Allow),
                    Decision::NoOpinion(r) if !r.is_empty() => reason = r,
                    Decision::NoOpinion(_) => {}
                }
            }
            Ok(Decision::NoOpinion(reason))
        })
    }
}

/// The authorizer chain of this API server: `system:masters`, then the
/// Node authorizer, then RBAC (kube-apiserver's `Node,RBAC`), `rbac`
/// sharing its cache with the server's other RBAC readers.
pub fn authorizer(rbac: &rbac::Rbac) -> Chain {
    Chain(vec![
        Arc::new(Masters),
        Arc::new(node::NodeAuthorizer::new(rbac.objects.clone())),
        Arc::new(rbac.clone()),
    ])
}
