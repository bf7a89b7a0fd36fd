//! The per-pod sync loop.
//!
//! Every `sync_interval` (and on every pod change) the worker: adopts the
//! pod's containers from the runtime (first pass only: an agent restart
//! never starts duplicates), allocates the pod IP, prepares volumes, runs
//! the init containers one at a time to completion, then keeps the app
//! containers running per the restart policy, and reports the status when
//! it changed. A pod with a deletionTimestamp (or gone from the API) is
//! terminated: containers stopped with the grace period, pod directory and
//! IP released, and, unless the API already deleted it, `DeletePod`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use keel_proto::keelnode::PodStatusReport;
use serde_json::Value;
use tokio::sync::watch;
use tonic::Code;

use super::container::{PodCtx, Policy, Run};
use super::env::Addresses;
use super::objects::Objects;
use super::projected::Projection;
use super::state::PodState;
use super::status::{self, Conditions, Snapshot};
use super::{network, volumes};
use crate::agent::events::Kind as EventKind;
use crate::agent::{time, Ctx};

/// What the manager tells a worker.
#[derive(Debug, Clone)]
pub enum Signal {
    /// The latest version of the pod.
    Pod(Box<Pod>),
    /// The pod no longer exists in the API (or left this node).
    Gone,
}

const DEFAULT_GRACE_S: i64 = 30;
/// Longest wait before volume setup is tried again: a claim binds or a
/// ConfigMap appears within moments, and the pod should start soon after
/// (the kubelet's volume manager retries within about 2 s at first).
const SETUP_RETRY_MAX: Duration = Duration::from_secs(2);

/// How soon a failed token refresh is tried again (the current token
/// still has a fifth of its lifetime left).
const TOKEN_RETRY: Duration = Duration::from_secs(10);

/// Runs the worker of pod `uid` until the pod is terminated (or the agent
/// shuts down: then it just stops). Sets `finished` once terminated.
pub async fn run(
    ctx: Arc<Ctx>,
    uid: String,
    rx: watch::Receiver<Signal>,
    finished: Arc<AtomicBool>,
) {
    let pod = match &*rx.borrow() {
        Signal::Pod(p) => (**p).clone(),
        Signal::Gone => return,
    };
    let mut w = Worker::new(ctx, uid, pod, rx);
    if w.main().await {
        finished.store(true, Ordering::SeqCst);
    }
}

struct Worker {
    ctx: Arc<Ctx>,
    uid: String,
    pod: Pod,
    rx: watch::Receiver<Signal>,
    dir: PathBuf,
    addrs: Option<Addresses>,
    volumes: Option<BTreeMap<String, PathBuf>>,
    /// When projected tokens must be requested again.
    token_refresh: Option<Instant>,
    /// Why containers cannot start yet (volume setup failed), retried.
    blocked: Option<(String, String)>,
    next_setup: Instant,
    adopted: bool,
    /// Netns mode: the pod's namespace and veth are in place.
    net_ready: bool,
    inits: Vec<Run>,
    apps: Vec<Run>,
    init_done: bool,
    init_failed: bool,
    state: PodState,
    conditions: Conditions,
    start_time: String,
    last_reported: Option<Value>,
}

impl Worker {
    fn new(ctx: Arc<Ctx>, uid: String, pod: Pod, rx: watch::Receiver<Signal>) -> Self {
        let dir = ctx.pod_dir(&uid);
        let state = PodState::load(&dir);
        let spec = pod.spec.clone().unwrap_or_default();
        let mut inits: Vec<Run> = spec
            .init_containers
            .unwrap_or_default()
            .into_iter()
            .map(|c| Run::new(c, &ctx))
            .collect();
        let mut apps: Vec<Run> = spec
            .containers
            .into_iter()
            .map(|c| Run::new(c, &ctx))
            .collect();
        for r in inits.iter_mut().chain(apps.iter_mut()) {
            r.restart_count = state.restart_counts.get(r.name()).copied().unwrap_or(0);
            r.last_terminated = state.last_terminated.get(r.name()).cloned();
        }
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(time::now);
        Worker {
            conditions: Conditions::from_pod(&pod),
            init_done: state.init_done || inits.is_empty(),
            ctx,
            uid,
            pod,
            rx,
            dir,
            addrs: None,
            volumes: None,
            token_refresh: None,
            blocked: None,
            next_setup: Instant::now(),
            adopted: false,
            net_ready: false,
            inits,
            apps,
            init_failed: false,
            state,
            start_time,
            last_reported: None,
        }
    }

