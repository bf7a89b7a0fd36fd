//! Back-off for deleting failed daemon pods (client-go's
//! `flowcontrol.Backoff` as the DaemonSet controller uses it): a node
//! whose daemon pod keeps failing (an agent rejecting it, a crashing
//! image with `restartPolicy: Never`) would otherwise see a delete and a
//! create in a hot loop. The first failure is handled at once; each next
//! one within the window waits twice as long, up to [`MAX`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First delay after a failed pod was deleted.
const INITIAL: Duration = Duration::from_secs(1);
/// Longest delay (Kubernetes: 15 minutes).
const MAX: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub(super) struct FailedPodBackoff {
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Clone, Copy)]
struct Entry {
    delay: Duration,
    last: Instant,
}

impl FailedPodBackoff {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .expect("the back-off lock is never poisoned")
    }

    /// `Err(wait)` while `key` is backing off; otherwise records a new
    /// failure (doubling the next delay) and returns `Ok`.
    pub(super) fn try_next(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut m = self.entries();
        // Forget keys quiet for twice the longest delay, as client-go's GC.
        m.retain(|_, e| now.saturating_duration_since(e.last) < 2 * MAX);
        match m.get_mut(key) {
            Some(e) => {
                let since = now.saturating_duration_since(e.last);
                if since < e.delay {
                    return Err(e.delay - since);
                }
                e.delay = (e.delay * 2).min(MAX);
                e.last = now;
            }
            None => {
                m.insert(
                    key.to_string(),
                    Entry {
                        delay: INITIAL,
                        last: now,
                    },
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_wait_longer_each_time() {
        let b = FailedPodBackoff::default();
        let t0 = Instant::now();
        assert_eq!(b.try_next("k", t0), Ok(()));
        assert_eq!(
            b.try_next("k", t0 + Duration::from_millis(400)),
            Err(Duration::from_millis(600))
        );
        let t1 = t0 + INITIAL;
        assert_eq!(b.try_next("k", t1), Ok(()));
        assert_eq!(b.try_next("k", t1 + INITIAL), Err(INITIAL));
        assert_eq!(b.try_next("other", t1), Ok(()));
    }
}
