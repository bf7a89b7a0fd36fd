//! `?watch=true`: Kubernetes watch streams from the store's own watch, on
//! any replica, never by polling.
//!
//! Guarantees: events arrive in revision order with no gap from the
//! requested resourceVersion (the store's watch catches up from history);
//! resourceVersion "0" or unset first sends a synthetic ADDED for every
//! matching object, read at one revision, then the changes after it; an
//! object that stops matching the selectors is delivered as DELETED (and
//! one that starts matching as ADDED); a compacted resourceVersion is an
//! ERROR event with a 410 Expired Status, after which the stream ends.
//!
//! A replica cut off from the quorum does not keep watches open silently
//! (they would miss what the majority commits): a watch from a
//! resourceVersion starts only after a read barrier (else 503/504, as any
//! read), and an open stream ends within about two probe intervals of its
//! replica losing the quorum, so the client re-watches from its last
//! resourceVersion on a replica that has one (as the Kubernetes API server
//! ends its watches when etcd loses its leader).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Response, StatusCode};
use bytes::Bytes;
use keel_proto::mvccpb::{Event, KeyValue};
use keel_store::watch::{WatchOut, WatchSpec};
use keel_store::Store;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::output::{self, IncludeObject, Selectors};
use super::{route, Api, Reply, Req, Target};
use crate::status::{ApiError, ApiResult};
use crate::storage::{self, prefix_end};

/// How often an idle stream that asked for bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);
/// How often an open stream checks (with a read barrier, bounded by the
/// same interval) that its replica still reaches a quorum.
const QUORUM_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// What one watch request asked for.
struct WatchRequest {
    target: Target,
    selectors: Selectors,
    /// None: start with the current state (synthetic ADDED events).
    from_revision: Option<i64>,
    bookmarks: bool,
    timeout: Option<Duration>,
    table: bool,
    include: IncludeObject,
}

fn parse(t: Target, r: &Req) -> ApiResult<WatchRequest> {
    let selectors = Selectors::from_query(t.info, &r.query)?;
    let from_revision = match r.query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(s) => Some(s.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::bad_request(format!("resourceVersion {s:?} is not a valid revision"))
        })?),
    };
    let timeout = match r.query.get("timeoutSeconds") {
        None => None,
        Some(s) => Some(Duration::from_secs(s.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "timeoutSeconds {s:?} is not a non-negative integer"
            ))
        })?)),
    };
    Ok(WatchRequest {
        target: t,
        selectors,
        from_revision,
        bookmarks: route::flag(&r.query, "allowWatchBookmarks"),
        timeout,
        table: output::wants_table(r),
        include: IncludeObject::from_query(&r.query),
    })
}

