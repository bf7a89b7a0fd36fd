//! The watch hub and watchers.
//!
//! The state machine publishes each applied revision's events on a
//! broadcast channel. A watcher subscribes *first*, then reads the MVCC
//! history from its next revision up to the current one, then follows the
//! channel, skipping revisions it already has. If it falls behind (its
//! client is slow and the channel lags) or a snapshot replaced the state, it
//! catches up from history again. So a watcher never drops an event: it
//! either delivers every revision in order, exactly once, or is cancelled
//! with the compacted revision when its next revision was compacted away.

use std::sync::Arc;
use std::time::Duration;

use keel_proto::mvccpb::{event::EventType, Event};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::error::StoreError;
use crate::mvcc::{KeyRange, RevEvent};
use crate::state_machine::SmShared;

/// Batches a lagging watcher may fall behind by before it re-reads history.
const HUB_CAPACITY: usize = 4096;
/// Events per response when catching up from history (whole revisions only).
const MAX_EVENTS_PER_RESPONSE: usize = 1000;

#[derive(Clone, Debug)]
pub enum HubMsg {
    /// All events of one applied revision.
    Events {
        revision: i64,
        events: Arc<Vec<RevEvent>>,
    },
    /// The state was replaced (snapshot installed): re-read history.
    Reset,
}

pub struct WatchHub {
    tx: broadcast::Sender<HubMsg>,
}

impl Default for WatchHub {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(HUB_CAPACITY);
        WatchHub { tx }
    }
}

impl WatchHub {
    pub fn publish(&self, events: Vec<RevEvent>) {
        if let Some(first) = events.first() {
            let revision = first.rev.main;
            debug_assert!(events.iter().all(|e| e.rev.main == revision));
            let _ = self.tx.send(HubMsg::Events {
                revision,
                events: Arc::new(events),
            });
        }
    }

    pub fn reset(&self) {
        let _ = self.tx.send(HubMsg::Reset);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<HubMsg> {
        self.tx.subscribe()
    }

    pub fn watcher_count(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// What a client asked to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchSpec {
    pub watch_id: i64,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// First revision to deliver; 0 means "after the current revision".
    pub start_revision: i64,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
    /// Send an empty response with the current revision when idle.
    pub progress_notify: Option<Duration>,
    /// Test-only mutation: silently drop some events (chaos checkers must
    /// notice). Set only through `Mutation::DropWatchEvents`.
    pub drop_some_events: bool,
}

/// What a watcher sends to its stream, in order.
#[derive(Debug)]
pub enum WatchOut {
    Events {
        watch_id: i64,
        revision: i64,
        events: Vec<Event>,
    },
    /// Idle progress notification for one watcher.
    Progress { watch_id: i64, revision: i64 },
    Canceled {
        watch_id: i64,
        compact_revision: i64,
        reason: String,
    },
    /// Answers [`WatchCtl::SyncedTo`]: every event up to the requested
    /// revision precedes this item. Whoever drains the channel acks it once
    /// it has passed those events on, so a progress response sent after the
    /// ack can never overtake them.
    Synced(oneshot::Sender<()>),
}

/// Control messages from the stream to a watcher.
pub enum WatchCtl {
    /// Emit [`WatchOut::Synced`] once every event with revision `<= upto`
    /// is in the output channel.
    SyncedTo { upto: i64, ack: oneshot::Sender<()> },
}

struct Watcher {
    sm: Arc<SmShared>,
    spec: WatchSpec,
    out: mpsc::Sender<WatchOut>,
    /// Every revision `< next` has been delivered (or did not match).
    next: i64,
    pending: Vec<(i64, oneshot::Sender<()>)>,
    sent_since_tick: bool,
}

/// Runs a watcher until its stream closes or it is cancelled.
pub async fn run_watcher(
    sm: Arc<SmShared>,
    spec: WatchSpec,
    out: mpsc::Sender<WatchOut>,
    mut ctl: mpsc::Receiver<WatchCtl>,
) {
    let mut w = Watcher {
        next: spec.start_revision,
        sm,
        spec,
        out,
        pending: Vec::new(),
        sent_since_tick: false,
    };
    let tick = w
        .spec
        .progress_notify
        .unwrap_or(Duration::from_secs(3600 * 24 * 365));
    let mut ticker = tokio::time::interval(tick);
    ticker.tick().await;
    loop {
        let mut rx = w.sm.hub.subscribe();
        if w.catch_up().await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let ok = match msg {
                        Ok(HubMsg::Events { revision, events }) => w.on_batch(revision, &events).await,
                        Ok(HubMsg::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    match ok {
                        Ok(true) => {}
                        Ok(false) => break, // gap: re-read history
                        Err(()) => return,
                    }
                }
                c = ctl.recv() => match c {
                    Some(WatchCtl::SyncedTo { upto, ack }) => w.pending.push((upto, ack)),
                    None => return,
                },
                _ = ticker.tick(), if w.spec.progress_notify.is_some() => {
                    if !w.sent_since_tick {
                        let msg = WatchOut::Progress { watch_id: w.spec.watch_id, revision: w.next - 1 };
                        if w.out.send(msg).await.is_err() { return; }
                    }
                    w.sent_since_tick = false;
                }
                _ = w.out.closed() => return,
            }
            if w.resolve_pending().await.is_err() {
                return;
            }
        }
    }
}

impl Watcher {
    /// Delivers history from `next` to the current revision.
    async fn catch_up(&mut self) -> Result<(), ()> {
        let read = {
            let st = self.sm.read();
            let cur = st.mvcc.current_revision();
            if self.next <= 0 {
                self.next = cur + 1;
            }
            st.mvcc.events_between(self.next, cur).map(|ev| (ev, cur))
        };
        let (events, upto) = match read {
            Ok(r) => r,
            Err(StoreError::Compacted { compact_revision }) => {
                let _ = self
                    .out
                    .send(WatchOut::Canceled {
                        watch_id: self.spec.watch_id,
                        compact_revision,
                        reason: StoreError::Compacted { compact_revision }.to_string(),
                    })
                    .await;
                return Err(());
            }
            Err(_) => return Err(()),
        };
        let matching: Vec<&RevEvent> = events.iter().filter(|e| self.matches(&e.event)).collect();
        let mut start = 0;
        while start < matching.len() {
            let mut end = (start + MAX_EVENTS_PER_RESPONSE).min(matching.len());
            // Keep a revision's events together.
            while end < matching.len() && matching[end].rev.main == matching[end - 1].rev.main {
                end += 1;
            }
            let revision = if end == matching.len() {
                upto
            } else {
                matching[end - 1].rev.main
            };
            let chunk = matching[start..end]
                .iter()
                .map(|e| self.shape(&e.event))
                .collect();
            self.send_events(revision, chunk).await?;
            start = end;
        }
        self.next = self.next.max(upto + 1);
        self.resolve_pending().await
    }

