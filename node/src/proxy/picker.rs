//! Endpoint choice for one frontend, per connection (or UDP session).
//!
//! Guarantees, as kube-proxy's:
//! - candidates are the ready backends; only when none is ready, the
//!   serving-and-terminating ones (so draining pods still finish the
//!   traffic no one else can take); a terminating backend is never chosen
//!   while a ready one exists;
//! - among candidates, round-robin;
//! - with ClientIP affinity a client keeps its backend for as long as it
//!   stays a candidate and the client returns within the timeout (each use
//!   renews it);
//! - backends the caller already failed to reach (`tried`) are skipped, and
//!   a failed backend loses its affinity pins.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::table::{Backend, Route};

/// Expired affinity entries are swept every this many picks.
const SWEEP_EVERY: u32 = 1024;

/// Round-robin position and ClientIP pins of one frontend.
#[derive(Debug, Default)]
pub struct Picker {
    next: usize,
    pins: HashMap<IpAddr, (SocketAddr, Instant)>,
    picks: u32,
}

/// The backends a connection may use now: ready ones, else serving and
/// terminating ones.
pub fn candidates(backends: &[Backend]) -> Vec<&Backend> {
    let ready: Vec<&Backend> = backends.iter().filter(|b| b.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    backends
        .iter()
        .filter(|b| b.serving && b.terminating)
        .collect()
}

impl Picker {
    /// The backend for a new connection from `client`, skipping `tried`;
    /// `None` when no candidate is left.
    pub fn pick(
        &mut self,
        route: &Route,
        client: IpAddr,
        now: Instant,
        tried: &[SocketAddr],
    ) -> Option<SocketAddr> {
        self.sweep(now, route.affinity_timeout);
        let usable: Vec<SocketAddr> = candidates(&route.backends)
            .into_iter()
            .map(|b| b.addr)
            .filter(|a| !tried.contains(a))
            .collect();
        if usable.is_empty() {
            return None;
        }
        if let Some(timeout) = route.affinity_timeout {
            if let Some((addr, last)) = self.pins.get_mut(&client) {
                if now.saturating_duration_since(*last) < timeout && usable.contains(addr) {
                    *last = now;
                    return Some(*addr);
                }
            }
        }
        let chosen = usable[self.next % usable.len()];
        self.next = self.next.wrapping_add(1);
        if route.affinity_timeout.is_some() {
            self.pins.insert(client, (chosen, now));
        }
        Some(chosen)
    }

    /// `backend` could not be reached: no client stays pinned to it.
    pub fn failed(&mut self, backend: SocketAddr) {
        self.pins.retain(|_, (addr, _)| *addr != backend);
    }

    /// How many clients are pinned (for tests and metrics).
    pub fn pinned(&self) -> usize {
        self.pins.len()
    }

    fn sweep(&mut self, now: Instant, timeout: Option<Duration>) {
        self.picks = self.picks.wrapping_add(1);
        match timeout {
            None => self.pins.clear(),
            Some(t) if self.picks % SWEEP_EVERY == 0 => self
                .pins
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < t),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 16, 0, i], 8080))
    }

    fn route(backends: Vec<Backend>, affinity: Option<Duration>) -> Route {
        Route {
            service: "ns/web:http".into(),
            backends,
            affinity_timeout: affinity,
        }
    }

    fn terminating(i: u8) -> Backend {
        Backend {
            ready: false,
            serving: true,
            terminating: true,
            ..Backend::ready(addr(i))
        }
    }

    fn client(i: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, i])
    }

    #[test]
    fn round_robin_over_ready_backends() {
        let r = route(vec![Backend::ready(addr(1)), Backend::ready(addr(2))], None);
        let mut p = Picker::default();
        let now = Instant::now();
        let picks: Vec<_> = (0..4)
            .map(|_| p.pick(&r, client(1), now, &[]).unwrap())
            .collect();
        assert_eq!(picks, [addr(1), addr(2), addr(1), addr(2)]);
        assert_eq!(p.pinned(), 0);
    }

    #[test]
    fn terminating_backends_only_when_none_is_ready() {
        let not_serving = Backend {
            ready: false,
            serving: false,
            terminating: true,
            ..Backend::ready(addr(3))
        };
        let r = route(
            vec![terminating(1), Backend::ready(addr(2)), not_serving.clone()],
            None,
        );
        let mut p = Picker::default();
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(p.pick(&r, client(1), now, &[]), Some(addr(2)));
        }
        let r = route(vec![terminating(1), not_serving.clone()], None);
        assert_eq!(p.pick(&r, client(1), now, &[]), Some(addr(1)));
        let r = route(vec![not_serving], None);
        assert_eq!(p.pick(&r, client(1), now, &[]), None);
        // Not ready and not terminating (e.g. failing its probe): never.
        let unready = Backend {
            ready: false,
            serving: false,
            ..Backend::ready(addr(4))
        };
        assert_eq!(
            p.pick(&route(vec![unready], None), client(1), now, &[]),
            None
        );
    }

    #[test]
    fn tried_backends_are_skipped() {
        let r = route(vec![Backend::ready(addr(1)), Backend::ready(addr(2))], None);
        let mut p = Picker::default();
        let now = Instant::now();
        for _ in 0..4 {
            assert_eq!(p.pick(&r, client(1), now, &[addr(1)]), Some(addr(2)));
        }
        assert_eq!(p.pick(&r, client(1), now, &[addr(1), addr(2)]), None);
    }

    #[test]
    fn client_ip_affinity_pins_until_timeout_or_the_backend_goes() {
        let timeout = Duration::from_secs(10);
        let both = vec![Backend::ready(addr(1)), Backend::ready(addr(2))];
        let r = route(both.clone(), Some(timeout));
        let mut p = Picker::default();
        let t0 = Instant::now();
        let first = p.pick(&r, client(1), t0, &[]).unwrap();
        let other = p.pick(&r, client(2), t0, &[]).unwrap();
        assert_ne!(first, other, "new clients still spread");
        for i in 1..20 {
            let t = t0 + Duration::from_secs(i / 2);
            assert_eq!(p.pick(&r, client(1), t, &[]), Some(first));
        }
        // Renewed by each use: 9 s after the last use it still holds...
        let last = t0 + Duration::from_secs(9);
        assert_eq!(
            p.pick(&r, client(1), last + Duration::from_secs(9), &[]),
            Some(first)
        );
        // ...and after the timeout the client is balanced afresh.
        let later = last + Duration::from_secs(30);
        let picks: Vec<_> = (0..2)
            .map(|i| {
                p.pick(&r, client(1), later + Duration::from_secs(11 * i), &[])
                    .unwrap()
            })
            .collect();
        assert!(
            picks.contains(&addr(1)) && picks.contains(&addr(2)),
            "{picks:?}"
        );
        // The pinned backend leaving the route moves the client.
        let pinned = p.pick(&r, client(3), t0, &[]).unwrap();
        let rest: Vec<Backend> = both.into_iter().filter(|b| b.addr != pinned).collect();
        let moved = p
            .pick(&route(rest, Some(timeout)), client(3), t0, &[])
            .unwrap();
        assert_ne!(moved, pinned);
        // A failed backend loses its pins.
        p.failed(moved);
        assert!(p.pins.values().all(|(a, _)| *a != moved));
    }
}
