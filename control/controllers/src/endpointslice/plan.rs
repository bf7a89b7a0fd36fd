//! What to write so a Service's EndpointSlices list its endpoints: a pure
//! function of the Service, its pods' endpoints and the slices it has.
//!
//! Slices are per port set (a named targetPort may resolve differently
//! per pod, and a slice has one port list). Within a port set, an
//! endpoint stays in the slice it is in; new endpoints fill slices with
//! room first, then new slices of at most [`MAX_ENDPOINTS_PER_SLICE`].
//! That keeps churn low: one pod changing rewrites one slice. A Service
//! with no endpoints keeps one empty placeholder slice, as Kubernetes'.
//!
//! Guarantee: a slice is only in the plan when its content differs from
//! what is stored, so reconciling an unchanged Service writes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::compute::{
    endpoint_labels, PodEndpoint, ResolvedPort, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL,
};
use crate::reconcile::{name, namespace, owner_ref};

/// Kubernetes' default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// One write.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this slice (its name is not chosen yet: `generateName`).
    Create(EndpointSlice),
    /// Replace a stored slice (carries its name and resourceVersion).
    Update(EndpointSlice),
    /// Delete the stored slice.
    Delete(Arc<EndpointSlice>),
}

/// The writes that make `existing` (the slices this controller manages
/// for `svc`) list `endpoints`.
pub fn plan(
    svc: &Service,
    endpoints: &[PodEndpoint],
    existing: &[Arc<EndpointSlice>],
) -> Vec<Action> {
    let mut existing: Vec<Arc<EndpointSlice>> = existing.to_vec();
    existing.sort_by(|a, b| name(&a.metadata).cmp(name(&b.metadata)));
    if endpoints.is_empty() {
        return placeholder(svc, &existing);
    }
    let mut groups: BTreeMap<Vec<ResolvedPort>, HashMap<&str, &PodEndpoint>> = BTreeMap::new();
    for e in endpoints {
        groups
            .entry(e.ports.clone())
            .or_default()
            .insert(e.pod_name.as_str(), e);
    }
    let mut actions = Vec::new();
    let mut used = HashSet::new();
    for (ports, wanted) in &groups {
        let mine: Vec<&Arc<EndpointSlice>> = existing
            .iter()
            .filter(|s| &slice_ports(s) == ports)
            .collect();
        used.extend(mine.iter().map(|s| name(&s.metadata).to_string()));
        actions.extend(plan_group(svc, ports, wanted, &mine));
    }
    for s in existing {
        if !used.contains(name(&s.metadata)) {
            actions.push(Action::Delete(s));
        }
    }
    actions
}

/// One port set: keep endpoints where they are, fill, then add slices.
fn plan_group(
    svc: &Service,
    ports: &[ResolvedPort],
    wanted: &HashMap<&str, &PodEndpoint>,
    mine: &[&Arc<EndpointSlice>],
) -> Vec<Action> {
    let mut placed = HashSet::new();
    let mut contents: Vec<Vec<&PodEndpoint>> = mine
        .iter()
        .map(|s| {
            s.endpoints
                .iter()
                .filter_map(|e| {
                    let pod = e.target_ref.as_ref()?.name.as_deref()?;
                    let want = *wanted.get(pod)?;
                    placed.insert(pod).then_some(want)
                })
                .take(MAX_ENDPOINTS_PER_SLICE)
                .collect()
        })
        .collect();
    let mut rest: Vec<&PodEndpoint> = wanted
        .values()
        .filter(|e| !placed.contains(e.pod_name.as_str()))
        .copied()
        .collect();
    rest.sort_by(|a, b| a.pod_name.cmp(&b.pod_name));
    let mut rest = rest.into_iter();
    for c in contents.iter_mut() {
        let room = MAX_ENDPOINTS_PER_SLICE - c.len();
        c.extend(rest.by_ref().take(room));
    }
    let mut actions = Vec::new();
    for (stored, eps) in mine.iter().zip(&contents) {
        if eps.is_empty() {
            actions.push(Action::Delete(Arc::clone(stored)));
            continue;
        }
        let want = desired(svc, Some(ports), eps, Some(stored));
        if differs(&want, stored) {
            actions.push(Action::Update(want));
        }
    }
    let rest: Vec<&PodEndpoint> = rest.collect();
    for chunk in rest.chunks(MAX_ENDPOINTS_PER_SLICE) {
        actions.push(Action::Create(desired(svc, Some(ports), chunk, None)));
    }
    actions
}

/// No endpoints: exactly one slice, empty and without ports.
fn placeholder(svc: &Service, existing: &[Arc<EndpointSlice>]) -> Vec<Action> {
    let Some((first, others)) = existing.split_first() else {
        return vec![Action::Create(desired(svc, None, &[], None))];
    };
    let mut actions: Vec<Action> = others.iter().cloned().map(Action::Delete).collect();
    let want = desired(svc, None, &[], Some(first));
    if differs(&want, first) {
        actions.push(Action::Update(want));
    }
    actions
}

