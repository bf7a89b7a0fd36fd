//! cgroups for the isolating runtime: one cgroup per pod
//! (`<root>/<parent>/pod<uid>`) with one child per container, on the
//! unified hierarchy (cgroup v2) when `/sys/fs/cgroup` is cgroup2, else on
//! the v1 controllers `cpu`, `cpuacct`, `memory` and `pids` (hybrid hosts,
//! whose v2 mount holds no controllers, are v1 here).
//!
//! Guarantees: limits are written before the container process joins (the
//! init joins by writing `0` to `cgroup.procs`); a limit whose controller is
//! missing is returned as a warning, never dropped silently; [`ContainerCgroup::remove`]
//! kills leftovers and removes the container's directories, then the pod's
//! when it has no other container.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::Resources;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// v1 controllers used, and what needs each.
const V1_CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];
const CPU_PERIOD_US: u64 = 100_000;

/// Where the controllers are mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupLayout {
    /// Unified hierarchy root, e.g. `/sys/fs/cgroup`.
    V2(PathBuf),
    /// controller name → hierarchy root, e.g. `memory` → `/sys/fs/cgroup/memory`.
    V1(BTreeMap<String, PathBuf>),
}

impl CgroupLayout {
    /// Detects the host's layout under `mount_root` (normally `/sys/fs/cgroup`).
    pub fn detect(mount_root: &Path) -> Self {
        if is_cgroup2(mount_root) {
            return CgroupLayout::V2(mount_root.to_path_buf());
        }
        let mut found = BTreeMap::new();
        for c in V1_CONTROLLERS {
            let dir = mount_root.join(c);
            if dir.join("cgroup.procs").is_file() {
                found.insert(c.to_string(), dir);
            }
        }
        CgroupLayout::V1(found)
    }

    /// Controllers that cannot be used (for the startup message).
    pub fn missing_controllers(&self) -> Vec<String> {
        match self {
            CgroupLayout::V2(root) => {
                let have =
                    std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                ["cpu", "memory", "pids"]
                    .into_iter()
                    .filter(|c| !have.split_whitespace().any(|h| h == *c))
                    .map(str::to_string)
                    .collect()
            }
            CgroupLayout::V1(found) => V1_CONTROLLERS
                .into_iter()
                .filter(|c| !found.contains_key(*c))
                .map(str::to_string)
                .collect(),
        }
    }
}

// The statfs type field is `long` on some targets and `int` on others.
#[allow(clippy::unnecessary_cast)]
fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 as i64 == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The cgroup directories of one container, as recorded in its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerCgroup {
    pub v2: bool,
    /// controller → container directory (v2: the single `unified` entry).
    pub dirs: BTreeMap<String, PathBuf>,
}

/// Creates the pod and container cgroups and writes the limits. Returns the
/// cgroup and one warning per limit that cannot be enforced.
pub fn create(
    layout: &CgroupLayout,
    parent: &str,
    pod_uid: &str,
    container: &str,
    resources: &Resources,
    pids_limit: Option<u64>,
) -> std::io::Result<(ContainerCgroup, Vec<String>)> {
    let rel = Path::new(parent)
        .join(format!("pod{}", clean(pod_uid)))
        .join(clean(container));
    let mut warnings = Vec::new();
    let cg = match layout {
        CgroupLayout::V2(root) => {
            let enabled = enable_v2_controllers(root, &rel)?;
            let dir = root.join(&rel);
            std::fs::create_dir_all(&dir)?;
            let has = |c: &str| enabled.iter().any(|e| e == c);
            write_limits_v2(&dir, resources, pids_limit, &has, &mut warnings)?;
            ContainerCgroup {
                v2: true,
                dirs: BTreeMap::from([("unified".to_string(), dir)]),
            }
        }
        CgroupLayout::V1(found) => {
            let mut dirs = BTreeMap::new();
            for (c, root) in found {
                let dir = root.join(&rel);
                std::fs::create_dir_all(&dir)?;
                dirs.insert(c.clone(), dir);
            }
            write_limits_v1(&dirs, resources, pids_limit, &mut warnings)?;
            ContainerCgroup { v2: false, dirs }
        }
    };
    Ok((cg, warnings))
}

