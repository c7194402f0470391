//! The sandbox's first process (envd) as the runtime holds it: a pidfd to
//! signal it without pid-reuse races, and a reaper task that waits on the
//! pidfd (no polling) and reaps it, since the runtime is its parent.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::sys;

#[derive(Debug)]
pub(crate) struct Pid1 {
    pub pid: i32,
    pidfd: Arc<OwnedFd>,
    exited: watch::Receiver<bool>,
}

impl Pid1 {
    /// Takes hold of `pid`, a child of this process; starts its reaper.
    pub fn adopt(pid: i32) -> std::io::Result<Self> {
        let pidfd = Arc::new(sys::pidfd_open(pid)?);
        let (tx, rx) = watch::channel(false);
        let fd = pidfd.clone();
        // SAFETY: ArcFd keeps the pidfd open (it shares ownership) for as long
        // as the AsyncFd lives, and always returns that same descriptor.
        let watched =
            unsafe { AsyncFd::register_with_interest(ArcFd(fd), tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
        tokio::spawn(async move {
            loop {
                match watched.readable().await {
                    Ok(mut guard) => match sys::pidfd_try_reap(&watched.get_ref().0) {
                        Ok(Some(status)) => {
                            tracing::debug!(pid, status, "sandbox init exited");
                            break;
                        }
                        Ok(None) => guard.clear_ready(),
                        Err(e) => {
                            tracing::warn!(pid, error = %e, "reaping a sandbox init failed");
                            break;
                        }
                    },
                    Err(e) => {
                        tracing::warn!(pid, error = %e, "waiting for a sandbox init failed");
                        break;
                    }
                }
            }
            let _ = tx.send(true);
        });
        Ok(Self {
            pid,
            pidfd,
            exited: rx,
        })
    }

    pub fn has_exited(&self) -> bool {
        *self.exited.borrow()
    }

    /// A receiver that turns true once the process is reaped.
    pub fn exited(&self) -> watch::Receiver<bool> {
        self.exited.clone()
    }

    /// SIGKILLs it (in a pid namespace, that kills every process of the
    /// namespace) and waits until it is reaped. Returns false on timeout.
    pub async fn kill_and_wait(&self, timeout: Duration) -> bool {
        if !self.has_exited() {
            if let Err(e) = sys::pidfd_send_signal(&self.pidfd, libc::SIGKILL) {
                if e.raw_os_error() != Some(libc::ESRCH) {
                    tracing::warn!(pid = self.pid, error = %e, "could not signal the sandbox init");
                }
            }
        }
        let mut rx = self.exited.clone();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|done| *done)).await;
        waited.is_ok()
    }
}

struct ArcFd(Arc<OwnedFd>);

impl std::os::fd::AsRawFd for ArcFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}
