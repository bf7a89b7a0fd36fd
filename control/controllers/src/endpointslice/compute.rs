//! Which pods back a Service, and how each is an endpoint of it: the one
//! computation the EndpointSlice and the Endpoints controllers share
//! (Kubernetes' `podToEndpoint`, `FindPort`, `ShouldPodBeInEndpoints`).
//!
//! Rules, as Kubernetes has them:
//! - only Services with a (non-empty) selector that are not ExternalName
//!   have computed endpoints; the others' are left to whoever manages them;
//! - a pod is in when it is selected, has an IPv4 pod IP and is not
//!   terminal (Succeeded/Failed); terminating pods stay in (the slices
//!   mark them, the Endpoints controller drops them);
//! - ports are resolved per pod: a numeric targetPort is taken as is, a
//!   named one is looked up in the pod's container ports of the same
//!   protocol; a port the pod lacks is left out for that pod, and a pod
//!   left with none of a Service's ports is left out entirely;
//! - `serving` = pod Ready; `terminating` = deletionTimestamp set;
//!   `ready` = publishNotReadyAddresses, or serving and not terminating;
//! - `hostname` = the pod's hostname when its subdomain names the Service.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cache::{key_of, Informer};
use crate::reconcile::{is_deleting, name, namespace, pod_is_ready, pod_phase};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming a slice's manager.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Set (empty) on the endpoints of a headless Service, as Kubernetes does.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// One resolved port of an endpoint: the Service port's name, the pod's
/// number for it, its protocol and appProtocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResolvedPort {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

/// One pod as an endpoint of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEndpoint {
    pub pod_name: String,
    pub pod_uid: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    pub node_name: Option<String>,
    pub hostname: Option<String>,
    /// The pod is Ready.
    pub serving: bool,
    /// The pod is being deleted.
    pub terminating: bool,
    /// The Service publishes not-ready addresses.
    pub publish_not_ready: bool,
    /// In the Service's port order; empty only for a Service without ports.
    pub ports: Vec<ResolvedPort>,
}

impl PodEndpoint {
    /// Kubernetes' `ready`: never true for a terminating pod unless the
    /// Service publishes not-ready addresses.
    pub fn ready(&self) -> bool {
        self.publish_not_ready || (self.serving && !self.terminating)
    }
}

/// The Service's selector when its endpoints are computed from pods:
/// `None` for ExternalName Services and Services without a selector (an
/// empty one included, which manages nothing here).
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether `selector` selects a pod with `labels`.
pub fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The Service is headless (`clusterIP: None`).
pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The labels of the objects listing `svc`'s endpoints: the Service's own
/// plus the headless mark (callers add their manager's labels).
pub fn endpoint_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.remove(HEADLESS_LABEL);
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// The endpoints of `svc` among `pods` (any namespace; only the
/// Service's is looked at), sorted by pod name. Empty when the Service
/// has no selector.
pub fn pod_endpoints(svc: &Service, pods: &[Arc<Pod>]) -> Vec<PodEndpoint> {
    let Some(sel) = selector(svc) else {
        return Vec::new();
    };
    let ns = namespace(&svc.metadata);
    let mut out: Vec<PodEndpoint> = pods
        .iter()
        .filter(|p| namespace(&p.metadata) == ns && selects(sel, p.metadata.labels.as_ref()))
        .filter_map(|p| endpoint_of(svc, p))
        .collect();
    out.sort_by(|a, b| a.pod_name.cmp(&b.pod_name));
    out
}