/// Turns on cpu, memory and pids for every level above the container;
/// returns those the root offers.
fn enable_v2_controllers(root: &Path, rel: &Path) -> std::io::Result<Vec<String>> {
    let offered = std::fs::read_to_string(root.join("cgroup.controllers"))?;
    let wanted: Vec<String> = ["cpu", "memory", "pids"]
        .into_iter()
        .filter(|c| offered.split_whitespace().any(|o| o == *c))
        .map(str::to_string)
        .collect();
    let mut dir = root.to_path_buf();
    let levels: Vec<_> = rel.components().collect();
    for (i, level) in levels.iter().enumerate() {
        let control = wanted
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        if !control.is_empty() {
            std::fs::write(dir.join("cgroup.subtree_control"), control)?;
        }
        dir.push(level);
        if i + 1 < levels.len() {
            std::fs::create_dir_all(&dir)?;
        }
    }
    Ok(wanted)
}

/// cgroup v1 `cpu.shares` from a request, as the kubelet computes it.
pub fn cpu_shares(request_millis: u64) -> u64 {
    (request_millis * 1024 / 1000).max(2)
}

/// cgroup v2 `cpu.weight` from v1 shares (the runc/kubelet conversion).
pub fn cpu_weight(shares: u64) -> u64 {
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

fn quota_us(limit_millis: u64) -> u64 {
    (limit_millis * CPU_PERIOD_US / 1000).max(1000)
}

fn write_limits_v2(
    dir: &Path,
    r: &Resources,
    pids_limit: Option<u64>,
    has: &dyn Fn(&str) -> bool,
    warnings: &mut Vec<String>,
) -> std::io::Result<()> {
    let mut want = |controller: &str, what: &str, file: &str, value: String| {
        if has(controller) {
            std::fs::write(dir.join(file), value)
        } else {
            warnings.push(missing(what, controller));
            Ok(())
        }
    };
    if let Some(m) = r.cpu_request_millis {
        want(
            "cpu",
            "cpu request",
            "cpu.weight",
            cpu_weight(cpu_shares(m)).to_string(),
        )?;
    }
    if let Some(m) = r.cpu_limit_millis {
        want(
            "cpu",
            "cpu limit",
            "cpu.max",
            format!("{} {CPU_PERIOD_US}", quota_us(m)),
        )?;
    }
    if let Some(b) = r.memory_limit_bytes {
        want("memory", "memory limit", "memory.max", b.to_string())?;
        if has("memory") && dir.join("memory.swap.max").exists() {
            std::fs::write(dir.join("memory.swap.max"), "0")?;
        }
    }
    if let Some(p) = pids_limit {
        want("pids", "pids limit", "pids.max", p.to_string())?;
    }
    Ok(())
}

fn write_limits_v1(
    dirs: &BTreeMap<String, PathBuf>,
    r: &Resources,
    pids_limit: Option<u64>,
    warnings: &mut Vec<String>,
) -> std::io::Result<()> {
    let mut want =
        |controller: &str, what: &str, file: &str, value: String| match dirs.get(controller) {
            Some(dir) => std::fs::write(dir.join(file), value),
            None => {
                warnings.push(missing(what, controller));
                Ok(())
            }
        };
    if let Some(m) = r.cpu_request_millis {
        want(
            "cpu",
            "cpu request",
            "cpu.shares",
            cpu_shares(m).to_string(),
        )?;
    }
    if let Some(m) = r.cpu_limit_millis {
        want(
            "cpu",
            "cpu limit",
            "cpu.cfs_period_us",
            CPU_PERIOD_US.to_string(),
        )?;
        want(
            "cpu",
            "cpu limit",
            "cpu.cfs_quota_us",
            quota_us(m).to_string(),
        )?;
    }
    if let Some(b) = r.memory_limit_bytes {
        want(
            "memory",
            "memory limit",
            "memory.limit_in_bytes",
            b.to_string(),
        )?;
        // Without a swap limit a hog pages out instead of being OOM-killed.
        if let Some(dir) = dirs.get("memory") {
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                std::fs::write(memsw, b.to_string())?;
            }
        }
    }
    if let Some(p) = pids_limit {
        want("pids", "pids limit", "pids.max", p.to_string())?;
    }
    Ok(())
}

fn missing(what: &str, controller: &str) -> String {
    format!("{what} is not enforced: the kernel offers no {controller} cgroup controller")
}

