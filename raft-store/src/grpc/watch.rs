//! The `Watch` service: one bidirectional stream carries many watchers.
//!
//! Ordering guarantee: every response of a stream goes through one channel.
//! A progress response is sent only after (a) a linearizable read point R
//! was obtained and (b) every watcher of the stream handed all its events
//! with revision <= R to that channel, so it never runs ahead of events.
//!
//! Watchers put their responses on that channel themselves (a
//! [`StreamSink`]), with no task or lock of their own per item in between:
//! with thousands of watchers per stream, a relay task per watcher and a
//! stream-wide mutex per item cost more than the events themselves.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use keel_proto::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, watch_server,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use prost::bytes::BufMut;
use prost::encoding::{self, WireType};
use prost::Message;
use tokio::sync::{mpsc, oneshot, RwLock};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use crate::store::Store;
use crate::watch::{EventBatch, WatchCtl, WatchOut, WatchSink, WatchSpec};

/// etcd's default interval for `progress_notify`.
const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
const STREAM_BUFFER: usize = 1024;
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

/// What the stream sends, in order.
enum Outgoing {
    Events {
        watch_id: i64,
        revision: i64,
        events: EventBatch,
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

/// One response on the wire: the message without its events, and the
/// events as shared encodings ([`WatchCodec`] appends them).
pub struct Reply {
    head: WatchResponse,
    events: Option<EventBatch>,
}

impl WatchService {
    /// Opens one Watch stream: its session reads `input`, and the returned
    /// stream carries everything its watchers send, in order.
    fn open(&self, input: Streaming<WatchRequest>) -> ReplyStream {
        let (tx, rx) = mpsc::channel::<Outgoing>(STREAM_BUFFER);
        let session = Session {
            store: self.store.clone(),
            progress_interval: self.progress_interval,
            tx,
            gate: Arc::default(),
            watchers: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(session.run(input));
        let store = self.store.clone();
        Box::pin(ReceiverStream::new(rx).map(move |o| Ok(to_reply(&store, o))))
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<Reply, Status>> + Send>>;

/// The `etcdserverpb.Watch` service, served with [`WatchCodec`] so that
/// an event is encoded once for every watcher that receives it. The same
/// wire format as the generated `WatchServer`, which would re-encode it
/// per watcher from a `WatchResponse`.
#[derive(Clone)]
pub struct WatchServer {
    svc: Arc<WatchService>,
    max_decoding_message_size: usize,
}

impl WatchServer {
    pub fn new(svc: WatchService, max_decoding_message_size: usize) -> Self {
        WatchServer {
            svc: Arc::new(svc),
            max_decoding_message_size,
        }
    }
}

impl NamedService for WatchServer {
    const NAME: &'static str = watch_server::SERVICE_NAME;
}

/// The one method, `Watch`, as tonic's server machinery calls it.
struct WatchMethod(Arc<WatchService>);

impl StreamingService<WatchRequest> for WatchMethod {
    type Response = Reply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<tonic::Response<ReplyStream>, Status>;

    fn call(&mut self, req: Request<Streaming<WatchRequest>>) -> Self::Future {
        let stream = self.0.open(req.into_inner());
        Box::pin(async move { Ok(Response::new(stream)) })
    }
}

impl<B> Service<http::Request<B>> for WatchServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != WATCH_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let method = WatchMethod(self.svc.clone());
        let max = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(WatchCodec).apply_max_message_size_config(Some(max), None);
            Ok(grpc.streaming(method, req).await)
        })
    }
}

const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// Decodes requests with prost; encodes a [`Reply`] as a `WatchResponse`
/// by appending each event's shared encoding as field `events` (11).
#[derive(Clone, Copy, Default)]
struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = Reply;
    type Decode = WatchRequest;
    type Encoder = WatchCodec;
    type Decoder = WatchCodec;

    fn encoder(&mut self) -> WatchCodec {
        WatchCodec
    }

    fn decoder(&mut self) -> WatchCodec {
        WatchCodec
    }
}

/// `WatchResponse.events`' field number.
const EVENTS_FIELD: u32 = 11;

impl Encoder for WatchCodec {
    type Item = Reply;
    type Error = Status;

    fn encode(&mut self, item: Reply, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf);
        Ok(())
    }
}

