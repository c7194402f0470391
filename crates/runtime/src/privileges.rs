//! What root inside a sandbox may do: the capability set container runtimes
//! give by default (what `sudo apt-get install`, `chown`, `ping` and a
//! server on port 80 need), and nothing else. Dropping the rest from the
//! bounding set takes them from every process of the sandbox for good:
//! without `CAP_SYS_ADMIN` no new namespace can be made (and the seccomp
//! filter refuses user namespaces, the one kind that needs no capability),
//! without `CAP_NET_ADMIN` there is no nf_tables, tc or xfrm to attack.
//!
//! `no_new_privs` is not set, neither on the sandbox nor on what envd starts:
//! it would stop `sudo`, which users rely on to become root inside, and a
//! process that may run `sudo` gains nothing from it that the flag would
//! withhold. What bounds root inside is this bounding set, the user namespace
//! and the seccomp filter, which hold for setuid programs too.
//!
//! Also here: which host uid owns each sandbox's user namespace. Limits the
//! kernel counts per user (inotify instances and watches, pending signals,
//! message queues) are charged to the namespace's owner in the parent
//! namespace; were that host root for every sandbox, one sandbox could use
//! up host root's share and starve the others and the host itself.

use caps::{CapSet, Capability, CapsHashSet};

/// Docker's default capability set.
pub const SANDBOX_CAPS: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// The `CapEff` mask root inside a sandbox has (as `/proc/<pid>/status`
/// shows it).
pub fn sandbox_cap_mask() -> u64 {
    SANDBOX_CAPS
        .iter()
        .fold(0u64, |m, c| m | (1u64 << c.index()))
}

/// Drops every capability outside [`SANDBOX_CAPS`] from the bounding set and
/// empties the inheritable and ambient sets, so that what envd execs gets
/// only those. The calling thread keeps its effective set until exec (the
/// seccomp filter still has to be installed).
pub fn limit_to_sandbox_caps() -> Result<(), caps::errors::CapsError> {
    let keep: CapsHashSet = SANDBOX_CAPS.iter().copied().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap)? {
            caps::drop(None, CapSet::Bounding, cap)?;
        }
    }
    caps::clear(None, CapSet::Inheritable)?;
    caps::clear(None, CapSet::Ambient)?;
    Ok(())
}

/// The host uid that owns a sandbox's user namespace: one of its own per
/// live sandbox, derived from its network namespace's inode (inode numbers
/// of live namespaces are unique on the host), in a range no account uses.
pub fn namespace_owner(netns_inode: u64) -> u32 {
    // Namespace inodes count up from 0xF0000000 (PROC_DYNAMIC_FIRST).
    let n = netns_inode.wrapping_sub(0xF000_0000) & 0x0FFF_FFFF;
    (u64::from(OWNER_BASE) + n) as u32
}

/// The first uid of the owners' range ([`namespace_owner`]).
pub const OWNER_BASE: u32 = 0x7000_0000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_is_dockers_default() {
        // What `docker run` shows as CapEff for root.
        assert_eq!(sandbox_cap_mask(), 0x0000_0000_a804_25fb);
    }

    #[test]
    fn owners_differ_per_namespace_and_stay_off_the_usual_ranges() {
        let a = namespace_owner(4026532401);
        let b = namespace_owner(4026532402);
        assert_ne!(a, b);
        assert!((0x7000_0000..0x8000_0000).contains(&a));
    }
}
