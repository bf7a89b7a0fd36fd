//! One pod watch per replica for every node's `WatchPods` stream, routed
//! by `spec.nodeName` (kube-apiserver's watch cache with its nodeName
//! index, in small).
//!
//! Why: a node stream used to be an API watch of its own over every pod,
//! which decoded every pod event to test its field selector, so with N
//! nodes each pod change was decoded 2N times on every replica (500 hollow
//! nodes and 15,000 pods did not finish). Here each store event is read
//! once, only for its `spec.nodeName` before and after, and handed to the
//! one or two nodes it concerns; a node's stream encodes only its own pods.
//!
//! Guarantees, the same as the API's pod watch with the field selector
//! `spec.nodeName=<node>`:
//! - a subscriber from revision `r` gets every change of its pods with a
//!   revision above `r`, exactly once, in revision order: what was routed
//!   after `r` is replayed from a bounded window of recent deliveries under
//!   the same lock that routes new ones, so nothing falls between the two;
//! - a pod that comes to the node is ADDED, one that changes on it is
//!   MODIFIED, one that leaves it (deleted, or no longer naming it) is
//!   DELETED at the revision of that change, with its last state;
//! - when `r` is older than the window, [`PodRouter::subscribe`] answers
//!   None and the caller serves the stream from its own store watch (which
//!   catches up from history), as before this router;
//! - a stream that does not keep up (its queue of [`QUEUE_LEN`] is full) is
//!   dropped, never waited for, so one slow agent never slows the others;
//!   its stream ends and the agent resumes from its last revision;
//! - when this replica stops reaching a quorum, or the store watch ends,
//!   every stream ends (agents resume on a replica with a quorum) and the
//!   next subscriber starts a new store watch after a read barrier;
//! - every [`BOOKMARK_INTERVAL`] each stream gets a bookmark at the
//!   revision routed so far, so an idle node resumes from a recent revision.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use keel_proto::mvccpb::{Event, KeyValue};
use keel_store::watch::{WatchOut, WatchSpec};
use keel_store::Store;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::api::watch::lost_quorum;
use crate::status::ApiResult;
use crate::storage::prefix_end;

/// How many deliveries the replay window holds: enough for the events
/// between a node's initial list and its subscription on a busy cluster.
pub const WINDOW_LEN: usize = 4096;
/// How many revisions before the first subscriber's a starting router
/// begins at (history the store replays into the window).
const START_HISTORY_REVS: i64 = 1000;
/// Items a stream may have queued before it counts as not keeping up.
pub const QUEUE_LEN: usize = 1024;
/// How often every stream gets a bookmark.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);

/// What a pod change means for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

/// One pod change for one node: `kv` holds the bytes to send (the last
/// state for a DELETED), to be served with resourceVersion `revision`.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub node: Arc<str>,
    pub change: Change,
    pub revision: i64,
    pub kv: Arc<KeyValue>,
}

/// What a node's stream receives.
#[derive(Debug, Clone)]
pub enum Item {
    Pod(Delivery),
    /// Every change up to this revision has been delivered.
    Bookmark(i64),
}

struct Sub {
    id: u64,
    /// Deliveries at or below this revision were already sent or are
    /// older than the subscriber asked for.
    after: i64,
    tx: mpsc::Sender<Item>,
}

#[derive(Default)]
struct State {
    running: bool,
    /// Every store event with a revision at or below this one was routed.
    routed: i64,
    /// Every delivery with a revision above this one is in `recent`.
    floor: i64,
    recent: VecDeque<Delivery>,
    subs: HashMap<Arc<str>, Vec<Sub>>,
    next_id: u64,
}

/// Routes the replica's pod changes to node streams; cheap to clone.
#[derive(Clone)]
pub struct PodRouter {
    store: Store,
    prefix: String,
    state: Arc<Mutex<State>>,
    /// Serializes starts, so two first subscribers start one store watch.
    start: Arc<tokio::sync::Mutex<()>>,
}

impl PodRouter {
    /// A router over the pods under `prefix`; its store watch starts with
    /// the first subscriber.
    pub fn new(store: Store, prefix: String) -> PodRouter {
        PodRouter {
            store,
            prefix,
            state: Arc::default(),
            start: Arc::default(),
        }
    }

