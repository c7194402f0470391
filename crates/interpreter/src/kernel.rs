//! One Jupyter kernel: its process (in its own process group) and the client
//! side of its ZeroMQ channels, with every message routed to the request it
//! answers (by the parent header's `msg_id`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jupyter_zmq_client::{
    create_client_control_connection, create_client_iopub_connection,
    create_client_shell_connection_with_identity, peer_identity_for_session,
    ClientControlConnection, ClientIoPubConnection, Connection, ConnectionInfo, ExecuteRequest,
    InterruptRequest, JupyterMessage, JupyterMessageContent, KernelInfoRequest, RawMessage,
};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use zeromq::{DealerRecvHalf, DealerSendHalf, SocketRecv};

use crate::kernelspec::{KernelSpec, Transport};

/// How long a kernel may take from spawn to answering `kernel_info`.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often to look for the kernel's sockets while it starts.
const SOCKET_POLL: Duration = Duration::from_millis(5);
/// Kernel output lines kept to explain a failed start.
const OUTPUT_TAIL_LINES: usize = 20;

/// What a request receives from the kernel.
#[derive(Debug, Clone)]
pub enum KernelEvent {
    /// A message on iopub whose parent is the request.
    Iopub {
        msg_type: String,
        content: Value,
        /// The message header's `date` (ISO 8601), for output timestamps.
        date: String,
    },
    /// The shell channel's reply to the request.
    Reply { content: Value },
    /// The kernel process ended; the text says how.
    Died(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("Jupyter protocol: {0}")]
    Protocol(String),
    #[error("the {kernel} kernel exited while starting ({status}); its output: {output}")]
    ExitedAtStart {
        kernel: String,
        status: String,
        output: String,
    },
    #[error("the {kernel} kernel did not answer within {timeout:?}; its output: {output}")]
    StartTimeout {
        kernel: String,
        timeout: Duration,
        output: String,
    },
    #[error("the kernel is gone: {0}")]
    Gone(String),
}

fn protocol(e: impl std::fmt::Display) -> KernelError {
    KernelError::Protocol(e.to_string())
}

type Pending = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<KernelEvent>>>>;

/// A running kernel. Dropping it kills the kernel's process group.
pub struct Kernel {
    pub name: String,
    /// The sandbox-wide env vars this kernel has been given (None until the
    /// first run brought it up to date).
    pub sandbox_env: Mutex<Option<Arc<BTreeMap<String, String>>>>,
    interrupt_by_message: bool,
    shell: tokio::sync::Mutex<Connection<DealerSendHalf>>,
    control: tokio::sync::Mutex<ClientControlConnection>,
    pending: Pending,
    exit: watch::Receiver<Option<String>>,
    process: ProcessGuard,
}

impl Kernel {
    /// Spawns the kernel `spec` in `cwd` and returns once it answers.
    pub async fn start(spec: &KernelSpec, cwd: &Path, run_dir: &Path) -> Result<Self, KernelError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let key = hex::encode(rand::random::<[u8; 32]>());
        let endpoints = match spec.transport() {
            // Unix sockets: names never collide with another kernel's (no
            // port races, no stale reconnects reaching a new kernel), and
            // only root may connect to them.
            Transport::Ipc => Endpoints::Sockets(
                (1..=5)
                    .map(|n| run_dir.join(format!("k{id}-{n}")))
                    .collect(),
            ),
            // Loopback ports, leased so that two kernels of this server never
            // get the same one. The key still signs every message: a process
            // that connects without it cannot run code.
            Transport::Tcp => Endpoints::Ports(PortLease::take()?),
        };
        let info = endpoints.connection_info(&run_dir.join(format!("k{id}")), key, &spec.name);
        let conn_file = run_dir.join(format!("k{id}.json"));
        write_private(&conn_file, &serde_json::to_vec(&info).map_err(protocol)?)?;

