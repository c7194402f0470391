//! The one place that collects exit statuses of child processes.
//!
//! As PID 1 of a sandbox (or as a child subreaper when run standalone) envd
//! inherits every orphan in its tree and must reap them, or they pile up as
//! zombies. A `waitpid(-1)` loop does that, but it would also steal the status
//! of processes envd started itself. So every child is spawned through
//! [`Reaper::spawn`], which registers the pid while holding the same lock the
//! reaping thread takes before it dispatches a status: a status can then never
//! be handed out before its pid is known. Statuses of pids nobody registered
//! (orphans) are kept in a small bounded map, so a late registration still
//! finds them.
//!
//! Consequence for the rest of envd: never wait on children any other way
//! (no `tokio::process`, no `std::process::Child::wait`): the reaper would
//! race them for the status. And SIGCHLD must keep its default disposition:
//! ignoring it makes the kernel discard exit statuses.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Condvar, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled { signal: i32, core_dumped: bool },
}

/// Statuses of unregistered pids kept at most; older ones are forgotten.
const UNCLAIMED_LIMIT: usize = 256;

#[derive(Default)]
struct Registry {
    waiting: HashMap<i32, oneshot::Sender<ExitStatus>>,
    unclaimed: HashMap<i32, ExitStatus>,
    unclaimed_order: VecDeque<i32>,
    /// Bumped on every spawn; the thread sleeps on ECHILD until it changes.
    spawned: u64,
}

/// Handle to the reaping thread. Cheap to clone.
#[derive(Clone)]
pub struct Reaper {
    inner: Arc<(Mutex<Registry>, Condvar)>,
}

impl Reaper {
    /// Starts the reaping thread. When envd is not PID 1 it also becomes a
    /// child subreaper, so orphans of the processes it starts come back to it.
    pub fn start() -> io::Result<Self> {
        if std::process::id() != 1 {
            nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
        }
        let reaper = Self {
            inner: Arc::new((Mutex::new(Registry::default()), Condvar::new())),
        };
        let thread_reaper = reaper.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            // The loop calls waitpid, takes a lock and may log: a small stack
            // is plenty (and only touched pages count).
            .stack_size(256 * 1024)
            .spawn(move || thread_reaper.run())?;
        Ok(reaper)
    }

    /// Runs `spawn` (which must start exactly one child and return its pid)
    /// and registers the pid atomically with respect to the reaping thread.
    /// Returns the spawn result and a receiver of the child's exit status.
    pub fn spawn<T>(
        &self,
        spawn: impl FnOnce() -> io::Result<(T, u32)>,
    ) -> io::Result<(T, u32, oneshot::Receiver<ExitStatus>)> {
        let mut registry = self.lock();
        let (value, pid) = spawn()?;
        let (tx, rx) = oneshot::channel();
        let key = pid as i32;
        if let Some(status) = registry.unclaimed.remove(&key) {
            registry.unclaimed_order.retain(|p| *p != key);
            let _ = tx.send(status);
        } else {
            registry.waiting.insert(key, tx);
        }
        registry.spawned += 1;
        drop(registry);
        self.inner.1.notify_one();
        Ok((value, pid, rx))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        loop {
            let generation = self.lock().spawned;
            match waitpid(Pid::from_raw(-1), None) {
                Ok(status) => {
                    let Some((pid, exit)) = exit_of(status) else {
                        continue;
                    };
                    let mut registry = self.lock();
                    match registry.waiting.remove(&pid) {
                        Some(tx) => {
                            let _ = tx.send(exit);
                        }
                        None => {
                            tracing::debug!(pid, ?exit, "reaped a process envd did not start");
                            registry.remember_unclaimed(pid, exit);
                        }
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => {
                    // No child at all: sleep until the next spawn. Orphans can
                    // only be re-parented to envd while one of its children is
                    // alive, and then waitpid blocks instead of failing.
                    let registry = self.lock();
                    let _registry = self
                        .inner
                        .1
                        .wait_while(registry, |r| r.spawned == generation)
                        .unwrap_or_else(|e| e.into_inner());
                }
                Err(err) => {
                    tracing::error!(%err, "waitpid failed; the reaper stops");
                    return;
                }
            }
        }
    }
}

impl Registry {
    fn remember_unclaimed(&mut self, pid: i32, exit: ExitStatus) {
        if self.unclaimed.insert(pid, exit).is_none() {
            self.unclaimed_order.push_back(pid);
        }
        while self.unclaimed_order.len() > UNCLAIMED_LIMIT {
            if let Some(old) = self.unclaimed_order.pop_front() {
                self.unclaimed.remove(&old);
            }
        }
    }
}

/// Pids whose parent is envd, read from /proc.
pub fn children_of_self() -> Vec<i32> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // Fields after the parenthesised command: state, then ppid.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(|p| p == me))
                    .unwrap_or(false)
            })
        })
        .collect()
}

fn exit_of(status: WaitStatus) -> Option<(i32, ExitStatus)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), ExitStatus::Exited(code))),
        WaitStatus::Signaled(pid, signal, core_dumped) => Some((
            pid.as_raw(),
            ExitStatus::Signaled {
                signal: signal as i32,
                core_dumped,
            },
        )),
        _ => None,
    }
}

// Spawning through a running reaper is covered by the integration tests,
// which run the envd binary: a waitpid(-1) thread inside the unit-test binary
// would steal the statuses of children other tests wait for.
#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;

    use super::*;

    #[test]
    fn unclaimed_statuses_are_bounded_and_oldest_go_first() {
        let mut registry = Registry::default();
        for pid in 0..(UNCLAIMED_LIMIT as i32 + 10) {
            registry.remember_unclaimed(pid, ExitStatus::Exited(pid % 256));
        }
        assert_eq!(registry.unclaimed.len(), UNCLAIMED_LIMIT);
        assert!(!registry.unclaimed.contains_key(&0));
        assert_eq!(
            registry.unclaimed.get(&(UNCLAIMED_LIMIT as i32 + 9)),
            Some(&ExitStatus::Exited((UNCLAIMED_LIMIT as i32 + 9) % 256))
        );
    }

    #[test]
    fn wait_statuses_map_to_exits() {
        let pid = Pid::from_raw(42);
        assert_eq!(
            exit_of(WaitStatus::Exited(pid, 3)),
            Some((42, ExitStatus::Exited(3)))
        );
        assert_eq!(
            exit_of(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((
                42,
                ExitStatus::Signaled {
                    signal: libc::SIGKILL,
                    core_dumped: false
                }
            ))
        );
        assert_eq!(exit_of(WaitStatus::StillAlive), None);
    }
}
