//! The `docker` runtime: containers run in the local Docker Engine, driven
//! through its HTTP API (bollard) on the local socket.
//!
//! Docker itself is the source of truth: every container this runtime creates
//! carries labels (`io.keel.*`, including the whole [`ContainerSpec`] as JSON
//! in `io.keel.spec`), so a new runtime instance (agent restart) lists and
//! re-adopts them without any state directory of its own.
//!
//! Choices and why:
//! - **Never pull.** There is no registry on these machines and a pull would
//!   hide a missing image behind a slow network timeout: a missing image is a
//!   [`RuntimeError::ImagePull`] right away. The built-ins `keel/pause`
//!   and `keel/echo` are made locally from the keel binary instead (see
//!   [`super::dockerbuiltin`]).
//! - **Host networking.** The pod IP handed to containers (`POD_IP`, a 127.x
//!   address) is a host address, exactly as with the exec runtime.
//! - **No restart policy, no auto-remove.** The pod lifecycle decides about
//!   restarts, and it needs the exit status of an exited container until it
//!   removes it.
//! - **`json-file` log driver, copied to `log_path`.** The agent reads
//!   container logs from the spec's `log_path`, so a follower task streams the
//!   container's stdout and stderr (interleaved, in Docker's order) and
//!   appends the raw bytes there. The driver is forced to `json-file` so the
//!   logs API works whatever the daemon's default driver is.
//! - **Log resumption is by byte count, not by time.** At create time the
//!   current length of `log_path` is recorded in the label
//!   `io.keel.log-offset`. A follower started on re-adoption re-reads the
//!   container's log from its beginning and skips the bytes already in the
//!   file (`file length - offset`), so nothing is lost and nothing is written
//!   twice, even if the previous agent lagged behind the container. A
//!   `since = mtime` cut-off would lose lines the container wrote before the
//!   agent's last write but that the agent had not copied yet. When the file
//!   is shorter than the recorded offset (truncated or rotated by someone
//!   else) the byte count is meaningless, and the follower falls back to
//!   `since` = the file's mtime in whole seconds (duplicates over loss).
//!   Known limit: if Docker's own log was rotated (a daemon-wide `max-size`),
//!   the byte count overstates what Docker still has and the skip loses
//!   lines.
//! - **`list` inspects only what it must.** The agent lists often (each
//!   `kubectl exec`, each pod worker's adoption, the metrics loop), and an
//!   inspect per container made that O(containers) engine calls: at 100
//!   pods `kubectl exec` took ~20 s. A container `docker ps` reports
//!   running whose start time this instance already inspected is taken
//!   from the `ps` answer (labels included); others are inspected (exit
//!   codes need it). Known limit: a container restarted behind keel's
//!   back (`docker restart`) keeps its old start time until it exits.
//! - **Resumption happens in `list`.** The agent lists on start-up (that is
//!   how it re-adopts), so that is where a new instance starts followers for
//!   containers it did not start. Dropping a [`DockerRuntime`] aborts its
//!   followers; on a multi-threaded runtime a follower busy writing when the
//!   instance is dropped may finish that one chunk after a new instance has
//!   measured the file, duplicating it (duplicates over loss).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    ContainerSummaryStateEnum, HostConfig, HostConfigLogConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StatsOptions, StopContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::dockerbuiltin::{builtin_name, Builtins};
use super::{
    BoxFuture, ContainerId, ContainerInfo, ContainerSpec, ContainerState, ContainerStats, Result,
    Runtime, RuntimeError,
};

/// Label on every keel container; its presence is what makes a container ours.
pub const LABEL_POD_UID: &str = "io.keel.pod-uid";
pub const LABEL_POD_NAME: &str = "io.keel.pod-name";
pub const LABEL_POD_NAMESPACE: &str = "io.keel.pod-namespace";
pub const LABEL_CONTAINER: &str = "io.keel.container";
pub const LABEL_LOG_PATH: &str = "io.keel.log-path";
/// The full [`ContainerSpec`] as JSON, so `list` returns exactly what was started.
pub const LABEL_SPEC: &str = "io.keel.spec";
/// Length of `log_path` when the container was created; see the module docs.
pub const LABEL_LOG_OFFSET: &str = "io.keel.log-offset";
/// Which runtime instance owns the container (the agent's node name). One
/// Docker Engine may serve several agents (`keel up --agents N`) or tests;
/// each lists, re-adopts and cleans up only its own containers.
pub const LABEL_OWNER: &str = "io.keel.owner";

