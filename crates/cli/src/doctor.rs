//! `sandbar doctor`: checks that this host can run `sandbar serve` with the
//! same flags (and `SANDBAR_*` variables), and prints each problem with its
//! fix. It changes nothing on the host.

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use sandbar_net::{InstanceClaim, NetError};
use sandbar_runtime::cgroup::Hierarchy;
use sandbar_runtime::templates::TemplateStore;

use crate::layout::DataDir;
use crate::serve::{NetMode, ServeArgs};

/// Free space a first template build needs (base and code-interpreter-v1,
/// with their package cache), and what running sandboxes want at least.
const DISK_FOR_TEMPLATES: u64 = 6 << 30;
const DISK_FOR_SANDBOXES: u64 = 2 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

struct Finding {
    level: Level,
    what: String,
    fix: Option<String>,
}

#[derive(Default)]
struct Report {
    findings: Vec<Finding>,
}

impl Report {
    fn ok(&mut self, what: impl Into<String>) {
        self.push(Level::Ok, what.into(), None);
    }
    fn warn(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Warn, what.into(), Some(fix.into()));
    }
    fn fail(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Fail, what.into(), Some(fix.into()));
    }
    fn push(&mut self, level: Level, what: String, fix: Option<String>) {
        self.findings.push(Finding { level, what, fix });
    }

    fn print(&self) -> usize {
        let color = std::io::stdout().is_terminal();
        let paint = |level: Level| {
            let (word, code) = match level {
                Level::Ok => ("ok  ", "32"),
                Level::Warn => ("warn", "33"),
                Level::Fail => ("FAIL", "31"),
            };
            if color {
                format!("\x1b[{code}m{word}\x1b[0m")
            } else {
                word.to_string()
            }
        };
        for f in &self.findings {
            println!("  {}  {}", paint(f.level), f.what);
            if let Some(fix) = &f.fix {
                for line in fix.lines() {
                    println!("        fix: {line}");
                }
            }
        }
        self.findings
            .iter()
            .filter(|f| f.level == Level::Fail)
            .count()
    }
}

pub async fn run(data: &DataDir, args: &ServeArgs) -> Result<bool> {
    println!(
        "sandbar doctor: can this host run `sandbar serve` (instance {}, domain {})?",
        args.instance, args.domain
    );
    let mut r = Report::default();
    root(&mut r);
    user_namespaces(&mut r);
    overlayfs(&mut r);
    layer_store(&mut r);
    cgroups(&mut r);
    let live = instance(&mut r, &args.instance);
    if args.network == NetMode::Node {
        nftables(&mut r);
        forwarding(&mut r);
        if live.is_none() {
            subnet(&mut r, args).await;
        }
        way_out(&mut r, args);
    }
    for (what, addr, flag) in [
        ("HTTPS (edge proxy)", args.https_listen, "--https-listen"),
        ("HTTP (edge proxy)", args.http_listen, "--http-listen"),
        ("API", args.api_listen, "--api-listen"),
    ] {
        port(&mut r, what, addr, flag, live);
    }
    domain(&mut r, &args.domain);
    binaries(&mut r, args);
    disk_and_templates(&mut r, data, args.uid_base);
    let problems = r.print();
    if problems == 0 {
        println!("no problems found");
    } else {
        println!(
            "{problems} problem{} found",
            if problems == 1 { "" } else { "s" }
        );
    }
    Ok(problems == 0)
}

