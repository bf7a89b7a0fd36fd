//! The node service: what `keel agent` talks to (see `proto/keel/node.proto`).
//!
//! Served by every control replica on its API port, behind the same bearer
//! token check as the REST API. Every call goes through the in-process
//! [`Client`], so what an agent writes (node status, pod status, events) is
//! admitted and validated exactly like a kubelet's REST write would be.
//!
//! Who may call: an admin (`system:masters`, what agents held before
//! node identities; its calls are trusted in-process requests), or a node
//! identity `system:node:<name>` (group `system:nodes`) for its own node
//! name only. A node's calls act as that node: each underlying request is
//! authorized by the server's authorizer chain (the Node authorizer: its
//! own pods and what they reference) and admitted with NodeRestriction,
//! so the stream grants a node exactly what its REST credential grants.
//! Anything else is `PERMISSION_DENIED` (`UNAUTHENTICATED` without an
//! identity).
//!
//! Upgrade path: an agent still registering with an administrator
//! credential ([`AdminCredential`], e.g. the admin kubeconfig agents held
//! before node identities) keeps working; the first registration of each
//! such node logs a warning ([`admin_credential_warning`]) telling how to
//! re-join it with its own identity.
//!
//! Guarantees of `WatchPods`: it is the API's pod watch with the field
//! selector `spec.nodeName=<node>`, so an agent that resumes from its last
//! revision on any replica gets every later change exactly once, in order;
//! a compacted revision is `OUT_OF_RANGE` (the agent lists again).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use keel_proto::keelnode::node_service_server::{NodeService, NodeServiceServer};
use keel_proto::keelnode::{
    pod_event, DeletePodRequest, EventReport, GetObjectRequest, GetObjectResponse,
    HeartbeatRequest, HeartbeatResponse, PodEvent, PodStatusReport, RegisterRequest,
    RegisterResponse, ReportResponse, WatchPodsRequest,
};
use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use std::sync::Arc;

use crate::api::watch::Counted;
use crate::auth::node::node_name;
use crate::auth::{Authorizer, UserInfo, MASTERS};
use crate::client::{path, Client, ClientError};
use crate::meta;
use crate::pod_router::{self, PodRouter};
use crate::status::ApiError;
use crate::storage::Objects;

/// Where node pod CIDRs come from: `/24`s of a range inside 127.0.0.0/8 by
/// default, so exec-mode pods on one machine get loopback addresses.
#[derive(Debug, Clone, Copy)]
pub struct PodCidrs {
    pub range: Ipv4Net,
}

impl Default for PodCidrs {
    /// 127.16.0.0/12: 4,096 nodes of 253 pods each.
    fn default() -> Self {
        PodCidrs {
            range: Ipv4Net::new(Ipv4Addr::new(127, 16, 0, 0), 12).expect("/12 is a valid prefix"),
        }
    }
}

impl PodCidrs {
    /// Parses an IPv4 CIDR with a prefix of /24 or shorter (nodes get /24s).
    pub fn parse(s: &str) -> Result<PodCidrs, String> {
        let net: Ipv4Net = s
            .parse()
            .map_err(|e| format!("cluster CIDR {s:?} is not an IPv4 ip/prefix: {e}"))?;
        if !(8..=24).contains(&net.prefix_len()) {
            return Err(format!(
                "cluster CIDR {s:?}: the prefix must be /8 to /24 (nodes get /24s)"
            ));
        }
        Ok(PodCidrs { range: net.trunc() })
    }

    /// How many /24 blocks the range holds.
    pub fn blocks(&self) -> u32 {
        1 << (24 - u32::from(self.range.prefix_len()))
    }

    fn block(&self, i: u32) -> String {
        assert!(i < self.blocks(), "block {i} is outside {}", self.range);
        let ip = Ipv4Addr::from(u32::from(self.range.network()) + (i << 8));
        format!("{ip}/24")
    }
}

