//! Simulated watchers: follow a key range from revision 1 through faults,
//! resuming on another replica from the next revision whenever their stream
//! breaks, and send progress requests, recording everything they see.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use keel_proto::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, WatchCreateRequest,
    WatchProgressRequest, WatchRequest,
};
use tokio::sync::mpsc;

use super::client::{now, Channels, Target};
use crate::history::Revision;
use crate::watch::{Event, EventKind, KeyRange, ProgressNotify, WatchItem, WatcherLog};

/// What the workload tells watchers.
#[derive(Default)]
pub struct Shared {
    /// Highest revision any completed operation reported: a lower bound on
    /// the linearization point of a progress request invoked after it.
    pub max_seen: Cell<Revision>,
    /// Set once the workload finished and every fault was healed.
    pub healed: Cell<bool>,
    /// Workload operations that succeeded so far (how a real-process run
    /// tells a slow cluster from a wedged one).
    pub ok_ops: Cell<u64>,
}

pub struct Spec {
    pub name: String,
    pub range: KeyRange,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

impl Spec {
    /// An empty log for this watcher, watching from revision 1.
    pub fn new_log(&self) -> Rc<RefCell<WatcherLog>> {
        Rc::new(RefCell::new(WatcherLog {
            name: self.name.clone(),
            range: self.range.clone(),
            start_revision: 1,
            items: Vec::new(),
        }))
    }
}

/// Runs until, after healing, a progress response covers every revision
/// seen by then (or a bound on simulated time passes).
pub async fn run_watcher(
    spec: Spec,
    first_replica: usize,
    target: Target,
    shared: Rc<Shared>,
    log: Rc<RefCell<WatcherLog>>,
) -> turmoil::Result {
    let replicas = target.replicas();
    let mut chans = Channels::new(target);
    let mut replica = first_replica;
    let mut next: Revision = 1;
    let mut first = true;
    let mut target: Option<Revision> = None;
    let mut healed_at: Option<u64> = None;
    loop {
        if !first {
            log.borrow_mut().items.push(WatchItem::Resume {
                from_revision: next,
            });
        }
        first = false;
        let session = Session {
            spec: &spec,
            shared: &shared,
            log: &log,
        };
        match session
            .run(
                chans.channel(replica),
                &mut next,
                &mut target,
                &mut healed_at,
            )
            .await
        {
            Ok(()) => return Ok(()),
            Err(_) => {
                replica = (replica + 1) % replicas;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if healed_at.is_some_and(|t| now() - t > Duration::from_secs(60).as_nanos() as u64) {
            return Ok(()); // the checker reports what is missing
        }
    }
}

struct Session<'a> {
    spec: &'a Spec,
    shared: &'a Shared,
    log: &'a RefCell<WatcherLog>,
}

impl Session<'_> {
    async fn run(
        &self,
        ch: tonic::transport::Channel,
        next: &mut Revision,
        target: &mut Option<Revision>,
        healed_at: &mut Option<u64>,
    ) -> Result<(), String> {
        let (tx, rx) = mpsc::channel(8);
        tx.send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: self.spec.key.clone(),
                range_end: self.spec.range_end.clone(),
                start_revision: *next,
                ..Default::default()
            })),
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut stream = WatchClient::new(ch)
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        // Progress requests in flight on this stream: (invoked at, lower bound).
        let mut pending: VecDeque<(u64, Revision)> = VecDeque::new();
        let mut tick = tokio::time::interval(Duration::from_millis(400));
        loop {
            tokio::select! {
                msg = tokio::time::timeout(Duration::from_secs(3), stream.message()) => {
                    let resp = match msg {
                        Ok(Ok(Some(r))) => r,
                        Ok(Ok(None)) => return Err("stream ended".into()),
                        Ok(Err(e)) => return Err(e.to_string()),
                        Err(_) => continue, // idle; the tick keeps asking for progress
                    };
                    if resp.canceled {
                        return Err(format!("cancelled: {}", resp.cancel_reason));
                    }
                    for e in resp.events {
                        let Some(kv) = e.kv else { continue };
                        let put = e.r#type == 0;
                        *next = kv.mod_revision + 1;
                        self.log.borrow_mut().items.push(WatchItem::Event(Event {
                            revision: kv.mod_revision,
                            key: String::from_utf8_lossy(&kv.key).into_owned(),
                            kind: if put { EventKind::Put } else { EventKind::Delete },
                            value: put.then(|| String::from_utf8_lossy(&kv.value).into_owned()),
                        }));
                    }
                    if resp.watch_id == -1 {
                        let revision = resp.header.map_or(0, |h| h.revision);
                        let (requested_at, min_revision) = pending.pop_front().map_or((None, None), |(t, m)| (Some(t), Some(m)));
                        self.log.borrow_mut().items.push(WatchItem::Progress(ProgressNotify { revision, requested_at, min_revision }));
                        *next = (*next).max(revision + 1);
                        if target.is_some_and(|t| revision >= t) {
                            return Ok(());
                        }
                    }
                }
                _ = tick.tick() => {
                    if self.shared.healed.get() && target.is_none() {
                        *target = Some(self.shared.max_seen.get());
                        *healed_at = Some(now());
                    }
                    let invoked = now();
                    pending.push_back((invoked, self.shared.max_seen.get()));
                    let req = WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
                    tx.send(req).await.map_err(|e| e.to_string())?;
                }
            }
        }
    }
}
