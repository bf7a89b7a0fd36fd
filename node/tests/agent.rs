//! End-to-end tests of the agent against an in-memory fake of the control
//! plane's NodeService (no control plane needed). Containers run on the
//! exec runtime through this crate's `keel-node-images` binary. Every test
//! has its own pod CIDR inside 127.16.0.0/12, so pods bind distinct
//! loopback addresses; nothing leaves 127.0.0.0/8.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use keel_node::agent::{self, AgentConfig};
use keel_node::runtime::Runtime;
use keel_proto::keelnode::agent_service_client::AgentServiceClient;
use keel_proto::keelnode::node_service_server::{NodeService, NodeServiceServer};
use keel_proto::keelnode::{
    pod_event, DeletePodRequest, EventReport, GetObjectRequest, GetObjectResponse,
    HeartbeatRequest, HeartbeatResponse, LogsRequest, PodEvent, PodStatusReport, RegisterRequest,
    RegisterResponse, ReportResponse, WatchPodsRequest,
};
use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot};
use tonic::{Request, Response, Status};

// ---------------------------------------------------------------- fake ----

#[derive(Default)]
struct State {
    rev: i64,
    pods: BTreeMap<String, Value>,
    history: Vec<PodEvent>,
    objects: HashMap<(String, String), Value>,
    reports: Vec<(String, Value, Instant)>,
    events: Vec<Value>,
    deletes: Vec<String>,
    node: Option<Value>,
    heartbeats: usize,
    watch_from: Vec<i64>,
}

#[derive(Clone)]
struct Fake {
    state: Arc<Mutex<State>>,
    tx: broadcast::Sender<PodEvent>,
    cidr: String,
}

impl Fake {
    fn new(cidr: &str) -> Self {
        Fake {
            state: Arc::default(),
            tx: broadcast::channel(1024).0,
            cidr: cidr.into(),
        }
    }

    fn emit(&self, s: &mut State, kind: pod_event::Type, pod: &Value) {
        s.rev += 1;
        let ev = PodEvent {
            r#type: kind as i32,
            pod_json: pod.to_string().into_bytes(),
            revision: s.rev,
        };
        s.history.push(ev.clone());
        let _ = self.tx.send(ev);
    }

    fn add_pod(&self, mut pod: Value) -> String {
        let uid = format!("uid-{}", pod["metadata"]["name"].as_str().unwrap());
        pod["metadata"]["uid"] = json!(uid);
        pod["metadata"]["namespace"] = json!("default");
        pod["spec"]["nodeName"] = json!("node-a");
        let mut s = self.state.lock().unwrap();
        s.pods.insert(uid.clone(), pod.clone());
        self.emit(&mut s, pod_event::Type::Added, &pod);
        uid
    }

    /// Breaks every open watch stream with UNAVAILABLE.
    fn kick(&self) {
        let _ = self.tx.send(PodEvent {
            r#type: 0,
            pod_json: vec![],
            revision: KICK,
        });
    }

