//! How a node networks its pods, as its agent announces it on its Node, so
//! that the API server can tell users what the cluster cannot enforce.
//!
//! Loopback mode (pods share the agent's network namespace) cannot filter
//! one pod's packets from another's, so NetworkPolicy is not enforced on
//! such a node; netns mode enforces it with nftables.

/// Node annotation whose value is [`LOOPBACK`] or [`NETNS`]. Nodes without
/// it (agents older than the annotation) are treated as unknown, not as
/// loopback.
pub const ANNOTATION: &str = "keel.dev/pod-network";
/// Pods share the agent's network namespace (127.x pod addresses).
pub const LOOPBACK: &str = "loopback";
/// A network namespace per pod on a node bridge.
pub const NETNS: &str = "netns";