impl Reply {
    /// Writes the `WatchResponse` this reply stands for.
    fn encode(&self, buf: &mut impl BufMut) {
        // Writing into a growable buffer cannot run out of room.
        let _ = self.head.encode(buf);
        for ev in self.events.iter().flat_map(EventBatch::encoded) {
            encoding::encode_key(EVENTS_FIELD, WireType::LengthDelimited, buf);
            encoding::encode_varint(ev.len() as u64, buf);
            buf.put_slice(ev);
        }
    }
}

impl Decoder for WatchCodec {
    type Item = WatchRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<WatchRequest>, Status> {
        WatchRequest::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

fn to_reply(store: &Store, o: Outgoing) -> Reply {
    let mut r = WatchResponse::default();
    let mut events = None;
    match o {
        Outgoing::Events {
            watch_id,
            revision,
            events: batch,
        } => {
            r.header = Some(store.header(revision));
            r.watch_id = watch_id;
            events = Some(batch);
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
    Reply { head: r, events }
}

/// A watcher's output, put straight on its stream's channel.
struct StreamSink {
    tx: mpsc::Sender<Outgoing>,
    gate: Arc<RwLock<()>>,
}

impl WatchSink for StreamSink {
    async fn send(&self, out: WatchOut) -> Result<(), ()> {
        let o = match out {
            // Every earlier item of this watcher is in `tx` already: a
            // progress response sent after this ack cannot overtake them.
            WatchOut::Synced(ack) => {
                let _ = ack.send(());
                return Ok(());
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
        let _sending = self.gate.read().await;
        self.tx.send(o).await.map_err(|_| ())
    }

    async fn closed(&self) {
        self.tx.closed().await
    }
}

struct Session {
    store: Store,
    progress_interval: Duration,
    tx: mpsc::Sender<Outgoing>,
    /// Held shared while a watcher puts an item on the stream, and
    /// exclusively while a progress response checks the revision and is
    /// sent, so no event can slip in between that check and the response.
    gate: Arc<RwLock<()>>,
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
        let sink = StreamSink {
            tx: self.tx.clone(),
            gate: self.gate.clone(),
        };
        match self.store.watch(spec, sink) {
            Ok(ctl) => {
                self.watchers.insert(watch_id, ctl);
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
        let gate = self.gate.clone();
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
                let _held = gate.write().await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{RevEvent, Revision};
    use crate::watch::SharedEvents;
    use keel_proto::etcdserverpb::ResponseHeader;
    use keel_proto::mvccpb::{event::EventType, Event, KeyValue};

    fn kv(key: &str, value: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            mod_revision: rev,
            create_revision: 2,
            version: rev - 1,
            ..Default::default()
        }
    }

    /// A reply with shared event encodings is byte for byte the
    /// `WatchResponse` prost would encode, with and without prev_kv.
    #[test]
    fn reply_encodes_as_the_watch_response() {
        let events = vec![
            RevEvent {
                rev: Revision { main: 7, sub: 0 },
                event: Event {
                    r#type: EventType::Put as i32,
                    kv: Some(kv("a/1", "new", 7)),
                    prev_kv: Some(kv("a/1", "old", 5)),
                },
            },
            RevEvent {
                rev: Revision { main: 7, sub: 1 },
                event: Event {
                    r#type: EventType::Delete as i32,
                    kv: Some(kv("a/2", "", 7)),
                    prev_kv: None,
                },
            },
        ];
        let shared = SharedEvents::new(events.clone());
        let head = WatchResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 7,
                raft_term: 3,
            }),
            watch_id: 42,
            ..Default::default()
        };
        for prev_kv in [false, true] {
            let batch = EventBatch::new(shared.clone(), vec![0, 1], prev_kv);
            let mut got = Vec::new();
            Reply {
                head: head.clone(),
                events: Some(batch),
            }
            .encode(&mut got);
            let mut want = head.clone();
            want.events = events.iter().map(|e| e.event.clone()).collect();
            if !prev_kv {
                want.events.iter_mut().for_each(|e| e.prev_kv = None);
            }
            assert_eq!(got, want.encode_to_vec(), "prev_kv {prev_kv}");
            assert_eq!(WatchResponse::decode(got.as_slice()).unwrap(), want);
        }
    }
}