    /// A stream of `node`'s pod changes after revision `from`, or None when
    /// `from` is older than the replay window (serve it from history).
    /// Errors: no quorum for the read barrier (503/504, as any read).
    pub async fn subscribe(
        &self,
        node: &str,
        from: i64,
    ) -> ApiResult<Option<mpsc::Receiver<Item>>> {
        self.store.read_barrier().await?;
        self.ensure_running(from).await?;
        let mut st = self.lock();
        if !st.running || from < st.floor {
            return Ok(None);
        }
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let node: Arc<str> = Arc::from(node);
        let replay = st
            .recent
            .iter()
            .filter(|d| d.revision > from && d.node == node);
        for d in replay {
            if tx.try_send(Item::Pod(d.clone())).is_err() {
                return Ok(None); // more to replay than a queue holds
            }
        }
        let after = from.max(st.routed);
        let id = st.next_id;
        st.next_id += 1;
        st.subs.entry(node).or_default().push(Sub { id, after, tx });
        Ok(Some(rx))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the store watch if it is not running: after the last
    /// revision routed when the router ran before (its window is kept, so
    /// streams resuming after a lost quorum are still served from it), else
    /// [`START_HISTORY_REVS`] before `from`, the first subscriber's
    /// revision (the store replays what came after, so that subscriber and
    /// the others starting about then are served by the router too).
    async fn ensure_running(&self, from: i64) -> ApiResult<()> {
        let _one = self.start.lock().await;
        let after = {
            let st = self.lock();
            if st.running {
                return Ok(());
            }
            let current = self.store.current_revision();
            if st.routed > 0 {
                st.routed
            } else {
                // Nodes that start together list their pods at slightly
                // different revisions, and each that subscribes with an
                // older one than the router began at would need a store
                // watch of its own: begin a little history earlier.
                let wanted = if current - from > WINDOW_LEN as i64 {
                    current // too old: that subscriber is served from history
                } else {
                    from.min(current)
                };
                wanted
                    .min(current - START_HISTORY_REVS)
                    .max(self.store.compact_revision())
                    .max(0)
            }
        };
        let (out_tx, out_rx) = mpsc::channel(256);
        let spec = WatchSpec {
            watch_id: 0,
            key: self.prefix.as_bytes().to_vec(),
            range_end: prefix_end(&self.prefix),
            start_revision: after + 1,
            prev_kv: true,
            no_put: false,
            no_delete: false,
            progress_notify: Some(BOOKMARK_INTERVAL),
            drop_some_events: false,
        };
        let ctl = self.store.watch(spec, out_tx)?;
        {
            let mut st = self.lock();
            if st.routed == 0 {
                st.routed = after;
                st.floor = after;
            }
            debug_assert_eq!(st.routed, after);
            debug_assert!(st.subs.is_empty(), "streams end when the router stops");
            st.running = true;
        }
        let router = self.clone();
        tokio::spawn(async move {
            router.run(out_rx).await;
            drop(ctl);
        });
        Ok(())
    }

    /// Routes until the store watch ends or the replica loses the quorum;
    /// then ends every stream. The window survives a lost quorum (the next
    /// start resumes after the last routed revision) but not a cancelled
    /// store watch (compacted history: the next start begins afresh).
    async fn run(&self, mut out: mpsc::Receiver<WatchOut>) {
        let lost = lost_quorum(&self.store);
        tokio::pin!(lost);
        let mut tick = tokio::time::interval(BOOKMARK_INTERVAL);
        tick.tick().await;
        let keep_window = loop {
            tokio::select! {
                m = out.recv() => match m {
                    Some(WatchOut::Events { events, .. }) => self.route(&events),
                    Some(WatchOut::Progress { revision, .. }) => self.advance(revision),
                    Some(WatchOut::Synced(ack)) => { let _ = ack.send(()); }
                    Some(WatchOut::Canceled { reason, .. }) => {
                        tracing::warn!(reason, "the node pod router's store watch was cancelled");
                        break false;
                    }
                    None => break true,
                },
                _ = tick.tick() => self.bookmark(),
                _ = &mut lost => {
                    tracing::info!("ending node pod streams: this replica does not reach a quorum");
                    break true;
                }
            }
        };
        let mut st = self.lock();
        st.running = false;
        st.subs.clear();
        if !keep_window {
            let next_id = st.next_id;
            *st = State {
                next_id,
                ..State::default()
            };
        }
    }

    fn route(&self, events: &[Event]) {
        let mut st = self.lock();
        for ev in events {
            let Some(rev) = ev.kv.as_ref().map(|kv| kv.mod_revision) else {
                continue;
            };
            for d in deliveries(ev) {
                st.send(&d);
                st.remember(d);
            }
            st.routed = st.routed.max(rev);
        }
    }

    /// The store says every event up to `revision` was delivered.
    fn advance(&self, revision: i64) {
        let mut st = self.lock();
        st.routed = st.routed.max(revision);
    }

    fn bookmark(&self) {
        let mut st = self.lock();
        let at = st.routed;
        st.subs.retain(|_, subs| {
            subs.retain(|s| s.tx.try_send(Item::Bookmark(at)).is_ok());
            !subs.is_empty()
        });
    }
}

impl State {
    /// Hands `d` to its node's streams; drops those that are full or gone.
    fn send(&mut self, d: &Delivery) {
        let Some(subs) = self.subs.get_mut(&d.node) else {
            return;
        };
        subs.retain(|s| {
            if d.revision <= s.after {
                return true;
            }
            match s.tx.try_send(Item::Pod(d.clone())) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::info!(node = %d.node, id = s.id, "a node pod stream fell behind: ending it");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if subs.is_empty() {
            self.subs.remove(&d.node);
        }
    }

    fn remember(&mut self, d: Delivery) {
        debug_assert!(
            d.revision > self.floor,
            "deliveries are routed in revision order"
        );
        self.recent.push_back(d);
        while self.recent.len() > WINDOW_LEN {
            if let Some(old) = self.recent.pop_front() {
                self.floor = old.revision;
            }
        }
    }
}

/// What one store event means for the nodes it concerns: none (a pod
/// with no node), one, or two (a pod that moves: DELETED for the old node,
/// ADDED for the new one).
pub fn deliveries(ev: &Event) -> Vec<Delivery> {
    let Some(kv) = ev.kv.as_ref() else {
        return vec![];
    };
    let rev = kv.mod_revision;
    let prev = ev.prev_kv.as_ref().filter(|p| !p.value.is_empty());
    let old = prev.and_then(|p| node_of(&p.value).map(|n| (n, p)));
    let deleted = |(n, p): (Arc<str>, &KeyValue)| Delivery {
        node: n,
        change: Change::Deleted,
        revision: rev,
        kv: Arc::new(p.clone()),
    };
    if ev.r#type == 1 {
        return old.map(deleted).into_iter().collect();
    }
    let new = node_of(&kv.value);
    let this = |node, change| Delivery {
        node,
        change,
        revision: rev,
        kv: Arc::new(kv.clone()),
    };
    match (old, new) {
        (Some((a, _)), Some(b)) if a == b => vec![this(b, Change::Modified)],
        (old, new) => old
            .map(deleted)
            .into_iter()
            .chain(new.map(|b| this(b, Change::Added)))
            .collect(),
    }
}

/// The pod's `spec.nodeName`, None when empty or not a pod; reads nothing
/// else into memory.
pub fn node_of(value: &[u8]) -> Option<Arc<str>> {
    #[derive(Deserialize)]
    struct Pod<'a> {
        #[serde(borrow, default)]
        spec: Option<Spec<'a>>,
    }
    #[derive(Deserialize)]
    struct Spec<'a> {
        #[serde(borrow, default, rename = "nodeName")]
        node_name: Option<std::borrow::Cow<'a, str>>,
    }
    let pod: Pod = serde_json::from_slice(value).ok()?;
    let name = pod.spec?.node_name?;
    (!name.is_empty()).then(|| Arc::from(name.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(rev: i64, node: &str) -> KeyValue {
        let spec = match node {
            "" => serde_json::json!({}),
            n => serde_json::json!({"nodeName": n}),
        };
        let v = serde_json::json!({"metadata": {"name": "p"}, "spec": spec});
        KeyValue {
            key: b"/registry/pods/default/p".to_vec(),
            value: serde_json::to_vec(&v).unwrap(),
            mod_revision: rev,
            ..Default::default()
        }
    }

    fn put(rev: i64, prev: Option<&str>, node: &str) -> Event {
        Event {
            r#type: 0,
            kv: Some(kv(rev, node)),
            prev_kv: prev.map(|n| kv(rev - 1, n)),
        }
    }

    fn summary(ev: &Event) -> Vec<(String, Change, i64)> {
        deliveries(ev)
            .into_iter()
            .map(|d| (d.node.to_string(), d.change, d.revision))
            .collect()
    }

    #[test]
    fn routes_by_node_name_before_and_after() {
        assert_eq!(summary(&put(5, None, "")), vec![], "unscheduled: nobody");
        assert_eq!(
            summary(&put(6, Some(""), "n1")),
            vec![("n1".into(), Change::Added, 6)],
            "bound: ADDED on its node"
        );
        assert_eq!(
            summary(&put(7, Some("n1"), "n1")),
            vec![("n1".into(), Change::Modified, 7)]
        );
        assert_eq!(
            summary(&put(8, Some("n1"), "n2")),
            vec![
                ("n1".into(), Change::Deleted, 8),
                ("n2".into(), Change::Added, 8)
            ],
            "moved: DELETED on the old node, ADDED on the new"
        );
        assert_eq!(
            summary(&put(9, None, "n3")),
            vec![("n3".into(), Change::Added, 9)],
            "created bound"
        );
    }

    #[test]
    fn a_delete_carries_the_last_state_at_the_delete_revision() {
        let ev = Event {
            r#type: 1,
            kv: Some(KeyValue {
                key: b"/registry/pods/default/p".to_vec(),
                mod_revision: 12,
                ..Default::default()
            }),
            prev_kv: Some(kv(11, "n1")),
        };
        let d = deliveries(&ev);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (&*d[0].node, d[0].change, d[0].revision),
            ("n1", Change::Deleted, 12)
        );
        assert_eq!(node_of(&d[0].kv.value).as_deref(), Some("n1"));
        let unscheduled = Event {
            prev_kv: Some(kv(11, "")),
            ..ev
        };
        assert!(deliveries(&unscheduled).is_empty());
    }

    #[test]
    fn node_of_ignores_what_is_not_a_pod() {
        assert_eq!(node_of(b"not json"), None);
        assert_eq!(node_of(br#"{"spec": {"nodeName": ""}}"#), None);
        assert_eq!(node_of(br#"{"spec": null}"#), None);
        assert_eq!(
            node_of(br#"{"spec": {"nodeName": "a\"b"}}"#).as_deref(),
            Some("a\"b")
        );
    }

    fn delivery(node: &str, revision: i64) -> Delivery {
        Delivery {
            node: Arc::from(node),
            change: Change::Modified,
            revision,
            kv: Arc::new(kv(revision, node)),
        }
    }

    #[test]
    fn a_full_stream_is_dropped_and_the_others_still_get_theirs() {
        let mut st = State::default();
        let (slow_tx, _slow_rx) = mpsc::channel(1);
        let (fast_tx, mut fast_rx) = mpsc::channel(8);
        let n: Arc<str> = Arc::from("n1");
        st.subs.insert(
            n.clone(),
            vec![
                Sub {
                    id: 0,
                    after: 0,
                    tx: slow_tx,
                },
                Sub {
                    id: 1,
                    after: 0,
                    tx: fast_tx,
                },
            ],
        );
        for rev in 1..=3 {
            st.send(&delivery("n1", rev));
        }
        assert_eq!(st.subs[&n].len(), 1, "the full one is gone");
        assert_eq!(st.subs[&n][0].id, 1);
        let mut got = vec![];
        while let Ok(Item::Pod(d)) = fast_rx.try_recv() {
            got.push(d.revision);
        }
        assert_eq!(got, vec![1, 2, 3]);
    }

    #[test]
    fn the_window_keeps_the_newest_and_raises_its_floor() {
        let mut st = State::default();
        for rev in 1..=(WINDOW_LEN as i64 + 10) {
            st.remember(delivery("n", rev));
        }
        assert_eq!(st.recent.len(), WINDOW_LEN);
        assert_eq!(st.floor, 10);
        assert_eq!(st.recent.front().map(|d| d.revision), Some(11));
    }
}
