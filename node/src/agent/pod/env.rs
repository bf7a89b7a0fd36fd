//! A container's environment.
//!
//! Order (later wins): `KEEL_RESOLV_CONF` (the pod's resolv.conf, added by
//! [`super::container`]; see [`crate::dns::resolv_conf`]), the Service
//! variables (see [`service_env`]), `POD_IP` (the exec runtime's pods bind to it, since
//! they share the host network stack), `KEEL_VOLUME_<NAME>` for each volume
//! mount (see [`super::volumes`]), then `envFrom` sources, then `env`.
//! `$(VAR)` in values expands to variables defined earlier (`$$` escapes),
//! as in Kubernetes. `POD_NAME`/`POD_NAMESPACE` are added by the runtime for
//! built-in images.
//!
//! Supported sources: literal values, `fieldRef` (metadata.name, namespace,
//! uid, labels['k'], annotations['k'], spec.nodeName,
//! spec.serviceAccountName, status.podIP(s), status.hostIP(s)),
//! `resourceFieldRef` (the raw quantity of the named request/limit, empty
//! when unset), `configMapKeyRef`, `secretKeyRef`, `envFrom` configMapRef and
//! secretRef (with prefix). A missing required object or key is an error
//! the worker reports as `CreateContainerConfigError`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, Pod, Service};

use super::objects::{Data, FetchError, Objects};

/// The addresses the downward API exposes.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub pod_ip: String,
    pub host_ip: String,
}

/// Builds the environment of `container`; `Err` is the message for
/// `CreateContainerConfigError`.
pub async fn container_env(
    pod: &Pod,
    container: &Container,
    addrs: &Addresses,
    mounts: &BTreeMap<String, PathBuf>,
    objs: &mut Objects<'_>,
    services: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = services.to_vec();
    env.push(("POD_IP".into(), addrs.pod_ip.clone()));
    for (name, dir) in mounts {
        env.push((volume_var(name), dir.display().to_string()));
    }
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let (data, optional) = if let Some(r) = &source.config_map_ref {
            (objs.config_map(&r.name).await, r.optional.unwrap_or(false))
        } else if let Some(r) = &source.secret_ref {
            (objs.secret(&r.name).await, r.optional.unwrap_or(false))
        } else {
            continue;
        };
        match data {
            Ok(d) => env.extend(d.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v))),
            Err(FetchError::Missing(_)) if optional => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(pod, container, var, addrs, objs, &env).await? {
            env.push((var.name.clone(), value));
        }
    }
    Ok(env)
}

/// The namespace and name of the Service whose variables every pod gets.
const MASTER_SERVICE: (&str, &str) = ("default", "kubernetes");

/// The kubelet's Service environment variables for `pod`, from the
/// Services that exist now: those of the pod's namespace (unless
/// `enableServiceLinks: false`) and `default/kubernetes` (always; a
/// `kubernetes` Service in the pod's own namespace takes its place when
/// links are on). Services without a cluster IP (headless, ExternalName)
/// give none. Per Service `<SVC>` (name upper-cased, `-` as `_`):
/// `<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT` (first port),
/// `<SVC>_SERVICE_PORT_<PORTNAME>` per named port, and the Docker-link
/// variables `<SVC>_PORT` (first port's URL) and per port
/// `<SVC>_PORT_<port>_<PROTO>` with `_PROTO`, `_PORT` and `_ADDR`.
/// Sorted by Service name, so the result does not depend on cache order.
pub fn service_env<'a>(
    pod: &Pod,
    services: impl IntoIterator<Item = &'a Service>,
) -> Vec<(String, String)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    for svc in services {
        let (Some(name), svc_ns) = (
            svc.metadata.name.as_deref(),
            svc.metadata.namespace.as_deref().unwrap_or("default"),
        ) else {
            continue;
        };
        if (svc_ns, name) == MASTER_SERVICE {
            chosen.entry(name).or_insert(svc);
        } else if svc_ns == ns && links {
            chosen.insert(name, svc);
        }
    }
    let mut env = Vec::new();
    for (name, svc) in chosen {
        service_vars(name, svc, &mut env);
    }
    env
}