/// How long `stop` and `remove` wait for a log follower to copy the last
/// bytes of an exited container, so the log file is complete when they return.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);
/// Headroom on top of the grace period for the engine to answer `stop`
/// (bollard's request timeout covers the whole call, which lasts the grace
/// period plus the kill).
const STOP_SLACK: Duration = Duration::from_secs(60);

/// The Docker runtime. See the module docs for the design.
pub struct DockerRuntime {
    docker: Docker,
    /// The [`LABEL_OWNER`] value of this instance's containers.
    owner: String,
    /// Log followers started by this instance, by Docker container id. An
    /// entry means "this instance took care of the log"; a finished follower
    /// of a still running container (e.g. the daemon restarted) is replaced
    /// on the next `list`.
    followers: Mutex<HashMap<String, JoinHandle<()>>>,
    /// `keel/pause` and `keel/echo`, made locally on first use.
    builtins: Builtins,
    /// Start times of running containers already inspected, by Docker id,
    /// so `list` needs no inspect per running container (see
    /// [`DockerRuntime::list_containers`]).
    started: Mutex<HashMap<String, SystemTime>>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("api_version", &self.docker.client_version().to_string())
            .finish_non_exhaustive()
    }
}

impl Drop for DockerRuntime {
    /// Stops this instance's log followers: a later instance resumes them
    /// from the byte count, and two followers on one file would duplicate.
    fn drop(&mut self) {
        let followers = match self.followers.get_mut() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (_, handle) in followers.drain() {
            handle.abort();
        }
    }
}

impl DockerRuntime {
    /// Connects to the local Docker Engine (`DOCKER_HOST` or the default
    /// socket), negotiates the API version (the engine may be older than
    /// bollard's default) and checks the daemon answers. The instance
    /// sees only containers labelled with `owner` (see [`LABEL_OWNER`]).
    pub async fn connect(owner: &str) -> Result<DockerRuntime> {
        let unreachable = |e: DockerError| {
            RuntimeError::Other(format!(
                "docker runtime: the Docker daemon is not reachable \
                 (is dockerd running and is its socket accessible?): {e}"
            ))
        };
        let docker = Docker::connect_with_local_defaults().map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        Ok(DockerRuntime {
            docker,
            owner: owner.to_string(),
            followers: Mutex::new(HashMap::new()),
            builtins: Builtins::new(None),
            started: Mutex::new(HashMap::new()),
        })
    }

    /// Serves the built-in images (`keel/pause`, `keel/echo`) from
    /// `binary` (the keel binary, or any binary answering `image <name>`
    /// like keel), made into local Docker images on first use; see
    /// [`super::dockerbuiltin`]. Without it built-ins are missing images.
    pub fn with_keel_binary(mut self, binary: PathBuf) -> Self {
        self.builtins = Builtins::new(Some(binary));
        self
    }