pub struct NodeSvc {
    client: Client,
    objects: Objects,
    /// Every node's pod stream from one store watch of this replica.
    pods: PodRouter,
    cidrs: PodCidrs,
    authz: Arc<dyn Authorizer>,
    /// Nodes already warned about their admin credential (once each per
    /// replica process).
    warned: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Put into a request's extensions by the server when the caller
/// authenticated with an administrator credential (`system:masters`, not
/// a node identity) over an authenticated connection: an agent that has
/// not been re-joined since node identities landed. Its name is the
/// authenticated user's.
#[derive(Debug, Clone)]
pub struct AdminCredential(pub String);

/// The warning logged once per node still using an admin credential:
/// what it risks and the commands that give it its own identity.
pub fn admin_credential_warning(node: &str, user: &str) -> String {
    format!(
        "agent of node {node:?} uses an administrator credential (user {user:?} in \
         system:masters), as agents did before node identities: it keeps working, but a \
         compromised node then owns the whole cluster. Re-join it as system:node:{node}: on a \
         server run `keel token create --kind agent`, then restart that agent on the same \
         --root-dir with `keel agent --join https://<server>:6443 --token <token> \
         --node-name {node}` instead of --kubeconfig (README: Node identities, Upgrading)"
    )
}

/// The tonic service, ready to be routed. The server puts the caller's
/// [`UserInfo`] into each request's extensions; `authz` decides on what a
/// node identity's calls do.
pub fn service(
    client: Client,
    objects: Objects,
    cidrs: PodCidrs,
    authz: Arc<dyn Authorizer>,
) -> NodeServiceServer<NodeSvc> {
    let pods_prefix = crate::resources::find("", "v1", "pods")
        .expect("pods are served")
        .prefix(None);
    NodeServiceServer::new(NodeSvc {
        client,
        pods: PodRouter::new(objects.store().clone(), pods_prefix),
        objects,
        cidrs,
        authz,
        warned: Default::default(),
    })
    .max_decoding_message_size(8 * 1024 * 1024)
}

/// Who called, as the node service acts for them.
struct Caller {
    /// Requests on the caller's behalf.
    client: Client,
    /// The node of a node identity; None for an admin.
    node: Option<String>,
}

impl Caller {
    /// A node identity may act only for its own node.
    fn may_act_for(&self, node: &str) -> Result<(), Status> {
        match &self.node {
            Some(own) if own != node => Err(Status::permission_denied(format!(
                "node {own:?} may not act for node {node:?}: a node identity registers, \
                 heartbeats and watches pods only for its own node name"
            ))),
            _ => Ok(()),
        }
    }
}

fn to_status(e: ClientError) -> Status {
    let msg = format!("{} ({})", e.message, e.reason);
    match e.code {
        400 | 422 => Status::invalid_argument(msg),
        401 => Status::unauthenticated(msg),
        403 => Status::permission_denied(msg),
        404 => Status::not_found(msg),
        409 => Status::aborted(msg),
        410 => Status::out_of_range(msg),
        503 | 504 => Status::unavailable(msg),
        _ => Status::internal(msg),
    }
}

fn parse_json(bytes: &[u8], what: &str) -> Result<Value, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("{what} is not valid JSON: {e}")))
}

