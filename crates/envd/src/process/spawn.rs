//! Turning a `StartRequest` into a running child: user, environment, working
//! directory, stdio (pipes or a PTY), a session of its own.

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::unistd::{Gid, Uid};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::reaper::{ExitStatus, Reaper};
use crate::users::UserInfo;

/// PATH for children when envd itself has none (e.g. started as PID 1).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cwd '{0}' does not exist")]
    MissingCwd(String),
    #[error("envd runs as uid {current} and cannot start processes as user '{user}'")]
    NotPrivileged { current: u32, user: String },
    #[error("error starting process '{command}': {source}")]
    Start {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("error opening a pty: {0}")]
    Pty(#[from] pty_process::Error),
}

/// Everything needed to start one process.
#[derive(Debug)]
pub struct SpawnSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub user: UserInfo,
    /// Rows and columns when the process gets a PTY.
    pub pty: Option<(u16, u16)>,
    pub stdin: bool,
}

/// The parent's ends of the child's stdio.
pub enum ChildIo {
    Pipes {
        stdin: Option<pipe::Sender>,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
    },
    Pty(pty_process::Pty),
}

pub struct Spawned {
    pub pid: u32,
    pub io: ChildIo,
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// The environment a process sees: a login-like base, then the sandbox-wide
/// variables, then the call's own (later entries win).
pub fn environment<'a>(
    user: &UserInfo,
    sandbox: impl IntoIterator<Item = (&'a String, &'a String)>,
    call: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, String)> {
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
    let mut env = vec![
        ("PATH".to_string(), path),
        ("HOME".to_string(), user.home.display().to_string()),
        ("USER".to_string(), user.name.clone()),
        ("LOGNAME".to_string(), user.name.clone()),
        ("SHELL".to_string(), user.shell.display().to_string()),
    ];
    for (k, v) in sandbox.into_iter().chain(call) {
        match env.iter_mut().find(|(key, _)| key == k) {
            Some(entry) => entry.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env
}

/// Resolves the requested working directory: empty means the sandbox's
/// default workdir or else the user's home, `~` expands to the home, relative
/// paths are taken from that same base. It must exist.
pub fn resolve_cwd(
    requested: Option<&str>,
    user: &UserInfo,
    default_workdir: Option<&str>,
) -> Result<PathBuf, SpawnError> {
    let base = default_workdir
        .map(PathBuf::from)
        .unwrap_or_else(|| user.home.clone());
    let path = match requested.filter(|c| !c.is_empty()) {
        None => base,
        Some("~") => user.home.clone(),
        Some(c) if c.starts_with("~/") => user.home.join(&c[2..]),
        Some(c) if Path::new(c).is_absolute() => PathBuf::from(c),
        Some(c) => base.join(c),
    };
    if path.is_dir() {
        Ok(path)
    } else {
        Err(SpawnError::MissingCwd(path.display().to_string()))
    }
}

/// Credentials the child switches to right before exec.
#[derive(Clone)]
struct Credentials {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

impl Credentials {
    fn for_user(user: &UserInfo) -> Result<Option<Self>, SpawnError> {
        let current = Uid::effective();
        if !current.is_root() {
            // Unprivileged envd (development): it can only run as itself.
            return if current.as_raw() == user.uid {
                Ok(None)
            } else {
                Err(SpawnError::NotPrivileged {
                    current: current.as_raw(),
                    user: user.name.clone(),
                })
            };
        }
        let gid = Gid::from_raw(user.gid);
        let groups = CString::new(user.name.as_str())
            .ok()
            .and_then(|name| nix::unistd::getgrouplist(&name, gid).ok())
            .unwrap_or_else(|| vec![gid]);
        Ok(Some(Self {
            uid: Uid::from_raw(user.uid),
            gid,
            groups,
        }))
    }

    /// Runs in the forked child before exec: only raw syscalls, no allocation.
    fn apply(&self) -> io::Result<()> {
        nix::unistd::setgroups(&self.groups)?;
        nix::unistd::setgid(self.gid)?;
        nix::unistd::setuid(self.uid)?;
        Ok(())
    }
}

fn command_line(spec: &SpawnSpec) -> String {
    std::iter::once(spec.program.as_str())
        .chain(spec.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts the process through the reaper (which then owns its exit status).
/// Must run inside the tokio runtime: the parent's fds are registered with it.
pub fn spawn(spec: SpawnSpec, reaper: &Reaper) -> Result<Spawned, SpawnError> {
    let creds = Credentials::for_user(&spec.user)?;
    let start_err = |source| SpawnError::Start {
        command: command_line(&spec),
        source,
    };
    match spec.pty {
        None => spawn_with_pipes(&spec, creds, reaper).map_err(start_err),
        Some((rows, cols)) => spawn_with_pty(&spec, creds, rows, cols, reaper),
    }
}

fn spawn_with_pipes(
    spec: &SpawnSpec,
    creds: Option<Credentials>,
    reaper: &Reaper,
) -> io::Result<Spawned> {
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure only makes raw syscalls (setsid, setgroups, setgid,
    // setuid) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // A session (and process group) of its own, so signals and the
            // timeout reach everything the command starts.
            nix::unistd::setsid()?;
            if let Some(creds) = &creds {
                creds.apply()?;
            }
            Ok(())
        });
    }
    let (mut child, pid, exit) = reaper.spawn(|| {
        let child = cmd.spawn()?;
        let pid = child.id();
        Ok((child, pid))
    })?;
    // The child is reaped by the reaper; std's handle is only a bag of fds.
    let stdin = match child.stdin.take() {
        Some(fd) => Some(pipe::Sender::from_owned_fd(OwnedFd::from(fd))?),
        None => None,
    };
    let stdout = child
        .stdout
        .take()
        .map(OwnedFd::from)
        .ok_or_else(missing_pipe)?;
    let stderr = child
        .stderr
        .take()
        .map(OwnedFd::from)
        .ok_or_else(missing_pipe)?;
    Ok(Spawned {
        pid,
        io: ChildIo::Pipes {
            stdin,
            stdout: pipe::Receiver::from_owned_fd(stdout)?,
            stderr: pipe::Receiver::from_owned_fd(stderr)?,
        },
        exit,
    })
}

fn missing_pipe() -> io::Error {
    io::Error::other("child pipe was not created")
}

fn spawn_with_pty(
    spec: &SpawnSpec,
    creds: Option<Credentials>,
    rows: u16,
    cols: u16,
    reaper: &Reaper,
) -> Result<Spawned, SpawnError> {
    // The blocking flavour spawns through std (the async one goes through
    // tokio::process, whose own reaping would race the reaper); the master
    // side is made asynchronous below.
    let (pty, pts) = pty_process::blocking::open()?;
    pty.resize(pty_process::Size::new(rows, cols))?;
    let mut cmd = pty_process::blocking::Command::new(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd);
    if let Some(creds) = creds {
        // SAFETY: only raw syscalls on data prepared before the fork; the
        // crate runs setsid + TIOCSCTTY before this closure.
        cmd = unsafe { cmd.pre_exec(move || creds.apply()) };
    }
    let start_err = |source| SpawnError::Start {
        command: command_line(spec),
        source,
    };
    let (_child, pid, exit) = reaper
        .spawn(|| {
            let child = cmd.spawn(pts).map_err(io::Error::other)?;
            let pid = child.id();
            Ok((child, pid))
        })
        .map_err(start_err)?;
    let fd = OwnedFd::from(pty);
    set_nonblocking(&fd).map_err(start_err)?;
    // SAFETY: `fd` is the master side of the pty just opened, now non-blocking.
    let pty = unsafe { pty_process::Pty::from_fd(fd) }?;
    Ok(Spawned {
        pid,
        io: ChildIo::Pty(pty),
        exit,
    })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn someone(home: &Path) -> UserInfo {
        UserInfo {
            name: "someone".into(),
            uid: 4242,
            gid: 4242,
            home: home.to_path_buf(),
            shell: "/bin/bash".into(),
        }
    }

    #[test]
    fn later_environment_layers_win() {
        let user = someone(Path::new("/home/someone"));
        let sandbox = BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("HOME".to_string(), "/x".to_string()),
        ]);
        let call = BTreeMap::from([("A".to_string(), "2".to_string())]);
        let env = environment(&user, &sandbox, &call);
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("A"), Some("2"));
        assert_eq!(get("HOME"), Some("/x"));
        assert_eq!(get("USER"), Some("someone"));
        assert_eq!(get("LOGNAME"), Some("someone"));
        assert!(get("PATH").is_some());
        assert_eq!(env.iter().filter(|(k, _)| k == "A").count(), 1);
    }

    #[test]
    fn cwd_resolution() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("sub")).unwrap();
        let user = someone(home.path());
        assert_eq!(resolve_cwd(None, &user, None).unwrap(), home.path());
        assert_eq!(resolve_cwd(Some(""), &user, None).unwrap(), home.path());
        assert_eq!(resolve_cwd(Some("~"), &user, None).unwrap(), home.path());
        assert_eq!(
            resolve_cwd(Some("~/sub"), &user, None).unwrap(),
            home.path().join("sub")
        );
        assert_eq!(
            resolve_cwd(Some("sub"), &user, None).unwrap(),
            home.path().join("sub")
        );
        assert_eq!(
            resolve_cwd(None, &user, Some("/tmp")).unwrap(),
            Path::new("/tmp")
        );
        let missing = resolve_cwd(Some("/does/not/exist"), &user, None).unwrap_err();
        assert_eq!(missing.to_string(), "cwd '/does/not/exist' does not exist");
    }
}