    /// The underlying client, e.g. for diagnostics.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    async fn start_container(&self, spec: &ContainerSpec) -> Result<ContainerId> {
        let builtin = builtin_name(&spec.image);
        let name = container_name(spec);
        // Two attempts for a built-in whose made image was removed since.
        let mut attempts = if builtin.is_some() { 2 } else { 1 };
        let created = loop {
            attempts -= 1;
            let image = match builtin {
                Some(b) => self.builtins.ensure(&self.docker, b, &spec.image).await?,
                None => {
                    self.check_image(&spec.image).await?;
                    spec.image.clone()
                }
            };
            let body = create_body(spec, &self.owner, &image, builtin.is_some())?;
            let options = CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            };
            match self.docker.create_container(Some(options), body).await {
                Ok(c) => break c,
                Err(e) if status_of(&e) == Some(404) => {
                    // The image vanished between the check and the create.
                    if let Some(b) = builtin {
                        self.builtins.forget(b).await;
                    }
                    if attempts == 0 {
                        return Err(image_missing(&spec.image));
                    }
                }
                Err(e) => {
                    // A failed create may still have left a container behind.
                    self.force_remove(&name).await;
                    return Err(RuntimeError::StartFailed(format!(
                        "create container {name}: {}",
                        message_of(&e)
                    )));
                }
            }
        };
        let id = created.id;
        if let Err(e) = self.docker.start_container(&id, None).await {
            self.force_remove(&id).await;
            return Err(RuntimeError::StartFailed(message_of(&e)));
        }
        // A fresh container: copy its whole log (skip nothing).
        self.spawn_follower(&id, spec.log_path.clone(), 0, 0);
        tracing::debug!(container = %id, name, pod = %spec.pod_name, "docker container started");
        Ok(ContainerId(id))
    }

    /// Fails with [`RuntimeError::ImagePull`] unless the image is already in
    /// the local engine.
    async fn check_image(&self, image: &str) -> Result<()> {
        if image.is_empty() {
            return Err(RuntimeError::InvalidSpec("image is empty".into()));
        }
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Err(image_missing(image)),
            Err(e) => Err(RuntimeError::ImagePull {
                image: image.to_string(),
                reason: format!(
                    "cannot inspect image in the local Docker engine: {}",
                    message_of(&e)
                ),
            }),
        }
    }

    async fn force_remove(&self, id_or_name: &str) {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        if let Err(e) = self
            .docker
            .remove_container(id_or_name, Some(options))
            .await
        {
            if status_of(&e) != Some(404) {
                tracing::warn!(container = id_or_name, error = %e, "cannot remove failed container");
            }
        }
    }

    /// Inspects a container, treating containers without keel's labels (or
    /// ids that are not plain Docker ids/names) as not found, so the agent
    /// can never stop or remove someone else's container.
    async fn inspect_ours(&self, id: &ContainerId) -> Result<ContainerInspectResponse> {
        let plain = !id.0.is_empty()
            && id
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !plain {
            return Err(RuntimeError::NotFound(id.clone()));
        }
        let inspect = self
            .docker
            .inspect_container(&id.0, None::<InspectContainerOptions>)
            .await
            .map_err(|e| docker_error(id, "inspect", e))?;
        let ours = inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .is_some_and(|l| {
                l.contains_key(LABEL_POD_UID) && l.get(LABEL_OWNER) == Some(&self.owner)
            });
        if ours {
            Ok(inspect)
        } else {
            Err(RuntimeError::NotFound(id.clone()))
        }
    }

    async fn observe(&self, id: &ContainerId) -> Result<ContainerState> {
        Ok(state_of(&self.inspect_ours(id).await?))
    }

    async fn stop_container(&self, id: &ContainerId, grace_ms: u64) -> Result<ContainerState> {
        let state = self.observe(id).await?;
        if !state.is_running() {
            return Ok(state);
        }
        let secs = grace_ms.div_ceil(1000);
        tracing::debug!(container = %id, grace_ms, secs, "stopping docker container");
        let options = StopContainerOptions {
            t: Some(i32::try_from(secs).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        // The engine answers only once the container is gone: allow the
        // whole grace period on top of the client's usual timeout.
        let client = self
            .docker
            .clone()
            .with_timeout(Duration::from_secs(secs).saturating_add(STOP_SLACK));
        client
            .stop_container(&id.0, Some(options))
            .await
            .map_err(|e| docker_error(id, "stop", e))?;
        let state = self.observe(id).await?;
        if state.is_running() {
            return Err(RuntimeError::Other(format!(
                "container {id} still running after docker stop"
            )));
        }
        self.drain_follower(&id.0).await;
        Ok(state)
    }

    async fn list_containers(&self) -> Result<Vec<ContainerInfo>> {
        let owner = format!("{LABEL_OWNER}={}", self.owner);
        let filters =
            HashMap::from([("label".to_string(), vec![LABEL_POD_UID.to_string(), owner])]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| RuntimeError::Other(format!("list docker containers: {e}")))?;
        let mut out = Vec::new();
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            let cid = ContainerId(id.clone());
            let known_start = match summary.state {
                Some(ContainerSummaryStateEnum::RUNNING) => lock(&self.started).get(&id).copied(),
                _ => None,
            };
            let (labels, state) = match (known_start, summary.labels) {
                (Some(started_at), Some(labels)) => {
                    (labels, ContainerState::Running { started_at })
                }
                _ => {
                    let inspect = match self.inspect_ours(&cid).await {
                        Ok(i) => i,
                        // Removed between list and inspect.
                        Err(RuntimeError::NotFound(_)) => continue,
                        Err(e) => return Err(e),
                    };
                    let state = state_of(&inspect);
                    match &state {
                        ContainerState::Running { started_at } => {
                            lock(&self.started).insert(id.clone(), *started_at);
                        }
                        _ => {
                            lock(&self.started).remove(&id);
                        }
                    }
                    let labels = inspect
                        .config
                        .as_ref()
                        .and_then(|c| c.labels.clone())
                        .unwrap_or_default();
                    (labels, state)
                }
            };
            let spec: ContainerSpec = match labels.get(LABEL_SPEC).map(|s| serde_json::from_str(s))
            {
                Some(Ok(spec)) => spec,
                _ => {
                    tracing::warn!(container = %id, "keel container without a readable {LABEL_SPEC} label; ignored");
                    continue;
                }
            };
            let offset = labels
                .get(LABEL_LOG_OFFSET)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            self.adopt_logs(&id, &spec.log_path, offset, state.is_running());
            let created = summary.created.unwrap_or(0);
            out.push((
                created,
                ContainerInfo {
                    id: cid,
                    spec,
                    state,
                },
            ));
        }
        out.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        Ok(out.into_iter().map(|(_, info)| info).collect())
    }

    /// Starts a resuming log follower for a container this instance has not
    /// followed yet (re-adoption), or whose follower ended while it still runs.
    fn adopt_logs(&self, id: &str, log_path: &Path, offset: u64, running: bool) {
        {
            let followers = lock(&self.followers);
            match followers.get(id) {
                Some(h) if !h.is_finished() || !running => return,
                _ => {}
            }
        }
        let (skip, since) = resume_point(log_path, offset);
        tracing::debug!(container = id, skip, since, "resuming docker log follower");
        self.spawn_follower(id, log_path.to_path_buf(), skip, since);
    }

    fn spawn_follower(&self, id: &str, log_path: PathBuf, skip: u64, since: i32) {
        let task = tokio::spawn(follow_logs(
            self.docker.clone(),
            id.to_string(),
            log_path,
            skip,
            since,
        ));
        if let Some(old) = lock(&self.followers).insert(id.to_string(), task) {
            old.abort();
        }
    }

    /// Waits (bounded) for the follower of an exited container to copy the
    /// rest of its log.
    async fn drain_follower(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + LOG_DRAIN_TIMEOUT;
        loop {
            let done = lock(&self.followers)
                .get(id)
                .is_none_or(|h| h.is_finished());
            if done {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(container = id, "log follower did not finish in time");
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<()> {
        if self.observe(id).await?.is_running() {
            return Err(RuntimeError::StillRunning(id.clone()));
        }
        self.drain_follower(&id.0).await;
        if let Some(handle) = lock(&self.followers).remove(&id.0) {
            handle.abort();
        }
        lock(&self.started).remove(&id.0);
        match self.docker.remove_container(&id.0, None).await {
            Ok(()) => Ok(()),
            // Started again between our check and the removal (not by keel).
            Err(e) if status_of(&e) == Some(409) => Err(RuntimeError::StillRunning(id.clone())),
            Err(e) => Err(docker_error(id, "remove", e)),
        }
    }
}

impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn start<'a>(&'a self, spec: &'a ContainerSpec) -> BoxFuture<'a, Result<ContainerId>> {
        Box::pin(self.start_container(spec))
    }

    fn state<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ContainerState>> {
        Box::pin(self.observe(id))
    }

    fn stop<'a>(
        &'a self,
        id: &'a ContainerId,
        grace_ms: u64,
    ) -> BoxFuture<'a, Result<ContainerState>> {
        Box::pin(self.stop_container(id, grace_ms))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ContainerInfo>>> {
        Box::pin(self.list_containers())
    }

    fn remove<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.remove_container(id))
    }

    fn stats<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ContainerStats>> {
        Box::pin(self.container_stats(id))
    }

    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        req: super::ExecRequest,
    ) -> BoxFuture<'a, Result<super::ExecSession>> {
        Box::pin(super::dockerexec::exec(&self.docker, id, req))
    }
}