fn need(s: &str, what: &str) -> Result<(), Status> {
    match s.is_empty() {
        true => Err(Status::invalid_argument(format!("{what} is required"))),
        false => Ok(()),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<PodEvent, Status>> + Send>>;

#[tonic::async_trait]
impl NodeService for NodeSvc {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let caller = self.caller(&req)?;
        let admin = req.extensions().get::<AdminCredential>().cloned();
        let node = parse_json(&req.into_inner().node_json, "node_json")?;
        let name = meta::name(&node).to_string();
        need(&name, "metadata.name of the node")?;
        caller.may_act_for(&name)?;
        if let Some(AdminCredential(user)) = admin {
            self.warn_admin_credential(&name, &user);
        }
        let stored = self.register_node(&caller.client, &name, node).await?;
        Ok(Response::new(RegisterResponse {
            node_json: stored.to_string().into_bytes(),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        need(&r.node_name, "node_name")?;
        caller.may_act_for(&r.node_name)?;
        let duration_s = if r.lease_duration_seconds > 0 {
            r.lease_duration_seconds
        } else {
            40
        };
        renew_lease(&caller.client, &r.node_name, duration_s).await?;
        if !r.node_status_json.is_empty() {
            let status = parse_json(&r.node_status_json, "node_status_json")?;
            let uri = format!("{}/status", path("v1", "nodes", None, Some(&r.node_name)));
            caller
                .client
                .merge_patch(&uri, &json!({ "status": status }))
                .await
                .map_err(to_status)?;
        }
        Ok(Response::new(HeartbeatResponse {}))
    }

    type WatchPodsStream = EventStream;

    async fn watch_pods(
        &self,
        req: Request<WatchPodsRequest>,
    ) -> Result<Response<Self::WatchPodsStream>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        need(&r.node_name, "node_name")?;
        caller.may_act_for(&r.node_name)?;
        if r.from_revision < 0 {
            return Err(Status::invalid_argument("from_revision must be >= 0"));
        }
        let stream = pod_stream(&caller.client, &self.pods, &r.node_name, r.from_revision).await?;
        Ok(Response::new(stream))
    }

    async fn report_pod_status(
        &self,
        req: Request<PodStatusReport>,
    ) -> Result<Response<ReportResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        need(&r.namespace, "namespace")?;
        need(&r.name, "name")?;
        let status = parse_json(&r.status_json, "status_json")?;
        write_pod_status(&caller.client, &r.namespace, &r.name, &r.uid, status).await?;
        Ok(Response::new(ReportResponse {}))
    }

    async fn delete_pod(
        &self,
        req: Request<DeletePodRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        need(&r.namespace, "namespace")?;
        need(&r.name, "name")?;
        need(&r.uid, "uid")?;
        let uri = path("v1", "pods", Some(&r.namespace), Some(&r.name));
        let opts = json!({"apiVersion": "v1", "kind": "DeleteOptions",
            "gracePeriodSeconds": 0, "preconditions": {"uid": r.uid}});
        match caller.client.delete(&uri, Some(&opts)).await {
            // A different uid means this pod is already gone (a new one
            // took the name): nothing of ours is left to delete.
            Ok(_) => {}
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(to_status(e)),
        }
        Ok(Response::new(ReportResponse {}))
    }

    async fn get_object(
        &self,
        req: Request<GetObjectRequest>,
    ) -> Result<Response<GetObjectResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        // PersistentVolumes are cluster-scoped: the namespace is ignored.
        let (resource, namespaced) = match r.kind.as_str() {
            "ConfigMap" => ("configmaps", true),
            "Secret" => ("secrets", true),
            "PersistentVolumeClaim" => ("persistentvolumeclaims", true),
            "PersistentVolume" => ("persistentvolumes", false),
            k => {
                return Err(Status::invalid_argument(format!(
                    "kind {k:?} cannot be read through the node service \
                     (ConfigMap, Secret, PersistentVolumeClaim or PersistentVolume)"
                )))
            }
        };
        if namespaced {
            need(&r.namespace, "namespace")?;
        }
        need(&r.name, "name")?;
        let ns = namespaced.then_some(r.namespace.as_str());
        let uri = path("v1", resource, ns, Some(&r.name));
        match caller.client.get(&uri).await.map_err(to_status)? {
            Some(obj) => Ok(Response::new(GetObjectResponse {
                object_json: obj.to_string().into_bytes(),
            })),
            None => Err(Status::not_found(format!(
                "{} {}/{} not found",
                r.kind, r.namespace, r.name
            ))),
        }
    }

    async fn record_event(
        &self,
        req: Request<EventReport>,
    ) -> Result<Response<ReportResponse>, Status> {
        let caller = self.caller(&req)?;
        let ev = parse_json(&req.into_inner().event_json, "event_json")?;
        let involved = &ev["involvedObject"];
        let kind = ev["type"].as_str().unwrap_or(crate::events::NORMAL);
        let reason = ev["reason"].as_str().unwrap_or_default();
        need(reason, "reason")?;
        let message = ev["message"].as_str().unwrap_or_default();
        let component = ev["source"]["component"].as_str().unwrap_or("kubelet");
        crate::events::record(&caller.client, involved, kind, reason, message, component).await;
        Ok(Response::new(ReportResponse {}))
    }
}

impl NodeSvc {
    /// Logs [`admin_credential_warning`] the first time `node` registers
    /// with an admin credential.
    fn warn_admin_credential(&self, node: &str, user: &str) {
        let first = match self.warned.lock() {
            Ok(mut w) => w.insert(node.to_string()),
            Err(p) => p.into_inner().insert(node.to_string()),
        };
        if first {
            tracing::warn!(node, "{}", admin_credential_warning(node, user));
        }
    }

    /// The caller of `req` (see the module docs).
    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let Some(user) = req.extensions().get::<UserInfo>() else {
            return Err(Status::unauthenticated(
                "the node service needs an authenticated caller",
            ));
        };
        if user.in_group(MASTERS) {
            return Ok(Caller {
                client: self.client.clone(),
                node: None,
            });
        }
        match node_name(user) {
            Some(node) => Ok(Caller {
                node: Some(node.to_string()),
                client: self.client.acting_as(user.clone(), self.authz.clone()),
            }),
            None => Err(Status::permission_denied(format!(
                "user {:?} may not use the node service (only nodes, system:node:<name> in \
                 system:nodes, and system:masters)",
                user.name
            ))),
        }
    }

    /// Creates the Node with a pod CIDR, or refreshes an existing one's
    /// labels and status (its spec, e.g. a cordon, is the cluster's).
    async fn register_node(
        &self,
        client: &Client,
        name: &str,
        mut node: Value,
    ) -> Result<Value, Status> {
        let uri = path("v1", "nodes", None, Some(name));
        let existing = client.get(&uri).await.map_err(to_status)?;
        let Some(mut cur) = existing else {
            let cidr = self.claim_cidr(name).await?;
            node["spec"]["podCIDR"] = json!(cidr);
            node["spec"]["podCIDRs"] = json!([cidr]);
            let status = node.get("status").cloned();
            let created = client
                .create(&path("v1", "nodes", None, None), &node)
                .await
                .map_err(to_status)?;
            return put_node_status(client, name, created, status).await;
        };
        // The agent's labels and annotations (its local-path root) win over
        // what is stored; others' are kept.
        let mut changed = false;
        for field in ["labels", "annotations"] {
            if let Some(items) = node["metadata"][field].as_object() {
                for (k, v) in items {
                    cur["metadata"][field][k] = v.clone();
                }
                changed = true;
            }
        }
        if changed {
            cur = client.update(&uri, &cur).await.map_err(to_status)?;
        }
        put_node_status(client, name, cur, node.get("status").cloned()).await
    }

    /// The first free /24 of the range, claimed for `node` through a store
    /// key so two replicas never hand out the same block.
    ///
    /// One read finds the blocks already held, so a registration costs one
    /// claim write (more only when another replica claims the same block at
    /// once), not one write per block taken before it. A node that already
    /// holds a block (it registers again) gets that block back.
    async fn claim_cidr(&self, node: &str) -> Result<String, Status> {
        const PREFIX: &str = "/keel/alloc/podcidr/";
        let unavailable = |e: ApiError| Status::unavailable(e.message);
        let held = self
            .objects
            .list_raw(PREFIX, None, 0, 0)
            .await
            .map_err(unavailable)?;
        let mut taken = std::collections::HashSet::new();
        for kv in &held.kvs {
            let index = std::str::from_utf8(&kv.key)
                .ok()
                .and_then(|k| k.strip_prefix(PREFIX))
                .and_then(|i| i.parse::<u32>().ok())
                .filter(|i| *i < self.cidrs.blocks());
            let Some(i) = index else { continue };
            if kv.value == node.as_bytes() {
                return Ok(self.cidrs.block(i));
            }
            taken.insert(i);
        }
        for i in (0..self.cidrs.blocks()).filter(|i| !taken.contains(i)) {
            let key = format!("{PREFIX}{i}");
            let holder = self
                .objects
                .put_raw_if_absent(&key, node.as_bytes().to_vec())
                .await
                .map_err(unavailable)?;
            if holder == node.as_bytes() {
                return Ok(self.cidrs.block(i));
            }
        }
        Err(Status::resource_exhausted(
            "every pod CIDR block of the cluster range is taken",
        ))
    }
}

