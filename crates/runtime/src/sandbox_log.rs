//! envd's output, kept by the runtime: envd's stdout and stderr are the
//! write end of a pipe whose read end only the runtime holds. No host file
//! descriptor reaches a sandbox (root inside can take any descriptor envd
//! holds with `pidfd_getfd`: a pipe end is worthless to it), and what it
//! writes is capped here, so it can neither fill the host's disk nor
//! truncate anything.
//!
//! On disk: `<sandbox dir>/envd.log`, rotated to `envd.log.1` when it
//! reaches [`LOG_CAP`], so a sandbox's log never takes more than twice that.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

/// Most bytes one log file holds before it is rotated.
pub const LOG_CAP: u64 = 1 << 20;
pub const LOG_FILE: &str = "envd.log";
pub const ROTATED_FILE: &str = "envd.log.1";

/// A pipe for envd's output: the read end for [`spawn`], the write end for
/// the helper to hand to envd.
pub(crate) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(std::io::Error::from)
        .and_then(|(r, w)| {
            // Only the reading end is ours to poll; envd's end blocks as pipes
            // normally do.
            nix::fcntl::fcntl(
                &w,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            )
            .map_err(std::io::Error::from)?;
            Ok((r, w))
        })
}

/// Copies what arrives on `read` into the sandbox's log until every writer
/// is gone (the sandbox's processes are dead). The directory is held open,
/// so the log follows it when it is renamed (a warm sandbox handed over).
pub(crate) fn spawn(read: OwnedFd, dir: PathBuf) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
    let dir_fd = std::fs::File::open(&dir)?;
    let dir = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dir_fd)
    ));
    Ok(tokio::spawn(async move {
        let _held = dir_fd;
        let mut log = CappedLog::new(dir);
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => log.append(&buf[..n]),
            }
        }
    }))
}

struct CappedLog {
    dir: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
}

impl CappedLog {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            file: None,
            size: 0,
        }
    }

    fn append(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.size >= LOG_CAP {
                self.file = None;
                let _ = std::fs::rename(self.dir.join(LOG_FILE), self.dir.join(ROTATED_FILE));
                self.size = 0;
            }
            if self.file.is_none() {
                match std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join(LOG_FILE))
                {
                    Ok(f) => {
                        self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                        self.file = Some(f);
                    }
                    // The sandbox dir is gone (torn down): nothing to keep.
                    Err(_) => return,
                }
            }
            let room = (LOG_CAP - self.size.min(LOG_CAP)).max(1) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            if let Some(f) = &mut self.file {
                if f.write_all(now).is_err() {
                    self.file = None;
                    return;
                }
            }
            self.size += now.len() as u64;
            data = rest;
        }
    }
}

/// The last `lines` lines of a sandbox's log (for error messages).
pub(crate) fn tail(dir: &Path, lines: usize) -> String {
    let mut text = std::fs::read_to_string(dir.join(ROTATED_FILE)).unwrap_or_default();
    text.push_str(&std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default());
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    if tail.is_empty() {
        "(empty)".into()
    } else {
        tail.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_never_grows_past_twice_its_cap() {
        let d = tempfile::tempdir().unwrap();
        let mut log = CappedLog::new(d.path().to_path_buf());
        let chunk = vec![b'x'; 300 << 10];
        for _ in 0..20 {
            log.append(&chunk);
        }
        log.append(b"\nlast line\n");
        let size = |f: &str| {
            std::fs::metadata(d.path().join(f))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        assert!(size(LOG_FILE) <= LOG_CAP, "{}", size(LOG_FILE));
        assert!(size(ROTATED_FILE) <= LOG_CAP);
        assert!(size(LOG_FILE) + size(ROTATED_FILE) <= 2 * LOG_CAP);
        assert_eq!(tail(d.path(), 1), "last line");
    }

    #[tokio::test]
    async fn a_pipe_is_copied_until_its_writers_are_gone() {
        let d = tempfile::tempdir().unwrap();
        let (r, w) = pipe().unwrap();
        let task = spawn(r, d.path().to_path_buf()).unwrap();
        let mut w = std::fs::File::from(w);
        writeln!(w, "hello from envd").unwrap();
        drop(w);
        task.await.unwrap();
        assert_eq!(tail(d.path(), 5), "hello from envd");
    }
}