/// The slice listing `eps` with `ports`, in place of `stored` if given.
fn desired(
    svc: &Service,
    ports: Option<&[ResolvedPort]>,
    eps: &[&PodEndpoint],
    stored: Option<&EndpointSlice>,
) -> EndpointSlice {
    let svc_name = name(&svc.metadata);
    let mut labels = endpoint_labels(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), svc_name.to_string());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let metadata = match stored {
        Some(s) => ObjectMeta {
            labels: Some(labels),
            owner_references: Some(vec![owner_ref(svc)]),
            ..s.metadata.clone()
        },
        None => ObjectMeta {
            generate_name: Some(format!("{svc_name}-")),
            namespace: Some(namespace(&svc.metadata).to_string()),
            labels: Some(labels),
            owner_references: Some(vec![owner_ref(svc)]),
            ..ObjectMeta::default()
        },
    };
    EndpointSlice {
        metadata,
        address_type: "IPv4".into(),
        endpoints: eps.iter().map(|e| endpoint(e)).collect(),
        ports: ports.map(|ps| ps.iter().map(endpoint_port).collect()),
    }
}

fn endpoint(e: &PodEndpoint) -> Endpoint {
    Endpoint {
        addresses: vec![e.ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(e.ready()),
            serving: Some(e.serving),
            terminating: Some(e.terminating),
        }),
        hostname: e.hostname.clone(),
        node_name: e.node_name.clone(),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(e.namespace.clone()),
            name: Some(e.pod_name.clone()),
            uid: Some(e.pod_uid.clone()).filter(|u| !u.is_empty()),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    }
}

fn endpoint_port(p: &ResolvedPort) -> EndpointPort {
    EndpointPort {
        // Stored with the name even when empty (the API defaults it so).
        name: Some(p.name.clone()),
        port: Some(p.port),
        protocol: Some(p.protocol.clone()),
        app_protocol: p.app_protocol.clone(),
    }
}

/// A stored slice's port set, as [`ResolvedPort`]s (for grouping).
fn slice_ports(s: &EndpointSlice) -> Vec<ResolvedPort> {
    s.ports
        .iter()
        .flatten()
        .map(|p| ResolvedPort {
            name: p.name.clone().unwrap_or_default(),
            port: p.port.unwrap_or(0),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            app_protocol: p.app_protocol.clone(),
        })
        .collect()
}

/// Whether writing `want` over `stored` would change anything this
/// controller owns (absent and empty lists are the same).
fn differs(want: &EndpointSlice, stored: &EndpointSlice) -> bool {
    let ports = |s: &EndpointSlice| s.ports.clone().unwrap_or_default();
    want.address_type != stored.address_type
        || want.endpoints != stored.endpoints
        || ports(want) != ports(stored)
        || want.metadata.labels.clone().unwrap_or_default()
            != stored.metadata.labels.clone().unwrap_or_default()
        || want.metadata.owner_references != stored.metadata.owner_references
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn svc() -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("d".into()),
                uid: Some("svc-uid".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec::default()),
            status: None,
        }
    }

    fn ep(i: u32, port: i32) -> PodEndpoint {
        PodEndpoint {
            pod_name: format!("p{i:03}"),
            pod_uid: format!("u{i}"),
            namespace: "d".into(),
            ip: std::net::Ipv4Addr::from(0x7f01_0000 + i),
            node_name: None,
            hostname: None,
            serving: true,
            terminating: false,
            publish_not_ready: false,
            ports: vec![ResolvedPort {
                name: String::new(),
                port,
                protocol: "TCP".into(),
                app_protocol: None,
            }],
        }
    }

    /// Applies a plan the way the API would (names for creates).
    fn apply(existing: &mut Vec<Arc<EndpointSlice>>, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Create(mut s) => {
                    s.metadata.name = Some(format!("web-{}", existing.len()));
                    existing.push(Arc::new(s));
                }
                Action::Update(s) => {
                    let i = existing
                        .iter()
                        .position(|o| o.metadata.name == s.metadata.name)
                        .expect("updates name a stored slice");
                    existing[i] = Arc::new(s);
                }
                Action::Delete(s) => existing.retain(|o| o.metadata.name != s.metadata.name),
            }
        }
    }

    #[test]
    fn slices_hold_at_most_100_and_an_unchanged_service_plans_nothing() {
        let eps: Vec<PodEndpoint> = (0..150).map(|i| ep(i, 8080)).collect();
        let mut stored = Vec::new();
        let actions = plan(&svc(), &eps, &stored);
        apply(&mut stored, actions);
        let sizes: Vec<usize> = stored.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 50]);
        assert!(plan(&svc(), &eps, &stored).is_empty());
        // One pod gone: one slice rewritten, the other untouched.
        let fewer: Vec<PodEndpoint> = eps
            .iter()
            .filter(|e| e.pod_name != "p010")
            .cloned()
            .collect();
        let actions = plan(&svc(), &fewer, &stored);
        assert_eq!(actions.len(), 1, "{actions:?}");
        apply(&mut stored, actions);
        // A new pod fills the slice with room.
        let mut more = fewer.clone();
        more.push(ep(500, 8080));
        let actions = plan(&svc(), &more, &stored);
        assert!(matches!(&actions[..], [Action::Update(_)]), "{actions:?}");
    }

    #[test]
    fn port_sets_get_slices_of_their_own_and_no_endpoints_leave_a_placeholder() {
        let eps = vec![ep(1, 8080), ep(2, 9090)];
        let mut stored = Vec::new();
        let actions = plan(&svc(), &eps, &stored);
        apply(&mut stored, actions);
        assert_eq!(stored.len(), 2);
        let actions = plan(&svc(), &[], &stored);
        apply(&mut stored, actions);
        assert_eq!(stored.len(), 1);
        assert!(stored[0].endpoints.is_empty() && stored[0].ports.is_none());
        assert!(plan(&svc(), &[], &stored).is_empty());
        let owner = &stored[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Service", Some(true))
        );
    }
}