        let argv = spec.command();
        let mut cmd = tokio::process::Command::new(&argv[0]);
        for arg in &argv[1..] {
            if arg == "{connection_file}" {
                cmd.arg(&conn_file);
            } else {
                cmd.arg(arg);
            }
        }
        // debugpy (imported by ipykernel) warns on every start that Python's
        // frozen modules may hide breakpoints; nobody here attaches a debugger.
        cmd.env("PYDEVD_DISABLE_FILE_VALIDATION", "1")
            .envs(&spec.env)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so an interrupt or a kill reaches what the
            // code started too (a shell's `sleep`), as Jupyter does.
            .process_group(0);
        let spawned = cmd.spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&conn_file);
                return Err(KernelError::Io {
                    context: format!("starting the {} kernel ({})", spec.name, argv[0]),
                    source: e,
                });
            }
        };
        let pid = child.id().expect("a just-spawned child has a pid") as i32;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut tasks = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            tasks.push(tokio::spawn(keep_tail(
                stream,
                spec.name.clone(),
                tail.clone(),
            )));
        }

        let pending: Pending = Arc::default();
        let (exit_tx, exit) = watch::channel(None);
        {
            let pending = pending.clone();
            tasks.push(tokio::spawn(async move {
                let how = match child.wait().await {
                    Ok(status) => describe_exit(status),
                    Err(e) => format!("could not wait for it: {e}"),
                };
                let _ = exit_tx.send(Some(how.clone()));
                for (_, tx) in pending.lock().unwrap().drain() {
                    let _ = tx.send(KernelEvent::Died(how.clone()));
                }
            }));
        }

        let mut process = ProcessGuard {
            pgid: Pid::from_raw(pid),
            tasks,
            files: std::iter::once(conn_file.clone())
                .chain(endpoints.files())
                .collect(),
            endpoints,
        };
        let output = || {
            tail.lock()
                .unwrap()
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        };
        let connected = tokio::time::timeout(START_TIMEOUT, async {
            let mut exited = exit.clone();
            tokio::select! {
                conns = connect(&info, &process.endpoints) => conns,
                _ = exited.wait_for(Option::is_some) => Err(KernelError::Gone("exited".into())),
            }
        })
        .await;
        let (shell, shell_rx, iopub, control) = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                if let Some(status) = exit.borrow().clone() {
                    return Err(KernelError::ExitedAtStart {
                        kernel: spec.name.clone(),
                        status,
                        output: output(),
                    });
                }
                return Err(e);
            }
            Err(_) => {
                return Err(KernelError::StartTimeout {
                    kernel: spec.name.clone(),
                    timeout: START_TIMEOUT,
                    output: output(),
                })
            }
        };
        process
            .tasks
            .push(tokio::spawn(route(shell_rx, iopub, pending.clone())));

        let kernel = Kernel {
            name: spec.name.clone(),
            sandbox_env: Mutex::new(None),
            interrupt_by_message: spec.interrupts_by_message(),
            shell: tokio::sync::Mutex::new(shell),
            control: tokio::sync::Mutex::new(control),
            pending,
            exit,
            process,
        };
        match tokio::time::timeout(START_TIMEOUT, kernel.handshake()).await {
            Ok(Ok(())) => Ok(kernel),
            Ok(Err(KernelError::Gone(status))) => Err(KernelError::ExitedAtStart {
                kernel: spec.name.clone(),
                status,
                output: output(),
            }),
            Ok(Err(e)) => Err(KernelError::Protocol(format!(
                "{e}; its output: {}",
                output()
            ))),
            Err(_) => Err(KernelError::StartTimeout {
                kernel: spec.name.clone(),
                timeout: START_TIMEOUT,
                output: output(),
            }),
        }
    }

    /// Asks `kernel_info` until a reply and its iopub status both arrive:
    /// then the iopub subscription is live and no output can be missed
    /// (a SUB socket drops what is published before it is subscribed).
    async fn handshake(&self) -> Result<(), KernelError> {
        loop {
            let (msg_id, mut events) = self.send(KernelInfoRequest {}.into()).await?;
            let (mut replied, mut published) = (false, false);
            let deadline = tokio::time::sleep(Duration::from_millis(250));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Some(KernelEvent::Reply { .. }) => replied = true,
                        Some(KernelEvent::Iopub { msg_type, .. }) if msg_type == "status" => published = true,
                        Some(KernelEvent::Iopub { .. }) => {}
                        Some(KernelEvent::Died(how)) => {
                            self.forget(&msg_id);
                            return Err(KernelError::Gone(how));
                        }
                        None => return Err(KernelError::Gone("its channels closed".into())),
                    },
                    _ = &mut deadline => break,
                }
                if replied && published {
                    self.forget(&msg_id);
                    return Ok(());
                }
            }
            self.forget(&msg_id);
        }
    }

    /// Sends an execute request; events for it arrive on the receiver.
    pub async fn execute(
        &self,
        code: &str,
        silent: bool,
    ) -> Result<(String, mpsc::UnboundedReceiver<KernelEvent>), KernelError> {
        let mut request = ExecuteRequest::new(code.to_string());
        request.silent = silent;
        request.store_history = !silent;
        request.allow_stdin = false;
        // Runs never queue in the kernel (a context runs one at a time), so
        // there is nothing for stop_on_error to protect; with it, ipykernel
        // aborts requests that arrive just after a failed one.
        request.stop_on_error = false;
        self.send(request.into()).await
    }

    async fn send(
        &self,
        content: JupyterMessageContent,
    ) -> Result<(String, mpsc::UnboundedReceiver<KernelEvent>), KernelError> {
        if let Some(how) = self.exit.borrow().clone() {
            return Err(KernelError::Gone(how));
        }
        let message = JupyterMessage::new(content, None);
        let msg_id = message.header.msg_id.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending.lock().unwrap().insert(msg_id.clone(), tx);
        if let Err(e) = self.shell.lock().await.send(message).await {
            self.forget(&msg_id);
            return Err(protocol(e));
        }
        Ok((msg_id, rx))
    }

    /// Stops routing events of a finished request.
    pub fn forget(&self, msg_id: &str) {
        self.pending.lock().unwrap().remove(msg_id);
    }

    /// Interrupts the running code (KeyboardInterrupt in Python).
    pub async fn interrupt(&self) {
        if self.interrupt_by_message {
            let message = JupyterMessage::new(InterruptRequest {}, None);
            if let Err(e) = self.control.lock().await.send(message).await {
                tracing::warn!(kernel = %self.name, error = %e, "interrupt request not sent");
            }
        } else if let Err(e) = killpg(self.process.pgid, Signal::SIGINT) {
            tracing::warn!(kernel = %self.name, error = %e, "could not interrupt the kernel");
        }
    }

    /// How the kernel ended, once it has.
    pub fn exited(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    /// Kills the kernel and whatever it started, and waits until it is gone.
    pub async fn kill(&self) {
        let _ = killpg(self.process.pgid, Signal::SIGKILL);
        let mut exit = self.exit.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), exit.wait_for(Option::is_some)).await;
    }
}

