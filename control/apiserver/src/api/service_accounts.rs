//! Kubernetes' ServiceAccount admission for new pods: a pod runs as a
//! service account of its namespace, `default` unless it names one, and is
//! refused (403 Forbidden, `error looking up service account ns/name`)
//! while that account does not exist. That refusal is what makes clients
//! and controllers wait for the serviceaccounts controller, which creates
//! `default` in every namespace, before their pods are accepted.
//!
//! Like Kubernetes, a missing `default` account is looked up again for a
//! moment (10 tries, 100 to 200 ms apart) before the pod is refused, since
//! it is about to be created for a namespace made a moment ago.
//!
//! Unless `automountServiceAccountToken` is false (the pod's setting wins
//! over the account's), the pod also gets Kubernetes' projected
//! `kube-api-access-<5 random>` volume (a bound token, the cluster CA from
//! the `kube-root-ca.crt` ConfigMap, the namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container and
//! init container that does not already mount something there; see
//! [`super::sa_volume`].
//!
//! Servers without a serviceaccounts controller (in-process test servers,
//! as Kubernetes' integration tests with
//! `--disable-admission-plugins=ServiceAccount`) switch the rule off with
//! [`super::ApiConfig::service_account_admission`]; the name is then not
//! defaulted either.

use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};

use super::{Api, Target};
use crate::resources;
use crate::status::{ApiError, ApiResult};

/// The account a pod that names none runs as.
pub const DEFAULT: &str = "default";

/// Lookups of a missing `default` account before the pod is refused.
const DEFAULT_ATTEMPTS: usize = 10;

/// Defaults the pod's service account, requires that it exist, and mounts
/// its token unless automounting is off.
pub async fn admit_pod(api: &Api, t: &Target, pod: &mut Value) -> ApiResult<()> {
    if !api.cfg.service_account_admission || t.info.resource != "pods" || !t.info.group.is_empty() {
        return Ok(());
    }
    let Some(ns) = t.namespace.as_deref() else {
        return Ok(());
    };
    let account = default_name(pod);
    let attempts = if account == DEFAULT {
        DEFAULT_ATTEMPTS
    } else {
        1
    };
    for attempt in 0..attempts {
        if attempt > 0 {
            let wait_ms = rand::thread_rng().gen_range(100..200);
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
        if let Some(sa) = lookup(api, ns, &account).await? {
            if automount(pod, &sa) {
                super::sa_volume::mount_token(pod);
            }
            return Ok(());
        }
    }
    Err(ApiError::forbidden(format!(
        "pods \"{}\" is forbidden: error looking up service account {ns}/{account}: serviceaccount \"{account}\" not found",
        crate::meta::name(pod)
    )))
}

/// `spec.serviceAccountName`, else the deprecated `spec.serviceAccount`,
/// else `default`; written back to both fields, as Kubernetes returns them.
fn default_name(pod: &mut Value) -> String {
    let field = |pod: &Value, f: &str| {
        pod["spec"][f]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let name = field(pod, "serviceAccountName")
        .or_else(|| field(pod, "serviceAccount"))
        .unwrap_or_else(|| DEFAULT.to_string());
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("serviceAccountName".into(), json!(name));
        spec.insert("serviceAccount".into(), json!(name));
    }
    name
}

/// Whether the pod gets a token volume: the pod's
/// `automountServiceAccountToken` if set, else the account's, else true.
fn automount(pod: &Value, account: &Value) -> bool {
    pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| account["automountServiceAccountToken"].as_bool())
        .unwrap_or(true)
}

/// The account, if it exists: the local copy first, a linearizable read
/// when it misses (an account created a moment ago through another replica).
async fn lookup(api: &Api, ns: &str, name: &str) -> ApiResult<Option<Value>> {
    let info = resources::find("", "v1", "serviceaccounts").expect("serviceaccounts are served");
    let key = info.key(Some(ns), name);
    let found = match api.objects.get_local(&key).await? {
        Some(s) => Some(s),
        None => api.objects.get(&key).await?,
    };
    Ok(found.map(|s| s.obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_defaults_to_default_and_fills_both_fields() {
        let mut pod = json!({"spec": {"containers": []}});
        assert_eq!(default_name(&mut pod), "default");
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        assert_eq!(pod["spec"]["serviceAccount"], "default");
    }

    #[test]
    fn the_pod_setting_wins_over_the_account() {
        let pod = |v: Value| json!({"spec": {"automountServiceAccountToken": v}});
        let sa = |v: Value| json!({"automountServiceAccountToken": v});
        assert!(automount(&pod(Value::Null), &sa(Value::Null)));
        assert!(!automount(&pod(Value::Null), &sa(json!(false))));
        assert!(automount(&pod(json!(true)), &sa(json!(false))));
        assert!(!automount(&pod(json!(false)), &sa(json!(true))));
    }

    #[test]
    fn a_named_account_is_kept_and_the_deprecated_field_is_honoured() {
        let mut named = json!({"spec": {"serviceAccountName": "builder"}});
        assert_eq!(default_name(&mut named), "builder");
        assert_eq!(named["spec"]["serviceAccount"], "builder");
        let mut old = json!({"spec": {"serviceAccount": "legacy", "serviceAccountName": ""}});
        assert_eq!(default_name(&mut old), "legacy");
        assert_eq!(old["spec"]["serviceAccountName"], "legacy");
    }
}
