//! The Ingress status controller: every Ingress that keel's built-in
//! router handles (class `keel`, by `spec.ingressClassName`, the old
//! `kubernetes.io/ingress.class` annotation, or no class while `keel` is
//! the default IngressClass) gets `status.loadBalancer.ingress` listing
//! the routers' addresses, which `kubectl get ingress` prints as ADDRESS.
//!
//! The routers run in the agents; each agent publishes its listen
//! addresses in its Node's `keel.dev/ingress-http` (and
//! `keel.dev/ingress-https`) annotation at registration. This one writer
//! (on the controller-manager leader) turns them into status, so agents
//! never fight over it. Reconciled per Ingress; a Node or IngressClass
//! change re-queues every Ingress. Idempotent: the status is written only
//! when it differs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

use crate::cache::{next_change, Caches, Change, Informer};
use crate::client::is_status;
use crate::reconcile::{enqueue_all, run_workers, Reconciled, WorkQueue, RESYNC};

pub use keel_apimachinery::ingress_class::{handled, CLASS};
/// Node annotations with a router's HTTP and HTTPS address (`ip:port`).
pub const HTTP_ANNOTATION: &str = "keel.dev/ingress-http";
pub const HTTPS_ANNOTATION: &str = "keel.dev/ingress-https";
const WORKERS: usize = 2;

struct Controller {
    client: kube::Client,
    ingresses: Informer<Ingress>,
    classes: Informer<IngressClass>,
    nodes: Informer<Node>,
}

/// Runs the Ingress status controller until the future is dropped.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Controller {
        client,
        ingresses: caches.get::<Ingress>(),
        classes: caches.get::<IngressClass>(),
        nodes: caches.get::<Node>(),
    });
    let queue = WorkQueue::new();
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.ingresses.wait_synced().await;
    ctl.classes.wait_synced().await;
    ctl.nodes.wait_synced().await;
    enqueue_all(&queue, &ctl.ingresses);
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut ing_rx = ctl.ingresses.subscribe();
    let mut class_rx = ctl.classes.subscribe();
    let mut node_rx = ctl.nodes.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut ing_rx) => match c {
                Some(Change::Applied(i)) => queue.add(&crate::cache::key_of(i.as_ref())),
                Some(Change::Deleted(_)) => {}
                Some(Change::Resync) => enqueue_all(&queue, &ctl.ingresses),
                None => return,
            },
            c = next_change(&mut class_rx) => match c {
                Some(_) => enqueue_all(&queue, &ctl.ingresses),
                None => return,
            },
            c = next_change(&mut node_rx) => match c {
                // Heartbeats change Nodes often; only address changes matter,
                // and re-queueing is cheap (no write unless status differs).
                Some(_) => enqueue_all(&queue, &ctl.ingresses),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.ingresses),
        }
    }
}

impl Controller {
    async fn reconcile(&self, key: &str) -> Reconciled {
        let Some(ing) = self.ingresses.get_key(key) else {
            return Ok(None);
        };
        if ing.metadata.deletion_timestamp.is_some() || !handled(&ing, self.keel_is_default()) {
            return Ok(None);
        }
        let want = load_balancer(&self.nodes.list());
        let have = ing
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
            .unwrap_or_else(|| json!([]));
        if have == want {
            return Ok(None);
        }
        let (ns, name) = crate::cache::split_key(key);
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), ns.unwrap_or_default());
        let patch = json!({"status": {"loadBalancer": {"ingress": want}}});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn keel_is_default(&self) -> bool {
        self.classes
            .get(None, CLASS)
            .is_some_and(|c| keel_apimachinery::ingress_class::is_keel_default(&c))
    }
}

/// `status.loadBalancer.ingress` for the routers the Nodes announce: one
/// entry per distinct IP, sorted; `ports` only when a router listens on
/// other ports than 80/443 (so clients know where to connect).
pub fn load_balancer(nodes: &[Arc<Node>]) -> Value {
    let mut by_ip: BTreeMap<std::net::IpAddr, Vec<u16>> = BTreeMap::new();
    for node in nodes {
        let Some(annotations) = node.metadata.annotations.as_ref() else {
            continue;
        };
        let addr = |k: &str| {
            annotations
                .get(k)
                .and_then(|a| a.parse::<SocketAddr>().ok())
        };
        let Some(http) = addr(HTTP_ANNOTATION) else {
            continue;
        };
        let ports = by_ip.entry(http.ip()).or_default();
        ports.push(http.port());
        if let Some(https) = addr(HTTPS_ANNOTATION) {
            ports.push(https.port());
        }
    }
    let entries: Vec<Value> = by_ip
        .into_iter()
        .map(|(ip, mut ports)| {
            ports.sort_unstable();
            ports.dedup();
            let standard = ports.iter().all(|p| *p == 80 || *p == 443);
            match standard {
                true => json!({"ip": ip.to_string()}),
                false => json!({
                    "ip": ip.to_string(),
                    "ports": ports.iter().map(|p| json!({"port": p, "protocol": "TCP"})).collect::<Vec<_>>(),
                }),
            }
        })
        .collect();
    Value::Array(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(annotations: Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "n", "annotations": annotations}}))
                .unwrap(),
        )
    }

    #[test]
    fn one_entry_per_router_ip_with_ports_only_when_not_standard() {
        let nodes = [
            node(json!({HTTP_ANNOTATION: "127.0.0.2:80", HTTPS_ANNOTATION: "127.0.0.2:443"})),
            node(json!({HTTP_ANNOTATION: "127.0.0.1:8080", HTTPS_ANNOTATION: "127.0.0.1:8443"})),
            node(json!({HTTP_ANNOTATION: "127.0.0.1:8080", HTTPS_ANNOTATION: "127.0.0.1:8443"})),
            node(json!({"other": "x"})),
            node(json!({HTTP_ANNOTATION: "not an address"})),
        ];
        assert_eq!(
            load_balancer(&nodes),
            json!([
                {"ip": "127.0.0.1", "ports": [{"port": 8080, "protocol": "TCP"}, {"port": 8443, "protocol": "TCP"}]},
                {"ip": "127.0.0.2"},
            ])
        );
        assert_eq!(load_balancer(&[]), json!([]));
    }

    #[test]
    fn keel_handles_its_class_and_classless_ingresses_when_default() {
        let ing = |v: Value| -> Ingress { serde_json::from_value(v).unwrap() };
        let classless = ing(json!({"metadata": {"name": "a"}, "spec": {}}));
        assert!(handled(&classless, true));
        assert!(!handled(&classless, false));
        let keel = ing(json!({"metadata": {"name": "a"}, "spec": {"ingressClassName": "keel"}}));
        assert!(handled(&keel, false));
        let nginx = ing(
            json!({"metadata": {"name": "a", "annotations": {keel_apimachinery::ingress_class::CLASS_ANNOTATION: "nginx"}}, "spec": {}}),
        );
        assert!(!handled(&nginx, true));
    }
}
