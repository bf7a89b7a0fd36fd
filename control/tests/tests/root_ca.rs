//! The root CA publisher: every namespace gets the `kube-root-ca.crt`
//! ConfigMap with the cluster CA (read from the API's `/cacerts`), and it
//! is put back when deleted or changed.

#![recursion_limit = "256"]

use keel_control_tests as support;

use keel_apiserver::api::ApiConfig;
use keel_controllers::cache::Caches;
use serde_json::json;
use support::{bg, wait_for, TestServer};

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const PATH: &str = "/api/v1/namespaces/team/configmaps/kube-root-ca.crt";

#[tokio::test]
async fn every_namespace_holds_the_cluster_ca_and_gets_it_back() {
    let s = TestServer::start_with(ApiConfig::default()).await;
    let client = |name: &str| {
        let local = keel_apiserver::local::LocalApi::new(s.api()).with_ca_cert(PEM);
        keel_controllers::client::in_process(local, name)
    };
    let _ctl = bg(keel_controllers::rootca::run(
        client("root-ca-cert-publisher"),
        Caches::new(client("keel-controller-manager")),
    ));
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    assert_eq!(s.post("/api/v1/namespaces", &ns).await.code, 201);
    let ca = || async {
        let r = s.get(PATH).await;
        (r.code == 200).then(|| r.body["data"]["ca.crt"].as_str().map(str::to_string))?
    };
    assert_eq!(wait_for("the ConfigMap", 10, ca).await, PEM);

    assert_eq!(s.delete(PATH).await.code, 200);
    wait_for("recreated", 10, || async {
        ca().await.filter(|c| c == PEM)
    })
    .await;

    let mut cm = s.get(PATH).await.body;
    cm["data"]["ca.crt"] = json!("tampered");
    cm["data"]["extra"] = json!("kept");
    assert_eq!(s.put(PATH, &cm).await.code, 200);
    wait_for("repaired", 10, || async { ca().await.filter(|c| c == PEM) }).await;
    assert_eq!(s.get(PATH).await.body["data"]["extra"], "kept");
}
