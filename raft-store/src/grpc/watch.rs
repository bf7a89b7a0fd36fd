//! The `Watch` service: one bidirectional stream carries many watchers.
//!
//! Ordering guarantee: every response of a stream goes through one channel.
//! A progress response is sent only after (a) a linearizable read point R
//! was obtained and (b) every watcher of the stream handed all its events
//! with revision <= R to that channel, so it never runs ahead of events.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use keel_proto::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, watch_server::Watch,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::store::Store;
use crate::watch::{WatchCtl, WatchOut, WatchSpec};

/// etcd's default interval for `progress_notify`.
const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
const STREAM_BUFFER: usize = 256;
/// Attempts to find a quiet revision for a progress response.
const PROGRESS_ROUNDS: usize = 20;

pub struct WatchService {
    store: Store,
    progress_interval: Duration,
}

impl WatchService {
    pub fn new(store: Store) -> Self {
        WatchService {
            store,
            progress_interval: PROGRESS_NOTIFY_INTERVAL,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

/// What the stream sends, in order.
enum Outgoing {
    Events {
        watch_id: i64,
        revision: i64,
        events: Vec<keel_proto::mvccpb::Event>,
    },
    /// Idle progress notification of one watcher.
    WatcherProgress {
        watch_id: i64,
        revision: i64,
    },
    /// The watcher's next revision was compacted away.
    Compacted {
        watch_id: i64,
        compact_revision: i64,
        reason: String,
    },
    Created {
        watch_id: i64,
        revision: i64,
    },
    CreateFailed {
        watch_id: i64,
        reason: String,
    },
    Canceled {
        watch_id: i64,
    },
    Progress {
        revision: i64,
    },
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let input = req.into_inner();
        let (tx, rx) = mpsc::channel::<Outgoing>(STREAM_BUFFER);
        let session = Session {
            store: self.store.clone(),
            progress_interval: self.progress_interval,
            tx,
            send_lock: Arc::default(),
            watchers: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(session.run(input));
        let store = self.store.clone();
        let out = ReceiverStream::new(rx).map(move |o| Ok(to_response(&store, o)));
        Ok(Response::new(Box::pin(out)))
    }
}

fn to_response(store: &Store, o: Outgoing) -> WatchResponse {
    let mut r = WatchResponse::default();
    match o {
        Outgoing::Events {
            watch_id,
            revision,
            events,
        } => {
            r.header = Some(store.header(revision));
            r.watch_id = watch_id;
            r.events = events;
        }
        Outgoing::WatcherProgress { watch_id, revision } => {
            r.header = Some(store.header(revision));
            r.watch_id = watch_id;
        }
        Outgoing::Compacted {
            watch_id,
            compact_revision,
            reason,
        } => {
            r.header = Some(store.header(store.current_revision()));
            r.watch_id = watch_id;
            r.canceled = true;
            r.compact_revision = compact_revision;
            r.cancel_reason = reason;
        }
        Outgoing::Created { watch_id, revision } => {
            r.header = Some(store.header(revision));
            r.watch_id = watch_id;
            r.created = true;
        }
        Outgoing::CreateFailed { watch_id, reason } => {
            r.header = Some(store.header(store.current_revision()));
            r.watch_id = watch_id;
            r.created = true;
            r.canceled = true;
            r.cancel_reason = reason;
        }
        Outgoing::Canceled { watch_id } => {
            r.header = Some(store.header(store.current_revision()));
            r.watch_id = watch_id;
            r.canceled = true;
        }
        Outgoing::Progress { revision } => {
            r.header = Some(store.header(revision));
            // Not tied to one watcher: clients broadcast it to all.
            r.watch_id = -1;
        }
    }
    r
}

struct Session {
    store: Store,
    progress_interval: Duration,
    tx: mpsc::Sender<Outgoing>,
    /// Held while putting a watcher's item on the stream, and while a
    /// progress response checks the revision and is sent, so no event can
    /// slip in between that check and the response.
    send_lock: Arc<tokio::sync::Mutex<()>>,
    watchers: HashMap<i64, mpsc::Sender<WatchCtl>>,
    next_id: i64,
}

impl Session {
    async fn run(mut self, mut input: Streaming<WatchRequest>) {
        while let Ok(Some(req)) = input.message().await {
            let ok = match req.request_union {
                Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
                Some(RequestUnion::CancelRequest(c)) => {
                    self.watchers.remove(&c.watch_id);
                    self.tx
                        .send(Outgoing::Canceled {
                            watch_id: c.watch_id,
                        })
                        .await
                        .is_ok()
                }
                Some(RequestUnion::ProgressRequest(_)) => {
                    self.progress();
                    true
                }
                None => true,
            };
            if !ok {
                return;
            }
        }
    }

    async fn create(&mut self, c: WatchCreateRequest) -> bool {
        let watch_id = if c.watch_id != 0 {
            c.watch_id
        } else {
            self.alloc_id()
        };
        if self.watchers.contains_key(&watch_id) {
            let reason = "etcdserver: duplicate watch ID provided on the WatchStream".to_string();
            return self
                .tx
                .send(Outgoing::CreateFailed { watch_id, reason })
                .await
                .is_ok();
        }
        let spec = WatchSpec {
            watch_id,
            key: c.key,
            range_end: c.range_end,
            start_revision: c.start_revision,
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: c.progress_notify.then_some(self.progress_interval),
            drop_some_events: false,
        };
        // The created response goes first; the watcher's events follow it.
        let created = Outgoing::Created {
            watch_id,
            revision: self.store.current_revision(),
        };
        if self.tx.send(created).await.is_err() {
            return false;
        }
        let (wtx, mut wrx) = mpsc::channel::<WatchOut>(64);
        match self.store.watch(spec, wtx) {
            Ok(ctl) => {
                self.watchers.insert(watch_id, ctl);
                let tx = self.tx.clone();
                let send_lock = self.send_lock.clone();
                tokio::spawn(async move {
                    while let Some(o) = wrx.recv().await {
                        let o = match o {
                            // Everything before the marker is in `tx` now.
                            WatchOut::Synced(ack) => {
                                let _ = ack.send(());
                                continue;
                            }
                            WatchOut::Events {
                                watch_id,
                                revision,
                                events,
                            } => Outgoing::Events {
                                watch_id,
                                revision,
                                events,
                            },
                            WatchOut::Progress { watch_id, revision } => {
                                Outgoing::WatcherProgress { watch_id, revision }
                            }
                            WatchOut::Canceled {
                                watch_id,
                                compact_revision,
                                reason,
                            } => Outgoing::Compacted {
                                watch_id,
                                compact_revision,
                                reason,
                            },
                        };
                        let _sending = send_lock.lock().await;
                        if tx.send(o).await.is_err() {
                            return;
                        }
                    }
                });
                true
            }
            Err(e) => self
                .tx
                .send(Outgoing::CreateFailed {
                    watch_id,
                    reason: e.to_string(),
                })
                .await
                .is_ok(),
        }
    }

    fn alloc_id(&mut self) -> i64 {
        while self.watchers.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Answers a progress request without blocking the stream's reader.
    ///
    /// The reported revision R is at least the request's linearization
    /// point (read barrier first), every watcher delivered all its events
    /// up to R before the response, and none delivered an event above R
    /// (R is the store's current revision while watchers are held back), so
    /// a progress response never runs ahead of, nor behind, the stream.
    /// Under writes that never pause it may take a few rounds; after
    /// [`PROGRESS_ROUNDS`] it is dropped, as etcd drops progress requests it
    /// cannot answer while watchers are unsynced.
    fn progress(&self) {
        let store = self.store.clone();
        let tx = self.tx.clone();
        let send_lock = self.send_lock.clone();
        let ctls: Vec<mpsc::Sender<WatchCtl>> = self.watchers.values().cloned().collect();
        tokio::spawn(async move {
            if store.read_barrier().await.is_err() {
                return; // no quorum: no progress can be promised
            }
            let mut upto = store.current_revision();
            for _ in 0..PROGRESS_ROUNDS {
                let mut acks = Vec::new();
                for ctl in &ctls {
                    let (ack, rx) = oneshot::channel();
                    if ctl.send(WatchCtl::SyncedTo { upto, ack }).await.is_ok() {
                        acks.push(rx);
                    }
                }
                for rx in acks {
                    let _ = rx.await; // a cancelled watcher drops its ack
                }
                let _held = send_lock.lock().await;
                let now = store.current_revision();
                if now == upto {
                    let _ = tx.send(Outgoing::Progress { revision: upto }).await;
                    return;
                }
                upto = now;
            }
        });
    }
}