    fn mark_deleted(&self, uid: &str) {
        let mut s = self.state.lock().unwrap();
        let mut pod = s.pods[uid].clone();
        pod["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(2);
        s.pods.insert(uid.into(), pod.clone());
        self.emit(&mut s, pod_event::Type::Modified, &pod);
    }

    fn status(&self, uid: &str) -> Value {
        self.state
            .lock()
            .unwrap()
            .pods
            .get(uid)
            .map(|p| p["status"].clone())
            .unwrap_or(Value::Null)
    }

    fn statuses(&self, uid: &str) -> Vec<(Value, Instant)> {
        let s = self.state.lock().unwrap();
        s.reports
            .iter()
            .filter(|r| r.0 == uid)
            .map(|r| (r.1.clone(), r.2))
            .collect()
    }

    fn event_reasons(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.events
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn logs_port(&self) -> u16 {
        let s = self.state.lock().unwrap();
        let node = s.node.as_ref().expect("registered");
        node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .unwrap() as u16
    }
}

const KICK: i64 = -1;

type EventStream = Pin<Box<dyn Stream<Item = Result<PodEvent, Status>> + Send>>;

#[tonic::async_trait]
impl NodeService for Fake {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let mut node: Value = serde_json::from_slice(&req.into_inner().node_json).unwrap();
        node["spec"]["podCIDR"] = json!(self.cidr);
        self.state.lock().unwrap().node = Some(node.clone());
        Ok(Response::new(RegisterResponse {
            node_json: node.to_string().into_bytes(),
        }))
    }

    async fn heartbeat(
        &self,
        _: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.state.lock().unwrap().heartbeats += 1;
        Ok(Response::new(HeartbeatResponse {}))
    }

    type WatchPodsStream = EventStream;

    async fn watch_pods(
        &self,
        req: Request<WatchPodsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let from = req.into_inner().from_revision;
        let rx = self.tx.subscribe();
        let mut s = self.state.lock().unwrap();
        s.watch_from.push(from);
        let mut initial: Vec<PodEvent> = Vec::new();
        if from == 0 {
            for pod in s.pods.values() {
                initial.push(PodEvent {
                    r#type: pod_event::Type::Added as i32,
                    pod_json: pod.to_string().into_bytes(),
                    revision: s.rev,
                });
            }
            initial.push(PodEvent {
                r#type: pod_event::Type::Synced as i32,
                pod_json: vec![],
                revision: s.rev,
            });
        } else {
            initial.extend(s.history.iter().filter(|e| e.revision > from).cloned());
        }
        let last = s.rev;
        let live =
            tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |e| async move {
                match e.ok()? {
                    // A kick (see `Fake::kick`) breaks the stream.
                    e if e.revision == KICK => Some(Err(Status::unavailable("kicked"))),
                    e => (e.revision > last).then_some(Ok(e)),
                }
            });
        let stream = futures::stream::iter(initial.into_iter().map(Ok)).chain(live);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_pod_status(
        &self,
        req: Request<PodStatusReport>,
    ) -> Result<Response<ReportResponse>, Status> {
        let r = req.into_inner();
        let status: Value = serde_json::from_slice(&r.status_json).unwrap();
        let mut s = self.state.lock().unwrap();
        let Some(pod) = s.pods.get_mut(&r.uid) else {
            return Err(Status::not_found("no such pod"));
        };
        pod["status"] = status.clone();
        s.reports.push((r.uid, status, Instant::now()));
        Ok(Response::new(ReportResponse {}))
    }

    async fn delete_pod(
        &self,
        req: Request<DeletePodRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let r = req.into_inner();
        let mut s = self.state.lock().unwrap();
        s.deletes.push(r.uid.clone());
        if let Some(pod) = s.pods.remove(&r.uid) {
            self.emit(&mut s, pod_event::Type::Deleted, &pod);
        }
        Ok(Response::new(ReportResponse {}))
    }

    async fn get_object(
        &self,
        req: Request<GetObjectRequest>,
    ) -> Result<Response<GetObjectResponse>, Status> {
        let r = req.into_inner();
        let s = self.state.lock().unwrap();
        match s.objects.get(&(r.kind, r.name)) {
            Some(o) => Ok(Response::new(GetObjectResponse {
                object_json: o.to_string().into_bytes(),
            })),
            None => Err(Status::not_found("not found")),
        }
    }

    async fn record_event(
        &self,
        req: Request<EventReport>,
    ) -> Result<Response<ReportResponse>, Status> {
        let ev: Value = serde_json::from_slice(&req.into_inner().event_json).unwrap();
        self.state.lock().unwrap().events.push(ev);
        Ok(Response::new(ReportResponse {}))
    }
}

async fn serve_fake(fake: Fake) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(NodeServiceServer::new(fake))
            .serve_with_incoming(incoming),
    );
    addr
}

// ------------------------------------------------------------- harness ----

struct Agent {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Agent {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

fn runtime(root: &Path) -> Arc<dyn Runtime> {
    // The previous agent's runtime may take a moment to release its lock.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match agent::exec_runtime(
            root,
            PathBuf::from(env!("CARGO_BIN_EXE_keel-node-images")),
            None,
        ) {
            Ok(rt) => return rt,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("runtime: {e}"),
        }
    }
}

