//! Fault schedules, generated from the seed: partitions (random halves, a
//! bridge, one replica isolated), crashes and restarts of a minority,
//! latency spikes and message loss. Each fault is applied, held for a
//! while, and healed before the next one starts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::cluster::replica_name;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// Cut the replicas into two random halves.
    Partition,
    /// Two majorities that overlap in one replica.
    Bridge,
    /// Cut one replica off from all others.
    Isolate,
    /// Crash a minority of replicas, restart them later.
    Crash,
    /// Raise link latency.
    Delay,
    /// Drop a fraction of messages.
    Loss,
    /// Cut the current leader off from all others.
    IsolateLeader,
    /// Crash the current leader, restart it later.
    CrashLeader,
}

impl FaultKind {
    /// Every kind: the default mix.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Partition,
        FaultKind::Bridge,
        FaultKind::Isolate,
        FaultKind::Crash,
        FaultKind::Delay,
        FaultKind::Loss,
        FaultKind::IsolateLeader,
        FaultKind::CrashLeader,
    ];

    /// The mix before the leader-targeted kinds joined the default (what
    /// the first 500-seed soak and its regression seeds ran).
    pub const UNTARGETED: [FaultKind; 6] = [
        FaultKind::Partition,
        FaultKind::Bridge,
        FaultKind::Isolate,
        FaultKind::Crash,
        FaultKind::Delay,
        FaultKind::Loss,
    ];
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            FaultKind::Partition => "partition",
            FaultKind::Bridge => "bridge",
            FaultKind::Isolate => "isolate",
            FaultKind::Crash => "crash",
            FaultKind::Delay => "delay",
            FaultKind::Loss => "loss",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::CrashLeader => "crash-leader",
        };
        f.write_str(s)
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| {
                let known: Vec<String> = FaultKind::ALL.iter().map(|k| k.to_string()).collect();
                format!("unknown fault {s:?} (known: {})", known.join(", "))
            })
    }
}

/// One concrete fault over named replicas.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Split {
        a: Vec<String>,
        b: Vec<String>,
    },
    /// `left` and `right` cannot talk; both talk to `middle`.
    Bridge {
        left: Vec<String>,
        middle: String,
        right: Vec<String>,
    },
    Crash {
        hosts: Vec<String>,
    },
    Delay {
        max: Duration,
    },
    Loss {
        rate: f64,
    },
    /// Resolved to a split or crash of whoever leads when it is applied.
    IsolateLeader,
    CrashLeader,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Split { a, b } => write!(f, "split {a:?}|{b:?}"),
            Fault::Bridge {
                left,
                middle,
                right,
            } => write!(f, "bridge {left:?}<{middle}>{right:?}"),
            Fault::Crash { hosts } => write!(f, "crash {hosts:?}"),
            Fault::Delay { max } => write!(f, "delay {}ms", max.as_millis()),
            Fault::Loss { rate } => write!(f, "loss {:.0}%", rate * 100.0),
            Fault::IsolateLeader => f.write_str("isolate the leader"),
            Fault::CrashLeader => f.write_str("crash the leader"),
        }
    }
}

/// A fault held over `[start, end)` of simulated time.
#[derive(Debug, Clone)]
pub struct Window {
    pub start: Duration,
    pub end: Duration,
    pub fault: Fault,
}

/// The seed's fault schedule: windows in time order, never overlapping.
pub fn schedule(seed: u64, kinds: &[FaultKind], replicas: usize, until: Duration) -> Vec<Window> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321);
    let mut out = Vec::new();
    let mut t = Duration::from_millis(rng.gen_range(600..1000));
    if kinds.is_empty() {
        return out;
    }
    while t < until {
        let kind = *kinds.choose(&mut rng).expect("non-empty");
        let hold = Duration::from_millis(rng.gen_range(300..2000));
        let fault = make(kind, &mut rng, replicas);
        out.push(Window {
            start: t,
            end: t + hold,
            fault,
        });
        t += hold + Duration::from_millis(rng.gen_range(200..1000));
    }
    out
}

