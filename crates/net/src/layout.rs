//! Names and addresses derived from the configuration: every object this
//! crate creates on the host carries the instance name, so that several
//! instances (and tests running in parallel) never touch each other's objects.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::{NetConfig, NetError};

/// Linux limits interface names to 15 bytes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;
const MAX_INSTANCE: usize = 6;

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    instance: String,
    subnet: Ipv4Net,
    state_dir: PathBuf,
}

impl Layout {
    pub(crate) fn new(config: &NetConfig) -> Result<Self, NetError> {
        let instance = &config.instance;
        if instance.is_empty()
            || instance.len() > MAX_INSTANCE
            || !instance
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(NetError::Config(format!(
                "instance name {instance:?} must be 1 to {MAX_INSTANCE} characters of [a-z0-9]"
            )));
        }
        if config.subnet.prefix_len() > 30 {
            return Err(NetError::Config(format!(
                "subnet {} is too small: each sandbox takes a /30",
                config.subnet
            )));
        }
        let layout = Self {
            instance: instance.clone(),
            subnet: config.subnet.trunc(),
            state_dir: config.state_dir.clone(),
        };
        let longest = layout.host_veth(layout.slots() - 1);
        if longest.len() > MAX_IFNAME {
            return Err(NetError::Config(format!(
                "subnet {} holds too many sandboxes for interface names ({longest} is longer than {MAX_IFNAME} bytes); use a smaller subnet or a shorter instance name",
                config.subnet
            )));
        }
        Ok(layout)
    }

    pub(crate) fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// Number of /30 blocks (one per sandbox) in the subnet.
    pub(crate) fn slots(&self) -> u32 {
        1u32 << (30 - u32::from(self.subnet.prefix_len()))
    }

    pub(crate) fn table(&self) -> String {
        format!("sandbar_{}", self.instance)
    }

    /// The dash ends the instance part, so that instance `ab` never matches
    /// the interfaces of instance `ab1`.
    pub(crate) fn veth_prefix(&self) -> String {
        format!("sb{}-", self.instance)
    }

    /// nftables interface-name wildcard matching every host veth of this instance.
    pub(crate) fn veth_wildcard(&self) -> String {
        format!("{}*", self.veth_prefix())
    }

    pub(crate) fn host_veth(&self, index: u32) -> String {
        format!("{}{index}", self.veth_prefix())
    }

    pub(crate) fn netns_dir(&self) -> PathBuf {
        self.state_dir.join("netns")
    }

    pub(crate) fn netns_path(&self, index: u32) -> PathBuf {
        self.netns_dir().join(index.to_string())
    }

    fn block_base(&self, index: u32) -> u32 {
        u32::from(self.subnet.network()) + index * 4
    }

    /// Host end of the sandbox's veth: its gateway and resolver.
    pub(crate) fn gateway(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.block_base(index) + 1)
    }

    /// `eth0` inside the sandbox.
    pub(crate) fn sandbox_addr(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.block_base(index) + 2)
    }
}

/// Hands out /30 block indices; an index is only reused once everything built
/// on it has been removed, so addresses never clash with a live sandbox.
/// Fresh indices come first and freed ones are reused oldest first, which
/// gives the kernel the most time to finish destroying a namespace.
#[derive(Debug)]
pub(crate) struct IndexAllocator {
    capacity: u32,
    next: u32,
    freed: VecDeque<u32>,
}

impl IndexAllocator {
    pub(crate) fn new(capacity: u32) -> Self {
        Self {
            capacity,
            next: 0,
            freed: VecDeque::new(),
        }
    }

    pub(crate) fn alloc(&mut self) -> Option<u32> {
        if self.next < self.capacity {
            self.next += 1;
            return Some(self.next - 1);
        }
        self.freed.pop_front()
    }

    pub(crate) fn free(&mut self, index: u32) {
        debug_assert!(index < self.next && !self.freed.contains(&index));
        self.freed.push_back(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(instance: &str, subnet: &str) -> NetConfig {
        NetConfig {
            instance: instance.into(),
            subnet: subnet.parse().unwrap(),
            state_dir: "/run/sandbar/x".into(),
            pool_size: 0,
            dns_upstream: Vec::new(),
            open_ranges: Vec::new(),
            public_ranges: Vec::new(),
        }
    }

    #[test]
    fn addresses_are_slash30_blocks() {
        let layout = Layout::new(&config("ab1", "10.200.0.0/24")).unwrap();
        assert_eq!(layout.slots(), 64);
        assert_eq!(layout.gateway(0), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(layout.sandbox_addr(0), Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(layout.gateway(63), Ipv4Addr::new(10, 200, 0, 253));
        assert_eq!(layout.sandbox_addr(63), Ipv4Addr::new(10, 200, 0, 254));
        assert_eq!(layout.host_veth(7), "sbab1-7");
        assert_eq!(layout.table(), "sandbar_ab1");
    }

    #[test]
    fn rejects_bad_instances_and_subnets() {
        assert!(Layout::new(&config("", "10.200.0.0/24")).is_err());
        assert!(Layout::new(&config("Abc", "10.200.0.0/24")).is_err());
        assert!(Layout::new(&config("abcdefg", "10.200.0.0/24")).is_err());
        assert!(Layout::new(&config("a-b", "10.200.0.0/24")).is_err());
        assert!(Layout::new(&config("abc", "10.200.0.0/31")).is_err());
        // 2^22 sandboxes need 7 digits: "sbabcdef-4194303" is 16 bytes.
        assert!(Layout::new(&config("abcdef", "10.0.0.0/8")).is_err());
        assert!(Layout::new(&config("abcdef", "10.200.0.0/16")).is_ok());
    }

    #[test]
    fn host_bits_of_the_subnet_are_ignored() {
        let layout = Layout::new(&config("a", "10.200.0.77/24")).unwrap();
        assert_eq!(layout.gateway(1), Ipv4Addr::new(10, 200, 0, 5));
    }

    #[test]
    fn allocator_prefers_fresh_then_oldest_freed() {
        let mut alloc = IndexAllocator::new(3);
        assert_eq!(alloc.alloc(), Some(0));
        assert_eq!(alloc.alloc(), Some(1));
        alloc.free(1);
        alloc.free(0);
        assert_eq!(alloc.alloc(), Some(2));
        assert_eq!(alloc.alloc(), Some(1));
        assert_eq!(alloc.alloc(), Some(0));
        assert_eq!(alloc.alloc(), None);
    }
}
