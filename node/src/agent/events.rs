//! core/v1 Events about pods, recorded in the background.
//!
//! Events are best effort (like the kubelet's): they are queued and sent by
//! one task with a few retries, so a slow control plane never stalls a pod
//! worker; an event that still fails is dropped with a log line.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::client::ControlClient;
use super::tasks::Tasks;

const ATTEMPTS: u32 = 3;

/// Queues events for the sending task.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Value>,
    node: String,
}

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

impl Recorder {
    pub(crate) fn start(tasks: &Tasks, client: Arc<ControlClient>, node: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tasks.spawn(send_loop(client, rx));
        Recorder { tx, node }
    }

    /// Records an event about `pod`, about one of its containers when
    /// `container` is set (`fieldPath: spec.containers{name}`).
    pub fn pod(&self, pod: &Pod, container: Option<&str>, kind: Kind, reason: &str, message: &str) {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let now = super::time::now();
        let mut involved = json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "namespace": namespace,
            "name": meta.name,
            "uid": meta.uid,
        });
        if let Some(c) = container {
            involved["fieldPath"] = json!(format!("spec.containers{{{c}}}"));
        }
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": match kind { Kind::Normal => "Normal", Kind::Warning => "Warning" },
            "source": {"component": "kubelet", "host": self.node},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        tracing::debug!(pod = ?meta.name, reason, message, "event");
        let _ = self.tx.send(event);
    }
}

async fn send_loop(client: Arc<ControlClient>, mut rx: mpsc::UnboundedReceiver<Value>) {
    while let Some(event) = rx.recv().await {
        let bytes = event.to_string().into_bytes();
        for attempt in 1..=ATTEMPTS {
            match client.record_event(bytes.clone()).await {
                Ok(()) => break,
                Err(s) if attempt == ATTEMPTS => {
                    tracing::warn!(error = %s.message(), "dropping event");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await,
            }
        }
    }
}
