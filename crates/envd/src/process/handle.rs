//! A started process: its fan-out of events to every attached stream, its
//! input side, and the task that pumps output and waits for the exit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use sandbar_proto::process::ProcessConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot, watch};

use super::events::{EndInfo, Event, Output};
use super::spawn::{ChildIo, Spawned};
use crate::reaper::ExitStatus;

/// Events buffered per attached stream before the output pump waits for it
/// (back-pressure to the process, like a pipe).
const SUBSCRIBER_BUFFER: usize = 64;
/// Largest chunk read from a pipe at once.
const READ_CHUNK: usize = 32 * 1024;
/// Largest chunk read from a PTY at once (terminal output comes in small bursts).
const PTY_READ_CHUNK: usize = 16 * 1024;
/// After the process exits, output still in the pipes is drained until the
/// pipe is quiet this long: a background child may hold it open for good.
const DRAIN_IDLE: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("process {0} was started without stdin")]
    NoStdin(u32),
    #[error("stdin of process {0} is closed")]
    StdinClosed(u32),
    #[error("process {0} has a pty: send input as pty, not stdin")]
    HasPty(u32),
    #[error("process {0} has no pty")]
    NoPty(u32),
    #[error("cannot close stdin of pty process {0}: send Ctrl+D (0x04) instead")]
    ClosePty(u32),
    #[error("writing to process {pid}: {source}")]
    Write {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

enum Input {
    None,
    Stdin(tokio::sync::Mutex<Option<pipe::Sender>>),
    Pty(tokio::sync::Mutex<pty_process::OwnedWritePty>),
}

#[derive(Default)]
struct Fanout {
    subscribers: Vec<mpsc::Sender<Event>>,
    end: Option<EndInfo>,
}

/// What attaching to a process yields.
pub enum Subscription {
    Live(mpsc::Receiver<Event>),
    Ended(EndInfo),
}

pub struct Process {
    pub pid: u32,
    pub config: ProcessConfig,
    pub tag: Option<String>,
    input: Input,
    fanout: Mutex<Fanout>,
}

impl Process {
    /// Wraps a freshly spawned child and starts its pump. `first` is attached
    /// before any output is read, so the starting stream misses nothing.
    /// `deadline` is when the whole process group gets SIGKILL. `on_end`
    /// runs once the end event went out.
    pub fn launch(
        spawned: Spawned,
        config: ProcessConfig,
        tag: Option<String>,
        deadline: Option<tokio::time::Instant>,
        on_end: impl FnOnce(Arc<Process>) + Send + 'static,
    ) -> (Arc<Self>, mpsc::Receiver<Event>) {
        let Spawned { pid, io, exit } = spawned;
        let (first_tx, first_rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let (input, readers): (Input, Vec<Reader>) = match io {
            ChildIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => (
                match stdin {
                    Some(s) => Input::Stdin(tokio::sync::Mutex::new(Some(s))),
                    None => Input::None,
                },
                vec![
                    Reader::new(Source::Pipe(stdout), Output::Stdout),
                    Reader::new(Source::Pipe(stderr), Output::Stderr),
                ],
            ),
            ChildIo::Pty(pty) => {
                let (read, write) = pty.into_split();
                (
                    Input::Pty(tokio::sync::Mutex::new(write)),
                    vec![Reader::new(
                        Source::Pty(read, vec![0u8; PTY_READ_CHUNK]),
                        Output::Pty,
                    )],
                )
            }
        };
        let process = Arc::new(Self {
            pid,
            config,
            tag,
            input,
            fanout: Mutex::new(Fanout {
                subscribers: vec![first_tx],
                end: None,
            }),
        });
        tokio::spawn(pump(process.clone(), readers, exit, deadline, on_end));
        (process, first_rx)
    }

    fn fanout(&self) -> std::sync::MutexGuard<'_, Fanout> {
        self.fanout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a new stream: live events from now on, or the end if it came.
    pub fn subscribe(&self) -> Subscription {
        let mut fanout = self.fanout();
        match &fanout.end {
            Some(end) => Subscription::Ended(end.clone()),
            None => {
                let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
                fanout.subscribers.push(tx);
                Subscription::Live(rx)
            }
        }
    }

    pub fn is_running(&self) -> bool {
        self.fanout().end.is_none()
    }

    /// Signals the whole process group (the command and what it started).
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        killpg(Pid::from_raw(self.pid as i32), signal)
    }

    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), InputError> {
        match &self.input {
            Input::None => Err(InputError::NoStdin(self.pid)),
            Input::Pty(_) => Err(InputError::HasPty(self.pid)),
            Input::Stdin(stdin) => {
                let mut stdin = stdin.lock().await;
                let pipe = stdin.as_mut().ok_or(InputError::StdinClosed(self.pid))?;
                pipe.write_all(data)
                    .await
                    .map_err(|source| InputError::Write {
                        pid: self.pid,
                        source,
                    })
            }
        }
    }

    pub async fn write_pty(&self, data: &[u8]) -> Result<(), InputError> {
        match &self.input {
            Input::Pty(pty) => {
                let mut pty = pty.lock().await;
                pty.write_all(data)
                    .await
                    .map_err(|source| InputError::Write {
                        pid: self.pid,
                        source,
                    })
            }
            _ => Err(InputError::NoPty(self.pid)),
        }
    }

    pub async fn close_stdin(&self) -> Result<(), InputError> {
        match &self.input {
            Input::None => Ok(()),
            Input::Pty(_) => Err(InputError::ClosePty(self.pid)),
            Input::Stdin(stdin) => {
                stdin.lock().await.take();
                Ok(())
            }
        }
    }

    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), InputError> {
        match &self.input {
            Input::Pty(pty) => pty
                .lock()
                .await
                .resize(pty_process::Size::new(rows, cols))
                .map_err(|e| InputError::Write {
                    pid: self.pid,
                    source: std::io::Error::other(e),
                }),
            _ => Err(InputError::NoPty(self.pid)),
        }
    }

    async fn publish(&self, event: Event) {
        let subscribers = self.fanout().subscribers.clone();
        let mut gone = false;
        for tx in subscribers {
            gone |= tx.send(event.clone()).await.is_err();
        }
        if gone {
            self.fanout().subscribers.retain(|tx| !tx.is_closed());
        }
    }

    async fn finish(&self, end: EndInfo) {
        let subscribers = {
            let mut fanout = self.fanout();
            fanout.end = Some(end.clone());
            std::mem::take(&mut fanout.subscribers)
        };
        for tx in subscribers {
            let _ = tx.send(Event::End(end.clone())).await;
        }
    }
}

