//! The agent's background tasks, owned in one place so that shutdown can
//! abort them all and wait until they are gone (and with them every handle
//! on the runtime, whose state-directory lock the next agent needs).

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

#[derive(Clone, Default)]
pub(crate) struct Tasks {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    set: JoinSet<()>,
    closed: bool,
}

impl Tasks {
    /// Spawns `fut`; after [`Tasks::shutdown`] the future is dropped unrun.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.closed {
            return;
        }
        // Reap finished tasks so the set does not grow with pod churn.
        while inner.set.try_join_next().is_some() {}
        inner.set.spawn(fut);
    }

    /// Aborts every task and waits for all of them to end.
    pub async fn shutdown(&self) {
        let set = match self.inner.lock() {
            Ok(mut inner) => {
                inner.closed = true;
                std::mem::take(&mut inner.set)
            }
            Err(_) => return,
        };
        let mut set = set;
        set.shutdown().await;
    }
}
