//! The Endpoints controller (Kubernetes' `pkg/controller/endpoint`): for
//! each Service with a selector, a core/v1 Endpoints of the same name whose
//! subsets list the selected pods, for clients that still read Endpoints.
//!
//! Pods come from [`compute`], shared with the EndpointSlice controller.
//! As in Kubernetes: a ready pod (or any, with publishNotReadyAddresses)
//! is in `addresses`, another in `notReadyAddresses`; a terminating pod is
//! left out unless the Service publishes not-ready addresses; pods with
//! the same resolved ports share a subset; addresses carry the pod as
//! `targetRef`, its `nodeName` and its `hostname` (subdomain = Service).
//! A Service without a selector is left alone; when a Service is deleted
//! its Endpoints go with it. Nothing is written when nothing changed.
//!
//! Not done: Kubernetes truncates Endpoints over 1000 addresses (with the
//! `endpoints.kubernetes.io/over-capacity` annotation); here all are kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use crate::cache::{key_of, next_change, split_key, Caches, Change, Informer};
use crate::client::is_status;
use crate::endpointslice::compute::{self, Memberships, PodEndpoint, ResolvedPort};
use crate::reconcile::{enqueue_all, is_deleting, run_workers, Reconciled, WorkQueue, RESYNC};

const WORKERS: usize = 4;

struct Controller {
    client: kube::Client,
    services: Informer<Service>,
    pods: Informer<Pod>,
    endpoints: Informer<Endpoints>,
    memberships: Memberships,
}

/// Runs the controller until the future is dropped, reading through the
/// shared `caches` and writing through `client`.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Controller {
        client,
        services: caches.get::<Service>(),
        pods: caches.get::<Pod>(),
        endpoints: caches.get::<Endpoints>(),
        memberships: Memberships::default(),
    });
    let queue = WorkQueue::new();
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.services.wait_synced().await;
    ctl.pods.wait_synced().await;
    ctl.endpoints.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

/// Maps Service, pod and Endpoints changes to the Services to reconcile.
async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut svc_rx = ctl.services.subscribe();
    let mut pod_rx = ctl.pods.subscribe();
    let mut ep_rx = ctl.endpoints.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut svc_rx) => match c {
                Some(Change::Applied(s) | Change::Deleted(s)) => queue.add(&key_of(s.as_ref())),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.services),
                None => return,
            },
            c = next_change(&mut pod_rx) => match c {
                Some(Change::Applied(p) | Change::Deleted(p)) => {
                    for key in ctl.memberships.services_for(&ctl.services, &p) {
                        queue.add(&key);
                    }
                }
                Some(Change::Resync) => enqueue_all(&queue, &ctl.services),
                None => return,
            },
            // Someone else changed an Endpoints we keep: put it back.
            c = next_change(&mut ep_rx) => match c {
                Some(Change::Applied(e) | Change::Deleted(e)) => {
                    let key = key_of(e.as_ref());
                    if ctl.services.get_key(&key).is_some() {
                        queue.add(&key);
                    }
                }
                Some(Change::Resync) => enqueue_all(&queue, &ctl.services),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.services),
        }
    }
}

impl Controller {
    async fn reconcile(&self, key: &str) -> Reconciled<kube::Error> {
        let (ns, svc_name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let Some(svc) = self.services.get_key(key) else {
            self.memberships.forget(key);
            return self.delete(&api, key).await;
        };
        if compute::selector(&svc).is_none() || is_deleting(&svc.metadata) {
            self.memberships.forget(key);
            return Ok(None);
        }
        let pods = self.pods.filter_in(ns, |p| {
            compute::selector(&svc)
                .is_some_and(|sel| compute::selects(sel, p.metadata.labels.as_ref()))
        });
        let endpoints = compute::pod_endpoints(&svc, &pods);
        self.memberships.record(key, &endpoints);
        let subsets = subsets(&endpoints);
        let labels = compute::endpoint_labels(&svc);
        match self.endpoints.get_key(key) {
            None => {
                let obj = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(svc_name.to_string()),
                        namespace: Some(ns.to_string()),
                        labels: Some(labels).filter(|l| !l.is_empty()),
                        ..ObjectMeta::default()
                    },
                    subsets: Some(subsets).filter(|s| !s.is_empty()),
                };
                match api.create(&PostParams::default(), &obj).await {
                    // Our cache had not shown it yet: its event requeues us.
                    Err(e) if is_status(&e, 409) => Ok(None),
                    other => other.map(|_| None),
                }
            }
            Some(stored) => {
                let same = stored.subsets.clone().unwrap_or_default() == subsets
                    && stored.metadata.labels.clone().unwrap_or_default() == labels;
                if same {
                    return Ok(None);
                }
                let mut obj = (*stored).clone();
                obj.subsets = Some(subsets).filter(|s| !s.is_empty());
                obj.metadata.labels = Some(labels).filter(|l| !l.is_empty());
                api.replace(svc_name, &PostParams::default(), &obj).await?;
                Ok(None)
            }
        }
    }

    /// The Service is gone: so is its Endpoints (pinned to the uid seen,
    /// so one made anew for a new Service of that name survives).
    async fn delete(&self, api: &Api<Endpoints>, key: &str) -> Reconciled<kube::Error> {
        let Some(stored) = self.endpoints.get_key(key) else {
            return Ok(None);
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: stored.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let (_, ep_name) = split_key(key);
        match api.delete(ep_name, &params).await {
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(None),
            other => other.map(|_| None),
        }
    }
}