fn service_vars(name: &str, svc: &Service, env: &mut Vec<(String, String)>) {
    let Some(spec) = &svc.spec else {
        return;
    };
    let ip = spec.cluster_ip.as_deref().unwrap_or("");
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ip.is_empty() || ip == "None" || ports.is_empty() {
        return;
    }
    let prefix = env_name(name);
    env.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
    env.push((format!("{prefix}_SERVICE_PORT"), ports[0].port.to_string()));
    for p in ports {
        if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
            let var = format!("{prefix}_SERVICE_PORT_{}", env_name(port_name));
            env.push((var, p.port.to_string()));
        }
    }
    let host = match ip.contains(':') {
        true => format!("[{ip}]"),
        false => ip.to_string(),
    };
    for (i, p) in ports.iter().enumerate() {
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        let lower = proto.to_ascii_lowercase();
        let url = format!("{lower}://{host}:{}", p.port);
        if i == 0 {
            env.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_ascii_uppercase());
        env.push((format!("{pp}_PROTO"), lower));
        env.push((format!("{pp}_PORT"), p.port.to_string()));
        env.push((format!("{pp}_ADDR"), ip.to_string()));
        env.push((pp, url));
    }
}

/// The kubelet's variable name of a Service or port name.
fn env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// `KEEL_VOLUME_<NAME>`: the volume name upper-cased, non-alphanumerics as `_`.
pub fn volume_var(volume: &str) -> String {
    let name: String = volume
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c.to_ascii_uppercase(),
            false => '_',
        })
        .collect();
    format!("KEEL_VOLUME_{name}")
}

/// One `env` entry's value; `None` when an optional source is missing.
async fn env_value(
    pod: &Pod,
    container: &Container,
    var: &EnvVar,
    addrs: &Addresses,
    objs: &mut Objects<'_>,
    defined: &[(String, String)],
) -> Result<Option<String>, String> {
    let Some(from) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), defined)));
    };
    value_from(pod, container, from, addrs, objs)
        .await
        .map_err(|e| format!("env {:?}: {e}", var.name))
}

async fn value_from(
    pod: &Pod,
    container: &Container,
    from: &EnvVarSource,
    addrs: &Addresses,
    objs: &mut Objects<'_>,
) -> Result<Option<String>, String> {
    if let Some(f) = &from.field_ref {
        return field_value(pod, &f.field_path, addrs).map(Some);
    }
    if let Some(r) = &from.resource_field_ref {
        return Ok(Some(resource_value(container, &r.resource)));
    }
    let (data, key, optional) = if let Some(r) = &from.config_map_key_ref {
        (
            objs.config_map(&r.name).await,
            &r.key,
            r.optional.unwrap_or(false),
        )
    } else if let Some(r) = &from.secret_key_ref {
        (
            objs.secret(&r.name).await,
            &r.key,
            r.optional.unwrap_or(false),
        )
    } else {
        return Err("unsupported valueFrom".into());
    };
    lookup(data, key, optional)
}

fn lookup(
    data: Result<Data, FetchError>,
    key: &str,
    optional: bool,
) -> Result<Option<String>, String> {
    match data {
        Ok(d) => match d.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(format!("couldn't find key {key}")),
        },
        Err(FetchError::Missing(_)) if optional => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The downward API's `fieldRef` paths.
pub fn field_value(pod: &Pod, path: &str, addrs: &Addresses) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str| -> Option<String> {
        let rest = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(rest.to_string())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(addrs.pod_ip.clone()),
        "status.hostIP" | "status.hostIPs" => Some(addrs.host_ip.clone()),
        _ => {
            if let Some(k) = map_key("metadata.labels") {
                meta.labels.as_ref().and_then(|l| l.get(&k).cloned())
            } else if let Some(k) = map_key("metadata.annotations") {
                meta.annotations.as_ref().and_then(|a| a.get(&k).cloned())
            } else {
                return Err(format!("unsupported fieldPath {path:?}"));
            }
        }
    };
    Ok(value.unwrap_or_default())
}

