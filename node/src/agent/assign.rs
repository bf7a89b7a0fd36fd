//! Following the pods bound to this node (`WatchPods`).
//!
//! The stream starts at revision 0 (a snapshot of ADDED pods closed by
//! SYNCED) and afterwards resumes from the last revision seen (events and
//! BOOKMARKs), on whichever server answers, so no change is replayed or
//! missed. A compacted resume point (OUT_OF_RANGE) starts over from 0; the
//! new snapshot then tells which pods went away meanwhile.
//!
//! What the events drive is a [`PodSink`]: the agent's [`Manager`], or a
//! hollow node ([`crate::hollow`]) that runs nothing and only reports, so
//! both follow their pods with exactly this protocol code.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use keel_proto::keelnode::{pod_event, PodEvent};
use tonic::Code;

use super::client::ControlClient;
use super::manager::Manager;

const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Where the watch stands.
#[derive(Debug, Default)]
pub struct WatchState {
    /// Resume point: the last revision received.
    pub revision: i64,
    /// Uids seen during a snapshot in progress (from revision 0).
    snapshot: Option<HashSet<String>>,
}

impl WatchState {
    fn restart(&mut self) {
        self.revision = 0;
        self.snapshot = None;
    }
}

/// What the pod watch feeds, in event order.
pub trait PodSink {
    /// A pod bound here was added or changed.
    fn update(&mut self, pod: Pod);
    /// The pod with this uid left the node (deleted or moved).
    fn removed(&mut self, uid: &str);
    /// A snapshot completed: `seen` holds every uid bound here, so anything
    /// else the sink holds is gone.
    fn synced(&mut self, seen: &HashSet<String>);
}

impl PodSink for Manager {
    fn update(&mut self, pod: Pod) {
        Manager::update(self, pod)
    }

    fn removed(&mut self, uid: &str) {
        Manager::removed(self, uid)
    }

    fn synced(&mut self, seen: &HashSet<String>) {
        Manager::synced(self, seen)
    }
}

/// Runs forever: watch the pods bound to `node`, apply, reconnect.
pub async fn watch_loop(client: Arc<ControlClient>, node: &str, mut sink: impl PodSink) {
    let mut state = WatchState::default();
    let mut delay = Duration::from_millis(200);
    loop {
        if state.revision == 0 {
            state.snapshot = Some(HashSet::new());
        }
        let error = match client.watch_pods(node, state.revision).await {
            Ok(mut stream) => {
                let mut error = None;
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(ev) => {
                            delay = Duration::from_millis(200);
                            apply(&mut state, &mut sink, ev);
                        }
                        Err(s) => {
                            client.failed(&s);
                            error = Some(s);
                            break;
                        }
                    }
                }
                error
            }
            Err(s) => Some(s),
        };
        match error {
            Some(s) if s.code() == Code::OutOfRange => {
                tracing::info!(
                    revision = state.revision,
                    "watch resume point compacted; listing again"
                );
                state.restart();
                continue;
            }
            Some(s) => tracing::warn!(code = ?s.code(), error = %s.message(), "pod watch failed"),
            None => tracing::debug!("pod watch ended; resuming"),
        }
        if state.snapshot.is_some() {
            // An interrupted snapshot is incomplete: take it again.
            state.restart();
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

/// Applies one event to the sink and the resume point.
pub fn apply(state: &mut WatchState, sink: &mut impl PodSink, ev: PodEvent) {
    let kind = pod_event::Type::try_from(ev.r#type).ok();
    match kind {
        Some(pod_event::Type::Added | pod_event::Type::Modified) => match parse(&ev.pod_json) {
            Some(pod) => {
                if let (Some(seen), Some(uid)) =
                    (state.snapshot.as_mut(), pod.metadata.uid.as_ref())
                {
                    seen.insert(uid.clone());
                }
                sink.update(pod);
            }
            None => tracing::warn!(revision = ev.revision, "ignoring unparsable pod"),
        },
        Some(pod_event::Type::Deleted) => {
            if let Some(uid) = parse(&ev.pod_json).and_then(|p| p.metadata.uid) {
                sink.removed(&uid);
            }
        }
        Some(pod_event::Type::Synced) => {
            let seen = state.snapshot.take().unwrap_or_default();
            sink.synced(&seen);
        }
        Some(pod_event::Type::Bookmark) => {}
        None => tracing::warn!(kind = ev.r#type, "unknown pod event type"),
    }
    if ev.revision > 0 {
        state.revision = ev.revision;
    }
}

fn parse(bytes: &[u8]) -> Option<Pod> {
    serde_json::from_slice(bytes)
        .map_err(|e| tracing::warn!(error = %e, "bad pod JSON"))
        .ok()
}