fn root(r: &mut Report) {
    if nix::unistd::geteuid().is_root() {
        r.ok("running as root");
    } else {
        r.fail(
            "not running as root: sandbar makes namespaces, mounts, cgroups and firewall rules",
            "run it as root (`sudo sandbar ...` where you are not root)",
        );
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn user_namespaces(r: &mut Report) {
    let max = read_trim("/proc/sys/user/max_user_namespaces").and_then(|s| s.parse::<u64>().ok());
    if max == Some(0) {
        r.fail(
            "user namespaces are turned off (user.max_user_namespaces = 0): root in a sandbox would be root on the host",
            "sysctl -w user.max_user_namespaces=15000 (and set it in /etc/sysctl.d/ to keep it)",
        );
        return;
    }
    // A real attempt, in a child process (a threaded process cannot unshare one).
    match Command::new("unshare")
        .args(["--user", "--map-root-user", "true"])
        .output()
    {
        Ok(out) if out.status.success() => r.ok(format!(
            "user namespaces (at most {})",
            max.map_or("?".into(), |m| m.to_string())
        )),
        Ok(out) => r.fail(
            format!(
                "cannot make a user namespace: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "enable user namespaces in the kernel (CONFIG_USER_NS) and check that no security module forbids them",
        ),
        Err(_) => r.warn(
            "could not try a user namespace (no `unshare` command)",
            "install util-linux",
        ),
    }
}

fn overlayfs(r: &mut Report) {
    let listed = std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.trim_end().ends_with("overlay")))
        .unwrap_or(false);
    if listed {
        r.ok("overlayfs");
    } else {
        r.warn(
            "overlayfs is not loaded (it is loaded on first use if the kernel has it as a module)",
            "modprobe overlay",
        );
    }
}

/// The layer store is a btrfs filesystem on a loop device (see
/// sandbar-layers): the kernel needs both, and mkfs.btrfs makes it once.
fn layer_store(r: &mut Report) {
    let btrfs = std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.trim_end().ends_with("btrfs")))
        .unwrap_or(false);
    let loops = Path::new("/dev/loop-control").exists();
    let mkfs = Command::new("mkfs.btrfs").arg("--version").output().is_ok();
    match (btrfs, loops, mkfs) {
        (true, true, true) => r.ok("btrfs, loop devices and mkfs.btrfs (the layer store)"),
        (false, _, _) => r.fail(
            "the kernel has no btrfs (the layer store of sandboxes' files needs it)",
            "modprobe btrfs, or use a kernel with CONFIG_BTRFS_FS",
        ),
        (_, false, _) => r.fail(
            "no loop devices (/dev/loop-control): the layer store's image needs one",
            "modprobe loop, or use a kernel with CONFIG_BLK_DEV_LOOP",
        ),
        (_, _, false) => r.fail("mkfs.btrfs is missing", "apt-get install btrfs-progs"),
    }
}