/// Starts the stream. Errors before the first byte (bad parameters, no
/// quorum for the initial list) are ordinary Status replies.
pub async fn serve(api: Arc<Api>, t: Target, r: Req) -> ApiResult<Reply> {
    let w = parse(t, &r)?;
    let prefix = w.target.info.prefix(w.target.namespace.as_deref());
    let (initial, start_rev) = match w.from_revision {
        Some(rv) => {
            api.objects.store().read_barrier().await?;
            (vec![], rv)
        }
        None => {
            let listed = super::read::list_objects(&api, &prefix, &w.selectors, 0, None).await?;
            (listed.items, listed.revision)
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(run(api, w, prefix, initial, start_rev, tx));
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .map_err(|e| ApiError::internal(format!("building the watch response: {e}")))?;
    Ok(Reply::Stream(resp))
}

type Tx = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Keeps the watcher count right however the stream ends.
pub(crate) struct Counted(Arc<crate::metrics::Metrics>);

impl Counted {
    /// Counts one more open watch until the returned guard drops.
    pub(crate) fn start(metrics: Arc<crate::metrics::Metrics>) -> Counted {
        metrics.watch_started();
        Counted(metrics)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.watch_ended();
    }
}

async fn run(
    api: Arc<Api>,
    w: WatchRequest,
    prefix: String,
    initial: Vec<KeyValue>,
    start_rev: i64,
    tx: Tx,
) {
    let _count = Counted::start(api.metrics.clone());
    let mut enc = Encoder { w: &w, first: true };
    for kv in &initial {
        let obj = Obj::Stored(kv, kv.mod_revision);
        if !enc.send(&tx, "ADDED", obj).await {
            return;
        }
    }
    let (out_tx, mut out_rx) = mpsc::channel(64);
    let spec = WatchSpec {
        watch_id: 0,
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(&prefix),
        start_revision: start_rev + 1,
        prev_kv: true,
        no_put: false,
        no_delete: false,
        progress_notify: w.bookmarks.then_some(BOOKMARK_INTERVAL),
        drop_some_events: false,
    };
    let _ctl = match api.objects.store().watch(spec, out_tx) {
        Ok(c) => c,
        Err(e) => {
            enc.error(&tx, &ApiError::from(e)).await;
            return;
        }
    };
    let deadline = w.timeout.map(|d| tokio::time::Instant::now() + d);
    let lost = lost_quorum(api.objects.store());
    tokio::pin!(lost);
    loop {
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, out_rx.recv())
                    .await
                    .ok()
                    .flatten(),
                None => out_rx.recv().await,
            }
        };
        tokio::select! {
            msg = next => match msg {
                Some(m) => if !enc.deliver(&tx, m).await { return },
                None => return,
            },
            _ = tx.closed() => return,
            _ = &mut lost => {
                tracing::info!("ending a watch: this replica does not reach a quorum");
                return;
            }
        }
    }
}

/// Resolves once a read barrier fails or does not finish within
/// [`QUORUM_PROBE_INTERVAL`].
pub(crate) async fn lost_quorum(store: &Store) {
    loop {
        tokio::time::sleep(QUORUM_PROBE_INTERVAL).await;
        let probe = tokio::time::timeout(QUORUM_PROBE_INTERVAL, store.read_barrier()).await;
        if !matches!(probe, Ok(Ok(()))) {
            return;
        }
    }
}

/// The object of one watch event.
enum Obj<'a> {
    /// As stored, to be served with this resourceVersion.
    Stored(&'a KeyValue, i64),
    Tree(Value),
}

impl Obj<'_> {
    /// None: stored bytes that are not JSON (the event is skipped).
    fn into_tree(self) -> Option<Value> {
        match self {
            Obj::Tree(o) => Some(o),
            Obj::Stored(kv, rev) => {
                let mut o = storage::decode(kv).ok()?.obj;
                storage::set_resource_version(&mut o, rev);
                Some(o)
            }
        }
    }
}

/// The event for a watch without selectors: every change is delivered,
/// so nothing needs parsing. A put over a live key is MODIFIED, else
/// ADDED; a delete carries the last state at the delete's revision.
/// None: a delete of nothing known.
fn unfiltered<'e>(ev: &'e Event, kv: &'e KeyValue) -> Option<(&'static str, Obj<'e>)> {
    let prev = ev.prev_kv.as_ref().filter(|p| !p.value.is_empty());
    Some(match (ev.r#type, prev) {
        (1, Some(p)) => ("DELETED", Obj::Stored(p, kv.mod_revision)),
        (1, None) => return None,
        (_, Some(_)) => ("MODIFIED", Obj::Stored(kv, kv.mod_revision)),
        (_, None) => ("ADDED", Obj::Stored(kv, kv.mod_revision)),
    })
}

/// The start of an event line, up to its object.
fn line_head(kind: &str, object_len: usize) -> Vec<u8> {
    let mut line = Vec::with_capacity(object_len + 64);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line
}

/// Turns store events into Kubernetes watch events on the wire.
struct Encoder<'a> {
    w: &'a WatchRequest,
    /// Table column definitions go on the first event only.
    first: bool,
}