    /// The loop; true when the pod was terminated, false on agent shutdown.
    async fn main(&mut self) -> bool {
        loop {
            let signal = self.rx.borrow_and_update().clone();
            match signal {
                Signal::Gone => {
                    self.terminate(true).await;
                    return true;
                }
                Signal::Pod(p) => {
                    self.set_pod(*p);
                    if self.pod.metadata.deletion_timestamp.is_some() {
                        self.terminate(false).await;
                        return true;
                    }
                }
            }
            self.sync().await;
            self.report().await;
            tokio::select! {
                r = self.rx.changed() => {
                    if r.is_err() && !matches!(*self.rx.borrow(), Signal::Gone) {
                        return false;
                    }
                }
                () = tokio::time::sleep(self.ctx.cfg.sync_interval) => {}
            }
        }
    }

    /// Takes a new pod version; container specs follow by name.
    fn set_pod(&mut self, pod: Pod) {
        if let Some(spec) = &pod.spec {
            let all = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten());
            for c in all {
                if let Some(r) = self
                    .inits
                    .iter_mut()
                    .chain(self.apps.iter_mut())
                    .find(|r| r.name() == c.name)
                {
                    r.spec = c.clone();
                }
            }
        }
        self.pod = pod;
    }

    fn pod_ctx(&self) -> Option<PodCtx<'_>> {
        let grace = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds);
        Some(PodCtx {
            ctx: &self.ctx,
            pod: &self.pod,
            pod_dir: &self.dir,
            addrs: self.addrs.as_ref()?,
            volumes: self.volumes.as_ref()?,
            policy: Policy::of(&self.pod),
            grace_ms: grace_ms(grace),
        })
    }

    async fn sync(&mut self) {
        if self.addrs.is_none() {
            self.addrs = Some(self.allocate_ip());
        }
        if !self.adopted {
            self.adopt().await;
        }
        if !self.net_ready && !self.prepare_network().await {
            return;
        }
        if self.volumes.is_none() && !self.prepare_volumes().await {
            return;
        }
        self.refresh_tokens().await;
        let phase = status::phase(&self.apps, self.init_done, self.init_failed);
        if phase == "Succeeded" || phase == "Failed" {
            return;
        }
        let dirty = match self.init_done {
            false => self.sync_inits().await,
            true => self.sync_apps().await,
        };
        if dirty {
            self.save_state();
        }
    }

    fn allocate_ip(&self) -> Addresses {
        let host_ip = self.ctx.cfg.node_ip.to_string();
        let host_network = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let ip = match host_network {
            true => None,
            false => self
                .ctx
                .ipam
                .lock()
                .ok()
                .and_then(|mut i| i.allocate(&self.uid)),
        };
        Addresses {
            pod_ip: ip.map_or_else(|| host_ip.clone(), |ip| ip.to_string()),
            host_ip,
        }
    }

    /// Takes over this pod's containers from the runtime (agent restart).
    async fn adopt(&mut self) {
        let list = match self.ctx.runtime().list().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list containers");
                return;
            }
        };
        self.adopted = true;
        let mine: Vec<_> = list
            .into_iter()
            .filter(|c| c.spec.pod_uid == self.uid)
            .collect();
        // `list` is oldest first: the last instance of a name is current.
        let mut latest: BTreeMap<String, crate::runtime::ContainerInfo> = BTreeMap::new();
        for info in mine {
            if let Some(old) = latest.insert(info.spec.container_name.clone(), info) {
                self.discard(old).await;
            }
        }
        for (name, info) in latest {
            match self
                .inits
                .iter_mut()
                .chain(self.apps.iter_mut())
                .find(|r| r.name() == name)
            {
                Some(run) => run.adopt(info),
                None => self.discard(info).await,
            }
        }
        if self.apps.iter().any(|r| r.id.is_some()) {
            self.init_done = true;
        }
    }

    async fn discard(&self, info: crate::runtime::ContainerInfo) {
        let rt = self.ctx.runtime();
        if info.state.is_running() {
            let _ = rt.stop(&info.id, grace_ms(None)).await;
        }
        let _ = rt.remove(&info.id).await;
    }

    /// Netns mode: the pod's IP and namespace; false (and a waiting reason)
    /// while that fails. Done at once elsewhere.
    async fn prepare_network(&mut self) -> bool {
        if !network::needs_netns(&self.ctx, &self.pod) {
            self.net_ready = true;
            return true;
        }
        if Instant::now() < self.next_setup {
            return false;
        }
        match network::setup(&self.ctx, &self.uid).await {
            Ok(ip) => {
                if let Some(a) = self.addrs.as_mut() {
                    a.pod_ip = ip.to_string();
                }
                self.net_ready = true;
                self.blocked = None;
                true
            }
            Err(msg) => {
                if self.blocked.as_ref().map(|b| &b.1) != Some(&msg) {
                    self.ctx.events.pod(
                        &self.pod,
                        None,
                        EventKind::Warning,
                        "FailedCreatePodSandBox",
                        &msg,
                    );
                }
                self.blocked = Some(("ContainerCreating".into(), msg));
                self.next_setup = Instant::now() + self.ctx.cfg.backoff_base.min(SETUP_RETRY_MAX);
                false
            }
        }
    }

    /// Prepares volumes; false (and a waiting reason) while that fails.
    async fn prepare_volumes(&mut self) -> bool {
        if Instant::now() < self.next_setup {
            return false;
        }
        let ns = self
            .pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let mut objs = Objects::new(&self.ctx.client, &ns);
        let Some(addrs) = self.addrs.as_ref() else {
            return false;
        };
        let projection = Projection {
            pod: &self.pod,
            addrs,
            tokens: &self.ctx.api,
        };
        match volumes::prepare(&self.dir, &mut objs, &projection).await {
            Ok(v) => {
                self.volumes = Some(v.dirs);
                self.token_refresh = v.refresh_at;
                self.blocked = None;
                true
            }
            Err(msg) => {
                if self.blocked.as_ref().map(|b| &b.1) != Some(&msg) {
                    self.ctx
                        .events
                        .pod(&self.pod, None, EventKind::Warning, "FailedMount", &msg);
                }
                self.blocked = Some(("ContainerCreating".into(), msg));
                self.next_setup = Instant::now() + self.ctx.cfg.backoff_base.min(SETUP_RETRY_MAX);
                false
            }
        }
    }

    /// Writes projected tokens again once due. A failure keeps the current
    /// (still valid) files, is reported as an event, and is retried soon.
    async fn refresh_tokens(&mut self) {
        if self.token_refresh.is_none_or(|at| Instant::now() < at) {
            return;
        }
        let Some(addrs) = self.addrs.as_ref() else {
            return;
        };
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let mut objs = Objects::new(&self.ctx.client, &ns);
        let projection = Projection {
            pod: &self.pod,
            addrs,
            tokens: &self.ctx.api,
        };
        match volumes::refresh(&self.dir, &mut objs, &projection).await {
            Ok(next) => self.token_refresh = next,
            Err(msg) => {
                tracing::warn!(pod = %self.uid, error = %msg, "refreshing service account tokens");
                self.ctx
                    .events
                    .pod(&self.pod, None, EventKind::Warning, "FailedMount", &msg);
                self.token_refresh = Some(Instant::now() + TOKEN_RETRY);
            }
        }
    }

    /// Runs init containers in order; true when persisted state changed.
    async fn sync_inits(&mut self) -> bool {
        let mut inits = std::mem::take(&mut self.inits);
        let Some(pc) = self.pod_ctx() else {
            self.inits = inits;
            return false;
        };
        let policy = pc.policy.for_init();
        let mut dirty = false;
        let mut done = true;
        let mut failed = false;
        for run in &mut inits {
            if run.succeeded() {
                continue;
            }
            dirty |= run.sync(&pc, policy).await;
            if run.succeeded() {
                continue;
            }
            done = false;
            failed = run.terminal();
            break;
        }
        self.inits = inits;
        if done {
            self.init_done = true;
            dirty = true;
        }
        self.init_failed = failed;
        dirty
    }

    async fn sync_apps(&mut self) -> bool {
        let mut apps = std::mem::take(&mut self.apps);
        let Some(pc) = self.pod_ctx() else {
            self.apps = apps;
            return false;
        };
        let policy = pc.policy;
        let mut dirty = false;
        for run in &mut apps {
            dirty |= run.sync(&pc, policy).await;
        }
        self.apps = apps;
        dirty
    }

    fn save_state(&mut self) {
        for r in self.inits.iter().chain(self.apps.iter()) {
            self.state
                .restart_counts
                .insert(r.name().to_string(), r.restart_count);
            if let Some(t) = &r.last_terminated {
                self.state
                    .last_terminated
                    .insert(r.name().to_string(), t.clone());
            }
        }
        self.state.init_done = self.init_done;
        self.state.save(&self.dir);
    }

    fn status(&mut self) -> Value {
        let phase = status::phase(&self.apps, self.init_done, self.init_failed);
        self.update_conditions(phase);
        let pod_ip = self.addrs.as_ref().map(|a| a.pod_ip.clone());
        status::status_json(&Snapshot {
            pod: &self.pod,
            phase,
            conditions: &self.conditions,
            inits: &self.inits,
            apps: &self.apps,
            init_done: self.init_done,
            pod_ip,
            host_ip: self.ctx.cfg.node_ip.to_string(),
            start_time: &self.start_time,
            blocked: self.blocked.as_ref(),
        })
    }

    fn update_conditions(&mut self, phase: &str) {
        let c = &mut self.conditions;
        c.set("PodScheduled", true, "", "");
        c.set("PodReadyToStartContainers", self.volumes.is_some(), "", "");
        let pending_inits: Vec<&str> = self
            .inits
            .iter()
            .filter(|r| !r.succeeded())
            .map(Run::name)
            .collect();
        match self.init_done {
            true => c.set("Initialized", true, "", ""),
            false => c.set(
                "Initialized",
                false,
                "ContainersNotInitialized",
                &format!(
                    "containers with incomplete status: [{}]",
                    pending_inits.join(" ")
                ),
            ),
        }
        let unready: Vec<&str> = self
            .apps
            .iter()
            .filter(|r| !r.ready)
            .map(Run::name)
            .collect();
        let (ready, reason, message) = match (phase, unready.is_empty()) {
            ("Succeeded" | "Failed", _) => (false, "PodCompleted", String::new()),
            (_, true) => (true, "", String::new()),
            (_, false) => (
                false,
                "ContainersNotReady",
                format!("containers with unready status: [{}]", unready.join(" ")),
            ),
        };
        c.set("ContainersReady", ready, reason, &message);
        c.set("Ready", ready, reason, &message);
    }

    /// Sends the status when it differs from the last one sent.
    async fn report(&mut self) {
        let status = self.status();
        if self.last_reported.as_ref() == Some(&status) {
            return;
        }
        let m = &self.pod.metadata;
        let report = PodStatusReport {
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone().unwrap_or_default(),
            uid: self.uid.clone(),
            status_json: status.to_string().into_bytes(),
        };
        match self.ctx.client.report_status(report).await {
            Ok(()) => self.last_reported = Some(status),
            // The pod is gone: the watch will say so; do not retry.
            Err(s) if s.code() == Code::NotFound => self.last_reported = Some(status),
            Err(s) => {
                tracing::warn!(pod = ?m.name, code = ?s.code(), error = %s.message(), "status report failed; will retry")
            }
        }
    }

    /// Stops everything of the pod and removes it (see the module docs).
    async fn terminate(&mut self, api_deleted: bool) {
        if !self.adopted {
            self.adopt().await;
        }
        let m = &self.pod.metadata;
        let grace = m.deletion_grace_period_seconds.or(self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds));
        let grace_ms = grace_ms(grace);
        let addrs = self.addrs.clone().unwrap_or_else(|| Addresses {
            pod_ip: String::new(),
            host_ip: String::new(),
        });
        let empty = BTreeMap::new();
        let pc = PodCtx {
            ctx: &self.ctx,
            pod: &self.pod,
            pod_dir: &self.dir,
            addrs: &addrs,
            volumes: &empty,
            policy: Policy::Never,
            grace_ms,
        };
        let mut runs = std::mem::take(&mut self.apps);
        runs.append(&mut self.inits);
        futures::future::join_all(runs.iter_mut().map(|r| r.stop(&pc))).await;
        self.apps = runs;
        self.remove_everything().await;
        if !api_deleted {
            self.report().await;
            self.delete_from_api().await;
        }
        self.ctx.index.remove(&self.uid);
    }

    async fn remove_everything(&self) {
        let rt = self.ctx.runtime();
        if let Ok(list) = rt.list().await {
            for c in list.into_iter().filter(|c| c.spec.pod_uid == self.uid) {
                if c.state.is_running() {
                    let _ = rt.stop(&c.id, 0).await;
                }
                if let Err(e) = rt.remove(&c.id).await {
                    tracing::warn!(container = %c.id, error = %e, "cannot remove container");
                }
            }
        }
        // Before the directory: the namespace pin is a mount inside it.
        network::teardown(&self.ctx, &self.uid).await;
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove pod directory");
            }
        }
        if let Ok(mut ipam) = self.ctx.ipam.lock() {
            ipam.release(&self.uid);
        }
    }

    /// DeletePod until it succeeds, the pod is gone, or the API deleted it.
    async fn delete_from_api(&self) {
        let m = &self.pod.metadata;
        let ns = m.namespace.clone().unwrap_or_else(|| "default".into());
        let name = m.name.clone().unwrap_or_default();
        let mut delay = Duration::from_millis(200);
        loop {
            if matches!(*self.rx.borrow(), Signal::Gone) {
                return;
            }
            match self.ctx.client.delete_pod(&ns, &name, &self.uid).await {
                Ok(()) => return,
                Err(s) if s.code() == Code::NotFound => return,
                Err(s) => {
                    tracing::warn!(pod = %name, code = ?s.code(), error = %s.message(), "DeletePod failed; retrying")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

fn grace_ms(seconds: Option<i64>) -> u64 {
    let s = seconds.unwrap_or(DEFAULT_GRACE_S).max(0);
    u64::try_from(s).unwrap_or(0).saturating_mul(1000)
}