async fn put_node_status(
    client: &Client,
    name: &str,
    cur: Value,
    status: Option<Value>,
) -> Result<Value, Status> {
    let Some(status) = status else {
        return Ok(cur);
    };
    let uri = format!("{}/status", path("v1", "nodes", None, Some(name)));
    client
        .merge_patch(&uri, &json!({ "status": status }))
        .await
        .map_err(to_status)
}

async fn renew_lease(client: &Client, node: &str, duration_s: i32) -> Result<(), Status> {
    let uri = path(
        "coordination.k8s.io/v1",
        "leases",
        Some("kube-node-lease"),
        Some(node),
    );
    let now = meta::now_rfc3339_micro();
    for _ in 0..5 {
        let res = match client.get(&uri).await.map_err(to_status)? {
            Some(mut lease) => {
                lease["spec"]["renewTime"] = json!(now);
                lease["spec"]["holderIdentity"] = json!(node);
                lease["spec"]["leaseDurationSeconds"] = json!(duration_s);
                client.update(&uri, &lease).await
            }
            None => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": node, "namespace": "kube-node-lease"},
                    "spec": {"holderIdentity": node, "leaseDurationSeconds": duration_s,
                             "renewTime": now},
                });
                let coll = path(
                    "coordination.k8s.io/v1",
                    "leases",
                    Some("kube-node-lease"),
                    None,
                );
                client.create(&coll, &lease).await
            }
        };
        match res {
            Ok(_) => return Ok(()),
            Err(e) if e.is_conflict() || e.code == 409 => continue,
            Err(e) => return Err(to_status(e)),
        }
    }
    Err(Status::aborted(
        "the node lease kept changing underneath; try again",
    ))
}

