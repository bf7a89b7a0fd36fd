//! RBAC (rbac.authorization.k8s.io/v1): the authorizer over the stored
//! Roles, ClusterRoles and their bindings.
//!
//! A request is allowed when a ClusterRoleBinding, or a RoleBinding in the
//! request's namespace, binds the user (by name, by group, or as the
//! service account `system:serviceaccount:<ns>:<name>`) to a role with a
//! rule allowing it. An aggregated ClusterRole holds the rules of every
//! ClusterRole its selectors match (see [`resolve`]).
//!
//! Reads are of this replica's applied state (as kube-apiserver's RBAC
//! reads its informer cache): a binding written through this replica is
//! seen by its next request; another replica may take a moment. The
//! decoded objects are cached per prefix and re-read only when the prefix
//! changed ([`cache`]), which changes none of this.

pub mod aggregation;
pub mod cache;
pub mod resolve;
pub mod rules;

use futures::future::BoxFuture;

use super::{Attributes, Authorizer, Decision, UserInfo};
use crate::status::ApiResult;
use crate::storage::Objects;
pub use rules::Rule;

/// The RBAC authorizer; clones share one cache.
#[derive(Clone)]
pub struct Rbac {
    pub objects: Objects,
    cache: cache::Cache,
}

impl Rbac {
    pub fn new(objects: Objects) -> Rbac {
        Rbac {
            objects,
            cache: cache::Cache::default(),
        }
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide
    /// ones only when `namespace` is empty).
    pub async fn rules_for(&self, user: &UserInfo, namespace: &str) -> ApiResult<Vec<Rule>> {
        resolve::rules_for(&self.objects, &self.cache, user, namespace).await
    }
}

impl Authorizer for Rbac {
    fn authorize<'a>(&'a self, a: &'a Attributes) -> BoxFuture<'a, ApiResult<Decision>> {
        Box::pin(async move {
            let rules = self.rules_for(&a.user, &a.namespace).await?;
            Ok(if rules.iter().any(|r| r.allows(a)) {
                Decision::Allow
            } else {
                Decision::NoOpinion(String::new())
            })
        })
    }
}
