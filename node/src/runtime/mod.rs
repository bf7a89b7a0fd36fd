//! Container runtimes behind one trait.
//!
//! The pod lifecycle (later work) talks only to [`Runtime`]; the `exec`
//! runtime ([`exec::ExecRuntime`]) is the default and needs nothing but Linux.
//! A runtime's own on-disk state is the source of truth, so a new runtime
//! instance on the same state directory re-adopts the containers of a previous
//! one (agent restart) and never starts duplicates by itself.

pub mod docker;
mod dockerbuiltin;
mod dockerexec;
pub mod exec;
mod hostexec;
pub mod images;
pub mod isolated;
mod procfs;
pub use procfs::clock_ticks_per_second;
pub mod session;
pub mod steps;
pub(crate) mod supervisor;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use session::{ExecInput, ExecOutput, ExecRequest, ExecSession, TermSize};

/// A boxed, `Send` future: keeps [`Runtime`] object-safe (`Arc<dyn Runtime>`)
/// without a macro crate.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the pod lifecycle asks a runtime to run: one container of one pod.
///
/// `command`/`args` follow Kubernetes: `command` replaces the image's
/// entrypoint, `args` replaces its default arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub pod_uid: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub container_name: String,
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment in order; a later entry wins over an earlier one with the same name.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory; `None` means the image's default.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// File the container's stdout and stderr are appended to; parent
    /// directories are created.
    pub log_path: PathBuf,
    /// The unpacked OCI image this container runs in, when the image came
    /// from the agent's image store; `None` for built-in and local-directory
    /// images. Only a runtime with mount namespaces can honour it: the others
    /// refuse such a spec with [`RuntimeError::InvalidSpec`].
    #[serde(default)]
    pub image_root: Option<ImageRoot>,
    /// Requests and limits; only a runtime with cgroups enforces them.
    #[serde(default)]
    pub resources: Resources,
    /// Volumes at their `mountPath` (the exec runtime has no mount
    /// namespaces and exposes them as `KEEL_VOLUME_<NAME>` instead).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// The container's securityContext (merged with the pod's).
    #[serde(default)]
    pub security: Security,
}

/// A container's requests and limits in runtime units. `None` = not set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_request_millis: Option<u64>,
    pub cpu_limit_millis: Option<u64>,
    pub memory_request_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
}

/// One bind mount of a prepared host path into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Volume name, for messages.
    pub name: String,
    /// Host file or directory (with `subPath` already applied).
    pub source: PathBuf,
    /// Absolute path inside the container (`mountPath`).
    pub destination: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// The parts of `securityContext` a runtime with namespaces honours.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    #[serde(default)]
    pub read_only_root_filesystem: bool,
    /// Full capabilities, host devices, no `no_new_privs`.
    #[serde(default)]
    pub privileged: bool,
    /// `allowPrivilegeEscalation`; `None` means false unless privileged.
    #[serde(default)]
    pub allow_privilege_escalation: Option<bool>,
    /// Capability names as Kubernetes spells them (`NET_ADMIN`, `ALL`).
    #[serde(default)]
    pub capabilities_add: Vec<String>,
    #[serde(default)]
    pub capabilities_drop: Vec<String>,
    /// `seccompProfile` (the container's, else the pod's).
    #[serde(default)]
    pub seccomp: SeccompProfile,
    /// The pod's `shareProcessNamespace`: one PID namespace for all its
    /// containers (kept here, beside the securityContext, because it is an
    /// isolation setting only a runtime with namespaces honours).
    #[serde(default)]
    pub share_process_namespace: bool,
}

/// `securityContext.seccompProfile`. Unset means `Unconfined`, as in
/// Kubernetes without the `SeccompDefault` kubelet option.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    #[default]
    Unconfined,
    /// The runtime's default filter (see `isolated::seccomp`).
    RuntimeDefault,
    /// A profile file on the node (`localhostProfile`); not supported: a
    /// container asking for one fails to start with a clear error.
    Localhost(String),
}

/// An image from the image store, ready to run: a shared, read-only rootfs
/// directory and the image config's process defaults.
///
/// Guarantee: `rootfs` stays on disk, unchanged, while any container whose
/// spec names it exists (the store's garbage collector skips images in use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRoot {
    /// Content digest of the image manifest, `sha256:<hex>`.
    pub digest: String,
    /// Unpacked layers (whiteouts applied); never written to by containers.
    pub rootfs: PathBuf,
    /// The config's `Entrypoint`, replaced by the spec's `command`.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// The config's `Cmd`, replaced by the spec's `args`.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// The config's `Env`, before the spec's env (which wins).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The config's `WorkingDir`; `None` means `/`.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The config's `User` (`uid[:gid]` or a name), overridden by the pod's
    /// securityContext.
    #[serde(default)]
    pub user: Option<String>,
}