/// Kubernetes' repacked subsets: one per set of resolved ports, addresses
/// sorted by IP, in a stable order (so an unchanged Service compares equal).
fn subsets(endpoints: &[PodEndpoint]) -> Vec<EndpointSubset> {
    type Addrs = (Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut by_ports: BTreeMap<&[ResolvedPort], Addrs> = BTreeMap::new();
    for e in endpoints {
        if e.terminating && !e.publish_not_ready {
            continue;
        }
        let (ready, not_ready) = by_ports.entry(e.ports.as_slice()).or_default();
        let addr = address(e);
        if e.publish_not_ready || e.serving {
            ready.push(addr);
        } else {
            not_ready.push(addr);
        }
    }
    by_ports
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            let by_ip = |a: &EndpointAddress, b: &EndpointAddress| {
                let ip = |x: &EndpointAddress| x.ip.parse::<std::net::Ipv4Addr>().ok();
                ip(a).cmp(&ip(b)).then_with(|| a.ip.cmp(&b.ip))
            };
            ready.sort_by(by_ip);
            not_ready.sort_by(by_ip);
            EndpointSubset {
                addresses: Some(ready).filter(|a| !a.is_empty()),
                not_ready_addresses: Some(not_ready).filter(|a| !a.is_empty()),
                ports: Some(ports.iter().map(port).collect()).filter(|p: &Vec<_>| !p.is_empty()),
            }
        })
        .collect()
}

fn address(e: &PodEndpoint) -> EndpointAddress {
    EndpointAddress {
        ip: e.ip.to_string(),
        hostname: e.hostname.clone(),
        node_name: e.node_name.clone(),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(e.namespace.clone()),
            name: Some(e.pod_name.clone()),
            uid: Some(e.pod_uid.clone()).filter(|u| !u.is_empty()),
            ..ObjectReference::default()
        }),
    }
}

fn port(p: &ResolvedPort) -> EndpointPort {
    EndpointPort {
        name: Some(p.name.clone()).filter(|n| !n.is_empty()),
        port: p.port,
        protocol: Some(p.protocol.clone()),
        app_protocol: p.app_protocol.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(pod: &str, ip: &str, port: i32, serving: bool, terminating: bool) -> PodEndpoint {
        PodEndpoint {
            pod_name: pod.into(),
            pod_uid: format!("uid-{pod}"),
            namespace: "d".into(),
            ip: ip.parse().unwrap(),
            node_name: Some("n1".into()),
            hostname: None,
            serving,
            terminating,
            publish_not_ready: false,
            ports: vec![ResolvedPort {
                name: "http".into(),
                port,
                protocol: "TCP".into(),
                app_protocol: None,
            }],
        }
    }

    #[test]
    fn subsets_split_ready_from_not_ready_and_group_by_ports() {
        let eps = vec![
            ep("a", "127.1.0.10", 8080, true, false),
            ep("b", "127.1.0.9", 8080, true, false),
            ep("c", "127.1.0.3", 8080, false, false),
            ep("d", "127.1.0.4", 9090, true, false),
            ep("gone", "127.1.0.5", 8080, true, true),
        ];
        let s = subsets(&eps);
        assert_eq!(s.len(), 2);
        let ips = |a: &Option<Vec<EndpointAddress>>| -> Vec<String> {
            a.iter().flatten().map(|x| x.ip.clone()).collect()
        };
        assert_eq!(ips(&s[0].addresses), ["127.1.0.9", "127.1.0.10"]);
        assert_eq!(ips(&s[0].not_ready_addresses), ["127.1.0.3"]);
        assert_eq!(s[0].ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(ips(&s[1].addresses), ["127.1.0.4"]);
        let mut publish = eps.clone();
        for e in &mut publish {
            e.publish_not_ready = true;
        }
        let s = subsets(&publish);
        assert_eq!(ips(&s[0].addresses).len(), 4);
        assert_eq!(s[0].not_ready_addresses, None);
    }
}
