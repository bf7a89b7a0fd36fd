//! One Kubernetes container of a pod, across its restarts ("a run").
//!
//! Each sync observes the current instance and moves it along:
//! never started → start (after any back-off); running → probes (liveness
//! or startup failure, or a changed image, kills it); exited → decide once
//! whether the restart policy restarts it, wait out the back-off
//! (`CrashLoopBackOff`), start the next instance with `restartCount + 1`.
//! Start failures are waiting states: `CreateContainerConfigError` (env
//! sources), `ErrImagePull` then `ImagePullBackOff`, `RunContainerError`
//! then `CrashLoopBackOff`; all are retried with back-off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};

use super::backoff::Backoff;
use super::env::{self, Addresses};
use super::isolation;
use super::objects::Objects;
use super::probe::{self, ProbeState, Target};
use super::volumes;
use crate::agent::events::Kind as EventKind;
use crate::agent::{time, Ctx};
use crate::runtime::{ContainerId, ContainerInfo, ContainerSpec, ContainerState, RuntimeError};

/// The pod's restart policy, as it applies to one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Always,
    OnFailure,
    Never,
}

impl Policy {
    pub fn of(pod: &Pod) -> Self {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => Policy::Never,
            Some("OnFailure") => Policy::OnFailure,
            _ => Policy::Always,
        }
    }

    /// Init containers are never restarted after success.
    pub fn for_init(self) -> Self {
        match self {
            Policy::Never => Policy::Never,
            _ => Policy::OnFailure,
        }
    }

    fn restarts(self, code: i32) -> bool {
        match self {
            Policy::Always => true,
            Policy::OnFailure => code != 0,
            Policy::Never => false,
        }
    }
}

/// What a run needs to know about its pod during a sync.
pub struct PodCtx<'a> {
    pub ctx: &'a Ctx,
    pub pod: &'a Pod,
    pub pod_dir: &'a Path,
    pub addrs: &'a Addresses,
    pub volumes: &'a BTreeMap<String, PathBuf>,
    pub policy: Policy,
    pub grace_ms: u64,
}

