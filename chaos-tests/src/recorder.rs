//! Builds a valid [`History`] while a simulation runs.
//!
//! Why a recorder: the crash rule of [`crate::history`] (a process whose operation
//! ended `Info` never issues again) is easy to get wrong in a workload loop. The
//! recorder keeps it for the caller: workloads talk about stable *clients*
//! (e.g. "worker 3"), and the recorder maps each client to its current process id,
//! handing the client a fresh process id whenever one of its operations ends
//! `Info`.
//!
//! Guarantees: ids are assigned in invocation order; a client may have at most one
//! operation in flight; operations still in flight when [`Recorder::finish`] is
//! called are recorded as `Info` (their outcome is unknown).

use std::collections::BTreeMap;

use crate::history::{Call, History, OpId, Operation, Outcome, ProcessId, Time};

/// A workload's stable name for one of its sequential actors.
pub type ClientId = u64;

/// Misuse of the recorder by the workload.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("client {0} already has an operation in flight")]
    ClientBusy(ClientId),
    #[error("operation {0} is not in flight")]
    UnknownOp(OpId),
    #[error("operation {0} completes before it was invoked")]
    TimeWentBack(OpId),
}

#[derive(Debug)]
struct Pending {
    client: ClientId,
    op: Operation,
}

/// Records invocations and completions. Deterministic: no hashing, no clocks.
#[derive(Debug, Default)]
pub struct Recorder {
    next_op: OpId,
    next_process: ProcessId,
    process_of: BTreeMap<ClientId, ProcessId>,
    busy: BTreeMap<ClientId, OpId>,
    pending: BTreeMap<OpId, Pending>,
    done: Vec<Operation>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The process id `client` currently acts as (allocating one on first use).
    pub fn process_of(&mut self, client: ClientId) -> ProcessId {
        let next = &mut self.next_process;
        *self.process_of.entry(client).or_insert_with(|| {
            let p = *next;
            *next += 1;
            p
        })
    }

    /// Records that `client` sent `call` at `time`.
    pub fn invoke(
        &mut self,
        client: ClientId,
        time: Time,
        call: Call,
    ) -> Result<OpId, RecordError> {
        if self.busy.contains_key(&client) {
            return Err(RecordError::ClientBusy(client));
        }
        let process = self.process_of(client);
        let id = self.next_op;
        self.next_op += 1;
        self.busy.insert(client, id);
        let op = Operation {
            id,
            process,
            invoke: time,
            complete: None,
            call,
            outcome: Outcome::Info,
        };
        self.pending.insert(id, Pending { client, op });
        Ok(id)
    }

    /// Records the answer to `op` at `time`. For `Outcome::Info` the time is
    /// discarded (the return time is infinity) and the client moves to a fresh
    /// process id.
    pub fn complete(&mut self, op: OpId, time: Time, outcome: Outcome) -> Result<(), RecordError> {
        let Some(Pending {
            client,
            op: mut rec,
        }) = self.pending.remove(&op)
        else {
            return Err(RecordError::UnknownOp(op));
        };
        if time < rec.invoke {
            self.pending.insert(op, Pending { client, op: rec });
            return Err(RecordError::TimeWentBack(op));
        }
        self.busy.remove(&client);
        if outcome == Outcome::Info {
            self.retire(client);
        } else {
            rec.complete = Some(time);
        }
        rec.outcome = outcome;
        self.done.push(rec);
        Ok(())
    }

    /// Ends the recording. In-flight operations become `Info`. Operations are
    /// returned sorted by id.
    pub fn finish(mut self) -> History {
        let pending = std::mem::take(&mut self.pending);
        self.done.extend(pending.into_values().map(|p| p.op));
        self.done.sort_by_key(|o| o.id);
        History::new(self.done)
    }

    fn retire(&mut self, client: ClientId) {
        let p = self.next_process;
        self.next_process += 1;
        self.process_of.insert(client, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::OkResult;

    fn put(v: &str) -> Call {
        Call::Put {
            key: "k".into(),
            value: v.into(),
        }
    }

    #[test]
    fn info_gives_the_client_a_new_process() {
        let mut r = Recorder::new();
        let a = r.invoke(7, 10, put("a")).unwrap();
        assert_eq!(r.invoke(7, 11, put("x")), Err(RecordError::ClientBusy(7)));
        r.complete(a, 20, Outcome::Info).unwrap();
        let b = r.invoke(7, 30, put("b")).unwrap();
        r.complete(b, 40, Outcome::Ok(OkResult::Put { revision: 3 }))
            .unwrap();
        let c = r.invoke(8, 35, put("c")).unwrap();
        let h = r.finish();
        h.validate().unwrap();
        assert_eq!(h.ops.len(), 3);
        assert_ne!(h.ops[0].process, h.ops[1].process);
        assert_eq!(h.ops[0].complete, None);
        assert_eq!(h.ops[1].complete, Some(40));
        assert_eq!(h.ops[2].id, c);
        assert_eq!(h.ops[2].outcome, Outcome::Info);
    }
}
