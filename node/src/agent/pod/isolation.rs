//! A container's requests, limits and securityContext in the runtime's
//! terms ([`Resources`], [`Security`]). Runtimes without cgroups or
//! namespaces ignore them; the isolating runtime enforces them.

use k8s_openapi::api::core::v1::{Container, Pod};
use keel_apimachinery::quantity::quantity_nanos;

use k8s_openapi::api::core::v1::SeccompProfile as K8sSeccompProfile;

use crate::runtime::{Resources, SeccompProfile, Security};

/// CPU in millicores (rounded up) and memory in bytes, from
/// `resources.requests` / `resources.limits`. A limit without a request
/// also sets the request, as the API server defaults it. Malformed
/// quantities are left unset (the API server validates them).
pub fn resources(container: &Container) -> Resources {
    let r = container.resources.as_ref();
    let get = |limits: bool, name: &str| {
        let map = r.and_then(|r| {
            if limits {
                r.limits.as_ref()
            } else {
                r.requests.as_ref()
            }
        });
        map.and_then(|m| m.get(name))
            .and_then(|q| quantity_nanos(&q.0))
            .filter(|n| *n > 0)
    };
    let millis = |n: i128| u64::try_from((n + 999_999) / 1_000_000).ok();
    let bytes = |n: i128| u64::try_from((n + 999_999_999) / 1_000_000_000).ok();
    let cpu_limit_millis = get(true, "cpu").and_then(millis);
    let memory_limit_bytes = get(true, "memory").and_then(bytes);
    Resources {
        cpu_request_millis: get(false, "cpu").and_then(millis).or(cpu_limit_millis),
        cpu_limit_millis,
        memory_request_bytes: get(false, "memory").and_then(bytes).or(memory_limit_bytes),
        memory_limit_bytes,
    }
}

/// The container's securityContext over the pod's (container wins).
pub fn security(pod: &Pod, container: &Container) -> Security {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    Security {
        run_as_user: sc
            .and_then(|s| s.run_as_user)
            .or(pod_sc.and_then(|s| s.run_as_user))
            .and_then(|u| u32::try_from(u).ok()),
        run_as_group: sc
            .and_then(|s| s.run_as_group)
            .or(pod_sc.and_then(|s| s.run_as_group))
            .and_then(|g| u32::try_from(g).ok()),
        read_only_root_filesystem: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
        allow_privilege_escalation: sc.and_then(|s| s.allow_privilege_escalation),
        capabilities_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        capabilities_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        seccomp: sc
            .and_then(|s| s.seccomp_profile.as_ref())
            .or(pod_sc.and_then(|s| s.seccomp_profile.as_ref()))
            .map(seccomp)
            .unwrap_or_default(),
        share_process_namespace: pod
            .spec
            .as_ref()
            .and_then(|s| s.share_process_namespace)
            .unwrap_or(false),
    }
}

/// The API's profile in runtime terms. The API server validates `type`;
/// an unknown one here stays `Unconfined`, as the kubelet treats it.
fn seccomp(p: &K8sSeccompProfile) -> SeccompProfile {
    match p.type_.as_str() {
        "RuntimeDefault" => SeccompProfile::RuntimeDefault,
        "Localhost" => SeccompProfile::Localhost(p.localhost_profile.clone().unwrap_or_default()),
        _ => SeccompProfile::Unconfined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(json: serde_json::Value) -> Container {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn quantities_become_millis_and_bytes() {
        let c = container(serde_json::json!({
            "name": "c",
            "resources": {
                "requests": {"cpu": "250m"},
                "limits": {"cpu": "1.5", "memory": "32Mi"}
            }
        }));
        let r = resources(&c);
        assert_eq!(r.cpu_request_millis, Some(250));
        assert_eq!(r.cpu_limit_millis, Some(1500));
        assert_eq!(r.memory_limit_bytes, Some(32 << 20));
        assert_eq!(
            r.memory_request_bytes,
            Some(32 << 20),
            "defaults to the limit"
        );
        assert_eq!(
            resources(&container(serde_json::json!({"name": "c"}))),
            Resources::default()
        );
    }

    #[test]
    fn container_security_context_wins_over_the_pods() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "securityContext": {"runAsUser": 1000, "runAsGroup": 2000},
                "containers": [{"name": "c"}]
            }
        }))
        .unwrap();
        let c = container(serde_json::json!({
            "name": "c",
            "securityContext": {
                "runAsUser": 1234,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
            }
        }));
        let s = security(&pod, &c);
        assert_eq!((s.run_as_user, s.run_as_group), (Some(1234), Some(2000)));
        assert!(s.read_only_root_filesystem && !s.privileged);
        assert_eq!(s.capabilities_drop, vec!["ALL"]);
        assert_eq!(s.capabilities_add, vec!["NET_BIND_SERVICE"]);
        assert_eq!(s.seccomp, SeccompProfile::Unconfined);
        assert!(!s.share_process_namespace);
    }

    #[test]
    fn seccomp_profile_and_shared_pid_namespace_come_from_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "shareProcessNamespace": true,
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "c"}, {"name": "d"}]
            }
        }))
        .unwrap();
        let plain = security(&pod, &container(serde_json::json!({"name": "c"})));
        assert_eq!(plain.seccomp, SeccompProfile::RuntimeDefault);
        assert!(plain.share_process_namespace);
        let own = security(
            &pod,
            &container(serde_json::json!({
                "name": "d",
                "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}
            })),
        );
        assert_eq!(own.seccomp, SeccompProfile::Localhost("p.json".into()));
        let unconfined = security(
            &pod,
            &container(serde_json::json!({
                "name": "d",
                "securityContext": {"seccompProfile": {"type": "Unconfined"}}
            })),
        );
        assert_eq!(unconfined.seccomp, SeccompProfile::Unconfined);
    }
}