impl DockerRuntime {
    /// One-shot `docker stats`: cumulative CPU from the cgroup, working set as
    /// usage minus inactive file cache (what `docker stats` and the kubelet show).
    async fn container_stats(&self, id: &ContainerId) -> Result<ContainerStats> {
        let opts = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stream = self.docker.stats(&id.0, Some(opts));
        let resp = match stream.next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => return Err(docker_error(id, "stats", e)),
            None => return Err(RuntimeError::Other(format!("docker stats {id}: no answer"))),
        };
        let cpu_usage_ns = resp
            .cpu_stats
            .as_ref()
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .unwrap_or(0);
        let memory_working_set_bytes = resp.memory_stats.as_ref().map_or(0, |m| {
            let inactive = m.stats.as_ref().and_then(|s| {
                s.get("inactive_file")
                    .or_else(|| s.get("total_inactive_file"))
                    .copied()
            });
            m.usage.unwrap_or(0).saturating_sub(inactive.unwrap_or(0))
        });
        Ok(ContainerStats {
            cpu_usage_ns,
            memory_working_set_bytes,
            timestamp: SystemTime::now(),
        })
    }
}

/// The create request for a spec, run from the Docker image `image`:
/// Kubernetes command/args semantics, env (later entries win), host
/// network, keel labels. A `builtin` image gets `POD_NAME`,
/// `POD_NAMESPACE` and `KEEL_IMAGE` first, as on the other runtimes.
fn create_body(
    spec: &ContainerSpec,
    owner: &str,
    image: &str,
    builtin: bool,
) -> Result<ContainerCreateBody> {
    let spec_json = serde_json::to_string(spec)
        .map_err(|e| RuntimeError::InvalidSpec(format!("cannot serialize spec: {e}")))?;
    let log_path = spec
        .log_path
        .to_str()
        .ok_or_else(|| RuntimeError::InvalidSpec("log_path is not UTF-8".into()))?;
    let working_dir = match &spec.working_dir {
        Some(dir) => Some(
            dir.to_str()
                .ok_or_else(|| RuntimeError::InvalidSpec("working_dir is not UTF-8".into()))?
                .to_string(),
        ),
        None => None,
    };
    let offset = std::fs::metadata(&spec.log_path).map_or(0, |m| m.len());
    let labels = HashMap::from([
        (LABEL_POD_UID.to_string(), spec.pod_uid.clone()),
        (LABEL_POD_NAME.to_string(), spec.pod_name.clone()),
        (LABEL_POD_NAMESPACE.to_string(), spec.pod_namespace.clone()),
        (LABEL_CONTAINER.to_string(), spec.container_name.clone()),
        (LABEL_LOG_PATH.to_string(), log_path.to_string()),
        (LABEL_LOG_OFFSET.to_string(), offset.to_string()),
        (LABEL_SPEC.to_string(), spec_json),
        (LABEL_OWNER.to_string(), owner.to_string()),
    ]);
    // Kubernetes: `command` replaces the entrypoint (and with it the image's
    // default arguments: Docker drops the image Cmd when Entrypoint is set);
    // `args` alone replaces only the default arguments.
    let (entrypoint, cmd) = match (spec.command.is_empty(), spec.args.is_empty()) {
        (false, _) => (Some(spec.command.clone()), Some(spec.args.clone())),
        (true, false) => (None, Some(spec.args.clone())),
        (true, true) => (None, None),
    };
    for (name, _) in &spec.env {
        if name.is_empty() || name.contains('=') {
            return Err(RuntimeError::InvalidSpec(format!(
                "invalid environment variable name {name:?}"
            )));
        }
    }
    let mut env = Vec::new();
    if builtin {
        env.push(("POD_NAME".to_string(), spec.pod_name.clone()));
        env.push(("POD_NAMESPACE".to_string(), spec.pod_namespace.clone()));
        env.push(("KEEL_IMAGE".to_string(), spec.image.clone()));
    }
    env.extend(spec.env.iter().cloned());
    Ok(ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint,
        cmd,
        env: Some(dedup_env(&env)),
        working_dir,
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some("host".into()),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// `NAME=value` entries, one per name at the position of its first
/// occurrence, with the value of its last (a later entry wins).
fn dedup_env(env: &[(String, String)]) -> Vec<String> {
    let mut order: Vec<&str> = Vec::new();
    let mut values: HashMap<&str, &str> = HashMap::new();
    for (name, value) in env {
        if values.insert(name, value).is_none() {
            order.push(name);
        }
    }
    order
        .into_iter()
        .map(|name| format!("{name}={}", values.get(name).copied().unwrap_or_default()))
        .collect()
}

/// `keel_<namespace>_<pod>_<container>_<8 hex>`: readable in `docker ps`,
/// unique per start (the suffix is random), restricted to the characters
/// Docker accepts in names.
fn container_name(spec: &ContainerSpec) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!(
        "keel_{}_{}_{}_{:08x}",
        clean(&spec.pod_namespace),
        clean(&spec.pod_name),
        clean(&spec.container_name),
        random_u32()
    )
}

/// Randomness without a `rand` dependency: std's per-instance hasher keys
/// are random; mixed with the time for good measure.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() & 0xffff_ffff) as u32
}

