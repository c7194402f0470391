//! `process.Process`: starting, attaching to, feeding and signalling processes.

mod events;
mod handle;
mod spawn;
mod stream;
mod table;

use std::sync::Arc;
use std::time::Duration;

use connectrpc::{
    ConnectError, RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream,
};
use nix::sys::signal::Signal as UnixSignal;
use sandbar_proto::process::{
    process_input::Input, stream_input_request, CloseStdinRequest, CloseStdinResponse,
    ConnectRequest, ConnectResponse, ListRequest, ListResponse, Process as ProcessRpc,
    ProcessConfig, ProcessInfo, ProcessInput, SendInputRequest, SendInputResponse,
    SendSignalRequest, SendSignalResponse, Signal, StartRequest, StartResponse, StreamInputRequest,
    StreamInputResponse, UpdateRequest, UpdateResponse,
};

use self::events::{Event, Output};
use self::handle::{InputError, Process};
use self::spawn::{SpawnError, SpawnSpec};
use self::table::{ProcessTable, LINGER_AFTER_END};
use crate::reaper::Reaper;
use crate::state::{EnvdState, StartCommand};
use crate::users;

/// The tag `commands.list()` shows for the sandbox's start command.
const START_COMMAND_TAG: &str = "start-command";

/// Terminal size used when a PTY request carries none.
const DEFAULT_PTY_SIZE: (u16, u16) = (24, 80);

/// Implements the generated `Process` service.
pub struct ProcessService {
    state: Arc<EnvdState>,
    reaper: Reaper,
    table: Arc<ProcessTable>,
}

impl ProcessService {
    pub fn new(state: Arc<EnvdState>, reaper: Reaper) -> Self {
        Self {
            state,
            reaper,
            table: Arc::default(),
        }
    }