fn make(kind: FaultKind, rng: &mut StdRng, n: usize) -> Fault {
    let mut names: Vec<String> = (0..n).map(replica_name).collect();
    names.shuffle(rng);
    match kind {
        FaultKind::Partition => {
            let cut = rng.gen_range(1..n);
            Fault::Split {
                a: names[..cut].to_vec(),
                b: names[cut..].to_vec(),
            }
        }
        FaultKind::Isolate => Fault::Split {
            a: names[..1].to_vec(),
            b: names[1..].to_vec(),
        },
        FaultKind::Bridge => {
            let middle = names[0].clone();
            let rest = &names[1..];
            let half = rest.len() / 2;
            Fault::Bridge {
                left: rest[..half].to_vec(),
                middle,
                right: rest[half..].to_vec(),
            }
        }
        FaultKind::Crash => {
            let k = rng.gen_range(1..=(n - 1) / 2);
            Fault::Crash {
                hosts: names[..k].to_vec(),
            }
        }
        FaultKind::Delay => Fault::Delay {
            max: Duration::from_millis(rng.gen_range(50..400)),
        },
        FaultKind::Loss => Fault::Loss {
            rate: rng.gen_range(0.01..0.1),
        },
        FaultKind::IsolateLeader => Fault::IsolateLeader,
        FaultKind::CrashLeader => Fault::CrashLeader,
    }
}

/// Applies a fault on the simulation; returns it as applied (a leader
/// fault resolved to the replica that led), which is what `heal` undoes.
pub fn apply(sim: &mut turmoil::Sim<'_>, fault: &Fault, replicas: usize) -> Fault {
    let fault = resolve(sim, fault, replicas);
    match &fault {
        Fault::Split { a, b } => cut(sim, a, b),
        Fault::Bridge { left, right, .. } => cut(sim, left, right),
        Fault::Crash { hosts } => {
            for h in hosts {
                sim.crash(h.as_str());
            }
        }
        Fault::Delay { max } => sim.set_max_message_latency(*max),
        Fault::Loss { rate } => sim.set_fail_rate(*rate),
        Fault::IsolateLeader | Fault::CrashLeader => unreachable!("resolved above"),
    }
    fault
}

fn resolve(sim: &mut turmoil::Sim<'_>, fault: &Fault, replicas: usize) -> Fault {
    let mut leader = || super::cluster::leader(sim).unwrap_or_else(|| replica_name(0));
    match fault {
        Fault::IsolateLeader => {
            let l = leader();
            Fault::Split {
                b: (0..replicas)
                    .map(replica_name)
                    .filter(|n| *n != l)
                    .collect(),
                a: vec![l],
            }
        }
        Fault::CrashLeader => Fault::Crash {
            hosts: vec![leader()],
        },
        other => other.clone(),
    }
}

pub fn heal(sim: &mut turmoil::Sim<'_>, fault: &Fault, base_latency: Duration) {
    match fault {
        Fault::Split { a, b } => mend(sim, a, b),
        Fault::Bridge { left, right, .. } => mend(sim, left, right),
        Fault::Crash { hosts } => {
            for h in hosts {
                sim.bounce(h.as_str());
            }
        }
        Fault::Delay { .. } => sim.set_max_message_latency(base_latency),
        Fault::Loss { .. } => sim.set_fail_rate(0.0),
        Fault::IsolateLeader | Fault::CrashLeader => {}
    }
}

fn cut(sim: &turmoil::Sim<'_>, a: &[String], b: &[String]) {
    for x in a {
        for y in b {
            sim.partition(x.as_str(), y.as_str());
        }
    }
}

fn mend(sim: &turmoil::Sim<'_>, a: &[String], b: &[String]) {
    for x in a {
        for y in b {
            sim.repair(x.as_str(), y.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_repeat_per_seed_and_never_overlap() {
        let kinds = FaultKind::ALL;
        let a = schedule(1, &kinds, 5, Duration::from_secs(30));
        let b = schedule(1, &kinds, 5, Duration::from_secs(30));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert!(a.windows(2).all(|w| w[0].end <= w[1].start));
        let c = schedule(2, &kinds, 5, Duration::from_secs(30));
        assert_ne!(format!("{a:?}"), format!("{c:?}"));
        for w in &a {
            if let Fault::Crash { hosts } = &w.fault {
                assert!(hosts.len() <= 2, "crash only a minority");
            }
        }
        assert_eq!("bridge".parse::<FaultKind>(), Ok(FaultKind::Bridge));
        assert!("nope".parse::<FaultKind>().is_err());
    }
}