async fn write_pod_status(
    client: &Client,
    ns: &str,
    name: &str,
    uid: &str,
    status: Value,
) -> Result<(), Status> {
    let uri = format!("{}/status", path("v1", "pods", Some(ns), Some(name)));
    for _ in 0..5 {
        let Some(mut pod) = client.get(&uri).await.map_err(to_status)? else {
            return Err(Status::not_found(format!("pod {ns}/{name} not found")));
        };
        if !uid.is_empty() && meta::uid(&pod) != uid {
            return Err(Status::not_found(format!(
                "pod {ns}/{name} with uid {uid} not found (the stored pod has uid {})",
                meta::uid(&pod)
            )));
        }
        pod["status"] = merge_conditions(&pod["status"], status.clone());
        match client.update(&uri, &pod).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(to_status(e)),
        }
    }
    Err(Status::aborted(format!(
        "pod {ns}/{name} kept changing; try again"
    )))
}

/// The agent owns the pod's status except conditions it does not report
/// (PodScheduled, set by the scheduler; DisruptionTarget): those are kept.
fn merge_conditions(old: &Value, mut new: Value) -> Value {
    let mine: Vec<String> = new["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str().map(str::to_string))
        .collect();
    let kept: Vec<Value> = old["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| !mine.iter().any(|t| c["type"].as_str() == Some(t)))
        .cloned()
        .collect();
    if !kept.is_empty() {
        let mut all = kept;
        all.extend(new["conditions"].as_array().cloned().unwrap_or_default());
        new["conditions"] = Value::Array(all);
    }
    new
}

/// The initial snapshot (when `from` is 0) and then the watch, as PodEvents.
/// `node`'s pods: with `from` 0, a snapshot (ADDED each, then SYNCED)
/// and the changes after it; else the changes after `from`. Served by the
/// replica's [`PodRouter`] when it still holds what came after the
/// snapshot or `from`, else by an API watch of its own from history. The
/// caller must be allowed to watch pods with the node's field selector.
async fn pod_stream(
    client: &Client,
    router: &PodRouter,
    node: &str,
    from: i64,
) -> Result<EventStream, Status> {
    let selector = format!("fieldSelector=spec.nodeName%3D{node}");
    let all_pods = path("v1", "pods", None, None);
    client
        .authorized(
            axum::http::Method::GET,
            &format!("{all_pods}?watch=true&{selector}"),
        )
        .await
        .map_err(to_status)?;
    let mut head: Vec<Result<PodEvent, Status>> = vec![];
    let mut rv = from;
    if from == 0 {
        let list = client
            .list(&format!("{all_pods}?{selector}"))
            .await
            .map_err(to_status)?;
        rv = list["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Status::internal("the pod list has no resourceVersion"))?;
        for mut pod in list["items"].as_array().cloned().unwrap_or_default() {
            pod["kind"] = json!("Pod");
            pod["apiVersion"] = json!("v1");
            head.push(Ok(event(pod_event::Type::Added, &pod)));
        }
        head.push(Ok(PodEvent {
            r#type: pod_event::Type::Synced as i32,
            pod_json: vec![],
            revision: rv,
        }));
    }
    let tail = match router.subscribe(node, rv).await {
        Ok(Some(rx)) => routed(rx, Counted::start(client.api().metrics.clone())),
        Ok(None) => {
            tracing::info!(
                node,
                from = rv,
                "node pod stream served from history (older than the router's window)"
            );
            watched(client, &all_pods, &selector, rv).await?
        }
        Err(e) => return Err(api_status(e)),
    };
    // The API ends a watch (timeout, lost quorum): say so, so the agent
    // resumes elsewhere instead of waiting on a finished stream.
    let end = futures::stream::once(async {
        Err(Status::unavailable(
            "the pod watch ended on this replica; resume from the last revision",
        ))
    });
    Ok(Box::pin(futures::stream::iter(head).chain(tail).chain(end)))
}

/// The router's deliveries as node events, each pod encoded once here,
/// from its stored bytes with its resourceVersion spliced in.
/// `count` keeps it in the API's open-watch count while it lives.
fn routed(rx: tokio::sync::mpsc::Receiver<pod_router::Item>, count: Counted) -> EventStream {
    let items = tokio_stream::wrappers::ReceiverStream::new(rx);
    Box::pin(items.filter_map(move |item| {
        let _counted = &count;
        async move {
            let (t, d) = match item {
                pod_router::Item::Bookmark(revision) => {
                    return Some(Ok(PodEvent {
                        r#type: pod_event::Type::Bookmark as i32,
                        pod_json: vec![],
                        revision,
                    }))
                }
                pod_router::Item::Pod(d) => (
                    match d.change {
                        pod_router::Change::Added => pod_event::Type::Added,
                        pod_router::Change::Modified => pod_event::Type::Modified,
                        pod_router::Change::Deleted => pod_event::Type::Deleted,
                    },
                    d,
                ),
            };
            let mut pod_json = Vec::with_capacity(d.kv.value.len() + 32);
            // Stored bytes that are not JSON are skipped, as the API's watch skips them.
            crate::storage::write_object(&mut pod_json, &d.kv.key, &d.kv.value, d.revision).ok()?;
            Some(Ok(PodEvent {
                r#type: t as i32,
                pod_json,
                revision: d.revision,
            }))
        }
    }))
}

/// An API watch of its own from `rv`, for a revision the router no
/// longer holds.
async fn watched(
    client: &Client,
    all_pods: &str,
    selector: &str,
    rv: i64,
) -> Result<EventStream, Status> {
    let watch = client
        .watch(all_pods, selector, &rv.to_string())
        .await
        .map_err(to_status)?;
    Ok(Box::pin(watch.map(|ev| match ev.kind.as_str() {
        "ADDED" => Ok(event(pod_event::Type::Added, &ev.object)),
        "MODIFIED" => Ok(event(pod_event::Type::Modified, &ev.object)),
        "DELETED" => Ok(event(pod_event::Type::Deleted, &ev.object)),
        "BOOKMARK" => Ok(PodEvent {
            r#type: pod_event::Type::Bookmark as i32,
            pod_json: vec![],
            revision: revision_of(&ev.object),
        }),
        _ => Err(watch_error(&ev.object)),
    })))
}

fn api_status(e: ApiError) -> Status {
    to_status(ClientError {
        code: e.code,
        reason: e.reason.to_string(),
        message: e.message,
    })
}

fn event(t: pod_event::Type, pod: &Value) -> PodEvent {
    PodEvent {
        r#type: t as i32,
        pod_json: pod.to_string().into_bytes(),
        revision: revision_of(pod),
    }
}

fn revision_of(obj: &Value) -> i64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn watch_error(status: &Value) -> Status {
    let msg = status["message"]
        .as_str()
        .unwrap_or("watch error")
        .to_string();
    match status["code"].as_i64() {
        Some(410) => Status::out_of_range(msg),
        _ => Status::unavailable(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks() {
        let c = PodCidrs::default();
        assert_eq!(c.block(0), "127.16.0.0/24");
        assert_eq!(c.block(257), "127.17.1.0/24");
        let p = PodCidrs::parse("10.42.0.0/16").unwrap();
        assert_eq!(p.blocks(), 256);
        assert_eq!(p.block(3), "10.42.3.0/24");
        assert!(PodCidrs::parse("10.42.0.0/25").is_err());
        assert!(PodCidrs::parse("x/16").is_err());
    }

    #[test]
    fn scheduler_conditions_survive_an_agent_report() {
        let old = json!({"conditions": [{"type": "PodScheduled", "status": "True"},
                                        {"type": "Ready", "status": "False"}]});
        let new = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        let m = merge_conditions(&old, new);
        let types: Vec<&str> = m["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["PodScheduled", "Ready"]);
        assert_eq!(m["conditions"][1]["status"], "True");
    }
}