/// Where a resuming follower starts: `(bytes to skip, since seconds)`.
/// See the module docs.
fn resume_point(log_path: &Path, offset: u64) -> (u64, i32) {
    match std::fs::metadata(log_path) {
        Err(_) => (0, 0),
        Ok(meta) if meta.len() >= offset => (meta.len() - offset, 0),
        Ok(meta) => {
            let since = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX));
            (0, since)
        }
    }
}

/// Follows a container's stdout+stderr until the container stops (or the
/// engine goes away), appending the bytes to `log_path` after skipping the
/// first `skip` bytes of the stream. Writes are plain blocking appends of
/// small chunks with no await in between, so aborting the task never leaves
/// a chunk half-written (the byte count stays exact).
async fn follow_logs(docker: Docker, id: String, log_path: PathBuf, mut skip: u64, since: i32) {
    let mut file = match open_log(&log_path) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(container = %id, path = %log_path.display(), error = %e, "cannot open container log");
            return;
        }
    };
    let options = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        since,
        ..Default::default()
    };
    let mut stream = docker.logs(&id, Some(options));
    while let Some(item) = stream.next().await {
        let bytes = match item {
            Ok(output) => output.into_bytes(),
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "container log stream ended with an error");
                return;
            }
        };
        let mut chunk: &[u8] = &bytes;
        if skip > 0 {
            let n = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
            chunk = &chunk[n..];
            skip -= n as u64;
        }
        if chunk.is_empty() {
            continue;
        }
        if let Err(e) = file.write_all(chunk) {
            tracing::warn!(container = %id, path = %log_path.display(), error = %e, "cannot append container log");
            return;
        }
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    File::options().create(true).append(true).open(path)
}

