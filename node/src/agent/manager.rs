//! One worker task per pod (keyed by uid), fed the latest desired Pod.
//!
//! The manager is driven by the watch ([`super::assign`]): updates go to the
//! pod's worker through a `watch` channel (only the latest version matters),
//! a DELETED event tells the worker the pod is gone from the API, and a
//! completed snapshot (SYNCED) removes whatever runs locally but is no longer
//! assigned here: workers, containers of unknown pods (left by an earlier
//! agent), pod directories and IP allocations.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use super::pod::worker::{self, Signal};
use super::tasks::Tasks;
use super::Ctx;

/// Grace period for containers of pods nobody knows any more.
const ORPHAN_GRACE_MS: u64 = 10_000;

struct Handle {
    tx: watch::Sender<Signal>,
    finished: Arc<AtomicBool>,
}

/// See the module docs.
pub struct Manager {
    ctx: Arc<Ctx>,
    tasks: Tasks,
    workers: HashMap<String, Handle>,
    /// Uids with a worker, shared with orphan cleanup, which checks it at the
    /// moment it removes something (a pod may arrive while it runs).
    live: Arc<Mutex<HashSet<String>>>,
}

impl Manager {
    pub(crate) fn new(ctx: Arc<Ctx>, tasks: Tasks) -> Self {
        Manager {
            ctx,
            tasks,
            workers: HashMap::new(),
            live: Arc::default(),
        }
    }

    /// A pod was added or changed.
    pub fn update(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone().filter(|u| safe_uid(u)) else {
            tracing::warn!(pod = ?pod.metadata.name, "ignoring pod without a usable uid");
            return;
        };
        if let Some(bad) = unsafe_container_name(&pod) {
            tracing::warn!(pod = ?pod.metadata.name, container = %bad, "ignoring pod with an unusable container name");
            return;
        }
        self.ctx.index.upsert(&pod);
        if let Some(h) = self.workers.get(&uid) {
            // A finished worker has deleted its pod: later versions are echoes.
            if !h.finished.load(Ordering::SeqCst) {
                h.tx.send_replace(Signal::Pod(Box::new(pod)));
            }
            return;
        }
        let (tx, rx) = watch::channel(Signal::Pod(Box::new(pod)));
        let finished = Arc::new(AtomicBool::new(false));
        self.tasks.spawn(worker::run(
            self.ctx.clone(),
            uid.clone(),
            rx,
            finished.clone(),
        ));
        if let Ok(mut live) = self.live.lock() {
            live.insert(uid.clone());
        }
        self.workers.insert(uid, Handle { tx, finished });
    }

    /// The pod is gone from the API (or from this node).
    pub fn removed(&mut self, uid: &str) {
        if let Some(h) = self.workers.remove(uid) {
            h.tx.send_replace(Signal::Gone);
        }
        if let Ok(mut live) = self.live.lock() {
            live.remove(uid);
        }
        self.ctx.index.remove(uid);
    }

    /// A snapshot completed; `seen` holds every pod uid it contained.
    pub fn synced(&mut self, seen: &HashSet<String>) {
        let gone: Vec<String> = self
            .workers
            .keys()
            .filter(|uid| !seen.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.removed(&uid);
        }
        self.tasks
            .spawn(clean_orphans(self.ctx.clone(), self.live.clone()));
    }
}

/// Uids become directory names: allow only what a uid looks like.
fn safe_uid(uid: &str) -> bool {
    !uid.is_empty()
        && !uid.starts_with('.')
        && uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Container names become directory names (logs): the first one that is
/// not a plain name, if any. The API validates them as DNS labels already;
/// the agent does not rely on that.
fn unsafe_container_name(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| &c.name)
        .find(|n| !safe_uid(n))
        .cloned()
}

/// Stops and removes everything local that belongs to no live pod. (A
/// worker being terminated is no longer live: its own cleanup and this one
/// may overlap, which is harmless.)
async fn clean_orphans(ctx: Arc<Ctx>, live: Arc<Mutex<HashSet<String>>>) {
    let known = |uid: &str| live.lock().map_or(true, |l| l.contains(uid));
    let rt = ctx.runtime();
    match rt.list().await {
        Ok(list) => {
            for c in list.into_iter().filter(|c| !known(&c.spec.pod_uid)) {
                tracing::info!(pod = %c.spec.pod_name, container = %c.spec.container_name, "removing container of an unassigned pod");
                if c.state.is_running() {
                    let _ = rt.stop(&c.id, ORPHAN_GRACE_MS).await;
                }
                if let Err(e) = rt.remove(&c.id).await {
                    tracing::warn!(container = %c.id, error = %e, "cannot remove orphan");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list containers"),
    }
    let pods = ctx.cfg.root_dir.join("pods");
    if let Ok(entries) = std::fs::read_dir(&pods) {
        for e in entries.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if !known(&uid) {
                // The namespace pin is a mount inside the directory.
                super::pod::network::teardown(&ctx, &uid).await;
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if ctx.cfg.network == crate::podnet::NetworkMode::Netns {
        let Ok(live) = live.lock().map(|l| l.clone()) else {
            return;
        };
        match crate::podnet::sweep_veths(&live).await {
            Ok(gone) if !gone.is_empty() => {
                tracing::info!(?gone, "removed veths of unassigned pods")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot sweep pod veths"),
        }
    }
    if let Ok(mut ipam) = ctx.ipam.lock() {
        for uid in ipam.uids() {
            if !known(&uid) {
                ipam.release(&uid);
            }
        }
    }
}
