//! Indexed completion mode: every pod runs one index in `0..completions`,
//! named in its `batch.kubernetes.io/job-completion-index` annotation and
//! label; `status.completedIndexes` lists the indexes that succeeded, as
//! Kubernetes writes it ("0-2,4").

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

/// The annotation and label holding a pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The pod's completion index, when it has a valid one below `completions`.
pub fn pod_index(pod: &Pod, completions: i32) -> Option<i32> {
    let m = &pod.metadata;
    let raw = m
        .annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX))
        .or_else(|| m.labels.as_ref().and_then(|l| l.get(COMPLETION_INDEX)))?;
    raw.parse::<i32>()
        .ok()
        .filter(|i| (0..completions).contains(i))
}

/// Parses `completedIndexes` ("1,3-5"); entries outside `0..completions`
/// or unreadable are dropped (the field is ours, but never trusted blindly).
pub fn parse(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) else {
            continue;
        };
        out.extend((a.max(0)..=b.min(completions - 1)).filter(|i| *i >= 0));
    }
    out
}

/// Formats indexes as ordered ranges of consecutive ones ("0-2,4").
pub fn format(indexes: &BTreeSet<i32>) -> String {
    let mut ranges: Vec<(i32, i32)> = Vec::new();
    for &i in indexes {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => ranges.push((i, i)),
        }
    }
    ranges
        .iter()
        .map(|(a, b)| match a == b {
            true => a.to_string(),
            false => format!("{a}-{b}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The indexes to start: not completed, not running, lowest first, at
/// most `room`.
pub fn to_start(
    completions: i32,
    completed: &BTreeSet<i32>,
    running: &BTreeSet<i32>,
    room: usize,
) -> Vec<i32> {
    (0..completions)
        .filter(|i| !completed.contains(i) && !running.contains(i))
        .take(room)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_round_trip() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format(&set), "0-2,4,6-7");
        assert_eq!(parse("0-2,4,6-7", 10), set);
        assert_eq!(format(&BTreeSet::new()), "");
        assert_eq!(parse("", 3), BTreeSet::new());
        assert_eq!(parse("1-9,x", 3), [1, 2].into_iter().collect());
    }

    #[test]
    fn indexes_to_start_skip_done_and_running() {
        let done: BTreeSet<i32> = [0].into_iter().collect();
        let running: BTreeSet<i32> = [2].into_iter().collect();
        assert_eq!(to_start(5, &done, &running, 2), vec![1, 3]);
        assert_eq!(to_start(5, &done, &running, 9), vec![1, 3, 4]);
    }
}
