//! Per-step timing of a container start, always on.
//!
//! A start runs in up to three processes: the runtime (in the agent), the
//! supervisor (`keel __supervise`) and, in the isolating runtime, the
//! container init (`keel __init`). Each records its steps with a [`Steps`]
//! recorder and appends one JSON line ([`ProcessSteps`]) to the container's
//! [`STEPS_FILE`]. Timestamps are `CLOCK_MONOTONIC` microseconds, one clock
//! for the whole host, so a reader can lay the three processes on one
//! timeline and see the gaps between them (fork + exec + loader of the next
//! process, the entrypoint's `execve`, the report pipes).
//!
//! Cost: one clock read per step and one small append per process; the
//! file is written after the step it times and never read on the start path.
//! A failed write is ignored: timing must never fail a container start.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// `steps.jsonl` in the container directory: one [`ProcessSteps`] per line.
pub const STEPS_FILE: &str = "steps.jsonl";

/// One process's part of a container start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSteps {
    /// `runtime`, `supervisor` or `init`.
    pub process: String,
    /// `CLOCK_MONOTONIC` when the first step began, µs.
    pub start_mono_us: u64,
    /// Step names and durations in µs, in order; they are contiguous, so
    /// step `i` began at `start_mono_us` plus the durations before it.
    pub steps: Vec<(String, u64)>,
}

impl ProcessSteps {
    /// When the last step ended, `CLOCK_MONOTONIC` µs.
    pub fn end_mono_us(&self) -> u64 {
        self.start_mono_us + self.steps.iter().map(|(_, us)| us).sum::<u64>()
    }
}

/// Records contiguous steps: each [`Steps::mark`] closes the step that ran
/// since the previous mark (or since [`Steps::start`]).
#[derive(Debug, Clone)]
pub struct Steps {
    record: ProcessSteps,
    last_mono_us: u64,
}

impl Steps {
    /// Starts timing `process` now.
    pub fn start(process: &str) -> Self {
        let now = monotonic_us();
        Steps {
            record: ProcessSteps {
                process: process.to_string(),
                start_mono_us: now,
                steps: Vec::new(),
            },
            last_mono_us: now,
        }
    }

    /// Ends step `name`: it lasted from the previous mark until now.
    pub fn mark(&mut self, name: &str) {
        let now = monotonic_us();
        let us = now.saturating_sub(self.last_mono_us);
        self.record.steps.push((name.to_string(), us));
        self.last_mono_us = now;
    }

    /// The steps marked so far.
    pub fn record(&self) -> &ProcessSteps {
        &self.record
    }

    /// Appends the steps as one line to `file` (opened with
    /// [`open_steps_file`]); errors are ignored (see the module docs).
    pub fn append_to(&self, file: &mut File) {
        if let Ok(mut line) = serde_json::to_vec(&self.record) {
            line.push(b'\n');
            // One write on an O_APPEND file: lines of different processes
            // never interleave.
            let _ = file.write_all(&line);
        }
    }

    /// Appends the steps to `dir`'s [`STEPS_FILE`]; errors are ignored.
    pub fn append_to_dir(&self, dir: &Path) {
        if let Ok(mut file) = open_steps_file(dir) {
            self.append_to(&mut file);
        }
    }
}

/// Opens (creating) `dir`'s [`STEPS_FILE`] for appending, close-on-exec.
pub fn open_steps_file(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(STEPS_FILE))
}

/// Reads `dir`'s [`STEPS_FILE`]: every process's steps, in the order they
/// were written. A missing file is empty; a torn or foreign line is skipped.
pub fn read_steps(dir: &Path) -> std::io::Result<Vec<ProcessSteps>> {
    let text = match std::fs::read_to_string(dir.join(STEPS_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// `CLOCK_MONOTONIC` in µs: the same clock in every process of the host.
pub fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_contiguous_and_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut steps = Steps::start("runtime");
        std::thread::sleep(std::time::Duration::from_millis(2));
        steps.mark("first");
        steps.mark("second");
        let rec = steps.record().clone();
        assert_eq!(rec.steps.len(), 2);
        assert!(rec.steps[0].1 >= 2_000, "{rec:?}");
        assert_eq!(rec.end_mono_us(), steps.last_mono_us);
        steps.append_to_dir(dir.path());
        Steps::start("init").append_to_dir(dir.path());
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(STEPS_FILE))
            .unwrap()
            .write_all(b"{torn\n")
            .unwrap();
        let back = read_steps(dir.path()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], rec);
        assert_eq!(back[1].process, "init");
        assert!(read_steps(&dir.path().join("missing")).unwrap().is_empty());
    }
}
