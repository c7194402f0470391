//! The processes envd knows: running ones, and for a short while the ended
//! ones, so a client that re-attaches just after the end still gets it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connectrpc::ConnectError;
use sandbar_proto::process::{process_selector::Selector, ProcessSelector};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::handle::Process;

/// How long an ended process stays attachable.
pub const LINGER_AFTER_END: Duration = Duration::from_secs(5);

/// Process groups remembered before gone ones are pruned.
const GROUPS_PRUNE_AT: usize = 1024;

#[derive(Default)]
pub struct ProcessTable {
    by_pid: Mutex<HashMap<u32, Arc<Process>>>,
    /// Every process group envd started whose members may still run (a
    /// command's background children outlive it), for the kill at shutdown.
    groups: Mutex<Vec<u32>>,
}

impl ProcessTable {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Process>>> {
        self.by_pid.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, process: Arc<Process>) {
        let pgid = process.pid;
        self.map().insert(process.pid, process);
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if groups.len() >= GROUPS_PRUNE_AT {
            groups.retain(|g| group_exists(*g));
        }
        groups.push(pgid);
    }

    /// SIGKILLs every process group envd started (envd is shutting down).
    pub fn kill_all_groups(&self) {
        let groups = std::mem::take(&mut *self.groups.lock().unwrap_or_else(|e| e.into_inner()));
        for pgid in groups {
            let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
        }
    }

    /// Forgets `process` unless its pid was already reused by a newer one.
    pub fn remove(&self, process: &Arc<Process>) {
        let mut map = self.map();
        if map
            .get(&process.pid)
            .is_some_and(|p| Arc::ptr_eq(p, process))
        {
            map.remove(&process.pid);
        }
    }

    pub fn running(&self) -> Vec<Arc<Process>> {
        let mut list: Vec<_> = self
            .map()
            .values()
            .filter(|p| p.is_running())
            .cloned()
            .collect();
        list.sort_by_key(|p| p.pid);
        list
    }

    /// Finds a process by pid or tag, ended ones included.
    pub fn find(&self, selector: Option<&ProcessSelector>) -> Result<Arc<Process>, ConnectError> {
        let selector = selector.and_then(|s| s.selector.as_ref());
        let map = self.map();
        match selector {
            Some(Selector::Pid(pid)) => map.get(pid).cloned().ok_or_else(|| {
                ConnectError::not_found(format!("process with pid {pid} not found"))
            }),
            Some(Selector::Tag(tag)) => map
                .values()
                // A running process wins over an ended one with the same tag.
                .filter(|p| p.tag.as_deref() == Some(tag.as_str()))
                .max_by_key(|p| p.is_running())
                .cloned()
                .ok_or_else(|| {
                    ConnectError::not_found(format!("process with tag {tag} not found"))
                }),
            None => Err(ConnectError::invalid_argument(
                "a process selector (pid or tag) is required",
            )),
        }
    }

    /// Like [`find`](Self::find), but an ended process counts as not found.
    pub fn find_running(
        &self,
        selector: Option<&ProcessSelector>,
    ) -> Result<Arc<Process>, ConnectError> {
        let process = self.find(selector)?;
        if process.is_running() {
            Ok(process)
        } else {
            Err(match selector.and_then(|s| s.selector.as_ref()) {
                Some(Selector::Tag(tag)) => {
                    ConnectError::not_found(format!("process with tag {tag} not found"))
                }
                _ => ConnectError::not_found(format!("process with pid {} not found", process.pid)),
            })
        }
    }
}

fn group_exists(pgid: u32) -> bool {
    // Signal 0 only checks that the group has a member.
    nix::sys::signal::killpg(Pid::from_raw(pgid as i32), None).is_ok()
}