/// The kernel's process group, the tasks that serve it and its files: all
/// undone on drop, whether the start failed half-way or the kernel is done.
struct ProcessGuard {
    pgid: Pid,
    tasks: Vec<JoinHandle<()>>,
    /// Connection file and sockets.
    files: Vec<PathBuf>,
    /// Where the kernel listens (its ports stay leased while it lives).
    endpoints: Endpoints,
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = killpg(self.pgid, Signal::SIGKILL);
        for task in &self.tasks {
            task.abort();
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Where a kernel's five channels (shell, iopub, stdin, control,
/// heartbeat, in that order) listen.
enum Endpoints {
    Sockets(Vec<PathBuf>),
    Ports(PortLease),
}

impl Endpoints {
    fn connection_info(&self, prefix: &Path, key: String, kernel: &str) -> ConnectionInfo {
        let (ip, transport, ports) = match self {
            // IPC "ports" are the suffixes of the socket paths.
            Endpoints::Sockets(_) => (
                prefix.display().to_string(),
                jupyter_protocol::Transport::IPC,
                [1, 2, 3, 4, 5],
            ),
            Endpoints::Ports(lease) => (
                "127.0.0.1".to_string(),
                jupyter_protocol::Transport::TCP,
                lease.ports,
            ),
        };
        ConnectionInfo {
            ip,
            transport,
            shell_port: ports[0],
            iopub_port: ports[1],
            stdin_port: ports[2],
            control_port: ports[3],
            hb_port: ports[4],
            key,
            signature_scheme: "hmac-sha256".into(),
            kernel_name: Some(kernel.to_string()),
        }
    }

    /// Files to remove when the kernel is gone.
    fn files(&self) -> Vec<PathBuf> {
        match self {
            Endpoints::Sockets(paths) => paths.clone(),
            Endpoints::Ports(_) => Vec::new(),
        }
    }

    /// Whether the kernel listens on every endpoint.
    fn bound(&self) -> bool {
        match self {
            Endpoints::Sockets(paths) => paths.iter().all(|p| p.exists()),
            Endpoints::Ports(lease) => {
                let listening = listening_ports();
                lease.ports.iter().all(|p| listening.contains(p))
            }
        }
    }
}

/// Ports handed to live kernels of this server: the OS may give a port
/// that was just released to the next `bind(0)`, so two kernels starting
/// at once could otherwise be told the same one.
static LEASED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Five free loopback ports, reserved for one kernel until dropped.
struct PortLease {
    ports: [u16; 5],
}

impl PortLease {
    fn take() -> Result<Self, KernelError> {
        let io = |source| KernelError::Io {
            context: "picking free loopback ports for a kernel".into(),
            source,
        };
        // Every listener is held until all ports are picked, so the five
        // differ; they close before the kernel binds the ports itself.
        let mut held = Vec::new();
        let mut ports = Vec::new();
        let mut leased = LEASED.lock().unwrap();
        while ports.len() < 5 {
            let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(io)?;
            let port = listener.local_addr().map_err(io)?.port();
            if !leased.contains(&port) && !ports.contains(&port) {
                ports.push(port);
            }
            held.push(listener);
        }
        leased.extend(&ports);
        Ok(Self {
            ports: ports.try_into().expect("five ports"),
        })
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut leased = LEASED.lock().unwrap();
        for p in &self.ports {
            leased.remove(p);
        }
    }
}

/// TCP ports something listens on in this network namespace (IPv4 and
/// IPv6 sockets: a JVM binds 127.0.0.1 through an IPv6 socket).
fn listening_ports() -> BTreeSet<u16> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|table| parse_listening(&table))
        .collect()
}

