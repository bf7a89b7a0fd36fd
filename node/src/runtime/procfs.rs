//! Process identity from `/proc`, so a recorded pid is never confused with an
//! unrelated process that reused it.

use serde::{Deserialize, Serialize};

/// A pid plus the kernel's start time of that process (clock ticks since boot,
/// field 22 of `/proc/<pid>/stat`): together unique for the machine's uptime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessIdentity {
    pub pid: i32,
    pub start_ticks: u64,
}

struct Stat {
    state: char,
    start_ticks: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and ')': parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    Some(Stat {
        state: fields.first()?.chars().next()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

impl ProcessIdentity {
    /// Identity of a live (or zombie, not yet reaped) process.
    pub fn of(pid: i32) -> Option<Self> {
        read_stat(pid).map(|s| ProcessIdentity {
            pid,
            start_ticks: s.start_ticks,
        })
    }

    /// True if this exact process still exists and has not exited (zombies
    /// count as exited).
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Some(s) => s.start_ticks == self.start_ticks && !matches!(s.state, 'Z' | 'X'),
            None => false,
        }
    }
}

/// Resource usage summed over a set of processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GroupUsage {
    /// utime + stime of the live processes plus cutime + cstime (children
    /// they already reaped), in nanoseconds.
    pub cpu_ns: u64,
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
    /// How many processes were counted.
    pub processes: usize,
}

/// Usage of every live process whose process group is `pgid`: the exec
/// runtime puts a container's main process and everything it starts in one
/// group, so this is the container's usage. CPU of children that exited
/// unreaped is lost (the kernel accounts it only once they are waited for).
pub(crate) fn group_usage(pgid: i32) -> GroupUsage {
    let tick_ns = 1_000_000_000 / clock_ticks_per_second();
    let page = page_size_bytes();
    let mut total = GroupUsage::default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(u) = parse_usage(&text, pgid, tick_ns, page) {
            total.cpu_ns += u.cpu_ns;
            total.rss_bytes += u.rss_bytes;
            total.processes += 1;
        }
    }
    total
}

/// One `/proc/<pid>/stat` line's usage, if the process is in group `pgid`.
fn parse_usage(text: &str, pgid: i32, tick_ns: u64, page_bytes: u64) -> Option<GroupUsage> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3: pgrp is field 5, utime..cstime 14..17, rss 24.
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    if f.get(2)?.parse::<i32>().ok()? != pgid {
        return None;
    }
    let ticks = num(11)? + num(12)? + num(13)? + num(14)?;
    Some(GroupUsage {
        cpu_ns: ticks * tick_ns,
        rss_bytes: num(21)? * page_bytes,
        processes: 1,
    })
}

/// `sysconf(_SC_CLK_TCK)`, the unit of `/proc` CPU times (100 on Linux).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn page_size_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_only_the_group_and_all_four_cpu_fields() {
        // pid 7 "(a b) c" in group 42: utime 10, stime 5, cutime 3, cstime 2, rss 100 pages.
        let line = "7 (a b) c) S 1 42 42 0 -1 0 0 0 0 0 10 5 3 2 20 0 1 0 99 1000 100 0";
        let u = parse_usage(line, 42, 10_000_000, 4096).expect("in group");
        assert_eq!(u.cpu_ns, 20 * 10_000_000);
        assert_eq!(u.rss_bytes, 100 * 4096);
        assert_eq!(parse_usage(line, 43, 10_000_000, 4096), None);
    }

    #[test]
    fn own_group_uses_cpu_and_memory() {
        // SAFETY: getpgrp has no preconditions.
        let me = unsafe { libc::getpgrp() };
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        let u = group_usage(me);
        assert!(u.processes >= 1);
        assert!(u.rss_bytes > 0);
    }

    #[test]
    fn own_identity_is_alive_and_wrong_ticks_are_not() {
        let me = ProcessIdentity::of(std::process::id() as i32).expect("own stat");
        assert!(me.is_alive());
        let impostor = ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!impostor.is_alive());
    }

    #[test]
    fn missing_pid_is_not_alive() {
        let gone = ProcessIdentity {
            pid: i32::MAX,
            start_ticks: 0,
        };
        assert!(!gone.is_alive());
        assert!(ProcessIdentity::of(i32::MAX).is_none());
    }
}