    /// Handles one live revision. `Ok(false)` means a gap was detected.
    async fn on_batch(&mut self, revision: i64, events: &[RevEvent]) -> Result<bool, ()> {
        if revision < self.next {
            return Ok(true); // already delivered from history
        }
        if revision > self.next {
            return Ok(false);
        }
        let mine: Vec<Event> = events
            .iter()
            .filter(|e| self.matches(&e.event))
            .map(|e| self.shape(&e.event))
            .collect();
        if !mine.is_empty() {
            self.send_events(revision, mine).await?;
        }
        self.next = revision + 1;
        Ok(true)
    }

    async fn send_events(&mut self, revision: i64, mut events: Vec<Event>) -> Result<(), ()> {
        if self.spec.drop_some_events {
            events.retain(|e| e.kv.as_ref().is_none_or(|kv| kv.mod_revision % 7 != 3));
        }
        if events.is_empty() {
            return Ok(());
        }
        self.sent_since_tick = true;
        let msg = WatchOut::Events {
            watch_id: self.spec.watch_id,
            revision,
            events,
        };
        self.out.send(msg).await.map_err(|_| ())
    }

    fn matches(&self, e: &Event) -> bool {
        let is_put = e.r#type == EventType::Put as i32;
        if (is_put && self.spec.no_put) || (!is_put && self.spec.no_delete) {
            return false;
        }
        let key =
            e.kv.as_ref()
                .map(|kv| kv.key.as_slice())
                .unwrap_or_default();
        KeyRange::new(&self.spec.key, &self.spec.range_end).contains(key)
    }

    fn shape(&self, e: &Event) -> Event {
        let mut e = e.clone();
        if !self.spec.prev_kv {
            e.prev_kv = None;
        }
        e
    }