/// The local ports of `/proc/net/tcp`-format lines in state LISTEN (0A).
fn parse_listening(table: &str) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if state != "0A" {
                return None;
            }
            let port = local.rsplit_once(':')?.1;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

type Channels = (
    Connection<DealerSendHalf>,
    Connection<DealerRecvHalf>,
    ClientIoPubConnection,
    ClientControlConnection,
);

/// Connects the channels this server uses; ZeroMQ connects retry until the
/// kernel has bound its ports.
async fn connect(info: &ConnectionInfo, endpoints: &Endpoints) -> Result<Channels, KernelError> {
    // Wait for the kernel to bind: zeromq's own connect retries back off
    // exponentially, which would add up to a second to every start.
    while !endpoints.bound() {
        tokio::time::sleep(SOCKET_POLL).await;
    }
    let session = uuid::Uuid::new_v4().to_string();
    let identity = peer_identity_for_session(&session).map_err(protocol)?;
    let channel = |name: &'static str| {
        move |e| KernelError::Protocol(format!("connecting its {name} channel: {e}"))
    };
    // Subscribe first: iopub is where all output goes.
    let iopub = create_client_iopub_connection(info, "", &session)
        .await
        .map_err(channel("iopub"))?;
    let shell = create_client_shell_connection_with_identity(info, &session, identity)
        .await
        .map_err(channel("shell"))?;
    let control = create_client_control_connection(info, &session)
        .await
        .map_err(channel("control"))?;
    let (shell_tx, shell_rx) = shell.split();
    Ok((shell_tx, shell_rx, iopub, control))
}

/// Reads both channels and hands each message to the request it answers.
async fn route(
    mut shell: Connection<DealerRecvHalf>,
    mut iopub: ClientIoPubConnection,
    pending: Pending,
) {
    loop {
        let (raw, from_shell) = tokio::select! {
            m = shell.socket.recv() => (m.map(|m| RawMessage::from_multipart(m, &shell.mac)), true),
            m = iopub.socket.recv() => (m.map(|m| RawMessage::from_multipart(m, &iopub.mac)), false),
        };
        let raw = match raw {
            Ok(Ok(raw)) => raw,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "dropping a kernel message that failed to verify");
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "kernel channel closed");
                return;
            }
        };
        let Some((parent, msg_type, date, content)) = decode(&raw.jparts) else {
            tracing::warn!("dropping a malformed kernel message");
            continue;
        };
        let Some(parent) = parent else { continue };
        let event = if from_shell {
            KernelEvent::Reply { content }
        } else {
            KernelEvent::Iopub {
                msg_type,
                content,
                date,
            }
        };
        let target = pending.lock().unwrap().get(&parent).cloned();
        if let Some(tx) = target {
            let _ = tx.send(event);
        }
    }
}