/// Maps Docker's view of a container to keel's.
fn state_of(inspect: &ContainerInspectResponse) -> ContainerState {
    let Some(state) = inspect.state.as_ref() else {
        return lost("the Docker engine reported no state for the container");
    };
    let started_at = state.started_at.as_deref().and_then(parse_rfc3339);
    let finished_at = state.finished_at.as_deref().and_then(parse_rfc3339);
    let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
    match status {
        ContainerStateStatusEnum::RUNNING
        | ContainerStateStatusEnum::PAUSED
        | ContainerStateStatusEnum::RESTARTING
        | ContainerStateStatusEnum::STOPPING => ContainerState::Running {
            started_at: started_at.unwrap_or(UNIX_EPOCH),
        },
        // Created but never started: an agent died between create and
        // start. Its outcome is unknown, as with the exec runtime.
        ContainerStateStatusEnum::CREATED => {
            lost("the container was created but never started (agent interrupted during start)")
        }
        _ => {
            let code = state
                .exit_code
                .map_or(137, |c| i32::try_from(c).unwrap_or(i32::MAX));
            let oom = state.oom_killed.unwrap_or(false);
            let reason = if oom {
                "OOMKilled"
            } else if code == 0 {
                "Completed"
            } else {
                "Error"
            };
            let started = started_at.unwrap_or(UNIX_EPOCH);
            ContainerState::Exited {
                code,
                signal: None,
                reason: reason.into(),
                message: state.error.clone().unwrap_or_default(),
                started_at: started,
                finished_at: finished_at.unwrap_or(started).max(started),
            }
        }
    }
}

fn lost(message: &str) -> ContainerState {
    let now = SystemTime::now();
    ContainerState::Exited {
        code: 137,
        signal: None,
        reason: "ContainerStatusUnknown".into(),
        message: message.into(),
        started_at: now,
        finished_at: now,
    }
}