impl ContainerCgroup {
    /// The `cgroup.procs` files a process writes `0` to, to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.values().map(|d| d.join("cgroup.procs")).collect()
    }

    fn memory_dir(&self) -> Option<&Path> {
        let key = if self.v2 { "unified" } else { "memory" };
        self.dirs.get(key).map(PathBuf::as_path)
    }

    /// How many processes the memory limit killed; `None` when unknown.
    pub fn oom_kills(&self) -> Option<u64> {
        let dir = self.memory_dir()?;
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        if let Some(n) = keyed(&text, "oom_kill") {
            return Some(n);
        }
        // Old v1 kernels lack oom_kill: a hit limit is the best hint.
        let failcnt = std::fs::read_to_string(dir.join("memory.failcnt")).ok()?;
        failcnt.trim().parse().ok()
    }

    /// Cumulative CPU time (ns) and memory working set (bytes).
    pub fn usage(&self) -> std::io::Result<(u64, u64)> {
        let read = |p: PathBuf| std::fs::read_to_string(p);
        let mem_dir = self
            .memory_dir()
            .ok_or_else(|| std::io::Error::other("no memory cgroup"))?;
        if self.v2 {
            let dir = &self.dirs["unified"];
            let cpu = keyed(&read(dir.join("cpu.stat"))?, "usage_usec").unwrap_or(0) * 1000;
            let current: u64 = read(dir.join("memory.current"))?
                .trim()
                .parse()
                .unwrap_or(0);
            let inactive = keyed(&read(dir.join("memory.stat"))?, "inactive_file").unwrap_or(0);
            Ok((cpu, current.saturating_sub(inactive)))
        } else {
            let cpu = match self.dirs.get("cpuacct") {
                Some(d) => read(d.join("cpuacct.usage"))?.trim().parse().unwrap_or(0),
                None => 0,
            };
            let usage: u64 = read(mem_dir.join("memory.usage_in_bytes"))?
                .trim()
                .parse()
                .unwrap_or(0);
            let inactive =
                keyed(&read(mem_dir.join("memory.stat"))?, "total_inactive_file").unwrap_or(0);
            Ok((cpu, usage.saturating_sub(inactive)))
        }
    }

    /// SIGKILLs whatever is left in the cgroups and removes them, then the
    /// pod's cgroups if no other container uses them. Missing dirs are fine.
    pub fn remove(&self) -> std::io::Result<()> {
        for dir in self.dirs.values() {
            remove_dir(dir)?;
            if let Some(pod) = dir.parent() {
                // Busy (another container of the pod) or gone: both fine.
                let _ = std::fs::remove_dir(pod);
            }
        }
        Ok(())
    }
}

/// Removes one cgroup directory, SIGKILLing what is left in it; gone is fine.
pub(super) fn remove_dir(dir: &Path) -> std::io::Result<()> {
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill has no memory-safety requirements.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    std::fs::remove_dir(dir)
}

/// `key N` line value of a flat-keyed cgroup file.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A pod uid or container id as a cgroup directory name.
pub(super) fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_cpu_conversions() {
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(1), 2);
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(262_144), 10_000);
        assert_eq!(quota_us(500), 50_000);
    }

    #[test]
    fn v1_limits_are_written_and_missing_controllers_warned() {
        let root = tempfile::tempdir().unwrap();
        // A fake v1 layout with cpu but without memory and pids.
        let cpu = root.path().join("cpu");
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::write(cpu.join("cgroup.procs"), "").unwrap();
        let layout = CgroupLayout::detect(root.path());
        assert_eq!(
            layout.missing_controllers(),
            vec!["cpuacct", "memory", "pids"]
        );
        let r = Resources {
            cpu_request_millis: Some(250),
            cpu_limit_millis: Some(500),
            memory_limit_bytes: Some(32 << 20),
            ..Default::default()
        };
        let (cg, warnings) = create(&layout, "keel", "u/1", "c", &r, Some(100)).unwrap();
        let dir = &cg.dirs["cpu"];
        assert!(dir.ends_with("keel/podu-1/c"), "{}", dir.display());
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.shares")).unwrap(),
            "256"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).unwrap(),
            "50000"
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("memory limit") && warnings[0].contains("memory"));
        assert!(warnings[1].contains("pids"));
        assert_eq!(cg.oom_kills(), None);
    }

    #[test]
    fn flat_keyed_files_parse() {
        let text = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n";
        assert_eq!(keyed(text, "oom_kill"), Some(1));
        assert_eq!(keyed(text, "oom"), Some(1));
        assert_eq!(keyed(text, "nope"), None);
    }
}