impl PodCtx<'_> {
    pub(crate) fn event(&self, container: &str, kind: EventKind, reason: &str, message: &str) {
        self.ctx
            .events
            .pod(self.pod, Some(container), kind, reason, message);
    }

    /// `name_namespace(uid)`, as the kubelet names pods in messages.
    fn pod_ref(&self) -> String {
        let m = &self.pod.metadata;
        format!(
            "{}_{}({})",
            m.name.as_deref().unwrap_or_default(),
            m.namespace.as_deref().unwrap_or("default"),
            m.uid.as_deref().unwrap_or_default()
        )
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Run {
    pub spec: Container,
    pub id: Option<ContainerId>,
    pub observed: Option<ContainerState>,
    /// Image of the current instance (a changed spec image restarts it).
    instance_image: String,
    /// Environment of the current instance (exec probes use it).
    instance_env: Vec<(String, String)>,
    /// Manifest digest of the current instance's store image, if any.
    instance_digest: Option<String>,
    pub restart_count: u32,
    /// `ContainerStateTerminated` of the previous instance.
    pub last_terminated: Option<Value>,
    /// Why no instance runs (reason, message).
    pub waiting: Option<(String, String)>,
    next_start: Option<Instant>,
    backoff: Backoff,
    image_backoff: Backoff,
    probes: Vec<ProbeState>,
    pub started: bool,
    pub ready: bool,
    /// The current instance's exit was handled (restart decided).
    exit_handled: bool,
    pub will_restart: bool,
}

impl Run {
    pub fn new(spec: Container, ctx: &Ctx) -> Self {
        let c = &ctx.cfg;
        Run {
            instance_image: spec.image.clone().unwrap_or_default(),
            spec,
            id: None,
            observed: None,
            instance_env: Vec::new(),
            instance_digest: None,
            restart_count: 0,
            last_terminated: None,
            waiting: None,
            next_start: None,
            backoff: Backoff::new(c.backoff_base, c.backoff_cap, c.backoff_reset),
            image_backoff: Backoff::new(c.backoff_base, c.backoff_cap, c.backoff_reset),
            probes: Vec::new(),
            started: false,
            ready: false,
            exit_handled: false,
            will_restart: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The status `imageID` of a store image: `<repository>@<digest>`, as
    /// the kubelet reports it.
    pub fn image_id(&self) -> Option<String> {
        let digest = self.instance_digest.as_ref()?;
        let repo = crate::image::reference::parse(&self.instance_image)
            .map(|r| crate::image::reference::repository(&r))
            .ok()?;
        Some(format!("{repo}@{digest}"))
    }

    /// Takes over an instance found in the runtime (agent restart).
    pub fn adopt(&mut self, info: ContainerInfo) {
        let count = restart_count_of(&info.spec.log_path).unwrap_or(0);
        self.restart_count = self.restart_count.max(count);
        self.instance_image = info.spec.image.clone();
        self.instance_env = info.spec.env.clone();
        self.instance_digest = info.spec.image_root.as_ref().map(|r| r.digest.clone());
        self.id = Some(info.id);
        self.observed = Some(info.state);
        self.arm_probes();
    }

    /// Exited with code 0 and not to be restarted (init containers).
    pub fn succeeded(&self) -> bool {
        matches!(self.observed, Some(ContainerState::Exited { code: 0, .. })) && !self.will_restart
    }

    /// Exited and will not be restarted.
    pub fn terminal(&self) -> bool {
        matches!(self.observed, Some(ContainerState::Exited { .. }))
            && self.exit_handled
            && !self.will_restart
    }

    /// One step; see the module docs. Returns true when persisted state
    /// (restart count, last termination) changed.
    pub async fn sync(&mut self, pc: &PodCtx<'_>, policy: Policy) -> bool {
        if let Some(id) = self.id.clone() {
            match pc.ctx.runtime().state(&id).await {
                Ok(s) => self.observed = Some(s),
                Err(RuntimeError::NotFound(_)) => {
                    self.id = None;
                    self.observed = None;
                }
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "cannot observe container");
                    return false;
                }
            }
        }
        match self.observed.clone() {
            Some(ContainerState::Running { .. }) => {
                self.check_running(pc, policy).await;
                false
            }
            Some(ContainerState::Exited { .. }) => {
                if !self.exit_handled {
                    self.on_exit(pc, policy);
                }
                self.start_if_due(pc).await
            }
            None => self.start_if_due(pc).await,
        }
    }

    async fn check_running(&mut self, pc: &PodCtx<'_>, policy: Policy) {
        let image = self.spec.image.clone().unwrap_or_default();
        if image != self.instance_image {
            let msg = format!(
                "Container {} definition changed, will be restarted",
                self.name()
            );
            self.kill(pc, &msg).await;
            self.exit_handled = true;
            self.will_restart = true;
            self.next_start = None;
            self.waiting = None;
            return;
        }
        if let Some(reason) = self.run_probes(pc).await {
            self.kill(pc, &reason).await;
            if matches!(self.observed, Some(ContainerState::Exited { .. })) {
                self.on_exit(pc, policy);
            }
        }
    }

    /// Runs due probes; returns a kill message when liveness or startup failed.
    async fn run_probes(&mut self, pc: &PodCtx<'_>) -> Option<String> {
        let runtime = &pc.ctx.cfg.runtime;
        let target = Target {
            pod_ip: pc.addrs.pod_ip.clone(),
            env: self.instance_env.clone(),
            container: self.spec.clone(),
            // Only the keel runtime has namespaces a host process would miss.
            in_container: match (runtime.name(), &self.id) {
                ("keel", Some(id)) => Some(probe::InContainer {
                    runtime: runtime.clone(),
                    id: id.clone(),
                }),
                _ => None,
            },
        };
        let mut started = true;
        let mut ready = true;
        let name = self.spec.name.clone();
        for p in &mut self.probes {
            if !started && p.kind != probe::Kind::Startup {
                continue;
            }
            if p.kind == probe::Kind::Startup && p.result == Some(true) {
                continue;
            }
            if let Some(msg) = p.tick(&target).await {
                let text = format!("{} probe failed: {msg}", p.kind.label());
                pc.event(&name, EventKind::Warning, "Unhealthy", &text);
            }
            match (p.kind, p.result) {
                (probe::Kind::Startup, Some(true)) => {}
                (probe::Kind::Startup, Some(false)) | (probe::Kind::Liveness, Some(false)) => {
                    p.reset_counts();
                    let what = p.kind.label().to_lowercase();
                    return Some(format!(
                        "Container {name} failed {what} probe, will be restarted"
                    ));
                }
                (probe::Kind::Startup, None) => started = false,
                (probe::Kind::Readiness, r) => ready = r == Some(true),
                (probe::Kind::Liveness, _) => {}
            }
        }
        self.started = started;
        self.ready = started && ready;
        None
    }

    async fn kill(&mut self, pc: &PodCtx<'_>, message: &str) {
        let Some(id) = self.id.clone() else { return };
        pc.event(self.name(), EventKind::Normal, "Killing", message);
        match pc.ctx.runtime().stop(&id, pc.grace_ms).await {
            Ok(state) => self.observed = Some(state),
            Err(e) => tracing::warn!(container = %id, error = %e, "cannot stop container"),
        }
        self.started = false;
        self.ready = false;
    }

    /// The current instance exited: decide about the restart and back-off.
    fn on_exit(&mut self, pc: &PodCtx<'_>, policy: Policy) {
        self.exit_handled = true;
        self.started = false;
        self.ready = false;
        let Some(ContainerState::Exited {
            code,
            started_at,
            finished_at,
            ..
        }) = &self.observed
        else {
            return;
        };
        self.will_restart = policy.restarts(*code);
        if !self.will_restart {
            return;
        }
        let ran = finished_at.duration_since(*started_at).unwrap_or_default();
        let delay = self.backoff.next(ran);
        self.next_start = Some(Instant::now() + delay);
        self.waiting = Some(("CrashLoopBackOff".into(), self.backoff_message(pc, delay)));
        let msg = format!(
            "Back-off restarting failed container {} in pod {}",
            self.name(),
            pc.pod_ref()
        );
        pc.event(self.name(), EventKind::Warning, "BackOff", &msg);
    }

    fn backoff_message(&self, pc: &PodCtx<'_>, delay: Duration) -> String {
        format!(
            "back-off {} restarting failed container={} pod={}",
            fmt_delay(delay),
            self.name(),
            pc.pod_ref()
        )
    }

    async fn start_if_due(&mut self, pc: &PodCtx<'_>) -> bool {
        let exited = matches!(self.observed, Some(ContainerState::Exited { .. }));
        if exited && !self.will_restart {
            return false;
        }
        if self.next_start.is_some_and(|t| Instant::now() < t) {
            self.show_backoff();
            return false;
        }
        self.start(pc).await
    }

    /// Between attempts, a start error turns into its back-off reason.
    fn show_backoff(&mut self) {
        if let Some((reason, message)) = &mut self.waiting {
            match reason.as_str() {
                "ErrImagePull" => {
                    *reason = "ImagePullBackOff".into();
                    let image = self.spec.image.as_deref().unwrap_or_default();
                    *message = format!("Back-off pulling image {image:?}: {message}");
                }
                "RunContainerError" => *reason = "CrashLoopBackOff".into(),
                _ => {}
            }
        }
    }

    async fn start(&mut self, pc: &PodCtx<'_>) -> bool {
        let mut objs = Objects::new(
            &pc.ctx.client,
            pc.pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        // KEEL_VOLUME_<NAME>: the volume's directory as the container sees
        // it (its mountPath on a runtime that mounts volumes).
        let mut mounts = volumes::mounts(&self.spec, pc.volumes);
        if pc.ctx.runtime().name() == "keel" {
            for m in self.spec.volume_mounts.iter().flatten() {
                mounts.insert(m.name.clone(), PathBuf::from(&m.mount_path));
            }
        }
        let services = service_vars(pc).await;
        let env =
            match env::container_env(pc.pod, &self.spec, pc.addrs, &mounts, &mut objs, &services)
                .await
            {
                Ok(mut env) => {
                    if let Some(path) = write_resolv_conf(pc) {
                        let var = crate::dns::resolv_conf::RESOLV_CONF_ENV.to_string();
                        env.insert(0, (var, path.display().to_string()));
                    }
                    env
                }
                Err(msg) => {
                    pc.event(
                        self.name(),
                        EventKind::Warning,
                        "Failed",
                        &format!("Error: {msg}"),
                    );
                    self.waiting = Some(("CreateContainerConfigError".into(), msg));
                    self.next_start = Some(Instant::now() + pc.ctx.cfg.backoff_base);
                    return false;
                }
            };
        let restart_count = match self.id.is_some() {
            true => self.restart_count + 1,
            false => self.restart_count,
        };
        let image_root = match super::image::ensure(pc, &self.spec).await {
            Ok(root) => root,
            Err(f) => {
                self.image_failed(pc, f);
                return false;
            }
        };
        // Only a runtime with mount namespaces shows volumes at mountPath
        // (the others get KEEL_VOLUME_<NAME> in the environment).
        let binds = match pc.ctx.runtime().name() {
            "keel" => volumes::bind_mounts(&self.spec, pc.volumes),
            _ => Ok(Vec::new()),
        };
        let binds = match binds {
            Ok(b) => b,
            Err(msg) => {
                pc.event(
                    self.name(),
                    EventKind::Warning,
                    "Failed",
                    &format!("Error: {msg}"),
                );
                self.waiting = Some(("CreateContainerConfigError".into(), msg));
                self.next_start = Some(Instant::now() + pc.ctx.cfg.backoff_base);
                return false;
            }
        };
        let mut spec = self.container_spec(pc, env, restart_count);
        spec.image_root = image_root;
        spec.mounts = binds;
        match pc.ctx.runtime().start(&spec).await {
            Ok(id) => {
                self.started_instance(pc, spec, id, restart_count).await;
                true
            }
            Err(e) => {
                self.start_failed(pc, e);
                false
            }
        }
    }

    fn container_spec(
        &self,
        pc: &PodCtx<'_>,
        env: Vec<(String, String)>,
        restart_count: u32,
    ) -> ContainerSpec {
        let meta = &pc.pod.metadata;
        let expand = |v: &Option<Vec<String>>| -> Vec<String> {
            v.iter().flatten().map(|s| env::expand(s, &env)).collect()
        };
        ContainerSpec {
            pod_uid: meta.uid.clone().unwrap_or_default(),
            pod_name: meta.name.clone().unwrap_or_default(),
            pod_namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            container_name: self.spec.name.clone(),
            image: self.spec.image.clone().unwrap_or_default(),
            command: expand(&self.spec.command),
            args: expand(&self.spec.args),
            working_dir: self.spec.working_dir.as_ref().map(PathBuf::from),
            log_path: log_path(pc.pod_dir, &self.spec.name, restart_count),
            image_root: None,
            resources: isolation::resources(&self.spec),
            mounts: Vec::new(),
            security: isolation::security(pc.pod, &self.spec),
            env,
        }
    }

    async fn started_instance(
        &mut self,
        pc: &PodCtx<'_>,
        spec: ContainerSpec,
        id: ContainerId,
        restart_count: u32,
    ) {
        if let Some(old) = self.id.take() {
            self.last_terminated = self
                .observed
                .as_ref()
                .and_then(|s| terminated_json(s, &old));
            if let Err(e) = pc.ctx.runtime().remove(&old).await {
                tracing::debug!(container = %old, error = %e, "cannot remove previous instance");
            }
        }
        let image = spec.image.clone();
        let name = self.name().to_string();
        if spec.image_root.is_none() {
            // Store images had their Pulling/Pulled events from the image step.
            pc.event(
                &name,
                EventKind::Normal,
                "Pulled",
                &format!("Container image {image:?} already present on machine"),
            );
        }
        pc.event(
            &name,
            EventKind::Normal,
            "Created",
            &format!("Created container: {name}"),
        );
        pc.event(
            &name,
            EventKind::Normal,
            "Started",
            &format!("Started container {name}"),
        );
        for warning in pc.ctx.runtime().warnings(&id) {
            pc.event(&name, EventKind::Warning, "LimitNotEnforced", &warning);
        }
        self.observed = match pc.ctx.runtime().state(&id).await {
            Ok(s) => Some(s),
            Err(_) => Some(ContainerState::Running {
                started_at: SystemTime::now(),
            }),
        };
        self.id = Some(id);
        self.restart_count = restart_count;
        self.instance_image = image;
        self.instance_digest = spec.image_root.as_ref().map(|r| r.digest.clone());
        self.instance_env = spec.env;
        self.waiting = None;
        self.next_start = None;
        self.exit_handled = false;
        self.will_restart = false;
        self.arm_probes();
    }

    /// Fresh probe states for a new (or adopted) instance.
    fn arm_probes(&mut self) {
        let now = Instant::now();
        let s = &self.spec;
        self.probes = [
            (probe::Kind::Startup, &s.startup_probe),
            (probe::Kind::Liveness, &s.liveness_probe),
            (probe::Kind::Readiness, &s.readiness_probe),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.clone().map(|p| ProbeState::new(k, p, now)))
        .collect();
        self.started = s.startup_probe.is_none();
        self.ready = self.started && s.readiness_probe.is_none();
    }

    fn image_failed(&mut self, pc: &PodCtx<'_>, f: super::image::Failure) {
        if f.reason == "ErrImagePull" {
            let name = self.name().to_string();
            pc.event(&name, EventKind::Warning, "Failed", &f.message);
            pc.event(&name, EventKind::Warning, "Failed", "Error: ErrImagePull");
            let delay = self.image_backoff.next(Duration::ZERO);
            self.next_start = Some(Instant::now() + delay);
            self.waiting = Some(("ErrImagePull".into(), f.message));
            return;
        }
        pc.event(self.name(), EventKind::Warning, f.reason, &f.message);
        let delay = self.image_backoff.next(Duration::ZERO);
        self.next_start = Some(Instant::now() + delay);
        self.waiting = Some((f.reason.into(), f.message));
    }

    fn start_failed(&mut self, pc: &PodCtx<'_>, e: RuntimeError) {
        let name = self.name().to_string();
        match e {
            RuntimeError::ImagePull { image, reason } => {
                let msg = format!("Failed to pull image {image:?}: {reason}");
                pc.event(&name, EventKind::Warning, "Failed", &msg);
                pc.event(&name, EventKind::Warning, "Failed", "Error: ErrImagePull");
                let delay = self.image_backoff.next(Duration::ZERO);
                self.next_start = Some(Instant::now() + delay);
                self.waiting = Some(("ErrImagePull".into(), msg));
            }
            other => {
                let msg = other.to_string();
                pc.event(
                    &name,
                    EventKind::Warning,
                    "Failed",
                    &format!("Error: {msg}"),
                );
                let delay = self.backoff.next(Duration::ZERO);
                self.next_start = Some(Instant::now() + delay);
                self.waiting = Some(("RunContainerError".into(), msg));
            }
        }
    }

    /// Stops the current instance (pod termination); returns its final state.
    pub async fn stop(&mut self, pc: &PodCtx<'_>) {
        if self
            .observed
            .as_ref()
            .is_some_and(ContainerState::is_running)
        {
            self.kill(pc, &format!("Stopping container {}", self.name()))
                .await;
            self.exit_handled = true;
            self.will_restart = false;
        }
    }
}

/// `pods/<uid>/logs/<container>/<restartCount>.log`.
/// How long a container start waits for the agent's first list of
/// Services (normally milliseconds after the agent starts).
const SERVICES_SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The Service variables from the agent's Service cache. The kubelet
/// refuses to start containers before it has listed Services once; keel
/// waits for that list too, but when the API cannot be read at all (no
/// client, or the first list failed) it starts the container without them
/// rather than never.
async fn service_vars(pc: &PodCtx<'_>) -> Vec<(String, String)> {
    let Some(cache) = &pc.ctx.services else {
        return Vec::new();
    };
    if !cache.wait_synced(SERVICES_SYNC_TIMEOUT).await {
        tracing::warn!(pod = %pc.pod_ref(), "Services not listed yet; starting without Service variables");
        return Vec::new();
    }
    let services = cache.store().state();
    env::service_env(pc.pod, services.iter().map(AsRef::as_ref))
}

pub fn log_path(pod_dir: &Path, container: &str, restart_count: u32) -> PathBuf {
    pod_dir
        .join("logs")
        .join(container)
        .join(format!("{restart_count}.log"))
}

/// The restart count encoded in a log path (see [`log_path`]).
pub fn restart_count_of(log_path: &Path) -> Option<u32> {
    log_path.file_stem()?.to_str()?.parse().ok()
}

/// `ContainerStateTerminated` JSON of an exited instance.
pub fn terminated_json(state: &ContainerState, id: &ContainerId) -> Option<Value> {
    let ContainerState::Exited {
        code,
        signal,
        reason,
        message,
        started_at,
        finished_at,
    } = state
    else {
        return None;
    };
    let mut t = json!({
        "exitCode": code,
        "reason": reason,
        "startedAt": time::rfc3339(*started_at),
        "finishedAt": time::rfc3339(*finished_at),
        "containerID": format!("exec://{id}"),
    });
    if let Some(s) = signal {
        t["signal"] = json!(s);
    }
    if !message.is_empty() {
        t["message"] = json!(message);
    }
    Some(t)
}

/// Go's duration format for whole seconds and minutes (`20s`, `5m0s`).
fn fmt_delay(d: Duration) -> String {
    let s = d.as_secs();
    match s >= 60 {
        true => format!("{}m{}s", s / 60, s % 60),
        false => format!("{s}s"),
    }
}

/// (Re)writes the pod's resolv.conf before a container starts, so it
/// names the cluster DNS as known now (see [`crate::dns::resolv_conf`]).
/// A spec it cannot honour is a warning event and `None`: the container
/// runs with the host's resolver, as after the kubelet's
/// `DNSConfigForming`.
fn write_resolv_conf(pc: &PodCtx<'_>) -> Option<PathBuf> {
    let settings = pc.ctx.dns.settings();
    match crate::dns::resolv_conf::write(pc.pod, pc.pod_dir, &settings) {
        Ok(path) => Some(path),
        Err(msg) => {
            pc.ctx
                .events
                .pod(pc.pod, None, EventKind::Warning, "DNSConfigForming", &msg);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_encode_restart_counts() {
        let p = log_path(Path::new("/r/pods/u"), "c", 3);
        assert_eq!(p, Path::new("/r/pods/u/logs/c/3.log"));
        assert_eq!(restart_count_of(&p), Some(3));
        assert_eq!(fmt_delay(Duration::from_secs(300)), "5m0s");
        assert_eq!(fmt_delay(Duration::from_secs(20)), "20s");
    }

    #[test]
    fn policies() {
        assert!(Policy::Always.restarts(0));
        assert!(!Policy::OnFailure.restarts(0) && Policy::OnFailure.restarts(1));
        assert!(!Policy::Never.restarts(1));
        assert_eq!(Policy::Always.for_init(), Policy::OnFailure);
    }
}
