//! The router's view of the cluster: kube-runtime reflectors for
//! Ingresses, IngressClasses, Services, EndpointSlices and TLS Secrets
//! (field selector `type=kubernetes.io/tls`), and the loop that rebuilds
//! the route table from them.
//!
//! Any event wakes the rebuild loop, which waits [`SETTLE`] for a burst to
//! land, then rebuilds routes and certificates from the caches and swaps
//! them in: a change is live well within a second. Watch errors are
//! retried with kube-runtime's default back-off (the caches keep their last
//! state meanwhile, so routing goes on during an API outage).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::proxy::Router;
use super::table::{keel_is_default, Inputs};
use super::tls::TLS_SECRET_TYPE;

/// How long a rebuild waits after the first event of a burst.
const SETTLE: Duration = Duration::from_millis(50);

/// The caches the table is built from.
struct Caches {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    secrets: Store<Secret>,
}

impl Caches {
    fn inputs(&self) -> Inputs {
        Inputs {
            ingresses: self.ingresses.state(),
            services: self.services.state(),
            slices: self.slices.state(),
            secrets: self.secrets.state(),
            keel_is_default: keel_is_default(&self.classes.state()),
        }
    }

    async fn wait_ready(&self) {
        let _ = tokio::join!(
            self.ingresses.wait_until_ready(),
            self.classes.wait_until_ready(),
            self.services.wait_until_ready(),
            self.slices.wait_until_ready(),
            self.secrets.wait_until_ready(),
        );
    }
}

/// Keeps `router`'s routes in step with the cluster until dropped.
pub async fn run(client: kube::Client, router: Arc<Router>) {
    let notify = Arc::new(Notify::new());
    let all = watcher::Config::default;
    let (ingresses, d1) = reflect(Api::all(client.clone()), all(), notify.clone());
    let (classes, d2) = reflect(Api::all(client.clone()), all(), notify.clone());
    let (services, d3) = reflect(Api::all(client.clone()), all(), notify.clone());
    let (slices, d4) = reflect(Api::all(client.clone()), all(), notify.clone());
    let tls_only = all().fields(&format!("type={TLS_SECRET_TYPE}"));
    let (secrets, d5) = reflect(Api::all(client), tls_only, notify.clone());
    let drivers = vec![d1, d2, d3, d4, d5];
    let caches = Caches {
        ingresses,
        classes,
        services,
        slices,
        secrets,
    };
    let rebuild = async {
        caches.wait_ready().await;
        loop {
            let inputs = caches.inputs();
            router.update(&inputs);
            tracing::debug!(ingresses = inputs.ingresses.len(), "ingress routes rebuilt");
            notify.notified().await;
            tokio::time::sleep(SETTLE).await;
        }
    };
    tokio::select! {
        _ = futures::future::join_all(drivers) => {}
        () = rebuild => {}
    }
}

/// A reflector on `api` and the future that drives it, waking `notify`
/// on every event.
fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
    notify: Arc<Notify>,
) -> (Store<K>, BoxFuture<'static, ()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    let (store, writer) = reflector::store::<K>();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream = watcher(api, cfg).default_backoff().reflect(writer);
    let driver = async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => notify.notify_one(),
                Err(e) => tracing::debug!(%kind, error = %e, "ingress watch failed; retrying"),
            }
        }
    }
    .boxed();
    (store, driver)
}