fn start_agent(server: SocketAddr, root: &Path, rt: Arc<dyn Runtime>) -> Agent {
    // The first server refuses connections: the agent must fail over.
    let servers = vec!["http://127.0.0.1:1".to_string(), format!("http://{server}")];
    let mut cfg = AgentConfig::new("node-a", servers, root, rt);
    cfg.listen_logs = "127.0.0.1:0".parse().unwrap();
    cfg.heartbeat_interval = Duration::from_secs(1);
    cfg.backoff_base = Duration::from_secs(1);
    cfg.backoff_cap = Duration::from_secs(8);
    cfg.sync_interval = Duration::from_millis(200);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(agent::run(cfg, async move {
        let _ = rx.await;
    }));
    Agent {
        stop: Some(tx),
        task,
    }
}

/// Stops the agent, then every container it left running.
async fn cleanup(agent: Agent, rt: &Arc<dyn Runtime>) {
    agent.stop().await;
    // A start aborted by the shutdown may still be completing: repeat.
    for _ in 0..20 {
        let list = rt.list().await.unwrap();
        if list.is_empty() {
            return;
        }
        for c in list {
            let _ = rt.stop(&c.id, 0).await;
            let _ = rt.remove(&c.id).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for(what: &str, secs: u64, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pod(name: &str, containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers, "terminationGracePeriodSeconds": 2}})
}

fn sh(name: &str, script: &str) -> Value {
    json!({"name": name, "image": "keel/host", "command": ["sh", "-c", script]})
}

fn condition(status: &Value, kind: &str) -> String {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

async fn setup(cidr: &str) -> (Fake, tempfile::TempDir, Arc<dyn Runtime>, Agent) {
    let fake = Fake::new(cidr);
    let addr = serve_fake(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let agent = start_agent(addr, dir.path(), rt.clone());
    (fake, dir, rt, agent)
}

async fn read_logs(fake: &Fake, req: LogsRequest) -> Result<String, Status> {
    let mut client = AgentServiceClient::connect(format!("http://127.0.0.1:{}", fake.logs_port()))
        .await
        .unwrap();
    let mut stream = client.logs(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend(chunk?.data);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn logs_req(pod: &str, container: &str) -> LogsRequest {
    LogsRequest {
        namespace: "default".into(),
        pod: pod.into(),
        container: container.into(),
        tail_lines: -1,
        ..Default::default()
    }
}

// --------------------------------------------------------------- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_pod_becomes_ready_and_serves_on_its_pod_ip() {
    let (fake, _dir, rt, agent) = setup("127.16.1.0/24").await;
    let probe = json!({"httpGet": {"port": "http", "path": "/healthz"}, "periodSeconds": 1});
    let c = json!({"name": "web", "image": "keel/echo", "ports": [{"name": "http", "containerPort": 8080}], "readinessProbe": probe});
    let uid = fake.add_pod(pod("echo", json!([c])));
    wait_for("Ready", 20, || {
        condition(&fake.status(&uid), "Ready") == "True"
    })
    .await;
    let status = fake.status(&uid);
    assert_eq!(status["phase"], "Running");
    let ip = status["podIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("127.16.1."), "{ip}");
    assert_eq!(status["hostIP"], "127.0.0.1");
    assert_eq!(status["qosClass"], "BestEffort");
    let cs = &status["containerStatuses"][0];
    assert!(cs["containerID"].as_str().unwrap().starts_with("exec://"));
    assert_eq!(
        (cs["ready"].clone(), cs["restartCount"].clone()),
        (json!(true), json!(0))
    );
    let body = http_get(&format!("{ip}:8080"), "/x").await;
    assert!(
        body.contains("pod=echo namespace=default path=/x"),
        "{body}"
    );
    let reasons = fake.event_reasons();
    for r in ["Pulled", "Created", "Started"] {
        assert!(reasons.iter().any(|x| x == r), "{reasons:?}");
    }
    assert!(fake.state.lock().unwrap().heartbeats >= 1);
    cleanup(agent, &rt).await;
}

async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_from_downward_api_and_config_map_reaches_the_container_log() {
    let (fake, _dir, rt, agent) = setup("127.16.2.0/24").await;
    fake.state.lock().unwrap().objects.insert(
        ("ConfigMap".into(), "cfg".into()),
        json!({"metadata": {"name": "cfg"}, "data": {"color": "blue"}}),
    );
    let mut c = sh(
        "main",
        "echo NAME=$MY_NAME COLOR=$COLOR IP=$POD_IP; sleep 3600",
    );
    c["env"] = json!([
        {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
    ]);
    let uid = fake.add_pod(pod("envpod", json!([c, sh("side", "sleep 3600")])));
    wait_for("Running", 20, || fake.status(&uid)["phase"] == "Running").await;
    let ip = fake.status(&uid)["podIP"].as_str().unwrap().to_string();
    let mut log = String::new();
    for _ in 0..100 {
        log = read_logs(&fake, logs_req("envpod", "main")).await.unwrap();
        if !log.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(log, format!("NAME=envpod COLOR=blue IP={ip}\n"));
    let err = read_logs(&fake, logs_req("envpod", "")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("choose one of: [main side]"),
        "{}",
        err.message()
    );
    let err = read_logs(&fake, logs_req("nope", "main"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    cleanup(agent, &rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_config_map_key_is_a_config_error() {
    let (fake, _dir, rt, agent) = setup("127.16.7.0/24").await;
    let mut c = sh("main", "sleep 3600");
    c["env"] =
        json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]);
    let uid = fake.add_pod(pod("cfgerr", json!([c])));
    wait_for("CreateContainerConfigError", 20, || {
        fake.status(&uid)["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    })
    .await;
    assert_eq!(fake.status(&uid)["phase"], "Pending");
    cleanup(agent, &rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_container_backs_off_with_growing_delays() {
    let (fake, _dir, rt, agent) = setup("127.16.3.0/24").await;
    let uid = fake.add_pod(pod("crash", json!([sh("c", "echo boom; exit 1")])));
    wait_for("restartCount 3", 30, || {
        fake.status(&uid)["containerStatuses"][0]["restartCount"].as_u64() >= Some(3)
    })
    .await;
    let reports = fake.statuses(&uid);
    let first_at = |n: u64| {
        reports
            .iter()
            .find(|(s, _)| s["containerStatuses"][0]["restartCount"] == n)
            .map(|r| r.1)
            .unwrap()
    };
    let (t1, t2, t3) = (first_at(1), first_at(2), first_at(3));
    assert!(
        t3 - t2 > t2 - t1,
        "delays must grow: {:?} then {:?}",
        t2 - t1,
        t3 - t2
    );
    let waiting = reports.iter().find_map(|(s, _)| {
        let w = &s["containerStatuses"][0]["state"]["waiting"];
        (w["reason"] == "CrashLoopBackOff").then(|| w["message"].as_str().unwrap().to_string())
    });
    let msg = waiting.expect("a CrashLoopBackOff report");
    assert!(
        msg.starts_with("back-off ") && msg.contains("container=c pod=crash_default"),
        "{msg}"
    );
    let status = fake.status(&uid);
    assert_eq!(
        status["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        1
    );
    assert!(fake.event_reasons().iter().any(|r| r == "BackOff"));
    // The previous instance's log is kept for --previous.
    let mut req = logs_req("crash", "c");
    req.previous = true;
    assert_eq!(read_logs(&fake, req).await.unwrap(), "boom\n");
    cleanup(agent, &rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_readiness_probe_keeps_the_pod_unready() {
    let (fake, _dir, rt, agent) = setup("127.16.4.0/24").await;
    let mut c = sh("c", "sleep 3600");
    c["readinessProbe"] =
        json!({"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1});
    let uid = fake.add_pod(pod("unready", json!([c])));
    wait_for("Running", 20, || fake.status(&uid)["phase"] == "Running").await;
    wait_for("Unhealthy event", 10, || {
        fake.event_reasons().iter().any(|r| r == "Unhealthy")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = fake.status(&uid);
    assert_eq!(condition(&status, "Ready"), "False");
    assert_eq!(condition(&status, "ContainersReady"), "False");
    assert_eq!(status["containerStatuses"][0]["ready"], false);
    assert_eq!(status["containerStatuses"][0]["restartCount"], 0);
    cleanup(agent, &rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_stops_the_containers_and_deletes_the_pod() {
    let (fake, dir, rt, agent) = setup("127.16.5.0/24").await;
    let uid = fake.add_pod(pod("doomed", json!([sh("c", "sleep 3600")])));
    wait_for("Running", 20, || fake.status(&uid)["phase"] == "Running").await;
    assert_eq!(rt.list().await.unwrap().len(), 1);
    fake.mark_deleted(&uid);
    wait_for("DeletePod", 20, || {
        fake.state.lock().unwrap().deletes.contains(&uid)
    })
    .await;
    assert!(
        rt.list().await.unwrap().is_empty(),
        "containers are stopped and removed"
    );
    assert!(!dir.path().join("pods").join(&uid).exists());
    // Events are sent in the background: the Killing event may land after
    // the DeletePod call.
    wait_for("the Killing event", 20, || {
        fake.event_reasons().iter().any(|r| r == "Killing")
    })
    .await;
    cleanup(agent, &rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_readopts_running_containers() {
    let (fake, dir, rt, agent) = setup("127.16.6.0/24").await;
    let uid = fake.add_pod(pod("stay", json!([sh("c", "sleep 3600")])));
    wait_for("Running", 20, || fake.status(&uid)["phase"] == "Running").await;
    let before = fake.status(&uid)["containerStatuses"][0].clone();
    let ip = fake.status(&uid)["podIP"].clone();
    agent.stop().await;
    drop(rt);
    let reports = fake.statuses(&uid).len();
    let rt = runtime(dir.path());
    let addr = serve_fake(fake.clone()).await;
    let agent = start_agent(addr, dir.path(), rt.clone());
    wait_for("a report from the new agent", 20, || {
        fake.statuses(&uid).len() > reports
    })
    .await;
    let status = fake.status(&uid);
    let after = &status["containerStatuses"][0];
    assert_eq!(after["containerID"], before["containerID"]);
    assert_eq!(after["restartCount"], 0);
    assert_eq!(after["state"], before["state"]);
    assert_eq!(status["podIP"], ip);
    assert_eq!(rt.list().await.unwrap().len(), 1, "no duplicate started");
    cleanup(agent, &rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_image_is_err_image_pull_then_back_off() {
    let (fake, _dir, rt, agent) = setup("127.16.8.0/24").await;
    let uid = fake.add_pod(pod(
        "noimg",
        json!([{"name": "c", "image": "example.com/nope:1"}]),
    ));
    let reason = |fake: &Fake| {
        fake.status(&uid)["containerStatuses"][0]["state"]["waiting"]["reason"].clone()
    };
    wait_for("ImagePullBackOff", 20, || {
        reason(&fake) == "ImagePullBackOff"
    })
    .await;
    let seen: Vec<Value> = fake
        .statuses(&uid)
        .iter()
        .map(|(s, _)| s["containerStatuses"][0]["state"]["waiting"]["reason"].clone())
        .collect();
    assert!(seen.contains(&json!("ErrImagePull")), "{seen:?}");
    assert_eq!(fake.status(&uid)["phase"], "Pending");
    assert!(fake.event_reasons().iter().any(|r| r == "Failed"));
    cleanup(agent, &rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_container_fills_an_empty_dir_before_the_app_starts() {
    let (fake, _dir, rt, agent) = setup("127.16.9.0/24").await;
    let mut init = sh("prep", "echo ready > $KEEL_VOLUME_WORK/flag");
    init["volumeMounts"] = json!([{"name": "work", "mountPath": "/work"}]);
    let mut app = sh("app", "cat $KEEL_VOLUME_WORK/flag; sleep 3600");
    app["volumeMounts"] = json!([{"name": "work", "mountPath": "/work"}]);
    let mut p = pod("inits", json!([app]));
    p["spec"]["initContainers"] = json!([init]);
    p["spec"]["volumes"] = json!([{"name": "work", "emptyDir": {}}]);
    let uid = fake.add_pod(p);
    wait_for("Running", 20, || fake.status(&uid)["phase"] == "Running").await;
    let status = fake.status(&uid);
    assert_eq!(condition(&status, "Initialized"), "True");
    assert_eq!(
        status["initContainerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    let mut log = String::new();
    for _ in 0..100 {
        log = read_logs(&fake, logs_req("inits", "app"))
            .await
            .unwrap_or_default();
        if !log.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(log, "ready\n");
    cleanup(agent, &rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_liveness_probe_restarts_the_container() {
    let (fake, _dir, rt, agent) = setup("127.16.10.0/24").await;
    let mut c = sh("c", "sleep 3600");
    c["livenessProbe"] =
        json!({"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2});
    let uid = fake.add_pod(pod("live", json!([c])));
    wait_for("a restart", 20, || {
        fake.status(&uid)["containerStatuses"][0]["restartCount"].as_u64() >= Some(1)
    })
    .await;
    let reasons = fake.event_reasons();
    assert!(
        reasons.iter().any(|r| r == "Killing") && reasons.iter().any(|r| r == "Unhealthy"),
        "{reasons:?}"
    );
    cleanup(agent, &rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policy_never_ends_in_succeeded_or_failed() {
    let (fake, _dir, rt, agent) = setup("127.16.11.0/24").await;
    let mut ok = pod("ok", json!([sh("c", "exit 0")]));
    ok["spec"]["restartPolicy"] = json!("Never");
    let mut bad = pod("bad", json!([sh("c", "exit 3")]));
    bad["spec"]["restartPolicy"] = json!("Never");
    let (ok, bad) = (fake.add_pod(ok), fake.add_pod(bad));
    wait_for("Succeeded", 20, || fake.status(&ok)["phase"] == "Succeeded").await;
    wait_for("Failed", 20, || fake.status(&bad)["phase"] == "Failed").await;
    let status = fake.status(&bad);
    assert_eq!(
        status["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
    assert_eq!(status["containerStatuses"][0]["restartCount"], 0);
    cleanup(agent, &rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_watch_resumes_from_the_last_revision() {
    let (fake, _dir, rt, agent) = setup("127.16.12.0/24").await;
    let first = fake.add_pod(pod("first", json!([sh("c", "sleep 3600")])));
    wait_for("Running", 20, || fake.status(&first)["phase"] == "Running").await;
    fake.kick();
    let second = fake.add_pod(pod("second", json!([sh("c", "sleep 3600")])));
    wait_for("second Running", 20, || {
        fake.status(&second)["phase"] == "Running"
    })
    .await;
    let from = fake.state.lock().unwrap().watch_from.clone();
    assert_eq!(from.first(), Some(&0));
    assert!(
        from.len() >= 2 && from[1] > 0,
        "resumed from a revision: {from:?}"
    );
    assert_eq!(
        rt.list().await.unwrap().len(),
        2,
        "nothing replayed into duplicates"
    );
    cleanup(agent, &rt).await;
}

/// A CA and a serving certificate for 127.0.0.1: (ca_pem, cert_pem, key_pem).
fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_bearer_token_from_a_kubeconfig() {
    use base64::Engine as _;
    use tonic::transport::{Identity, ServerTlsConfig};
    let (ca, cert, key) = test_pki();
    let fake = Fake::new("127.16.13.0/24");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let check = |req: Request<()>| match req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        Some("Bearer s3cret") => Ok(req),
        _ => Err(Status::unauthenticated("bad token")),
    };
    let server = tonic::transport::Server::builder()
        .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
        .unwrap()
        .add_service(NodeServiceServer::with_interceptor(fake.clone(), check))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    let dir = tempfile::tempdir().unwrap();
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(&ca);
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: keel\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca_b64}\nusers:\n- name: admin\n  user:\n    token: s3cret\n"
    );
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
    let auth = agent::read_kubeconfig(&dir.path().join("kubeconfig")).unwrap();
    let rt = runtime(dir.path());
    let mut cfg = AgentConfig::new("node-a", vec![auth.server], dir.path(), rt.clone());
    cfg.token = auth.token;
    cfg.ca_pem = auth.ca_pem;
    cfg.listen_logs = "127.0.0.1:0".parse().unwrap();
    cfg.sync_interval = Duration::from_millis(200);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(agent::run(cfg, async move {
        let _ = rx.await;
    }));
    let agent = Agent {
        stop: Some(tx),
        task,
    };
    let uid = fake.add_pod(pod("secure", json!([sh("c", "sleep 3600")])));
    wait_for("Running over TLS", 20, || {
        fake.status(&uid)["phase"] == "Running"
    })
    .await;
    cleanup(agent, &rt).await;
}
