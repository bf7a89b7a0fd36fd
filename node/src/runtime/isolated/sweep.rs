//! The agent's startup sweep: what pods left behind when their agent and
//! supervisors were killed (`kill -9`, OOM, a crash) — namespace pins and
//! pause processes under `<state>/pods`, cgroups `<parent>/pod<uid>` of
//! pods this agent ran (with any process still in them), mounts under the
//! state directory.
//!
//! A pod is *live* while one of its containers has a running supervisor
//! or main process; everything of a live pod is left alone, so the sweep is
//! safe next to running pods (they are re-adopted, not restarted). A pod
//! that is not live gets its namespaces and cgroups recreated if the agent
//! starts its containers again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

use super::cgroup::CgroupLayout;

/// What [`sweep`] removed, and what it could not (the sweep goes on past
/// failures; each is one message naming the path and the error).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// `<state>/pods/<dir>` directories removed (namespaces unpinned).
    pub pod_dirs: Vec<PathBuf>,
    /// Pod cgroup directories removed (processes in them killed first).
    pub cgroups: Vec<PathBuf>,
    /// Mount points unmounted.
    pub mounts: Vec<PathBuf>,
    pub errors: Vec<String>,
}

/// What the sweep needs to know: pods as their `<state>/pods/<dir>` names
/// and `pod<uid>` cgroup names, containers by id.
///
/// Several agents of one host (`keel up --agents N`, parallel clusters)
/// share the cgroup parent, so only cgroups of pods this agent knows (a
/// container record or a pod directory in its state) are candidates:
/// another agent's pods are never touched.
pub(super) struct SweepInput<'a> {
    pub state_dir: &'a Path,
    pub layout: &'a CgroupLayout,
    pub cgroup_parent: &'a str,
    pub live_pod_dirs: BTreeSet<String>,
    pub live_pod_cgroups: BTreeSet<String>,
    /// Cgroup names of pods with container records but no running one.
    pub dead_pod_cgroups: BTreeSet<String>,
    pub live_containers: BTreeSet<String>,
}

pub(super) fn sweep(input: &SweepInput<'_>) -> SweepReport {
    let mut report = SweepReport::default();
    let pods_dir = input.state_dir.join("pods");
    let containers_dir = input.state_dir.join("containers");
    // Mounts first (deepest first): a pinned namespace file cannot be
    // removed while mounted.
    let mut mounts: Vec<PathBuf> = host_mount_points()
        .into_iter()
        .filter(|m| {
            let stale_pod = m
                .strip_prefix(&pods_dir)
                .ok()
                .and_then(|r| r.components().next())
                .is_some_and(|c| {
                    !input
                        .live_pod_dirs
                        .contains(&*c.as_os_str().to_string_lossy())
                });
            let stale_container = m
                .strip_prefix(&containers_dir)
                .ok()
                .and_then(|r| r.components().next())
                .is_some_and(|c| {
                    !input
                        .live_containers
                        .contains(&*c.as_os_str().to_string_lossy())
                });
            stale_pod || stale_container
        })
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    for m in mounts {
        match umount2(&m, MntFlags::MNT_DETACH) {
            Ok(()) => report.mounts.push(m),
            Err(e) => report.errors.push(format!("unmount {}: {e}", m.display())),
        }
    }
    let mut stale_cgroups = input.dead_pod_cgroups.clone();
    if let Ok(entries) = std::fs::read_dir(&pods_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if input.live_pod_dirs.contains(&name) {
                continue;
            }
            // Pod uids are UUIDs: both cleanings keep them as they are.
            stale_cgroups.insert(format!("pod{}", name.replace('_', "-")));
            let dir = entry.path();
            // Kills a leftover pause process, unpins what is still pinned.
            let _ = super::init::release_pod_namespaces(&dir.join("ns"));
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => report.pod_dirs.push(dir),
                Err(e) => report.errors.push(format!("remove {}: {e}", dir.display())),
            }
        }
    }
    for root in hierarchy_roots(input.layout) {
        let parent = root.join(input.cgroup_parent);
        for name in stale_cgroups.difference(&input.live_pod_cgroups) {
            let dir = parent.join(name);
            if !dir.is_dir() {
                continue;
            }
            match remove_pod_cgroup(&dir) {
                Ok(()) => report.cgroups.push(dir),
                Err(e) => report
                    .errors
                    .push(format!("remove cgroup {}: {e}", dir.display())),
            }
        }
    }
    report
}

/// Removes a pod cgroup and its container cgroups, SIGKILLing what runs
/// in them.
fn remove_pod_cgroup(pod: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(pod)?.flatten() {
        if entry.path().is_dir() {
            super::cgroup::remove_dir(&entry.path())?;
        }
    }
    super::cgroup::remove_dir(pod)
}

/// Every hierarchy root once (v1 controllers may share one, e.g. cpu,cpuacct).
fn hierarchy_roots(layout: &CgroupLayout) -> BTreeSet<PathBuf> {
    match layout {
        CgroupLayout::V2(root) => BTreeSet::from([root.clone()]),
        CgroupLayout::V1(map) => map
            .values()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .collect(),
    }
}

/// The mount points of the calling process's mount namespace.
fn host_mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|o| {
            std::str::from_utf8(o)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }
}