/// `pod` as an endpoint of `svc`, when it belongs in its endpoints.
fn endpoint_of(svc: &Service, pod: &Pod) -> Option<PodEndpoint> {
    if matches!(pod_phase(pod), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip: Ipv4Addr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    let spec = svc.spec.as_ref()?;
    let svc_ports = spec.ports.as_deref().unwrap_or_default();
    let ports: Vec<ResolvedPort> = svc_ports
        .iter()
        .filter_map(|sp| {
            Some(ResolvedPort {
                name: sp.name.clone().unwrap_or_default(),
                port: find_port(pod, sp)?,
                protocol: sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    if ports.is_empty() && !svc_ports.is_empty() {
        return None;
    }
    let pod_spec = pod.spec.as_ref();
    let hostname = pod_spec
        .filter(|s| s.subdomain.as_deref() == Some(name(&svc.metadata)))
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty());
    Some(PodEndpoint {
        pod_name: name(&pod.metadata).to_string(),
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        namespace: namespace(&pod.metadata).to_string(),
        ip,
        node_name: pod_spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        hostname,
        serving: pod_is_ready(pod),
        terminating: is_deleting(&pod.metadata),
        publish_not_ready: spec.publish_not_ready_addresses == Some(true),
        ports,
    })
}

/// The pod's number for a Service port (Kubernetes' `FindPort`): a number
/// as is, a name from the pod's container ports of the same protocol.
fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n).filter(|n| *n > 0).or(Some(sp.port)),
        Some(IntOrString::String(port_name)) => {
            let protocol = sp.protocol.as_deref().unwrap_or("TCP");
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(port_name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// Which pods each Service selected when last reconciled, so a pod whose
/// labels changed also wakes the Services that selected it before (the
/// cache only has its new labels).
#[derive(Default)]
pub struct Memberships {
    by_service: Mutex<HashMap<String, HashSet<String>>>,
}

impl Memberships {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.by_service
            .lock()
            .expect("the memberships lock is never poisoned")
    }

    /// The Service under `svc_key` now selects `endpoints`.
    pub fn record(&self, svc_key: &str, endpoints: &[PodEndpoint]) {
        let pods = endpoints.iter().map(|e| e.pod_name.clone()).collect();
        self.lock().insert(svc_key.to_string(), pods);
    }

    /// The Service under `svc_key` is gone or selects nothing.
    pub fn forget(&self, svc_key: &str) {
        self.lock().remove(svc_key);
    }

    /// The keys of the Services to reconcile when `pod` changed: those
    /// selecting it now, and those that did when last reconciled.
    pub fn services_for(&self, services: &Informer<Service>, pod: &Pod) -> Vec<String> {
        let ns = namespace(&pod.metadata);
        let pod_name = name(&pod.metadata);
        let mut keys: Vec<String> = services
            .filter_in(ns, |svc| {
                selector(svc).is_some_and(|s| selects(s, pod.metadata.labels.as_ref()))
            })
            .iter()
            .map(|svc| key_of(svc.as_ref()))
            .collect();
        let prefix = format!("{ns}/");
        for (svc_key, pods) in self.lock().iter() {
            if svc_key.starts_with(&prefix) && pods.contains(pod_name) && !keys.contains(svc_key) {
                keys.push(svc_key.clone());
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn service(ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("d".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: labels(&[("app", "web")]),
                ports: Some(ports),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn port(name: &str, number: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port: number,
            target_port: Some(target),
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }

    fn pod(pod_name: &str, ip: Option<&str>, ready: bool, http_port: Option<i32>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(pod_name.into()),
                namespace: Some("d".into()),
                uid: Some(format!("uid-{pod_name}")),
                labels: labels(&[("app", "web")]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: http_port.map(|p| {
                        vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: p,
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_string),
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn named_target_ports_are_resolved_per_pod_and_pods_lacking_them_left_out() {
        let svc = service(vec![port("web", 80, IntOrString::String("http".into()))]);
        let pods = vec![
            pod("b", Some("127.1.0.2"), true, Some(8081)),
            pod("a", Some("127.1.0.1"), true, Some(8080)),
            pod("no-port", Some("127.1.0.3"), true, None),
            pod("no-ip", None, true, Some(8080)),
        ];
        let eps = pod_endpoints(&svc, &pods);
        let got: Vec<(&str, i32)> = eps
            .iter()
            .map(|e| (e.pod_name.as_str(), e.ports[0].port))
            .collect();
        assert_eq!(got, [("a", 8080), ("b", 8081)]);
        assert_eq!(eps[0].node_name.as_deref(), Some("n1"));
    }

    #[test]
    fn readiness_terminating_and_publish_not_ready() {
        let svc = service(vec![port("web", 80, IntOrString::Int(8080))]);
        let mut dying = (*pod("dying", Some("127.1.0.9"), true, None)).clone();
        dying.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        let pods = vec![
            pod("ready", Some("127.1.0.1"), true, None),
            pod("unready", Some("127.1.0.2"), false, None),
            Arc::new(dying),
        ];
        let eps = pod_endpoints(&svc, &pods);
        let conds: Vec<(&str, bool, bool, bool)> = eps
            .iter()
            .map(|e| (e.pod_name.as_str(), e.ready(), e.serving, e.terminating))
            .collect();
        assert_eq!(
            conds,
            [
                ("dying", false, true, true),
                ("ready", true, true, false),
                ("unready", false, false, false)
            ]
        );
        let mut publish = svc.clone();
        if let Some(s) = publish.spec.as_mut() {
            s.publish_not_ready_addresses = Some(true);
        }
        assert!(pod_endpoints(&publish, &pods)
            .iter()
            .all(PodEndpoint::ready));
    }

    #[test]
    fn services_without_selectors_and_terminal_pods_have_no_endpoints() {
        let mut svc = service(vec![port("web", 80, IntOrString::Int(8080))]);
        let mut done = (*pod("done", Some("127.1.0.1"), false, None)).clone();
        if let Some(s) = done.status.as_mut() {
            s.phase = Some("Succeeded".into());
        }
        assert!(pod_endpoints(&svc, &[Arc::new(done)]).is_empty());
        if let Some(s) = svc.spec.as_mut() {
            s.selector = None;
        }
        assert!(pod_endpoints(&svc, &[pod("a", Some("127.1.0.1"), true, None)]).is_empty());
    }

    #[test]
    fn hostnames_only_for_pods_whose_subdomain_is_the_service() {
        let svc = service(vec![]);
        let mut named = (*pod("a", Some("127.1.0.1"), true, None)).clone();
        if let Some(s) = named.spec.as_mut() {
            s.hostname = Some("web-0".into());
            s.subdomain = Some("web".into());
        }
        let mut other = (*pod("b", Some("127.1.0.2"), true, None)).clone();
        if let Some(s) = other.spec.as_mut() {
            s.hostname = Some("x".into());
            s.subdomain = Some("elsewhere".into());
        }
        let eps = pod_endpoints(&svc, &[Arc::new(named), Arc::new(other)]);
        assert_eq!(eps[0].hostname.as_deref(), Some("web-0"));
        assert_eq!(eps[1].hostname, None);
        assert!(eps.iter().all(|e| e.ports.is_empty()));
    }
}
