//! Requests a follower forwards to its leader, coalesced into batches.
//!
//! Two thirds of a cluster's clients talk to followers, and each of their
//! writes and linearizable reads needs the leader. One peer RPC per request
//! costs the follower and the leader an HTTP/2 stream, a bincode round trip
//! and a task each; etcd instead streams proposals to the leader. Here every
//! request queued while earlier batches are in flight rides in one
//! [`ForwardRequest::Batch`], and the read-index requests of a batch share a
//! single read-index item (a round started after all of them arrived, as in
//! etcd's `linearizableReadLoop`).
//!
//! Guarantees: each request gets the outcome of its own item. When a batch's
//! outcome is unknown (the RPC failed after it may have reached the leader)
//! every item fails with that error and nothing is resent, so a forwarded
//! write is applied at most once. A batch is resent item by item only when
//! the leader proved it took none of it: it could not decode the batch (a
//! leader that predates batches).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_net::{PeerClient, PeerError, PeerMethod};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::error::StoreError;
use crate::log_store::{decode, encode};
use crate::store::{ForwardRequest, ForwardResponse};

/// Batches in flight to one leader at once. While all are out, requests
/// queue and leave together in the next batch; a few in flight keep the
/// peer connection busy without making requests wait for a full round trip.
const MAX_IN_FLIGHT: usize = 4;
/// Items in one batch, bounding the leader's work per RPC.
const MAX_BATCH: usize = 512;

/// One forwarded request waiting for its batch.
struct Pending {
    req: ForwardRequest,
    deadline: Instant,
    reply: oneshot::Sender<Result<ForwardResponse, StoreError>>,
}

/// The follower side: one queue (and sending task) per leader address.
pub(crate) struct Forwarder {
    peers: PeerClient,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Pending>>>,
}

impl Forwarder {
    pub(crate) fn new(peers: PeerClient) -> Self {
        Forwarder {
            peers,
            queues: Mutex::default(),
        }
    }

    /// Forwards `req` (a write or a read-index request) to the leader at
    /// `addr` in the next batch. Errors as [`send`]: `NotLeader` only when
    /// the request was certainly not taken.
    pub(crate) async fn call(
        &self,
        addr: &str,
        req: ForwardRequest,
        left: Duration,
    ) -> Result<ForwardResponse, StoreError> {
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            req,
            deadline: Instant::now() + left,
            reply,
        };
        if self.queue(addr).send(pending).is_err() {
            // The queue's task is gone (runtime shutting down): not sent.
            return Ok(ForwardResponse::NotLeader);
        }
        match tokio::time::timeout(left, rx).await {
            Ok(Ok(r)) => r,
            // The batch task was dropped mid-call: outcome unknown.
            Ok(Err(_)) => Err(StoreError::LeaderChanged),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    fn queue(&self, addr: &str) -> mpsc::UnboundedSender<Pending> {
        let mut queues = self.queues.lock().expect("forward queues poisoned");
        if let Some(q) = queues.get(addr).filter(|q| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_queue(self.peers.clone(), addr.to_string(), rx));
        queues.insert(addr.to_string(), tx.clone());
        tx
    }
}

/// Sends the queue's requests in batches, at most [`MAX_IN_FLIGHT`] at a
/// time, until the forwarder is dropped.
async fn run_queue(peers: PeerClient, addr: String, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (peers, addr) = (peers.clone(), addr.clone());
        tokio::spawn(async move {
            send_batch(&peers, &addr, batch).await;
            drop(slot);
        });
    }
}