    async fn resolve_pending(&mut self) -> Result<(), ()> {
        let synced = self.next - 1;
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].0 <= synced {
                let (_, ack) = self.pending.swap_remove(i);
                self.out.send(WatchOut::Synced(ack)).await.map_err(|_| ())?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, Identity};
    use crate::state_machine::StateMachine;
    use crate::types::Command;
    use keel_proto::etcdserverpb::{request_op::Request, PutRequest, RequestOp, TxnRequest};
    use prost::Message;

    fn put_cmd(key: &str, value: &str) -> Command {
        let txn = TxnRequest {
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: key.into(),
                    value: value.into(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        Command::Txn(txn.encode_to_vec())
    }

    fn open_sm(dir: &std::path::Path) -> Arc<SmShared> {
        let id = Identity {
            cluster: "c".into(),
            member: "m".into(),
        };
        StateMachine::open(Db::open(dir, &id).unwrap(), Default::default())
            .unwrap()
            .shared
    }

    fn spec(key: &str, end: &str, start: i64) -> WatchSpec {
        WatchSpec {
            key: key.into(),
            range_end: end.into(),
            start_revision: start,
            ..Default::default()
        }
    }

    async fn revisions(rx: &mut mpsc::Receiver<WatchOut>, until: i64) -> Vec<i64> {
        let mut revs = Vec::new();
        while revs.last().copied().unwrap_or(0) < until {
            match rx.recv().await.expect("watcher alive") {
                WatchOut::Events { events, .. } => {
                    revs.extend(events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        revs
    }

    /// A watcher whose client does not read falls far behind the hub; it
    /// then catches up from history without losing or repeating a revision.
    #[tokio::test]
    async fn slow_watcher_catches_up_from_history_without_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let sm = open_sm(dir.path());
        let (tx, mut rx) = mpsc::channel(1);
        let (_ctl_tx, ctl_rx) = mpsc::channel(1);
        tokio::spawn(run_watcher(sm.clone(), spec("k", "l", 2), tx, ctl_rx));
        let n = HUB_CAPACITY as i64 + 500;
        for i in 0..n {
            sm.apply_for_test(&put_cmd(&format!("k{}", i % 7), "v"));
            if i % 512 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let revs = revisions(&mut rx, n + 1).await;
        assert_eq!(revs, (2..=n + 1).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn filters_prefix_and_progress_ack() {
        let dir = tempfile::tempdir().unwrap();
        let sm = open_sm(dir.path());
        sm.apply_for_test(&put_cmd("a/1", "x")); // rev 2
        let (tx, mut rx) = mpsc::channel(16);
        let (ctl_tx, ctl_rx) = mpsc::channel(1);
        let mut s = spec("a/", "a0", 1);
        s.no_delete = true;
        tokio::spawn(run_watcher(sm.clone(), s, tx, ctl_rx));
        sm.apply_for_test(&put_cmd("b", "x")); // rev 3, not matching
        sm.apply_for_test(&put_cmd("a/2", "y")); // rev 4
        assert_eq!(revisions(&mut rx, 4).await, vec![2, 4]);
        sm.apply_for_test(&put_cmd("b", "z")); // rev 5
        let (ack, mut ack_rx) = oneshot::channel();
        ctl_tx
            .send(WatchCtl::SyncedTo { upto: 5, ack })
            .await
            .unwrap();
        // The marker comes through the output channel, after the events;
        // the stream acks it once those are on the wire.
        match rx.recv().await.unwrap() {
            WatchOut::Synced(ack) => ack.send(()).unwrap(),
            other => panic!("expected the synced marker, got {other:?}"),
        }
        ack_rx.try_recv().expect("marker carried the ack");
    }

    #[tokio::test]
    async fn compacted_start_is_cancelled_with_compact_revision() {
        let dir = tempfile::tempdir().unwrap();
        let sm = open_sm(dir.path());
        for i in 0..5 {
            sm.apply_for_test(&put_cmd("k", &i.to_string()));
        }
        sm.apply_for_test(&Command::Compact { revision: 4 });
        let (tx, mut rx) = mpsc::channel(16);
        let (_ctl_tx, ctl_rx) = mpsc::channel(1);
        tokio::spawn(run_watcher(sm.clone(), spec("k", "", 2), tx, ctl_rx));
        match rx.recv().await.unwrap() {
            WatchOut::Canceled {
                compact_revision, ..
            } => assert_eq!(compact_revision, 4),
            other => panic!("expected cancel, got {other:?}"),
        }
    }
}