    /// Kills what envd started (envd is shutting down): every process group
    /// it created, and its direct children, which include the orphans it
    /// adopted as subreaper (e.g. daemons that left their group).
    pub fn kill_all(&self) {
        self.table.kill_all_groups();
        for pid in crate::reaper::children_of_self() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), UnixSignal::SIGKILL);
        }
    }

    /// The user a request acts as: Basic auth, else the sandbox default.
    fn user(&self, ctx: &RequestContext) -> Result<users::UserInfo, ConnectError> {
        let name =
            users::from_basic_auth(ctx.headers()).unwrap_or_else(|| self.state.default_user());
        users::lookup(&name).map_err(|e| ConnectError::unauthenticated(e.to_string()))
    }

    fn spawn(
        &self,
        ctx: &RequestContext,
        request: StartRequest,
    ) -> Result<(Arc<Process>, stream::Events), ConnectError> {
        let config = request
            .process
            .as_option()
            .cloned()
            .ok_or_else(|| ConnectError::invalid_argument("process config is required"))?;
        let user = self.user(ctx)?;
        let pty = request.pty.as_option().map(|pty| {
            pty.size
                .as_option()
                .filter(|s| s.rows > 0 && s.cols > 0)
                .map(|s| (clamp_u16(s.rows), clamp_u16(s.cols)))
                .unwrap_or(DEFAULT_PTY_SIZE)
        });
        // Like E2B's envd: an absent flag keeps stdin open (older SDKs
        // never send it); the SDKs send `false` unless asked.
        let stdin = pty.is_none() && request.stdin.unwrap_or(true);
        // E2B semantics: Connect-Timeout-Ms is the process's lifetime, not the
        // stream's. connectrpc only uses the deadline to bound the time until
        // the handler returns the stream (its default DeadlinePolicy does not
        // cut streams), so the kill at the deadline is ours.
        let deadline = ctx.deadline().map(tokio::time::Instant::from_std);
        let (process, events) = self
            .launch(user, config, pty, stdin, request.tag.clone(), deadline)
            .map_err(spawn_error)?;
        Ok((process, stream::Events::Live(events)))
    }

    /// Starts `config` as `user` and registers it, so that it can be listed,
    /// attached to and signalled like any other process.
    fn launch(
        &self,
        user: users::UserInfo,
        config: ProcessConfig,
        pty: Option<(u16, u16)>,
        stdin: bool,
        tag: Option<String>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(Arc<Process>, tokio::sync::mpsc::Receiver<Event>), SpawnError> {
        let cwd = spawn::resolve_cwd(
            config.cwd.as_deref(),
            &user,
            self.state.default_workdir().as_deref(),
        )?;
        let env = spawn::environment(&user, &self.state.env_vars(), &config.envs);
        let spec = SpawnSpec {
            program: config.cmd.clone(),
            args: config.args.clone(),
            env,
            cwd,
            user,
            pty,
            stdin,
        };
        let spawned = spawn::spawn(spec, &self.reaper)?;
        let table = self.table.clone();
        let (process, events) = Process::launch(spawned, config, tag, deadline, move |process| {
            tokio::spawn(async move {
                tokio::time::sleep(LINGER_AFTER_END).await;
                table.remove(&process);
            });
        });
        self.table.insert(process.clone());
        tracing::info!(pid = process.pid, cmd = %process.config.cmd, "process started");
        Ok((process, events))
    }

    /// Starts the sandbox's start command (a template's service, such as the
    /// code interpreter): no client waits on it, so its output is logged.
    pub fn start_command(&self, cmd: &StartCommand) -> Result<u32, String> {
        let user =
            users::lookup(cmd.user.as_deref().unwrap_or("root")).map_err(|e| e.to_string())?;
        let config = ProcessConfig {
            cmd: cmd.cmd.clone(),
            args: cmd.args.clone(),
            cwd: cmd.cwd.clone(),
            ..Default::default()
        };
        let (process, mut events) = self
            .launch(
                user,
                config,
                None,
                false,
                Some(START_COMMAND_TAG.to_string()),
                None,
            )
            .map_err(|e| e.to_string())?;
        let pid = process.pid;
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    Event::Data(
                        Output::Stdout(data) | Output::Stderr(data) | Output::Pty(data),
                    ) => {
                        let text = String::from_utf8_lossy(&data);
                        for line in text.lines().filter(|l| !l.trim().is_empty()) {
                            tracing::info!(pid, "start command: {line}");
                        }
                    }
                    Event::End(end) => {
                        tracing::warn!(pid, status = %end.status, "start command ended");
                    }
                }
            }
        });
        Ok(pid)
    }

    async fn deliver_input(
        &self,
        process: &Process,
        input: Option<&ProcessInput>,
    ) -> Result<(), ConnectError> {
        match input.and_then(|i| i.input.as_ref()) {
            Some(Input::Stdin(data)) => process.write_stdin(data).await.map_err(input_error),
            Some(Input::Pty(data)) => process.write_pty(data).await.map_err(input_error),
            None => Ok(()),
        }
    }
}

fn clamp_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

fn spawn_error(e: SpawnError) -> ConnectError {
    match e {
        SpawnError::MissingCwd(_) | SpawnError::Start { .. } => {
            ConnectError::invalid_argument(e.to_string())
        }
        SpawnError::NotPrivileged { .. } => ConnectError::permission_denied(e.to_string()),
        SpawnError::Pty(_) => ConnectError::internal(e.to_string()),
    }
}

fn input_error(e: InputError) -> ConnectError {
    match e {
        InputError::Write { .. } => ConnectError::internal(e.to_string()),
        _ => ConnectError::failed_precondition(e.to_string()),
    }
}