/// Where output comes from.
enum Source {
    Pipe(pipe::Receiver),
    Pty(pty_process::OwnedReadPty, Vec<u8>),
}

impl Source {
    /// The next chunk; `None` at end of file.
    async fn read_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        match self {
            // Waiting for readability before taking a buffer keeps an idle
            // process from pinning a read buffer per pipe.
            Self::Pipe(pipe) => loop {
                pipe.readable().await?;
                let mut buf = vec![0u8; READ_CHUNK];
                match pipe.try_read(&mut buf) {
                    Ok(0) => return Ok(None),
                    Ok(n) => return Ok(Some(Bytes::copy_from_slice(&buf[..n]))),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            },
            // The PTY half only offers AsyncRead, so it keeps its buffer.
            Self::Pty(pty, buf) => match pty.read(buf).await? {
                0 => Ok(None),
                n => Ok(Some(Bytes::copy_from_slice(&buf[..n]))),
            },
        }
    }
}

struct Reader {
    source: Source,
    wrap: fn(Bytes) -> Output,
}

impl Reader {
    fn new(source: Source, wrap: fn(Bytes) -> Output) -> Self {
        Self { source, wrap }
    }

    async fn run(mut self, process: Arc<Process>, mut exited: watch::Receiver<bool>) {
        let mut draining = false;
        loop {
            let read = if draining {
                match tokio::time::timeout(DRAIN_IDLE, self.source.read_chunk()).await {
                    Ok(read) => read,
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    read = self.source.read_chunk() => read,
                    _ = exited.wait_for(|e| *e) => {
                        draining = true;
                        continue;
                    }
                }
            };
            match read {
                Ok(None) => break,
                Ok(Some(chunk)) => {
                    process.publish(Event::Data((self.wrap)(chunk))).await;
                }
                // A PTY master reads EIO once no process holds the terminal.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(pid = process.pid, error = %e, "reading process output failed");
                    break;
                }
            }
        }
    }
}

async fn pump(
    process: Arc<Process>,
    readers: Vec<Reader>,
    mut exit: oneshot::Receiver<ExitStatus>,
    deadline: Option<tokio::time::Instant>,
    on_end: impl FnOnce(Arc<Process>) + Send + 'static,
) {
    let (exited_tx, exited_rx) = watch::channel(false);
    let readers: Vec<_> = readers
        .into_iter()
        .map(|r| tokio::spawn(r.run(process.clone(), exited_rx.clone())))
        .collect();

    let status = match deadline {
        None => (&mut exit).await,
        Some(deadline) => tokio::select! {
            status = &mut exit => status,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::info!(pid = process.pid, "process lifetime (Connect-Timeout-Ms) expired; killing its group");
                if let Err(e) = process.signal(Signal::SIGKILL) {
                    tracing::warn!(pid = process.pid, error = %e, "killing the timed-out process group failed");
                }
                exit.await
            }
        },
    };
    let _ = exited_tx.send(true);
    for reader in readers {
        let _ = reader.await;
    }
    let end = match status {
        Ok(status) => EndInfo::from_status(status),
        Err(_) => EndInfo::lost("the reaper stopped before the process ended"),
    };
    tracing::debug!(pid = process.pid, status = %end.status, "process ended");
    process.finish(end).await;
    on_end(process);
}
