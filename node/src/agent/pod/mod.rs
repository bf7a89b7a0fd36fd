//! The per-pod sync loop and its parts.
//!
//! - [`worker`]: the loop (setup, init containers, app containers,
//!   termination, status reports);
//! - [`container`]: one Kubernetes container across its restarts;
//! - [`backoff`]: restart back-off;
//! - [`image`](mod@image): the image store lookup / pull before a start;
//! - [`probe`]: exec, httpGet and tcpSocket probes;
//! - [`env`](mod@env): container environment (`env`, `envFrom`, downward API);
//! - [`network`]: the pod's namespace and IP in netns mode;
//! - [`volumes`]: emptyDir, hostPath, configMap, secret, projected and
//!   downwardAPI volumes;
//! - [`projected`]: projected volume sources (service account tokens);
//! - [`atomic`]: publishing a volume's files atomically (`..data` swap);
//! - [`isolation`]: requests, limits and securityContext for the runtime;
//! - [`objects`]: ConfigMaps and Secrets fetched for one sync;
//! - [`state`]: what survives an agent restart;
//! - [`status`]: the PodStatus the agent reports.

pub mod atomic;
pub mod backoff;
pub mod container;
pub mod env;
pub mod image;
pub mod isolation;
pub mod network;
pub mod objects;
pub mod probe;
pub mod projected;
pub mod state;
pub mod status;
pub mod volumes;
pub mod worker;