/// Resource usage of one container at `timestamp`, as the metrics API and
/// the kubelet-style `/metrics/resource` endpoint report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerStats {
    /// CPU time used since the container started, in nanoseconds (cumulative).
    pub cpu_usage_ns: u64,
    /// Memory working set (usage minus inactive file cache), in bytes.
    pub memory_working_set_bytes: u64,
    pub timestamp: SystemTime,
}

/// Opaque, runtime-assigned identity of one container instance (one start).
/// A restart of the "same" Kubernetes container gets a new id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerId(pub String);

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Observed state of a container, shaped like Kubernetes' `ContainerState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    Running {
        started_at: SystemTime,
    },
    /// `code` is the exit code, or 128 + signal number when killed by a
    /// signal (as Kubernetes reports it). `reason` is `Completed` (code 0),
    /// `Error`, or `ContainerStatusUnknown` when the outcome was lost
    /// (supervisor and container both gone without a record; code 137).
    Exited {
        code: i32,
        signal: Option<i32>,
        reason: String,
        message: String,
        started_at: SystemTime,
        finished_at: SystemTime,
    },
}

impl ContainerState {
    pub fn is_running(&self) -> bool {
        matches!(self, ContainerState::Running { .. })
    }

    /// Exit code if exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            ContainerState::Exited { code, .. } => Some(*code),
            ContainerState::Running { .. } => None,
        }
    }
}

/// One container known to a runtime, as returned by [`Runtime::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: ContainerId,
    pub spec: ContainerSpec,
    pub state: ContainerState,
}

/// Runtime failures, grouped by what the agent reports for them.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image cannot be resolved: the agent reports `ErrImagePull`.
    #[error("image {image:?}: {reason}")]
    ImagePull { image: String, reason: String },
    /// The spec cannot be run (e.g. `keel/host` without a command).
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    /// The process could not be started (command not found, bad working
    /// directory): the agent reports `RunContainerError`. Nothing is left behind.
    #[error("container failed to start: {0}")]
    StartFailed(String),
    #[error("container {0} not found")]
    NotFound(ContainerId),
    #[error("container {0} is still running")]
    StillRunning(ContainerId),
    /// Another runtime instance holds the state directory.
    #[error("runtime state directory {0} is in use by another process")]
    Busy(PathBuf),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The runtime cannot do what was asked (e.g. exec in a runtime that
    /// has no way to enter its containers).
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Other(String),
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// What the pod lifecycle needs from a container runtime.
///
/// Guarantees every implementation gives:
/// - `start` returns only once the container process exists (or failed to
///   start, in which case nothing is left behind);
/// - `stop` sends SIGTERM (or the runtime's equivalent) to everything the
///   container started, SIGKILL after `grace_ms`, and returns the final
///   exited state; stopping an exited container is a no-op;
/// - `list` reports every container not yet removed, including those started
///   by an earlier instance on the same state, so a restarted agent re-adopts
///   instead of duplicating;
/// - `remove` refuses a running container.
pub trait Runtime: Send + Sync {
    /// Short name, e.g. `exec`.
    fn name(&self) -> &'static str;
    fn start<'a>(&'a self, spec: &'a ContainerSpec) -> BoxFuture<'a, Result<ContainerId>>;
    fn state<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ContainerState>>;
    fn stop<'a>(
        &'a self,
        id: &'a ContainerId,
        grace_ms: u64,
    ) -> BoxFuture<'a, Result<ContainerState>>;
    fn list(&self) -> BoxFuture<'_, Result<Vec<ContainerInfo>>>;
    fn remove<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>>;
    /// Current resource usage of running container `id`. Runtimes that
    /// cannot measure keep this default, which says so.
    fn stats<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ContainerStats>> {
        let _ = id;
        Box::pin(async move {
            Err(RuntimeError::Unsupported(format!(
                "the {} runtime cannot measure containers",
                self.name()
            )))
        })
    }
    /// Problems found while starting container `id` that did not stop it
    /// (e.g. a limit the kernel cannot enforce); the agent reports each as
    /// a Warning event on the pod. Default: none.
    fn warnings(&self, id: &ContainerId) -> Vec<String> {
        let _ = id;
        Vec::new()
    }
    /// Runs a command in running container `id` (see [`session`] for what
    /// the session guarantees). [`RuntimeError::StillRunning`] is never
    /// returned; an exited container is [`RuntimeError::InvalidSpec`].
    /// Runtimes that cannot exec keep this default, which says so.
    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        req: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecSession>> {
        let _ = (id, req);
        Box::pin(async move {
            Err(RuntimeError::Unsupported(format!(
                "the {} runtime cannot run commands in containers",
                self.name()
            )))
        })
    }
}
