//! What the isolating runtime decides at `start` and the container's init
//! (and `exec`) carry out: stored in `spec.json` next to the process, so an
//! agent restart re-adopts isolated containers like exec ones.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cgroup::ContainerCgroup;
use crate::runtime::Mount;

/// Where the container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootSource {
    /// An unpacked image rootfs: the read-only lower layer of an overlay
    /// whose upper layer is in the container's state directory.
    Image { lower: PathBuf },
    /// The host's userland (read-only `/usr`, `/bin`, `/sbin`, `/lib*`, and
    /// `/etc` when `etc`) on an empty tmpfs, plus `extra` host paths (the
    /// keel binary, a local image directory) read-only at the same path.
    /// Built-in images and `keel/host` use it: they run host binaries.
    Host { etc: bool, extra: Vec<PathBuf> },
}

/// How the container's network is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// The agent's network namespace (loopback mode, hostNetwork pods).
    #[default]
    Host,
    /// The pod's network namespace, pinned at `netns` by the agent
    /// ([`crate::podnet`]); [`super::init`] joins it with `setns`.
    Pod { netns: PathBuf },
}

/// The user a container (and `exec` in it) runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    /// The image config's `User`, used when `run_as_user` is unset.
    pub image_user: Option<String>,
}

/// Everything the init needs besides the process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationRecord {
    pub hostname: String,
    pub root: RootSource,
    pub read_only_root: bool,
    /// Mount point of the assembled root (in the container's state dir;
    /// mounted only inside the container's mount namespace).
    pub merged_dir: PathBuf,
    pub upper_dir: PathBuf,
    pub work_dir: PathBuf,
    /// Volumes, then the pod's `/etc/hosts`, `/etc/hostname` and
    /// `/etc/resolv.conf`, bind-mounted in that order.
    pub binds: Vec<Mount>,
    pub user: UserSpec,
    /// Capability bit mask kept in the bounding set.
    pub capabilities: u64,
    pub no_new_privs: bool,
    pub privileged: bool,
    pub network: NetworkMode,
    pub cgroup: ContainerCgroup,
    /// Where the pod's IPC and UTS namespaces are pinned (bind mounts of
    /// the namespace files, made by the pod's first container); `None`:
    /// the container gets namespaces of its own.
    #[serde(default)]
    pub pod_ns_dir: Option<PathBuf>,
    /// `shareProcessNamespace`: the container joins its pod's PID namespace
    /// (pinned in `pod_ns_dir`, see [`super::podpid`]) instead of getting
    /// one of its own.
    #[serde(default)]
    pub share_pid: bool,
    /// `RuntimeDefault`: the init and `exec` install the default seccomp
    /// filter (see [`super::seccomp`]).
    #[serde(default)]
    pub seccomp: bool,
}

/// Resolves `user` against the current root's `/etc/passwd` and
/// `/etc/group` (call after entering the container's root).
/// Errors: a user or group name the image does not define.
pub fn resolve_user(user: &UserSpec) -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    resolve_user_in(user, &passwd, &group)
}

fn resolve_user_in(user: &UserSpec, passwd: &str, group: &str) -> Result<(u32, u32), String> {
    // name:x:uid:gid:...
    let entries = |text: &str| -> Vec<(String, u32, Option<u32>)> {
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                let id = f.get(2)?.parse().ok()?;
                Some((f[0].to_string(), id, f.get(3).and_then(|g| g.parse().ok())))
            })
            .collect()
    };
    let users = entries(passwd);
    let groups = entries(group);
    let (image_user, image_group) = match &user.image_user {
        Some(u) if !u.is_empty() => match u.split_once(':') {
            Some((u, g)) => (Some(u.to_string()), Some(g.to_string())),
            None => (Some(u.clone()), None),
        },
        _ => (None, None),
    };
    let uid = match (user.run_as_user, &image_user) {
        (Some(uid), _) => uid,
        (None, Some(name)) => match name.parse() {
            Ok(uid) => uid,
            Err(_) => users
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| format!("user {name:?} is not in the image's /etc/passwd"))?,
        },
        (None, None) => 0,
    };
    let primary = users
        .iter()
        .find(|(_, id, _)| *id == uid)
        .and_then(|(_, _, g)| *g);
    let gid = match (user.run_as_group, &image_group) {
        (Some(gid), _) => gid,
        (None, Some(name)) if user.run_as_user.is_none() => match name.parse() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| format!("group {name:?} is not in the image's /etc/group"))?,
        },
        _ => primary.unwrap_or(0),
    };
    Ok((uid, gid))
}

/// Whether `path` is below one of `dirs`.
pub fn under_any(path: &Path, dirs: &[&str]) -> bool {
    dirs.iter()
        .any(|d| path.starts_with(Path::new("/").join(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nweb:x:1000:1001::/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nweb:x:1001:\nstaff:x:50:\n";

    fn user(uid: Option<u32>, gid: Option<u32>, image: Option<&str>) -> UserSpec {
        UserSpec {
            run_as_user: uid,
            run_as_group: gid,
            image_user: image.map(str::to_string),
        }
    }

    #[test]
    fn users_resolve_like_containerd() {
        let r = |u| resolve_user_in(&u, PASSWD, GROUP);
        assert_eq!(r(user(None, None, None)), Ok((0, 0)));
        assert_eq!(r(user(Some(1000), None, None)), Ok((1000, 1001)));
        assert_eq!(r(user(Some(1234), Some(5), Some("web"))), Ok((1234, 5)));
        assert_eq!(r(user(None, None, Some("web"))), Ok((1000, 1001)));
        assert_eq!(r(user(None, None, Some("nobody:staff"))), Ok((65534, 50)));
        assert_eq!(r(user(None, None, Some("42:43"))), Ok((42, 43)));
        let err = r(user(None, None, Some("ghost"))).unwrap_err();
        assert!(err.contains("ghost"), "{err}");
    }
}