/// Parent msg_id, msg_type, date and content of a message's JSON parts. The
/// content stays untyped so that every MIME type and field passes through.
fn decode(parts: &[bytes::Bytes]) -> Option<(Option<String>, String, String, Value)> {
    let header: Value = serde_json::from_slice(parts.first()?).ok()?;
    let parent: Value = serde_json::from_slice(parts.get(1)?).ok()?;
    let content: Value = serde_json::from_slice(parts.get(3)?).ok()?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Some((
        text(&parent, "msg_id"),
        text(&header, "msg_type")?,
        text(&header, "date").unwrap_or_default(),
        content,
    ))
}

async fn keep_tail(
    stream: Box<dyn AsyncRead + Send + Unpin>,
    kernel: String,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(%kernel, "kernel output: {line}");
        let mut tail = tail.lock().unwrap();
        if tail.len() == OUTPUT_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| sig.to_string());
            if sig == Signal::SIGKILL as i32 {
                format!("killed by {name} (out of memory, or killed on purpose)")
            } else {
                format!("killed by {name}")
            }
        }
        _ => status.to_string(),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KernelError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| KernelError::Io {
            context: format!("creating {}", path.display()),
            source: e,
        })?;
    f.write_all(bytes).map_err(|e| KernelError::Io {
        context: format!("writing {}", path.display()),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_routing_fields_and_keeps_content_untyped() {
        let parts: Vec<bytes::Bytes> = vec![
            br#"{"msg_id":"b","msg_type":"display_data","date":"2026-01-01T00:00:00Z"}"#
                .to_vec()
                .into(),
            br#"{"msg_id":"a"}"#.to_vec().into(),
            b"{}".to_vec().into(),
            br#"{"data":{"x/unknown":[1]}}"#.to_vec().into(),
        ];
        let (parent, ty, date, content) = decode(&parts).unwrap();
        assert_eq!(parent.as_deref(), Some("a"));
        assert_eq!(ty, "display_data");
        assert_eq!(date, "2026-01-01T00:00:00Z");
        assert_eq!(content["data"]["x/unknown"][0], 1);
        let orphan: Vec<bytes::Bytes> = vec![
            br#"{"msg_type":"status"}"#.to_vec().into(),
            b"{}".to_vec().into(),
            b"{}".to_vec().into(),
            b"{}".to_vec().into(),
        ];
        assert_eq!(decode(&orphan).unwrap().0, None);
        assert!(decode(&parts[..2]).is_none());
    }

    #[test]
    fn reads_listening_ports_from_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 10 0\n\
   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 10 0\n\
   0: 0000000000000000FFFF00000100007F:A001 00000000000000000000000000000000:0000 0A 0 0 0 0 0 0 0\n";
        assert_eq!(parse_listening(table), [0x1F90, 0xA001]);
        // This process's own listener shows up.
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening_ports().contains(&port));
    }

    #[test]
    fn leased_ports_differ_and_return_on_drop() {
        let a = PortLease::take().unwrap();
        let b = PortLease::take().unwrap();
        let all: BTreeSet<u16> = a.ports.iter().chain(&b.ports).copied().collect();
        assert_eq!(all.len(), 10, "{:?} {:?}", a.ports, b.ports);
        let first = a.ports[0];
        assert!(LEASED.lock().unwrap().contains(&first));
        drop(a);
        assert!(!LEASED.lock().unwrap().contains(&first));
        // Nothing holds the ports: a kernel can bind them.
        std::net::TcpListener::bind(("127.0.0.1", b.ports[0])).unwrap();
    }

    #[test]
    fn describes_how_a_kernel_ended() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit(std::process::ExitStatus::from_raw(3 << 8)),
            "exit code 3"
        );
        assert!(
            describe_exit(std::process::ExitStatus::from_raw(9)).starts_with("killed by SIGKILL")
        );
    }
}
