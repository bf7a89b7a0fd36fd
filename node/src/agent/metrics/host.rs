//! Node-level usage from `/proc`: CPU from the first line of `/proc/stat`,
//! memory working set as `MemTotal - MemAvailable` from `/proc/meminfo`
//! (memory the kernel cannot hand out without reclaiming from someone).

use std::time::SystemTime;

use crate::runtime::ContainerStats;

/// The node's cumulative CPU time and current working set; `None` when
/// `/proc` cannot be read (not Linux, or hidden).
pub fn node_stats() -> Option<ContainerStats> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let tick_ns = 1_000_000_000 / crate::runtime::clock_ticks_per_second();
    Some(ContainerStats {
        cpu_usage_ns: busy_ticks(&stat)? * tick_ns,
        memory_working_set_bytes: working_set_bytes(&meminfo)?,
        timestamp: SystemTime::now(),
    })
}

/// Non-idle ticks of all CPUs: user, nice, system, irq, softirq, steal
/// (idle and iowait are not usage; guest time is already in user).
fn busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

fn working_set_bytes(meminfo: &str) -> Option<u64> {
    let kib = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
    };
    let total = kib("MemTotal:")?;
    let available = kib("MemAvailable:")?;
    Some(total.saturating_sub(available) * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_ticks_skip_idle_and_iowait() {
        let stat = "cpu  10 1 5 1000 50 2 3 4 0 0\ncpu0 10 1 5 1000 50 2 3 4 0 0\n";
        assert_eq!(busy_ticks(stat), Some(10 + 1 + 5 + 2 + 3 + 4));
        assert_eq!(busy_ticks("intr 1\n"), None);
    }

    #[test]
    fn working_set_is_total_minus_available() {
        let m = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n";
        assert_eq!(working_set_bytes(m), Some(600 * 1024));
        assert_eq!(working_set_bytes("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn this_machine_has_node_stats() {
        let s = node_stats().expect("/proc readable");
        assert!(s.cpu_usage_ns > 0);
        assert!(s.memory_working_set_bytes > 0);
    }
}
