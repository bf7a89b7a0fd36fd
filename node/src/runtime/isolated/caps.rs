//! Linux capabilities: names as Kubernetes spells them, Docker's default
//! set, and the bounding-set drop that enforces them.
//!
//! Why only the bounding set: a container process is exec'd by root
//! (keel's init), and on `execve` root's permitted and effective sets become
//! its bounding set; a non-root user's become empty. So dropping every
//! capability outside the wanted set from the bounding set is exactly the
//! "drop / add" of `securityContext.capabilities` for both cases, and it can
//! never be regained (no `no_new_privs` bypass either).

/// Capability names in kernel number order (`CAP_` prefix removed).
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's (and containerd's) default capability set.
pub const DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

fn number(name: &str) -> Option<u32> {
    let name = name.trim().to_ascii_uppercase();
    let name = name.strip_prefix("CAP_").unwrap_or(&name);
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

/// The capability bit mask for a container: everything when privileged,
/// else Docker's defaults minus `drop` plus `add` (`ALL` allowed in both,
/// drop applied first as in containerd). Errors name an unknown capability.
pub fn effective_set(privileged: bool, add: &[String], drop: &[String]) -> Result<u64, String> {
    let all: u64 = (1u64 << NAMES.len()) - 1;
    if privileged {
        return Ok(all);
    }
    let parse = |names: &[String]| -> Result<u64, String> {
        let mut mask = 0u64;
        for n in names {
            if n.eq_ignore_ascii_case("ALL") {
                mask = all;
            } else {
                let bit = number(n).ok_or_else(|| format!("unknown capability {n:?}"))?;
                mask |= 1 << bit;
            }
        }
        Ok(mask)
    };
    let mut set = DEFAULT
        .iter()
        .filter_map(|n| number(n))
        .fold(0, |m, b| m | (1 << b));
    set &= !parse(drop)?;
    set |= parse(add)?;
    Ok(set)
}

/// Drops every capability not in `keep` from the bounding set. Capabilities
/// the running kernel does not know are skipped.
pub fn drop_bounding(keep: u64) -> std::io::Result<()> {
    for bit in 0..64u32 {
        if keep & (1 << bit) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, bit as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // past the kernel's last capability
            }
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_add_drop_and_all() {
        let d = effective_set(false, &[], &[]).unwrap();
        assert_eq!(d.count_ones(), 14);
        assert_eq!(d & (1 << 21), 0, "no SYS_ADMIN by default");
        let n = effective_set(false, &names(&["NET_ADMIN"]), &names(&["CHOWN"])).unwrap();
        assert_ne!(n & (1 << 12), 0);
        assert_eq!(n & 1, 0);
        let only =
            effective_set(false, &names(&["cap_net_bind_service"]), &names(&["ALL"])).unwrap();
        assert_eq!(only, 1 << 10);
        assert_eq!(
            effective_set(true, &[], &names(&["ALL"]))
                .unwrap()
                .count_ones(),
            41
        );
        let err = effective_set(false, &names(&["NOPE"]), &[]).unwrap_err();
        assert!(err.contains("NOPE"), "{err}");
    }
}
