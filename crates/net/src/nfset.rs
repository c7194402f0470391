//! Adding addresses to a sandbox's `learned` set straight over netlink.
//!
//! The DNS forwarder adds the addresses of an allowed name before it hands
//! the answer over, so that the connection that follows finds them: that
//! is on the path of every lookup. `nft` costs a process and a cache load
//! per call (about 9 ms measured on a small table); one netlink batch here
//! is a few tens of microseconds. Written against the kernel's nf_tables
//! UAPI (`linux/netfilter/nf_tables.h`), as only element adds and deletes
//! are needed; everything else about the table stays with `nft`.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;

/// One netlink socket, used by one caller at a time.
pub(crate) struct SetWriter {
    socket: Mutex<(OwnedFd, u32)>,
}

/// What one batch does to a set.
pub(crate) struct Change<'a> {
    pub(crate) table: &'a str,
    pub(crate) set: &'a str,
    /// Removed first (in the same transaction): elements whose timeout is
    /// renewed, as a re-add alone does not renew it on every kernel.
    pub(crate) remove: &'a [Ipv4Addr],
    pub(crate) add: &'a [(Ipv4Addr, Duration)],
}

impl SetWriter {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: a valid socket and a timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            socket: Mutex::new((fd, 1)),
        })
    }

    /// Applies `change` as one transaction and waits for the kernel's answer.
    pub(crate) fn apply(&self, change: &Change<'_>) -> io::Result<()> {
        if change.add.is_empty() && change.remove.is_empty() {
            return Ok(());
        }
        let mut guard = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        let (fd, seq) = &mut *guard;
        let first = *seq;
        let mut msg = Vec::with_capacity(256);
        let mut acked = Vec::new();
        push_batch_marker(&mut msg, NFNL_MSG_BATCH_BEGIN, next(seq));
        if !change.remove.is_empty() {
            let s = next(seq);
            acked.push(s);
            push_elements(
                &mut msg,
                NFT_MSG_DELSETELEM,
                s,
                change,
                |_| None,
                change.remove,
            );
        }
        if !change.add.is_empty() {
            let s = next(seq);
            acked.push(s);
            let addrs: Vec<Ipv4Addr> = change.add.iter().map(|(a, _)| *a).collect();
            push_elements(
                &mut msg,
                NFT_MSG_NEWSETELEM,
                s,
                change,
                |i| Some(change.add[i].1),
                &addrs,
            );
        }
        push_batch_marker(&mut msg, NFNL_MSG_BATCH_END, next(seq));
        send_to_kernel(fd, &msg)?;
        read_acks(fd, first, &acked)
    }
}

fn next(seq: &mut u32) -> u32 {
    let s = *seq;
    *seq = seq.wrapping_add(1).max(1);
    s
}

fn push_header(
    msg: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
) -> usize {
    let start = msg.len();
    msg.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by `finish`
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
                                                // struct nfgenmsg
    msg.push(family);
    msg.push(0); // NFNETLINK_V0
    msg.extend_from_slice(&res_id.to_be_bytes());
    start
}

fn finish(msg: &mut [u8], start: usize) {
    let len = (msg.len() - start) as u32;
    msg[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn push_batch_marker(msg: &mut Vec<u8>, kind: u16, seq: u32) {
    let start = push_header(
        msg,
        kind,
        NLM_F_REQUEST,
        seq,
        libc::AF_UNSPEC as u8,
        NFNL_SUBSYS_NFTABLES,
    );
    finish(msg, start);
}

fn attr(msg: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(payload);
    pad(msg);
}

fn pad(msg: &mut Vec<u8>) {
    while !msg.len().is_multiple_of(4) {
        msg.push(0);
    }
}

/// Opens a nested attribute; `close_nested` writes its length.
fn open_nested(msg: &mut Vec<u8>, kind: u16) -> usize {
    let start = msg.len();
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    start
}

fn close_nested(msg: &mut [u8], start: usize) {
    let len = (msg.len() - start) as u16;
    msg[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn push_elements(
    msg: &mut Vec<u8>,
    kind: u16,
    seq: u32,
    change: &Change<'_>,
    timeout: impl Fn(usize) -> Option<Duration>,
    addrs: &[Ipv4Addr],
) {
    let flags = NLM_F_REQUEST
        | NLM_F_ACK
        | if kind == NFT_MSG_NEWSETELEM {
            NLM_F_CREATE
        } else {
            0
        };
    let start = push_header(
        msg,
        (NFNL_SUBSYS_NFTABLES << 8) | kind,
        flags,
        seq,
        NFPROTO_INET,
        0,
    );
    attr(msg, NFTA_SET_ELEM_LIST_TABLE, &cstr(change.table));
    attr(msg, NFTA_SET_ELEM_LIST_SET, &cstr(change.set));
    let list = open_nested(msg, NFTA_SET_ELEM_LIST_ELEMENTS);
    for (i, addr) in addrs.iter().enumerate() {
        let elem = open_nested(msg, NFTA_LIST_ELEM);
        let key = open_nested(msg, NFTA_SET_ELEM_KEY);
        attr(msg, NFTA_DATA_VALUE, &addr.octets());
        close_nested(msg, key);
        if let Some(t) = timeout(i) {
            let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
            attr(msg, NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
        }
        close_nested(msg, elem);
    }
    close_nested(msg, list);
    finish(msg, start);
}

fn send_to_kernel(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_nl is valid; the kernel is pid 0.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: msg and kernel outlive the call; sizes are theirs.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads answers until every sequence number in `acked` has one; the first
/// error the kernel reports is returned. Answers to older requests (one
/// that timed out before) are skipped.
fn read_acks(fd: &OwnedFd, first: u32, acked: &[u32]) -> io::Result<()> {
    let mut pending: Vec<u32> = acked.to_vec();
    let mut failure: Option<io::Error> = None;
    let mut buf = vec![0u8; 8192];
    while !pending.is_empty() {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut at = 0usize;
        let n = n as usize;
        while at + 16 <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
            let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
            if len < 16 || at + len > n {
                break;
            }
            if kind == NLMSG_ERROR && len >= 20 && seq.wrapping_sub(first) < 16 {
                let errno = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
                pending.retain(|s| *s != seq);
                if errno != 0 && failure.is_none() {
                    failure = Some(io::Error::from_raw_os_error(-errno));
                }
                // A failed batch is aborted: later messages get no answer.
                if errno != 0 {
                    pending.clear();
                }
            }
            at += (len + 3) & !3;
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
