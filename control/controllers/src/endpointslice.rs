//! The EndpointSlice controller (Kubernetes' `pkg/controller/endpointslice`):
//! for each Service with a selector, discovery.k8s.io/v1 EndpointSlices
//! listing the selected pods, which the service proxy, cluster DNS and
//! the ingress router read.
//!
//! Slices are labelled `kubernetes.io/service-name=<svc>` and
//! `endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io`,
//! controlled by the Service (the garbage collector deletes them with it),
//! named `<svc>-<random>`. What goes in them is [`compute`]; how endpoints
//! are spread over slices is [`plan`]. Slices of other managers (the API
//! server's `kubernetes` one, a user's) are never touched.
//!
//! Why expectations: the slice cache lags our own creates and deletes; a
//! reconcile on a stale cache would create a second slice for the same
//! pods. Names are chosen here so the expectation exists before the
//! informer can show the slice. Updates need none: they are pinned to
//! the resourceVersion read, so a stale one fails with 409 and is retried.

pub mod compute;
pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use crate::cache::{key_of, next_change, split_key, Caches, Change, Informer};
use crate::client::is_status;
use crate::meta;
use crate::reconcile::{
    enqueue_all, is_deleting, name, namespace, run_workers, Expectations, Reconciled, WorkQueue,
    RESYNC,
};
use compute::{Memberships, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
use plan::Action;

const WORKERS: usize = 4;
/// How soon a Service waiting on its own creates and deletes looks again
/// (the informer's event normally wakes it first).
const EXPECTATIONS_RECHECK: Duration = Duration::from_secs(1);

struct Controller {
    client: kube::Client,
    services: Informer<Service>,
    pods: Informer<Pod>,
    slices: Informer<EndpointSlice>,
    expectations: Expectations,
    memberships: Memberships,
}

/// Runs the controller until the future is dropped, reading through the
/// shared `caches` and writing through `client`.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Controller {
        client,
        services: caches.get::<Service>(),
        pods: caches.get::<Pod>(),
        slices: caches.get::<EndpointSlice>(),
        expectations: Expectations::default(),
        memberships: Memberships::default(),
    });
    let queue = WorkQueue::new();
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.services.wait_synced().await;
    ctl.pods.wait_synced().await;
    ctl.slices.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

/// The key of the Service a slice of ours belongs to.
fn owning_service(slice: &EndpointSlice) -> Option<String> {
    let labels = slice.metadata.labels.as_ref()?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    let svc = labels.get(SERVICE_NAME_LABEL)?;
    Some(format!("{}/{svc}", namespace(&slice.metadata)))
}

/// Maps Service, pod and slice changes to the Services to reconcile.
async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut svc_rx = ctl.services.subscribe();
    let mut pod_rx = ctl.pods.subscribe();
    let mut slice_rx = ctl.slices.subscribe();
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
            c = next_change(&mut slice_rx) => match c {
                Some(Change::Applied(s)) => ctl.slice_changed(&queue, &s, false),
                Some(Change::Deleted(s)) => ctl.slice_changed(&queue, &s, true),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.services),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.services),
        }
    }
}

impl Controller {
    fn slice_changed(&self, queue: &WorkQueue, slice: &EndpointSlice, deleted: bool) {
        if let Some(key) = owning_service(slice) {
            self.expectations
                .observe(&key, name(&slice.metadata), deleted);
            queue.add(&key);
        }
    }

    async fn reconcile(&self, key: &str) -> Reconciled<kube::Error> {
        let svc = self
            .services
            .get_key(key)
            .filter(|s| compute::selector(s).is_some() && !is_deleting(&s.metadata));
        let Some(svc) = svc else {
            // Gone (the garbage collector deletes its slices), being
            // deleted, or not ours to manage.
            self.expectations.forget(key);
            self.memberships.forget(key);
            return Ok(None);
        };
        if !self.expectations.satisfied(key) {
            return Ok(Some(EXPECTATIONS_RECHECK));
        }
        let (ns, svc_name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let pods = self.pods.filter_in(ns, |p| {
            compute::selector(&svc)
                .is_some_and(|sel| compute::selects(sel, p.metadata.labels.as_ref()))
        });
        let endpoints = compute::pod_endpoints(&svc, &pods);
        self.memberships.record(key, &endpoints);
        let uid = svc.metadata.uid.as_deref().unwrap_or_default();
        let existing = self.slices.filter_in(ns, |s| {
            owning_service(s).is_some_and(|k| k == key)
                // A slice left by an earlier Service of the same name is
                // the garbage collector's, not ours to reuse.
                && s.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid)
        });
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        for action in plan::plan(&svc, &endpoints, &existing) {
            self.write(key, svc_name, &api, action).await?;
        }
        Ok(None)
    }

    async fn write(
        &self,
        key: &str,
        svc_name: &str,
        api: &Api<EndpointSlice>,
        action: Action,
    ) -> kube::Result<()> {
        match action {
            Action::Create(mut slice) => {
                let slice_name = meta::generated_name(&format!("{svc_name}-"));
                slice.metadata.name = Some(slice_name.clone());
                self.expectations.expect_create(key, &slice_name);
                if let Err(e) = api.create(&PostParams::default(), &slice).await {
                    self.expectations.observe(key, &slice_name, true);
                    return Err(e);
                }
            }
            Action::Update(slice) => {
                api.replace(name(&slice.metadata), &PostParams::default(), &slice)
                    .await?;
            }
            Action::Delete(slice) => {
                let slice_name = name(&slice.metadata).to_string();
                self.expectations.expect_delete(key, &slice_name);
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: slice.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&slice_name, &params).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {
                        self.expectations.observe(key, &slice_name, true)
                    }
                    Err(e) => {
                        self.expectations.observe(key, &slice_name, true);
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}