impl Encoder<'_> {
    /// false when the stream is over (client gone or an ERROR was sent).
    async fn deliver(&mut self, tx: &Tx, m: WatchOut) -> bool {
        match m {
            WatchOut::Events { events, .. } => {
                for ev in &events {
                    if let Some((kind, obj)) = self.convert(ev) {
                        if !self.send(tx, kind, obj).await {
                            return false;
                        }
                    }
                }
                true
            }
            WatchOut::Progress { revision, .. } => {
                if !self.w.bookmarks {
                    return true;
                }
                let info = self.w.target.info;
                let obj = json!({"kind": info.kind, "apiVersion": info.api_version(),
                                 "metadata": {"resourceVersion": revision.to_string()}});
                self.raw(tx, json!({"type": "BOOKMARK", "object": obj}))
                    .await
            }
            WatchOut::Canceled {
                compact_revision, ..
            } => {
                let e = ApiError::gone(format!(
                    "too old resource version: {} ({compact_revision})",
                    self.w.from_revision.unwrap_or(0)
                ));
                self.error(tx, &e).await;
                false
            }
            _ => true,
        }
    }

    /// The watch event for one store event, after the selectors.
    fn convert<'e>(&self, ev: &'e Event) -> Option<(&'static str, Obj<'e>)> {
        let sel = &self.w.selectors;
        let kv = ev.kv.as_ref()?;
        if sel.is_empty() {
            return unfiltered(ev, kv);
        }
        let old = ev
            .prev_kv
            .as_ref()
            .filter(|p| !p.value.is_empty())
            .and_then(|p| storage::decode(p).ok())
            .map(|s| s.obj);
        let old_match = old.as_ref().is_some_and(|o| sel.matches(o));
        if ev.r#type == 1 {
            let mut o = old?;
            storage::set_resource_version(&mut o, kv.mod_revision);
            return old_match.then_some(("DELETED", Obj::Tree(o)));
        }
        let new = storage::decode(kv).ok()?.obj;
        match (sel.matches(&new), old_match) {
            (true, true) => Some(("MODIFIED", Obj::Tree(new))),
            (true, false) => Some(("ADDED", Obj::Tree(new))),
            (false, true) => {
                let mut o = old?;
                storage::set_resource_version(&mut o, kv.mod_revision);
                Some(("DELETED", Obj::Tree(o)))
            }
            (false, false) => None,
        }
    }

    async fn send(&mut self, tx: &Tx, kind: &str, obj: Obj<'_>) -> bool {
        if self.w.table {
            let obj = match obj.into_tree() {
                Some(o) => o,
                None => return true,
            };
            let t = output::table(
                self.w.target.info,
                std::slice::from_ref(&obj),
                None,
                None,
                self.w.include,
                self.first,
            );
            self.first = false;
            return self.line(tx, kind, &t).await;
        }
        match obj {
            Obj::Tree(o) => self.line(tx, kind, &o).await,
            Obj::Stored(kv, rev) => {
                let mut line = line_head(kind, kv.value.len());
                if storage::write_object(&mut line, &kv.key, &kv.value, rev).is_err() {
                    return true; // not JSON: skipped, as the tree path skips it
                }
                self.finish_line(tx, line).await
            }
        }
    }

    /// `{"type":..,"object":..}` serialized straight from the object, with
    /// no copy of it per watcher.
    async fn line(&mut self, tx: &Tx, kind: &str, obj: &Value) -> bool {
        let mut line = line_head(kind, 0);
        if serde_json::to_writer(&mut line, obj).is_err() {
            return false;
        }
        self.finish_line(tx, line).await
    }

    async fn finish_line(&mut self, tx: &Tx, mut line: Vec<u8>) -> bool {
        line.extend_from_slice(b"}\n");
        tx.send(Ok(Bytes::from(line))).await.is_ok()
    }

    async fn error(&mut self, tx: &Tx, e: &ApiError) {
        self.raw(tx, json!({"type": "ERROR", "object": e.to_status()}))
            .await;
    }

    async fn raw(&mut self, tx: &Tx, ev: Value) -> bool {
        let mut line = ev.to_string().into_bytes();
        line.push(b'\n');
        tx.send(Ok(Bytes::from(line))).await.is_ok()
    }
}
