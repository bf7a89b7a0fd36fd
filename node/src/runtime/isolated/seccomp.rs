//! The default seccomp profile (`seccompProfile.type: RuntimeDefault`).
//!
//! Docker's idea, as a deny list: every syscall is allowed except those a
//! container has no business making, which fail with `EPERM`:
//! - loading or replacing kernel code: `init_module`, `finit_module`,
//!   `delete_module`, `kexec_load`, `kexec_file_load`, `bpf`;
//! - changing the filesystem tree or namespaces: `mount`, `umount2`,
//!   `pivot_root`, `unshare`, `setns`, the new mount API (`fsopen`,
//!   `fsmount`, `move_mount`, `open_tree`, ...), and `clone` with a
//!   namespace flag;
//! - host-wide state: `reboot`, `swapon`, `swapoff`, `acct`,
//!   `settimeofday`, `clock_settime`, `quotactl`, `syslog`;
//! - known escape and info-leak paths: `open_by_handle_at`,
//!   `name_to_handle_at`, `keyctl`, `add_key`, `request_key`,
//!   `perf_event_open`, `userfaultfd`, `ptrace`, `process_vm_readv`,
//!   `process_vm_writev`, `lookup_dcookie`; on x86-64 also `iopl`, `ioperm`
//!   and the obsolete `nfsservctl` and `uselib`.
//!
//! `clone3` fails with `ENOSYS` instead (its flags live in memory a filter
//! cannot read), so libc falls back to `clone`, whose flags are checked.
//!
//! The filter is installed by the container init and by `exec` after the
//! capabilities are dropped and before the user switch (while the process
//! still has `CAP_SYS_ADMIN`), so it does not need `no_new_privs`: a
//! container allowed to escalate privileges keeps that. Privileged
//! containers get no filter, as with Docker.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Syscalls denied with `EPERM` on every architecture.
const DENIED: &[i64] = &[
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_lookup_dcookie,
];

/// Syscalls only x86-64 has.
#[cfg(target_arch = "x86_64")]
const DENIED_ARCH: &[i64] = &[
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_nfsservctl,
    libc::SYS_uselib,
];
#[cfg(not(target_arch = "x86_64"))]
const DENIED_ARCH: &[i64] = &[];

/// `clone` flags that create namespaces (argument 0 on x86-64 and arm64).
const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// The numbers of the syscalls denied with `EPERM` (besides `clone` with a
/// namespace flag).
pub fn denied_syscalls() -> Vec<i64> {
    DENIED.iter().chain(DENIED_ARCH).copied().collect()
}

/// Compiles the default profile for this architecture: the `EPERM` filter
/// and the `clone3` → `ENOSYS` filter.
/// Errors: an architecture seccompiler does not know.
pub fn default_filters() -> anyhow::Result<Vec<BpfProgram>> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| anyhow!("seccomp on {}: {e}", std::env::consts::ARCH))?;
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        denied_syscalls().into_iter().map(|s| (s, vec![])).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let flag = *flag as u64;
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .context("seccomp clone rule")?;
    denied.insert(libc::SYS_clone, clone_rules);
    let eperm = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .context("seccomp filter")?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .context("seccomp clone3 filter")?;
    Ok(vec![
        eperm.try_into().context("compile the seccomp filter")?,
        clone3.try_into().context("compile the seccomp filter")?,
    ])
}

/// Installs the default profile on the calling thread (inherited by its
/// children and kept across `execve`). Needs `CAP_SYS_ADMIN` or
/// `no_new_privs`.
pub fn apply_default() -> anyhow::Result<()> {
    for program in default_filters()? {
        install(&program)?;
    }
    Ok(())
}

/// `seccomp(SECCOMP_SET_MODE_FILTER)` without setting `no_new_privs`
/// (seccompiler's own `apply_filter` always sets it).
fn install(program: &BpfProgram) -> anyhow::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| anyhow!("seccomp filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        // seccompiler's `sock_filter` is `#[repr(C)]` with the same fields
        // (u16 code, u8 jt, u8 jf, u32 k) as the kernel's and libc's.
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the
    // kernel copies the filter.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(anyhow!(
            "install the seccomp filter: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_compiles_and_denies_the_documented_syscalls() {
        let filters = default_filters().expect("compiles on this architecture");
        assert_eq!(filters.len(), 2);
        assert!(filters.iter().all(|f| !f.is_empty()));
        let denied = denied_syscalls();
        for s in [libc::SYS_mount, libc::SYS_kexec_load, libc::SYS_init_module] {
            assert!(denied.contains(&s), "{s} must be denied");
        }
        for s in [libc::SYS_read, libc::SYS_execve, libc::SYS_setuid] {
            assert!(!denied.contains(&s), "{s} must stay allowed");
        }
    }
}