/// `Keepalive-Ping-Interval` (seconds): how long a stream may stay silent
/// before a keepalive event goes out. connectrpc knows nothing of it.
fn keepalive_interval(ctx: &RequestContext) -> Duration {
    ctx.header("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(stream::DEFAULT_KEEPALIVE)
}

fn start_response(event: sandbar_proto::process::ProcessEvent) -> StartResponse {
    StartResponse {
        event: event.into(),
        ..Default::default()
    }
}

fn connect_response(event: sandbar_proto::process::ProcessEvent) -> ConnectResponse {
    ConnectResponse {
        event: event.into(),
        ..Default::default()
    }
}

// The generated trait allows borrowing responses; ours are owned messages.
#[allow(refining_impl_trait)]
impl ProcessRpc for ProcessService {
    async fn list(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, ListRequest>,
    ) -> ServiceResult<ListResponse> {
        let processes = self
            .table
            .running()
            .into_iter()
            .map(|p| ProcessInfo {
                config: p.config.clone().into(),
                pid: p.pid,
                tag: p.tag.clone(),
                ..Default::default()
            })
            .collect();
        Response::ok(ListResponse {
            processes,
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, ConnectRequest>,
    ) -> ServiceResult<ServiceStream<ConnectResponse>> {
        let request = request.to_owned_message();
        let process = self.table.find(request.process.as_option())?;
        let events = match process.subscribe() {
            handle::Subscription::Live(rx) => stream::Events::Live(rx),
            handle::Subscription::Ended(end) => stream::Events::Ended(end),
        };
        Response::stream_ok(stream::event_stream(
            process.pid,
            events,
            keepalive_interval(&ctx),
            connect_response,
        ))
    }

    async fn start(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, StartRequest>,
    ) -> ServiceResult<ServiceStream<StartResponse>> {
        let (process, events) = self.spawn(&ctx, request.to_owned_message())?;
        Response::stream_ok(stream::event_stream(
            process.pid,
            events,
            keepalive_interval(&ctx),
            start_response,
        ))
    }

    async fn update(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, UpdateRequest>,
    ) -> ServiceResult<UpdateResponse> {
        let request = request.to_owned_message();
        let process = self.table.find_running(request.process.as_option())?;
        if let Some(size) = request.pty.as_option().and_then(|p| p.size.as_option()) {
            process
                .resize(clamp_u16(size.rows), clamp_u16(size.cols))
                .await
                .map_err(input_error)?;
        }
        Response::ok(UpdateResponse::default())
    }

    async fn stream_input(
        &self,
        _ctx: RequestContext,
        mut requests: connectrpc::InboundStream<StreamInputRequest>,
    ) -> ServiceResult<StreamInputResponse> {
        use futures::StreamExt;
        let mut target: Option<Arc<Process>> = None;
        while let Some(message) = requests.next().await {
            match message?.to_owned_message().event {
                Some(stream_input_request::Event::Start(start)) => {
                    target = Some(self.table.find_running(start.process.as_option())?);
                }
                Some(stream_input_request::Event::Data(data)) => {
                    let process = target.as_ref().ok_or_else(|| {
                        ConnectError::failed_precondition("the start event must come before data")
                    })?;
                    self.deliver_input(process, data.input.as_option()).await?;
                }
                Some(stream_input_request::Event::Keepalive(_)) | None => {}
            }
        }
        Response::ok(StreamInputResponse::default())
    }

    async fn send_input(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, SendInputRequest>,
    ) -> ServiceResult<SendInputResponse> {
        let request = request.to_owned_message();
        let process = self.table.find_running(request.process.as_option())?;
        self.deliver_input(&process, request.input.as_option())
            .await?;
        Response::ok(SendInputResponse::default())
    }

    async fn send_signal(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, SendSignalRequest>,
    ) -> ServiceResult<SendSignalResponse> {
        let request = request.to_owned_message();
        let signal = match request.signal.as_known() {
            Some(Signal::SIGNAL_SIGTERM) => UnixSignal::SIGTERM,
            Some(Signal::SIGNAL_SIGKILL) => UnixSignal::SIGKILL,
            _ => {
                return Err(ConnectError::invalid_argument(format!(
                    "unsupported signal {}",
                    request.signal.to_i32()
                )))
            }
        };
        let process = self.table.find_running(request.process.as_option())?;
        match process.signal(signal) {
            Ok(()) => Response::ok(SendSignalResponse::default()),
            Err(nix::errno::Errno::ESRCH) => Err(ConnectError::not_found(format!(
                "process with pid {} not found",
                process.pid
            ))),
            Err(e) => Err(ConnectError::internal(format!(
                "error sending signal to process {}: {e}",
                process.pid
            ))),
        }
    }

    async fn close_stdin(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, CloseStdinRequest>,
    ) -> ServiceResult<CloseStdinResponse> {
        let request = request.to_owned_message();
        let process = self.table.find_running(request.process.as_option())?;
        process.close_stdin().await.map_err(input_error)?;
        Response::ok(CloseStdinResponse::default())
    }
}
