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

#[cfg(test)]
mod tests {
    use super::*;

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