/// Parses Docker's timestamps (`2024-05-06T07:08:09.123456789Z`, RFC 3339).
/// Docker's "never" (`0001-01-01T00:00:00Z`) and anything before the Unix
/// epoch or malformed yield `None`.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, c) in frac.bytes().take(digits).enumerate() {
            if i < 9 {
                nanos = nanos * 10 + u32::from(c - b'0');
            }
        }
        for _ in digits..9 {
            nanos *= 10;
        }
        rest = &frac[digits..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rb[0] == b'-' { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(super) fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message when there is one (e.g. "exec: \"/nope\": no
/// such file or directory"), else the client error.
pub(super) fn message_of(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn docker_error(id: &ContainerId, what: &str, e: DockerError) -> RuntimeError {
    if status_of(&e) == Some(404) {
        RuntimeError::NotFound(id.clone())
    } else {
        RuntimeError::Other(format!("docker {what} {id}: {}", message_of(&e)))
    }
}

fn image_missing(image: &str) -> RuntimeError {
    RuntimeError::ImagePull {
        image: image.to_string(),
        reason: "image is not present in the local Docker engine (keel never pulls: \
                 load or build it on this machine first)"
            .into(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            pod_uid: "uid-1".into(),
            pod_name: "web/1".into(),
            pod_namespace: "default".into(),
            container_name: "main".into(),
            image: "img:1".into(),
            command: vec![],
            args: vec![],
            env: vec![],
            working_dir: None,
            log_path: "/nonexistent-keel/x.log".into(),
            image_root: None,
            resources: Default::default(),
            mounts: Vec::new(),
            security: Default::default(),
        }
    }

    #[test]
    fn rfc3339_parses_docker_timestamps() {
        let t = parse_rfc3339("2024-05-06T07:08:09.123456789Z").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_714_979_289);
        assert_eq!(d.subsec_nanos(), 123_456_789);
        let t = parse_rfc3339("1970-01-01T01:00:00+01:00").unwrap();
        assert_eq!(t, UNIX_EPOCH);
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00.5Z")
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap(),
            Duration::new(951_868_800, 500_000_000)
        );
        for bad in [
            "0001-01-01T00:00:00Z",
            "",
            "garbage",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn env_later_entry_wins_in_first_position() {
        let env = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "2".to_string()),
            ("A".to_string(), "3".to_string()),
        ];
        assert_eq!(dedup_env(&env), vec!["A=3", "B=2"]);
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let mut s = spec();
        let b = create_body(&s, "n1", "img:1", false).unwrap();
        assert_eq!((b.entrypoint, b.cmd), (None, None));
        s.args = vec!["x".into()];
        let b = create_body(&s, "n1", "img:1", false).unwrap();
        assert_eq!((b.entrypoint, b.cmd), (None, Some(vec!["x".to_string()])));
        s.command = vec!["sh".into()];
        s.args = vec![];
        let b = create_body(&s, "n1", "img:1", false).unwrap();
        assert_eq!(
            (b.entrypoint, b.cmd),
            (Some(vec!["sh".to_string()]), Some(vec![]))
        );
        let labels = create_body(&s, "n1", "img:1", false)
            .unwrap()
            .labels
            .unwrap();
        let back: ContainerSpec = serde_json::from_str(&labels[LABEL_SPEC]).unwrap();
        assert_eq!(back, s);
        assert_eq!(labels[LABEL_OWNER], "n1");
        s.env = vec![("A=B".into(), "x".into())];
        assert!(matches!(
            create_body(&s, "n1", "img:1", false),
            Err(RuntimeError::InvalidSpec(_))
        ));
    }

    #[test]
    fn builtins_run_their_docker_image_with_identity_env() {
        let mut s = spec();
        s.image = "keel/echo:v2".into();
        s.env = vec![("POD_NAME".into(), "mine".into())];
        let b = create_body(&s, "n1", "keel/echo:bin-0123456789ab", true).unwrap();
        assert_eq!(b.image.as_deref(), Some("keel/echo:bin-0123456789ab"));
        assert_eq!(
            b.env.unwrap(),
            vec![
                "POD_NAME=mine",
                "POD_NAMESPACE=default",
                "KEEL_IMAGE=keel/echo:v2"
            ]
        );
        let labels = b.labels.unwrap();
        let back: ContainerSpec = serde_json::from_str(&labels[LABEL_SPEC]).unwrap();
        assert_eq!(back.image, "keel/echo:v2", "the spec keeps the pod's image");
    }

    #[test]
    fn names_are_docker_safe_and_unique() {
        let s = spec();
        let a = container_name(&s);
        assert!(a.starts_with("keel_default_web-1_main_"), "{a}");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
        assert_ne!(a, container_name(&s));
    }

    #[test]
    fn resume_point_skips_written_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.log");
        assert_eq!(resume_point(&path, 5), (0, 0));
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(resume_point(&path, 4), (6, 0));
        let (skip, since) = resume_point(&path, 20);
        assert_eq!(skip, 0);
        assert!(since > 0);
    }
}