/// Sends one batch and answers each of its requests.
async fn send_batch(peers: &PeerClient, addr: &str, batch: Vec<Pending>) {
    // A caller that gave up before its request left reported an unknown
    // outcome; not sending it keeps that true (it is applied zero times).
    let batch: Vec<Pending> = batch.into_iter().filter(|p| !p.reply.is_closed()).collect();
    let Some(deadline) = batch.iter().map(|p| p.deadline).max() else {
        return;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let (reads, others): (Vec<Pending>, Vec<Pending>) = batch
        .into_iter()
        .partition(|p| matches!(p.req, ForwardRequest::ReadIndex));
    let mut items = Vec::with_capacity(others.len() + 1);
    let mut replies = Vec::with_capacity(others.len());
    for p in others {
        items.push(p.req);
        replies.push(p.reply);
    }
    if !reads.is_empty() {
        items.push(ForwardRequest::ReadIndex);
    }
    let mut answers = match call_items(peers, addr, items, left).await {
        Ok(answers) => answers.into_iter().map(Ok).collect::<Vec<_>>(),
        Err(e) => {
            let n = replies.len() + usize::from(!reads.is_empty());
            (0..n).map(|_| Err(e.clone())).collect()
        }
    };
    if !reads.is_empty() {
        let read = answers.pop().expect("one answer per item");
        for p in reads {
            let _ = p.reply.send(share_read_answer(&read));
        }
    }
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

/// A read-index answer, copied for each read that shares it.
fn share_read_answer(
    r: &Result<ForwardResponse, StoreError>,
) -> Result<ForwardResponse, StoreError> {
    match r {
        Ok(ForwardResponse::ReadIndex(i)) => Ok(ForwardResponse::ReadIndex(*i)),
        Ok(ForwardResponse::NotLeader) => Ok(ForwardResponse::NotLeader),
        Ok(_) => Err(StoreError::Internal("bad read-index answer".into())),
        Err(e) => Err(e.clone()),
    }
}

/// Sends `items` (one alone, several as a batch) and returns one answer per
/// item, in order.
async fn call_items(
    peers: &PeerClient,
    addr: &str,
    mut items: Vec<ForwardRequest>,
    left: Duration,
) -> Result<Vec<ForwardResponse>, StoreError> {
    let n = items.len();
    if n == 1 {
        let item = items.pop().expect("one item");
        return Ok(vec![send(peers, addr, &item, left).await?]);
    }
    let batch = ForwardRequest::Batch(items);
    match send(peers, addr, &batch, left).await {
        Ok(ForwardResponse::Batch(answers)) if answers.len() == n => Ok(answers),
        Ok(ForwardResponse::NotLeader) => Ok((0..n).map(|_| ForwardResponse::NotLeader).collect()),
        Ok(_) => Err(StoreError::Internal("bad forward batch answer".into())),
        Err(SendError::Undecodable) => {
            let ForwardRequest::Batch(items) = batch else {
                unreachable!("built above")
            };
            let one_by_one = items.iter().map(|item| send(peers, addr, item, left));
            futures::future::join_all(one_by_one)
                .await
                .into_iter()
                .map(|r| r.map_err(SendError::into_store_error))
                .collect()
        }
        Err(e) => Err(e.into_store_error()),
    }
}

/// Why a forward RPC failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The leader could not decode the request, so it took none of it.
    Undecodable,
    Other(StoreError),
}

impl SendError {
    pub(crate) fn into_store_error(self) -> StoreError {
        match self {
            // What an unbatched caller reported before batches existed.
            SendError::Undecodable => StoreError::LeaderChanged,
            SendError::Other(e) => e,
        }
    }
}

impl From<SendError> for StoreError {
    fn from(e: SendError) -> Self {
        e.into_store_error()
    }
}

/// One forward RPC. `NotLeader` also stands for "the leader's port refused
/// the connection": in both cases the request was not taken, and callers
/// may retry it once a leader is known. Any other failure leaves the outcome
/// unknown.
pub(crate) async fn send(
    peers: &PeerClient,
    addr: &str,
    req: &ForwardRequest,
    left: Duration,
) -> Result<ForwardResponse, SendError> {
    let internal = |e: std::io::Error| SendError::Other(StoreError::Internal(e.to_string()));
    let data = encode(req).map_err(internal)?;
    match peers.call(addr, PeerMethod::Forward, data, left).await {
        Ok(b) => decode(&b).map_err(internal),
        Err(PeerError::Refused { .. }) => Ok(ForwardResponse::NotLeader),
        Err(PeerError::Timeout { .. }) => Err(SendError::Other(StoreError::Timeout)),
        Err(PeerError::Remote { status, .. }) if status.code() == tonic::Code::InvalidArgument => {
            Err(SendError::Undecodable)
        }
        Err(_) => Err(SendError::Other(StoreError::LeaderChanged)),
    }
}
