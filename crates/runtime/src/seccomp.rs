//! The sandbox's seccomp filter: the syscalls container runtimes refuse by
//! default (Docker's profile without `CAP_SYS_ADMIN`), answered with `EPERM`.
//!
//! The filter is installed without `no_new_privs`: that flag would stop
//! `sudo` (setuid) from working inside, and the user namespace already
//! guarantees that gaining privileges inside gives nothing on the host. The
//! helper may install a filter without the flag because it holds
//! `CAP_SYS_ADMIN` in the sandbox's own user namespace at that point.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("unsupported architecture {0}")]
    Arch(String),
    #[error("compiling the seccomp filter: {0}")]
    Compile(#[from] seccompiler::BackendError),
    #[error("installing the seccomp filter: {0}")]
    Install(std::io::Error),
}

/// Syscalls refused outright.
const DENIED: &[libc::c_long] = &[
    // Kernel code and the machine itself.
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_lookup_dcookie,
    libc::SYS_uselib,
    libc::SYS_ustat,
    libc::SYS_sysfs,
    libc::SYS__sysctl,
    libc::SYS_nfsservctl,
    // Filesystems: the sandbox's mounts are fixed by the runtime.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_open_by_handle_at,
    // Keys, BPF, perf, userfaultfd, io_uring: large kernel attack surface.
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    // Time is the host's.
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_settimeofday,
    // Joining other namespaces.
    libc::SYS_setns,
];

/// The filter for the current architecture, ready to install.
pub fn filters() -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH.to_string()))?;

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    // New user namespaces would hand the sandbox a fresh set of capabilities
    // over new mount namespaces: refuse them in unshare and clone.
    let newuser = libc::CLONE_NEWUSER as u64;
    let newuser_at = |arg| {
        SeccompRule::new(vec![SeccompCondition::new(
            arg,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(newuser),
            newuser,
        )?])
    };
    rules.insert(libc::SYS_unshare, vec![newuser_at(0)?]);
    rules.insert(libc::SYS_clone, vec![newuser_at(0)?]);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?;

    // clone3 passes its flags in memory, where a filter cannot look: answer
    // ENOSYS so that libc falls back to clone, which is filtered above.
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    Ok(vec![
        BpfProgram::try_from(deny)?,
        BpfProgram::try_from(clone3)?,
    ])
}

/// Installs `programs` on the calling thread (without `no_new_privs`).
pub fn install(programs: &[BpfProgram]) -> Result<(), SeccompError> {
    for program in programs {
        let prog = libc::sock_fprog {
            len: program.len() as u16,
            // seccompiler's sock_filter has the kernel's layout.
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prog points to a valid BPF program for the call's duration.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if ret != 0 {
            return Err(SeccompError::Install(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_this_machine() {
        let progs = filters().unwrap();
        assert_eq!(progs.len(), 2);
        assert!(progs.iter().all(|p| !p.is_empty()));
    }
}