fn cgroups(r: &mut Report) {
    match Hierarchy::detect() {
        Ok(Hierarchy::V1(ctrls)) => r.ok(format!(
            "cgroup v1 with {}",
            ctrls
                .iter()
                .map(|(c, _)| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Ok(Hierarchy::V2(root)) => {
            let have = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let missing: Vec<&str> = ["cpu", "memory", "pids"]
                .into_iter()
                .filter(|c| !have.split_whitespace().any(|h| h == *c))
                .collect();
            if missing.is_empty() {
                r.ok("cgroup v2 with cpu, memory, pids");
            } else {
                r.fail(
                    format!("cgroup v2 lacks the {} controller(s)", missing.join(", ")),
                    "boot a kernel with those controllers enabled (e.g. remove cgroup_disable= from the kernel command line)",
                );
            }
        }
        Err(e) => r.fail(
            format!("no usable cgroup hierarchy: {e}"),
            "mount cgroup2 at /sys/fs/cgroup (or the v1 cpu, cpuacct, memory and pids controllers)",
        ),
    }
}

/// Whether the instance is held by a running server, and by which pid.
fn instance(r: &mut Report, instance: &str) -> Option<Option<u32>> {
    match InstanceClaim::acquire(instance) {
        Ok(claim) => {
            drop(claim);
            r.ok(format!("instance '{instance}' is free"));
            None
        }
        Err(NetError::InstanceInUse { pid, .. }) => {
            r.ok(format!(
                "instance '{instance}' is served by a running sandbar{}",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ));
            Some(pid)
        }
        Err(e) => {
            r.warn(
                format!("could not check instance '{instance}': {e}"),
                "run as root",
            );
            None
        }
    }
}

fn nftables(r: &mut Report) {
    match Command::new("nft").args(["list", "tables"]).output() {
        Ok(out) if out.status.success() => r.ok("nftables"),
        Ok(out) => r.fail(
            format!(
                "nftables does not work: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "load nf_tables (`modprobe nf_tables`) or use a kernel with it",
        ),
        Err(_) => r.fail("the `nft` command is missing", "apt-get install nftables"),
    }
}

fn forwarding(r: &mut Report) {
    match read_trim("/proc/sys/net/ipv4/ip_forward").as_deref() {
        Some("1") => r.ok("IPv4 forwarding is on"),
        Some(_) => r.ok("IPv4 forwarding is off; `sandbar serve` turns it on (sandboxes reach the internet through NAT)"),
        None => r.warn("cannot read net.ipv4.ip_forward", "check /proc/sys/net/ipv4/ip_forward"),
    }
}

async fn subnet(r: &mut Report, args: &ServeArgs) {
    match sandbar_net::subnet_clash(args.subnet).await {
        Ok(None) => r.ok(format!("sandbox subnet {} is free", args.subnet)),
        Ok(Some(what)) => r.fail(
            format!("sandbox subnet {} overlaps {what}", args.subnet),
            "pick a free range: `sandbar serve --subnet 10.202.0.0/16` (or SANDBAR_SUBNET)",
        ),
        Err(e) => r.warn(
            format!("could not list the host's networks: {e}"),
            "run as root",
        ),
    }
}

/// Whether the registries sandboxes use resolve to addresses that
/// sandboxes never reach (as on networks that reach the internet through a
/// proxy on a documentation range); then they need `--public-range`.
fn way_out(r: &mut Report, args: &ServeArgs) {
    let special =
        sandbar_net::special::blocked_addresses_of(sandbar_net::special::WELL_KNOWN_NAMES);
    let missing: Vec<String> = special
        .iter()
        .filter(|n| !args.public_ranges.iter().any(|p| p.contains(&n.network())))
        .map(|n| n.to_string())
        .collect();
    if missing.is_empty() {
        r.ok("the package registries resolve to addresses sandboxes may reach");
    } else {
        r.warn(
            format!(
                "the package registries resolve to {} here, special-purpose addresses that sandboxes never reach: sandboxes would have no internet",
                missing.join(", ")
            ),
            format!(
                "if that is this network's way out, serve with `--public-range {}` (or SANDBAR_PUBLIC_RANGES; setup.sh passes SANDBAR_* variables on)",
                missing.join(",")
            ),
        );
    }
}

fn port(r: &mut Report, what: &str, addr: SocketAddr, flag: &str, live: Option<Option<u32>>) {
    match TcpListener::bind(addr) {
        Ok(_) => r.ok(format!("{what} port {addr} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let holder = port_holder(addr.port());
            let ours = holder.as_ref().is_some_and(|(_, comm)| comm == "sandbar") && live.is_some();
            match holder {
                Some((pid, _)) if ours => r.ok(format!(
                    "{what} port {addr} is served by the running sandbar (pid {pid})"
                )),
                Some((pid, comm)) => r.fail(
                    format!("{what} port {addr} is in use by {comm} (pid {pid})"),
                    format!(
                        "stop it (e.g. `systemctl stop {comm}`), or serve elsewhere: `sandbar serve {flag} {}`",
                        alternative(addr)
                    ),
                ),
                None => r.fail(
                    format!("{what} port {addr} is in use"),
                    format!(
                        "free it (`ss -ltnp 'sport = :{}'` shows who holds it), or `sandbar serve {flag} {}`",
                        addr.port(),
                        alternative(addr)
                    ),
                ),
            }
        }
        Err(e) => r.fail(
            format!("cannot listen on {what} port {addr}: {e}"),
            format!("pick an address this host has: `sandbar serve {flag} ...`"),
        ),
    }
}

/// The same address on a port nobody is likely to use.
fn alternative(addr: SocketAddr) -> SocketAddr {
    let port = match addr.port() {
        443 => 8443,
        80 => 8080,
        p => p.saturating_add(1000),
    };
    SocketAddr::new(addr.ip(), port)
}

/// The process listening on a TCP port: from the socket inodes in
/// /proc/net/tcp{,6} to the process whose descriptor holds one.
fn port_holder(port: u16) -> Option<(u32, String)> {
    let hex = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode is field 9.
            if f.len() > 9 && f[1].ends_with(&hex) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = proc_entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| Path::new(i) == target) {
                    let comm = read_trim(&format!("/proc/{pid}/comm")).unwrap_or_default();
                    return Some((pid, comm));
                }
            }
        }
    }
    None
}

fn domain(r: &mut Report, domain: &str) {
    let probe = format!("49983-doctorcheck.{domain}");
    let resolved: Vec<SocketAddr> = (probe.as_str(), 443)
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default();
    let local = resolved.iter().all(|a| is_this_host(a.ip()));
    if !resolved.is_empty() && local {
        r.ok(format!("*.{domain} resolves to this machine"));
        return;
    }
    let fix = if domain == "localhost" || domain.ends_with(".localhost") {
        "glibc resolves *.localhost through nss-myhostname: `apt-get install libnss-myhostname` and put `myhostname` on the hosts line of /etc/nsswitch.conf (setup.sh does both)".to_string()
    } else {
        format!("point a wildcard DNS record `*.{domain}` (and `{domain}`) at this machine")
    };
    if resolved.is_empty() {
        r.fail(format!("{probe} does not resolve"), fix);
    } else {
        r.warn(
            format!(
                "*.{domain} resolves to {} (not an address of this machine: fine behind a load balancer or port forward)",
                resolved
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix,
        );
    }
}

fn is_this_host(ip: std::net::IpAddr) -> bool {
    // Binding an address succeeds only if this host has it.
    ip.is_loopback() || TcpListener::bind(SocketAddr::new(ip, 0)).is_ok()
}

fn binaries(r: &mut Report, args: &ServeArgs) {
    let beside = |name: &str| {
        std::env::current_exe()
            .map(|p| p.with_file_name(name))
            .unwrap_or_else(|_| PathBuf::from(name))
    };
    let envd = args.binaries.envd.clone().unwrap_or_else(|| beside("envd"));
    if envd.is_file() {
        r.ok(format!("envd at {}", envd.display()));
    } else {
        r.fail(
            format!("envd not found at {}", envd.display()),
            "install it next to sandbar (setup.sh does) or pass --envd",
        );
    }
    let interp = args
        .binaries
        .interpreter
        .clone()
        .unwrap_or_else(|| beside("sandbar-interpreter"));
    if interp.is_file() {
        r.ok(format!("sandbar-interpreter at {}", interp.display()));
    } else {
        r.warn(
            format!(
                "sandbar-interpreter not found at {}: code-interpreter sandboxes cannot start",
                interp.display()
            ),
            "install it next to sandbar (setup.sh does) or pass --interpreter",
        );
    }
}

fn disk_and_templates(r: &mut Report, data: &DataDir, uid_base: u32) {
    let dir = data.templates_dir();
    let missing: Vec<&str> = TemplateStore::builtin_names()
        .into_iter()
        .filter(|name| {
            TemplateStore::open(&dir)
                .map(|s| !s.is_current(name, uid_base))
                .unwrap_or(true)
        })
        .collect();
    let need = if missing.is_empty() {
        DISK_FOR_SANDBOXES
    } else {
        DISK_FOR_TEMPLATES
    };
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match nix::sys::statvfs::statvfs(existing) {
        Ok(st) => {
            let free = st.blocks_available() * st.fragment_size();
            let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
            if free >= need {
                r.ok(format!("{} free for {}", gib(free), dir.display()));
            } else {
                r.fail(
                    format!("only {} free for {} (want {})", gib(free), dir.display(), gib(need)),
                    "free some space, or put templates elsewhere: --templates-dir / SANDBAR_TEMPLATES_DIR",
                );
            }
        }
        Err(e) => r.warn(
            format!("cannot stat {}: {e}", existing.display()),
            "check the data dir",
        ),
    }
    if missing.is_empty() {
        r.ok("templates base and code-interpreter-v1 are built");
        return;
    }
    let build = missing
        .iter()
        .map(|m| format!("sandbar template build {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    if Command::new("mmdebstrap").arg("--version").output().is_ok() {
        r.warn(
            format!("template(s) not built yet: {}", missing.join(", ")),
            format!("{build} (a few minutes each; setup.sh does it)"),
        );
    } else {
        r.fail(
            format!(
                "template(s) not built yet ({}) and mmdebstrap, which builds them, is missing",
                missing.join(", ")
            ),
            format!("apt-get install mmdebstrap, then {build}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_traced_to_its_process() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (pid, comm) = port_holder(port).expect("found");
        assert_eq!(pid, std::process::id());
        assert!(!comm.is_empty());
        drop(l);
        assert!(port_holder(port).is_none());
    }

    #[test]
    fn alternatives_avoid_the_usual_ports() {
        assert_eq!(alternative("[::]:443".parse().unwrap()).port(), 8443);
        assert_eq!(alternative("0.0.0.0:80".parse().unwrap()).port(), 8080);
        assert_eq!(alternative("127.0.0.1:3049".parse().unwrap()).port(), 4049);
    }
}