/// A container's request or limit (`limits.memory`, ...) as written, empty
/// when unset.
pub fn resource_value(container: &Container, resource: &str) -> String {
    let res = container.resources.as_ref();
    let (map, name) = match resource.split_once('.') {
        Some(("limits", n)) => (res.and_then(|r| r.limits.as_ref()), n),
        Some(("requests", n)) => (res.and_then(|r| r.requests.as_ref()), n),
        _ => return String::new(),
    };
    map.and_then(|m| m.get(name))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, unknown
/// references stay as written, `$$` is a literal `$`.
pub fn expand(s: &str, defined: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match defined.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_like_kubernetes() {
        let d = vars(&[("A", "1"), ("B", "2")]);
        assert_eq!(expand("x$(A)y$(B)", &d), "x1y2");
        assert_eq!(expand("$(C) $$(A) $", &d), "$(C) $(A) $");
        assert_eq!(expand("$(A", &d), "$(A");
    }

    fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns}, "spec": spec
        }))
        .unwrap()
    }

    fn pod_in(ns: &str, links: Option<bool>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": ns},
            "spec": {"containers": [], "enableServiceLinks": links}
        }))
        .unwrap()
    }

    #[test]
    fn service_variables_match_the_kubelet() {
        let redis = service(
            "ns",
            "redis-primary",
            serde_json::json!({"clusterIP": "127.43.0.9", "ports": [
                {"port": 6379},
                {"name": "metrics-port", "port": 9121, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]}),
        );
        let api = service(
            "default",
            "kubernetes",
            serde_json::json!({"clusterIP": "127.43.0.1", "ports": [{"name": "https", "port": 443}]}),
        );
        let headless = service(
            "ns",
            "db",
            serde_json::json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
        );
        let elsewhere = service(
            "other",
            "web",
            serde_json::json!({"clusterIP": "127.43.0.3", "ports": [{"port": 80}]}),
        );
        let all = [&redis, &api, &headless, &elsewhere];
        let env: BTreeMap<String, String> =
            service_env(&pod_in("ns", None), all).into_iter().collect();
        let expected: BTreeMap<String, String> = [
            ("KUBERNETES_SERVICE_HOST", "127.43.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://127.43.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://127.43.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "127.43.0.1"),
            ("REDIS_PRIMARY_SERVICE_HOST", "127.43.0.9"),
            ("REDIS_PRIMARY_SERVICE_PORT", "6379"),
            ("REDIS_PRIMARY_SERVICE_PORT_METRICS_PORT", "9121"),
            ("REDIS_PRIMARY_SERVICE_PORT_DNS", "53"),
            ("REDIS_PRIMARY_PORT", "tcp://127.43.0.9:6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP", "tcp://127.43.0.9:6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP_PROTO", "tcp"),
            ("REDIS_PRIMARY_PORT_6379_TCP_PORT", "6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP_ADDR", "127.43.0.9"),
            ("REDIS_PRIMARY_PORT_9121_TCP", "tcp://127.43.0.9:9121"),
            ("REDIS_PRIMARY_PORT_9121_TCP_PROTO", "tcp"),
            ("REDIS_PRIMARY_PORT_9121_TCP_PORT", "9121"),
            ("REDIS_PRIMARY_PORT_9121_TCP_ADDR", "127.43.0.9"),
            ("REDIS_PRIMARY_PORT_53_UDP", "udp://127.43.0.9:53"),
            ("REDIS_PRIMARY_PORT_53_UDP_PROTO", "udp"),
            ("REDIS_PRIMARY_PORT_53_UDP_PORT", "53"),
            ("REDIS_PRIMARY_PORT_53_UDP_ADDR", "127.43.0.9"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, expected);

        // enableServiceLinks: false keeps only the master Service.
        let env = service_env(&pod_in("ns", Some(false)), all);
        assert!(
            env.iter().all(|(k, _)| k.starts_with("KUBERNETES_")),
            "{env:?}"
        );
        assert_eq!(env.len(), 8);
        // A `kubernetes` Service in the pod's namespace wins over default's.
        let own = service(
            "ns",
            "kubernetes",
            serde_json::json!({"clusterIP": "127.43.0.77", "ports": [{"port": 1}]}),
        );
        let env: BTreeMap<_, _> = service_env(&pod_in("ns", None), [&api, &own])
            .into_iter()
            .collect();
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "127.43.0.77");
    }

    #[test]
    fn downward_api_fields() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": []}
        }))
        .unwrap();
        let a = Addresses {
            pod_ip: "127.16.0.2".into(),
            host_ip: "127.0.0.1".into(),
        };
        assert_eq!(
            field_value(&pod, "metadata.labels['app']", &a).unwrap(),
            "web"
        );
        assert_eq!(field_value(&pod, "spec.nodeName", &a).unwrap(), "n1");
        assert_eq!(field_value(&pod, "status.podIP", &a).unwrap(), "127.16.0.2");
        assert!(field_value(&pod, "spec.bogus", &a).is_err());
        assert_eq!(volume_var("my-vol"), "KEEL_VOLUME_MY_VOL");
    }
}
