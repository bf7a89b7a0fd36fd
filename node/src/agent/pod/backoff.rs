//! Restart back-off: `base`, doubling per restart, capped at `cap`; forgotten
//! once a container ran for `reset` (Kubernetes: 10 s, 300 s, 10 min).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    reset: Duration,
    current: Option<Duration>,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration, reset: Duration) -> Self {
        Backoff {
            base,
            cap,
            reset,
            current: None,
        }
    }

    /// The delay before the next attempt, after a run that lasted `ran_for`.
    pub fn next(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.reset {
            self.current = None;
        }
        let next = match self.current {
            Some(d) => (d * 2).min(self.cap),
            None => self.base.min(self.cap),
        };
        self.current = Some(next);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(10), s(300), s(600));
        let delays: Vec<u64> = (0..7).map(|_| b.next(s(1)).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.next(s(600)), s(10));
    }
}
