//! Builders for hand-written histories. Each test file uses a subset.
#![allow(dead_code)]

use keel_chaos::history::{Call, History, OkResult, Operation, Outcome, Revision, Time};

/// Builds a history op by op; ids are assigned in call order.
#[derive(Default)]
pub struct H {
    ops: Vec<Operation>,
}

impl H {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(
        &mut self,
        p: u64,
        inv: Time,
        comp: Option<Time>,
        call: Call,
        outcome: Outcome,
    ) -> &mut Self {
        let id = self.ops.len() as u64 + 1;
        self.ops.push(Operation {
            id,
            process: p,
            invoke: inv,
            complete: comp,
            call,
            outcome,
        });
        self
    }

    pub fn put(
        &mut self,
        p: u64,
        inv: Time,
        comp: Time,
        key: &str,
        value: &str,
        rev: Revision,
    ) -> &mut Self {
        self.push(
            p,
            inv,
            Some(comp),
            put(key, value),
            Outcome::Ok(OkResult::Put { revision: rev }),
        )
    }

    pub fn put_info(&mut self, p: u64, inv: Time, key: &str, value: &str) -> &mut Self {
        self.push(p, inv, None, put(key, value), Outcome::Info)
    }

    pub fn put_fail(&mut self, p: u64, inv: Time, comp: Time, key: &str, value: &str) -> &mut Self {
        self.push(p, inv, Some(comp), put(key, value), Outcome::Fail)
    }

    pub fn get(
        &mut self,
        p: u64,
        inv: Time,
        comp: Time,
        key: &str,
        value: Option<&str>,
        rev: Revision,
    ) -> &mut Self {
        self.push(
            p,
            inv,
            Some(comp),
            Call::Get {
                key: key.into(),
                linearizable: true,
            },
            Outcome::Ok(OkResult::Get {
                value: value.map(Into::into),
                revision: rev,
            }),
        )
    }

    pub fn get_serializable(
        &mut self,
        p: u64,
        inv: Time,
        comp: Time,
        key: &str,
        value: Option<&str>,
        rev: Revision,
    ) -> &mut Self {
        self.push(
            p,
            inv,
            Some(comp),
            Call::Get {
                key: key.into(),
                linearizable: false,
            },
            Outcome::Ok(OkResult::Get {
                value: value.map(Into::into),
                revision: rev,
            }),
        )
    }

    pub fn get_info(&mut self, p: u64, inv: Time, key: &str) -> &mut Self {
        self.push(
            p,
            inv,
            None,
            Call::Get {
                key: key.into(),
                linearizable: true,
            },
            Outcome::Info,
        )
    }

    pub fn delete(
        &mut self,
        p: u64,
        inv: Time,
        comp: Time,
        key: &str,
        deleted: bool,
        rev: Revision,
    ) -> &mut Self {
        self.push(
            p,
            inv,
            Some(comp),
            Call::Delete { key: key.into() },
            Outcome::Ok(OkResult::Delete {
                deleted,
                revision: rev,
            }),
        )
    }

    pub fn delete_info(&mut self, p: u64, inv: Time, key: &str) -> &mut Self {
        self.push(
            p,
            inv,
            None,
            Call::Delete { key: key.into() },
            Outcome::Info,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn cas(
        &mut self,
        p: u64,
        inv: Time,
        comp: Time,
        key: &str,
        expected: Option<&str>,
        new: &str,
        succeeded: bool,
        rev: Revision,
    ) -> &mut Self {
        self.push(
            p,
            inv,
            Some(comp),
            cas(key, expected, new),
            Outcome::Ok(OkResult::Cas {
                succeeded,
                revision: rev,
            }),
        )
    }

    pub fn cas_info(
        &mut self,
        p: u64,
        inv: Time,
        key: &str,
        expected: Option<&str>,
        new: &str,
    ) -> &mut Self {
        self.push(p, inv, None, cas(key, expected, new), Outcome::Info)
    }

    pub fn build(&self) -> History {
        let h = History::new(self.ops.clone());
        h.validate().expect("hand-written history is well formed");
        h
    }
}

fn put(key: &str, value: &str) -> Call {
    Call::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn cas(key: &str, expected: Option<&str>, new: &str) -> Call {
    Call::Cas {
        key: key.into(),
        expected: expected.map(Into::into),
        new: new.into(),
    }
}
