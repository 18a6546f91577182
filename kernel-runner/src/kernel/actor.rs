//! The task that owns one kernel's driver. It takes shell requests one at a time, answers
//! control requests at once (even mid-cell), turns driver events into Jupyter messages, and
//! notices when the driver dies.

use std::sync::Arc;
use std::time::Duration;

use cellgate_protocol::content::{
    ClearOutput, CommInfoReply, CompleteReply, Content, DisplayData, ErrorInfo, ExecuteInput,
    ExecuteReply, ExecuteRequest, ExecuteResult, ExecutionState, HistoryReply, InputRequest,
    InspectReply, IsCompleteReply, KernelInfoReply, ReplyStatus, ShutdownReply, SimpleReply,
    Status, Stream, StreamName,
};
use cellgate_protocol::driver::{Command, Event, Ready};
use cellgate_protocol::message::PROTOCOL_VERSION;
use cellgate_protocol::{Channel, Header, Message};
use serde_json::Map;
use tokio::sync::mpsc;

use super::connections::ConnectionId;
use super::history::History;
use super::launch::{launch, CommandWriter, DriverFailure, Incoming, Launched};
use super::stream_text::{Budgeted, OutputBudget, StreamText};
use super::{ClientRequest, ControlOp, Kernel};
use crate::backend::{Backend, Driver, LaunchSpec};
use crate::error::RunnerError;

/// How long a driver gets to exit after `shutdown` before it is killed.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Output of one stream that arrives within this long is sent as one `stream` message, as
/// ipykernel batches it: `print(1)` is one message, not `1` and then a newline. Output still
/// streams while a cell runs; a cell's end, or any other output, sends what waits at once.
const STREAM_COALESCE: Duration = Duration::from_millis(50);
/// Stream text sent at once, without waiting for more, when this much has gathered.
const STREAM_BATCH_MAX: usize = 64 * 1024;
/// A driver that dies by itself is started again, as Jupyter servers restart a kernel that
/// died, at most this many times within `CRASH_WINDOW`; after that the kernel stays dead.
const CRASH_RESTARTS: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);

pub(crate) struct Actor {
    pub kernel: Arc<Kernel>,
    pub backend: Arc<dyn Backend>,
    pub spec: LaunchSpec,
    pub ready_timeout: Duration,
    pub output_cap: usize,
    pub driver: Arc<dyn Driver>,
    pub commands: CommandWriter,
    pub events: mpsc::Receiver<Incoming>,
    pub ready: Ready,
    pub shell: mpsc::Receiver<ClientRequest>,
    pub stdin: mpsc::Receiver<ClientRequest>,
    pub control: mpsc::Receiver<ControlOp>,
    pub execution_count: u64,
    pub history: History,
    /// When the driver was last started again after dying by itself, most recent last.
    pub crash_restarts: std::collections::VecDeque<tokio::time::Instant>,
    /// The driver died by itself and is to be started again once the request at hand is
    /// answered; the reason says how it died.
    pub crashed: Option<String>,
    pub dead: bool,
    pub events_closed: bool,
    /// A command is with the driver and not answered yet: only then is there anything to
    /// interrupt.
    pub in_request: bool,
    /// The request whose output stray events (from background threads) are attributed to.
    pub last_parent: Option<Header>,
}

enum Step {
    Continue,
    Stop(Option<tokio::sync::oneshot::Sender<()>>),
}

/// How a request to the driver ended.
enum Exchange {
    /// The driver answered with this event (`done` or a reply).
    Answered(Event),
    /// The driver died or broke the protocol.
    Died(DriverFailure),
    /// A restart or shutdown took over; it is carried out after the request is answered.
    Preempted(ControlOp),
}

/// What one cell is allowed to do and what it has produced so far.
struct Cell {
    from: ConnectionId,
    parent: Header,
    silent: bool,
    allow_stdin: bool,
    execution_count: u64,
    error: Option<ErrorInfo>,
    stdout: StreamText,
    stderr: StreamText,
    /// Decoded stream text not sent yet, and when it is sent at the latest.
    waiting: Option<WaitingText>,
    budget: OutputBudget,
}

struct WaitingText {
    name: StreamName,
    text: String,
    until: tokio::time::Instant,
}

impl Actor {
    pub async fn run(mut self) {
        self.kernel.set_execution_state(ExecutionState::Idle);
        let stop = loop {
            let step = tokio::select! {
                biased;
                op = self.control.recv() => match op {
                    Some(op) => self.control_when_idle(op).await,
                    None => Step::Stop(None),
                },
                exit = wait_for(&self.driver), if !self.dead => {
                    self.died(DriverFailure::Exited {
                        language: self.kernel.language.display_name,
                        exit,
                    });
                    Step::Continue
                }
                incoming = self.events.recv(), if !self.events_closed => {
                    self.stray(incoming);
                    Step::Continue
                }
                request = self.shell.recv() => match request {
                    Some(request) => self.shell_request(request).await,
                    None => Step::Stop(None),
                },
                request = self.stdin.recv() => {
                    if let Some(request) = request {
                        self.kernel.refuse(&request, "NoInputRequested", "the kernel is not waiting for input");
                    }
                    Step::Continue
                }
            };
            if let Step::Stop(done) = step {
                break done;
            }
            if let Some(reason) = self.crashed.take() {
                self.restart_after_crash(reason).await;
            }
        };
        self.stop_driver().await;
        self.kernel.set_execution_state(ExecutionState::Dead);
        self.kernel.connections.close_all(1001, "kernel shut down");
        if let Some(done) = stop {
            let _ = done.send(());
        }
    }

    fn publish(&self, parent: Option<&Header>, content: Content) {
        let message = Message {
            header: Header::new(content.msg_type(), &self.kernel.session),
            parent_header: parent.cloned(),
            metadata: Map::new(),
            content,
            channel: Channel::Iopub,
        };
        self.kernel.connections.broadcast(Arc::new(message));
    }

    fn reply(&self, to: ConnectionId, parent: &Header, channel: Channel, content: Content) {
        let message = Message::reply_to(parent, &self.kernel.session, channel, content);
        self.kernel.connections.send_to(to, Arc::new(message));
    }

    fn status(&self, parent: Option<&Header>, state: ExecutionState) {
        if !matches!(state, ExecutionState::Starting | ExecutionState::Restarting) {
            self.kernel.set_execution_state(state);
        }
        self.publish(
            parent,
            Content::Status(Status {
                execution_state: state,
            }),
        );
    }

    fn kernel_info(&self) -> Content {
        Content::KernelInfoReply(Box::new(KernelInfoReply {
            status: ReplyStatus::Ok,
            protocol_version: PROTOCOL_VERSION.to_owned(),
            implementation: self.ready.implementation.clone(),
            implementation_version: self.ready.implementation_version.clone(),
            language_info: self.ready.language_info.clone(),
            banner: self.ready.banner.clone(),
            help_links: Vec::new(),
        }))
    }

    /// The driver died by itself, or broke the protocol. It is started again once the request
    /// at hand is answered, unless it has died too often lately; then the kernel stays dead.
    fn died(&mut self, failure: DriverFailure) {
        let reason = failure.to_string();
        tracing::warn!(kernel = %self.kernel.id, %reason, "kernel died");
        self.dead = true;
        let now = tokio::time::Instant::now();
        while self
            .crash_restarts
            .front()
            .is_some_and(|at| now.duration_since(*at) > CRASH_WINDOW)
        {
            self.crash_restarts.pop_front();
        }
        if self.crash_restarts.len() < CRASH_RESTARTS {
            self.kernel.set_execution_state(ExecutionState::Restarting);
            self.crashed = Some(reason);
        } else {
            self.stay_dead(format!(
                "{reason}; it died {CRASH_RESTARTS} times within {} s, so it is not restarted again",
                CRASH_WINDOW.as_secs()
            ));
        }
    }

    /// The kernel stays without a driver until a restart is asked for.
    fn stay_dead(&mut self, reason: String) {
        self.dead = true;
        self.crashed = None;
        self.kernel.mark_dead(reason);
        self.publish(
            self.last_parent.as_ref(),
            Content::Status(Status {
                execution_state: ExecutionState::Dead,
            }),
        );
    }

    /// Starts a driver that died by itself again, announced as Jupyter servers announce it:
    /// iopub `restarting` (which JupyterLab shows as "the kernel appears to have died. It will
    /// restart automatically"), then `starting` and `idle`.
    async fn restart_after_crash(&mut self, reason: String) {
        tracing::warn!(kernel = %self.kernel.id, %reason, "restarting a kernel that died");
        self.crash_restarts.push_back(tokio::time::Instant::now());
        self.publish(
            None,
            Content::Status(Status {
                execution_state: ExecutionState::Restarting,
            }),
        );
        if let Err(error) = self.restart(None).await {
            tracing::warn!(kernel = %self.kernel.id, %error, "the kernel could not be restarted");
        }
    }

    /// Output that arrives between cells, from threads or processes a cell left running.
    fn stray(&mut self, incoming: Option<Incoming>) {
        match incoming {
            None => self.events_closed = true,
            Some(Incoming::Broken(failure)) => {
                self.events_closed = true;
                tracing::warn!(kernel = %self.kernel.id, %failure, "driver stream broke");
            }
            Some(Incoming::Event(Event::Stdout(bytes))) => {
                self.stray_stream(StreamName::Stdout, &bytes)
            }
            Some(Incoming::Event(Event::Stderr(bytes))) => {
                self.stray_stream(StreamName::Stderr, &bytes)
            }
            Some(Incoming::Event(Event::Log(line))) => {
                tracing::info!(kernel = %self.kernel.id, "driver: {line}");
            }
            Some(Incoming::Event(other)) => {
                tracing::debug!(kernel = %self.kernel.id, ?other, "event outside a request");
            }
        }
    }

    fn stray_stream(&self, name: StreamName, bytes: &[u8]) {
        self.publish(
            self.last_parent.as_ref(),
            Content::Stream(Stream {
                name,
                text: String::from_utf8_lossy(bytes).into_owned(),
            }),
        );
    }

    async fn control_when_idle(&mut self, op: ControlOp) -> Step {
        match op {
            ControlOp::Message(request) => self.control_message(*request).await,
            ControlOp::Interrupt(done) => {
                let _ = done.send(self.interrupt().await);
                Step::Continue
            }
            ControlOp::Restart(done) => {
                let _ = done.send(self.restart(None).await);
                Step::Continue
            }
            ControlOp::Shutdown(done) => Step::Stop(Some(done)),
            ControlOp::StopDriver => {
                self.stop_at_clients_request().await;
                Step::Continue
            }
        }
    }

    /// A client's `shutdown_request` without restart: the driver exits, and the kernel stays,
    /// dead, until it is restarted or deleted (or culled), so its REST routes and websockets
    /// keep answering as for any dead kernel.
    async fn stop_at_clients_request(&mut self) {
        self.stop_driver().await;
        self.stay_dead("shut down by a client's shutdown_request".to_owned());
    }

    /// Interrupts the request the driver is working on. With none, there is nothing to stop
    /// and no signal is sent: one that arrived late could otherwise end the next cell.
    async fn interrupt(&mut self) -> Result<(), RunnerError> {
        if self.dead || !self.in_request {
            return Ok(());
        }
        let driver = self.driver.clone();
        driver.interrupt().await.map_err(|source| {
            RunnerError::Signal(nix::Error::from_raw(source.raw_os_error().unwrap_or(0)))
        })
    }

    /// A control-channel message: answered at once, whatever the kernel is doing.
    async fn control_message(&mut self, request: ClientRequest) -> Step {
        let header = request.message.header.clone();
        match &request.message.content {
            Content::KernelInfoRequest => {
                self.reply(request.from, &header, Channel::Control, self.kernel_info());
            }
            Content::InterruptRequest => {
                let status = match self.interrupt().await {
                    Ok(()) => ReplyStatus::Ok,
                    Err(_) => ReplyStatus::Error,
                };
                self.reply(
                    request.from,
                    &header,
                    Channel::Control,
                    Content::InterruptReply(SimpleReply { status }),
                );
            }
            Content::ShutdownRequest(shutdown) => {
                let restart = shutdown.restart;
                self.reply(
                    request.from,
                    &header,
                    Channel::Control,
                    Content::ShutdownReply(ShutdownReply {
                        status: ReplyStatus::Ok,
                        restart,
                    }),
                );
                if !restart {
                    self.stop_at_clients_request().await;
                    return Step::Continue;
                }
                if let Err(error) = self.restart(Some(&header)).await {
                    tracing::warn!(kernel = %self.kernel.id, %error, "restart failed");
                }
            }
            _ => self.kernel.refuse(
                &request,
                "UnknownMessageType",
                &format!(
                    "{} is not a control-channel request this kernel handles",
                    header.msg_type
                ),
            ),
        }
        Step::Continue
    }

    async fn shell_request(&mut self, request: ClientRequest) -> Step {
        let header = request.message.header.clone();
        if self.dead {
            let reason = self.kernel.model().reason.unwrap_or_default();
            self.kernel.refuse_counted(
                &request,
                "KernelDead",
                &format!("the kernel is dead ({reason}); restart it to go on"),
                self.execution_count,
            );
            return Step::Continue;
        }
        self.last_parent = Some(header.clone());
        self.status(Some(&header), ExecutionState::Busy);
        let mut step = Step::Continue;
        let content = request.message.content.clone();
        let outcome = match content {
            Content::ExecuteRequest(execute) => self.execute(&request, execute).await,
            Content::KernelInfoRequest => {
                self.reply(request.from, &header, Channel::Shell, self.kernel_info());
                None
            }
            Content::CompleteRequest(complete) => {
                let command = Command::Complete {
                    code: complete.code,
                    cursor_pos: complete.cursor_pos,
                };
                self.ask_driver(&request, command).await
            }
            Content::IsCompleteRequest(is_complete) => {
                let command = Command::IsComplete {
                    code: is_complete.code,
                };
                self.ask_driver(&request, command).await
            }
            Content::InspectRequest(inspect) => {
                let command = Command::Inspect {
                    code: inspect.code,
                    cursor_pos: inspect.cursor_pos,
                    detail_level: inspect.detail_level,
                };
                self.ask_driver(&request, command).await
            }
            Content::HistoryRequest(history) => {
                let reply = Content::HistoryReply(HistoryReply {
                    status: ReplyStatus::Ok,
                    history: self.history.answer(&history),
                });
                self.reply(request.from, &header, Channel::Shell, reply);
                None
            }
            Content::CommInfoRequest(_) => {
                let reply = Content::CommInfoReply(CommInfoReply {
                    status: ReplyStatus::Ok,
                    comms: Map::new(),
                });
                self.reply(request.from, &header, Channel::Shell, reply);
                None
            }
            Content::ShutdownRequest(_) | Content::InterruptRequest => {
                // Accepted on shell as older clients send them there.
                step = self.control_message(request).await;
                None
            }
            _ => {
                self.kernel.refuse(
                    &request,
                    "UnknownMessageType",
                    &format!(
                        "{} is not a shell request this kernel handles",
                        header.msg_type
                    ),
                );
                None
            }
        };
        if let Some(op) = outcome {
            return self.control_when_idle(op).await;
        }
        // A request during which the driver died is over all the same; its client hears so
        // before the kernel announces its restart.
        let restarting = self.crashed.is_some();
        if (!self.dead || restarting) && matches!(step, Step::Continue) {
            self.status(Some(&header), ExecutionState::Idle);
        }
        step
    }

    /// Runs one cell. Returns a restart or shutdown that interrupted it, to be carried out now.
    async fn execute(
        &mut self,
        request: &ClientRequest,
        execute: ExecuteRequest,
    ) -> Option<ControlOp> {
        let header = request.message.header.clone();
        let stored = execute.store_history && !execute.silent;
        if stored {
            self.execution_count += 1;
            self.history.record(self.execution_count, &execute.code);
        }
        let mut cell = Cell {
            from: request.from,
            parent: header.clone(),
            silent: execute.silent,
            allow_stdin: execute.allow_stdin,
            execution_count: self.execution_count,
            error: None,
            stdout: StreamText::default(),
            stderr: StreamText::default(),
            waiting: None,
            budget: OutputBudget::new(self.output_cap),
        };
        if !execute.silent {
            self.publish(
                Some(&header),
                Content::ExecuteInput(ExecuteInput {
                    code: execute.code.clone(),
                    execution_count: cell.execution_count,
                }),
            );
        }
        let exchange = self
            .exchange(Command::Execute { code: execute.code }, Some(&mut cell))
            .await;
        self.flush_streams(&mut cell);
        let mut payload = Vec::new();
        let (status, preempted) = match exchange {
            Exchange::Answered(Event::Done(done)) => {
                payload = done.payload;
                (done.status, None)
            }
            Exchange::Answered(other) => {
                self.died(DriverFailure::WrongAnswer {
                    request: "a cell",
                    event: Box::new(other),
                });
                (ReplyStatus::Error, None)
            }
            Exchange::Died(failure) => {
                let reason = failure.to_string();
                cell.error = Some(ErrorInfo {
                    ename: "KernelDied".to_owned(),
                    evalue: reason.clone(),
                    traceback: vec![format!("The kernel died while running this cell: {reason}")],
                });
                self.publish(Some(&header), Content::Error(cell.error.clone().unwrap()));
                self.died(failure);
                (ReplyStatus::Error, None)
            }
            Exchange::Preempted(op) => {
                cell.error = Some(ErrorInfo {
                    ename: "KernelRestarted".to_owned(),
                    evalue: "the kernel was restarted or shut down while this cell ran".to_owned(),
                    traceback: Vec::new(),
                });
                (ReplyStatus::Error, Some(op))
            }
        };
        let error = match status {
            ReplyStatus::Error => Some(cell.error.clone().unwrap_or_else(|| ErrorInfo {
                ename: "Error".to_owned(),
                evalue: "the cell failed".to_owned(),
                traceback: Vec::new(),
            })),
            _ => None,
        };
        let reply = Content::ExecuteReply(ExecuteReply {
            status,
            execution_count: cell.execution_count,
            error,
            user_expressions: Map::new(),
            payload,
        });
        self.reply(request.from, &header, Channel::Shell, reply);
        if status == ReplyStatus::Error && execute.stop_on_error {
            self.abort_queued_cells();
        }
        preempted
    }

    /// Answers every execute request already queued with `aborted`, as ipykernel does after
    /// an error, so a notebook's "run all" stops at the first failing cell.
    fn abort_queued_cells(&mut self) {
        let mut keep = Vec::new();
        while let Ok(request) = self.shell.try_recv() {
            match &request.message.content {
                Content::ExecuteRequest(_) => {
                    let reply = Content::ExecuteReply(ExecuteReply {
                        status: ReplyStatus::Aborted,
                        execution_count: self.execution_count,
                        error: None,
                        user_expressions: Map::new(),
                        payload: Vec::new(),
                    });
                    self.reply(request.from, &request.message.header, Channel::Shell, reply);
                }
                _ => keep.push(request),
            }
        }
        // Other requests (completions, kernel info) were never meant to be aborted: handle
        // them in order ahead of anything queued later.
        for request in keep.into_iter().rev() {
            self.requeue_front(request);
        }
    }

    fn requeue_front(&mut self, request: ClientRequest) {
        // The receiver cannot push back; answer such requests immediately instead.
        match request.message.content {
            Content::KernelInfoRequest => {
                self.reply(
                    request.from,
                    &request.message.header,
                    Channel::Shell,
                    self.kernel_info(),
                );
            }
            _ => self.kernel.refuse(
                &request,
                "Aborted",
                "an earlier cell failed, so requests queued behind it were dropped",
            ),
        }
    }

    /// A completion, completeness or inspection request, answered by the driver.
    async fn ask_driver(&mut self, request: &ClientRequest, command: Command) -> Option<ControlOp> {
        let header = &request.message.header;
        let (content, preempted) = match self.exchange(command, None).await {
            Exchange::Answered(Event::CompleteReply(reply)) => (
                Content::CompleteReply(CompleteReply {
                    status: ReplyStatus::Ok,
                    matches: reply.matches,
                    cursor_start: reply.cursor_start,
                    cursor_end: reply.cursor_end,
                    metadata: reply.metadata,
                }),
                None,
            ),
            Exchange::Answered(Event::IsCompleteReply(reply)) => (
                Content::IsCompleteReply(IsCompleteReply {
                    status: reply.status,
                    indent: reply.indent,
                }),
                None,
            ),
            Exchange::Answered(Event::InspectReply(reply)) => (
                Content::InspectReply(InspectReply {
                    status: ReplyStatus::Ok,
                    found: reply.found,
                    data: reply.data,
                    metadata: reply.metadata,
                }),
                None,
            ),
            Exchange::Answered(other) => {
                self.died(DriverFailure::WrongAnswer {
                    request: "a request",
                    event: Box::new(other),
                });
                self.kernel
                    .refuse(request, "KernelDied", "the driver broke the protocol");
                return None;
            }
            Exchange::Died(failure) => {
                self.kernel
                    .refuse(request, "KernelDied", &failure.to_string());
                self.died(failure);
                return None;
            }
            Exchange::Preempted(op) => {
                self.kernel
                    .refuse(request, "KernelRestarted", "the kernel was restarted");
                return Some(op);
            }
        };
        self.reply(request.from, header, Channel::Shell, content);
        preempted
    }

    /// Sends `command` and processes everything until the driver answers it, while staying
    /// responsive to control requests and input replies.
    async fn exchange(&mut self, command: Command, cell: Option<&mut Cell>) -> Exchange {
        self.in_request = true;
        let exchange = self.exchange_until_answered(command, cell).await;
        self.in_request = false;
        exchange
    }

    async fn exchange_until_answered(
        &mut self,
        command: Command,
        mut cell: Option<&mut Cell>,
    ) -> Exchange {
        if let Err(error) = self.commands.send(&command).await {
            let exit = wait_briefly(&self.driver).await;
            return Exchange::Died(match exit {
                Some(exit) => DriverFailure::Exited {
                    language: self.kernel.language.display_name,
                    exit,
                },
                None => DriverFailure::CommandsClosed(error),
            });
        }
        loop {
            let send_waiting_at = cell
                .as_ref()
                .and_then(|cell| cell.waiting.as_ref())
                .map(|waiting| waiting.until);
            tokio::select! {
                biased;
                op = self.control.recv() => {
                    let Some(op) = op else {
                        return Exchange::Died(DriverFailure::ShuttingDown);
                    };
                    match op {
                        ControlOp::Message(request) => {
                            if let Some(op) = self.control_mid_request(*request).await {
                                self.stop_driver().await;
                                return Exchange::Preempted(op);
                            }
                        }
                        ControlOp::Interrupt(done) => {
                            let _ = done.send(self.interrupt().await);
                        }
                        op @ (ControlOp::Restart(_) | ControlOp::Shutdown(_) | ControlOp::StopDriver) => {
                            self.stop_driver().await;
                            return Exchange::Preempted(op);
                        }
                    }
                }
                incoming = self.events.recv(), if !self.events_closed => match incoming {
                    Some(Incoming::Event(event)) => {
                        if is_answer(&event) {
                            return Exchange::Answered(event);
                        }
                        self.output(event, cell.as_deref_mut()).await;
                    }
                    Some(Incoming::Broken(failure)) => {
                        self.events_closed = true;
                        let _ = self.driver.kill().await;
                        return Exchange::Died(failure);
                    }
                    None => self.events_closed = true,
                },
                exit = wait_for(&self.driver), if self.events_closed => {
                    return Exchange::Died(DriverFailure::Exited {
                        language: self.kernel.language.display_name,
                        exit,
                    });
                }
                request = self.stdin.recv() => {
                    if let Some(request) = request {
                        self.input_reply(request, cell.as_deref()).await;
                    }
                }
                _ = sleep_until(send_waiting_at), if send_waiting_at.is_some() => {
                    if let Some(cell) = cell.as_deref_mut() {
                        self.send_waiting(cell);
                    }
                }
            }
        }
    }

    /// A control message that arrived while a request runs. A shutdown or restart request
    /// is answered and then handed back to preempt the running request.
    async fn control_mid_request(&mut self, request: ClientRequest) -> Option<ControlOp> {
        if let Content::ShutdownRequest(shutdown) = &request.message.content {
            let restart = shutdown.restart;
            self.reply(
                request.from,
                &request.message.header,
                Channel::Control,
                Content::ShutdownReply(ShutdownReply {
                    status: ReplyStatus::Ok,
                    restart,
                }),
            );
            // Nobody waits for the outcome: the reply above already answered the client.
            return Some(if restart {
                ControlOp::Restart(tokio::sync::oneshot::channel().0)
            } else {
                ControlOp::StopDriver
            });
        }
        self.control_message(request).await;
        None
    }

    async fn input_reply(&mut self, request: ClientRequest, cell: Option<&Cell>) {
        let waiting = cell.map(|cell| cell.from == request.from).unwrap_or(false);
        match (&request.message.content, waiting) {
            (Content::InputReply(reply), true) => {
                let command = Command::InputReply {
                    value: reply.value.clone(),
                };
                if let Err(error) = self.commands.send(&command).await {
                    tracing::warn!(kernel = %self.kernel.id, %error, "could not pass input on");
                }
            }
            (Content::InputReply(_), false) => self.kernel.refuse(
                &request,
                "NoInputRequested",
                "the kernel is not waiting for input from this client",
            ),
            _ => self.kernel.refuse(
                &request,
                "UnknownMessageType",
                "only input_reply is accepted on the stdin channel",
            ),
        }
    }

    /// One output event of a running request.
    async fn output(&mut self, event: Event, cell: Option<&mut Cell>) {
        let Some(cell) = cell else {
            if let Event::Log(line) = event {
                tracing::info!(kernel = %self.kernel.id, "driver: {line}");
            }
            return;
        };
        let parent = cell.parent.clone();
        match event {
            Event::Stdout(bytes) => self.stream(cell, StreamName::Stdout, &bytes),
            Event::Stderr(bytes) => self.stream(cell, StreamName::Stderr, &bytes),
            Event::Display(output) if !cell.silent => {
                self.flush_streams(cell);
                self.publish(
                    Some(&parent),
                    Content::DisplayData(DisplayData {
                        data: output.data,
                        metadata: output.metadata,
                        transient: output.transient,
                    }),
                );
            }
            Event::UpdateDisplay(output) if !cell.silent => {
                self.flush_streams(cell);
                self.publish(
                    Some(&parent),
                    Content::UpdateDisplayData(DisplayData {
                        data: output.data,
                        metadata: output.metadata,
                        transient: output.transient,
                    }),
                );
            }
            Event::Result(output) if !cell.silent => {
                self.flush_streams(cell);
                if let Some(text) = output.data.get("text/plain").and_then(|text| text.as_str()) {
                    self.history.record_output(cell.execution_count, text);
                }
                self.publish(
                    Some(&parent),
                    Content::ExecuteResult(ExecuteResult {
                        execution_count: cell.execution_count,
                        data: output.data,
                        metadata: output.metadata,
                    }),
                );
            }
            Event::Error(error) => {
                self.flush_streams(cell);
                cell.error = Some(error.clone());
                if !cell.silent {
                    self.publish(Some(&parent), Content::Error(error));
                }
            }
            Event::ClearOutput(clear) if !cell.silent => {
                self.publish(
                    Some(&parent),
                    Content::ClearOutput(ClearOutput { wait: clear.wait }),
                );
            }
            Event::InputRequest(prompt) => {
                self.flush_streams(cell);
                if cell.allow_stdin {
                    let content = Content::InputRequest(InputRequest {
                        prompt: prompt.prompt,
                        password: prompt.password,
                    });
                    self.reply(cell.from, &parent, Channel::Stdin, content);
                } else if let Err(error) = self.commands.send(&Command::InputAbort).await {
                    tracing::warn!(kernel = %self.kernel.id, %error, "could not refuse input");
                }
            }
            Event::Log(line) => tracing::info!(kernel = %self.kernel.id, "driver: {line}"),
            _ => {}
        }
    }

    fn stream(&mut self, cell: &mut Cell, name: StreamName, bytes: &[u8]) {
        if cell.silent {
            return;
        }
        let (piece, truncated) = match cell.budget.take(bytes.len()) {
            Budgeted::Send => (bytes, false),
            Budgeted::Truncate(keep) => (&bytes[..keep], true),
            Budgeted::Drop => return,
        };
        let decoder = match name {
            StreamName::Stdout => &mut cell.stdout,
            StreamName::Stderr => &mut cell.stderr,
        };
        let mut text = decoder.push(piece);
        if truncated {
            text.push_str(&decoder.finish());
        }
        // Text of the other stream goes first, so the two keep the order they were written in.
        if cell
            .waiting
            .as_ref()
            .is_some_and(|waiting| waiting.name != name)
        {
            self.send_waiting(cell);
        }
        match &mut cell.waiting {
            Some(waiting) => waiting.text.push_str(&text),
            None if !text.is_empty() => {
                cell.waiting = Some(WaitingText {
                    name,
                    text,
                    until: tokio::time::Instant::now() + STREAM_COALESCE,
                });
            }
            None => {}
        }
        let full = cell
            .waiting
            .as_ref()
            .is_some_and(|waiting| waiting.text.len() >= STREAM_BATCH_MAX);
        if truncated || full {
            self.send_waiting(cell);
        }
        if truncated {
            let notice = format!(
                "\n[cellgate: this cell printed more than {} bytes; the rest of its output was dropped. The kernel is still running.]\n",
                cell.budget.cap()
            );
            self.publish_stream(&cell.parent, StreamName::Stderr, notice);
        }
    }

    /// Sends the stream text gathered so far.
    fn send_waiting(&mut self, cell: &mut Cell) {
        if let Some(waiting) = cell.waiting.take() {
            self.publish_stream(&cell.parent, waiting.name, waiting.text);
        }
    }

    /// Sends every bit of stream text the cell has, before other output or its end.
    fn flush_streams(&mut self, cell: &mut Cell) {
        self.send_waiting(cell);
        let parent = cell.parent.clone();
        let stdout = cell.stdout.finish();
        self.publish_stream(&parent, StreamName::Stdout, stdout);
        let stderr = cell.stderr.finish();
        self.publish_stream(&parent, StreamName::Stderr, stderr);
    }

    fn publish_stream(&self, parent: &Header, name: StreamName, text: String) {
        if text.is_empty() {
            return;
        }
        self.publish(Some(parent), Content::Stream(Stream { name, text }));
    }

    /// Asks the driver to exit, and kills it if it does not in time.
    async fn stop_driver(&mut self) {
        if !self.dead {
            let _ = self.commands.send(&Command::Shutdown).await;
            if tokio::time::timeout(SHUTDOWN_GRACE, self.driver.wait())
                .await
                .is_err()
            {
                let _ = self.driver.kill().await;
            }
        }
        let _ = self.driver.kill().await;
        self.driver.wait().await;
        self.dead = true;
    }

    /// Replaces the driver with a fresh one: same kernel id and files, empty state.
    ///
    /// A restart someone asked for publishes no iopub `restarting`: Jupyter servers send that
    /// only when they restarted a kernel that died by itself, and JupyterLab takes it for a
    /// crash. The new driver announces itself with `starting`, as a new kernel does.
    async fn restart(&mut self, parent: Option<&Header>) -> Result<(), RunnerError> {
        self.kernel.set_execution_state(ExecutionState::Restarting);
        self.stop_driver().await;
        let Launched {
            driver,
            commands,
            events,
            ready,
        } = match launch(self.backend.as_ref(), &self.spec, self.ready_timeout).await {
            Ok(launched) => launched,
            Err(error) => {
                self.stay_dead(format!("restart failed: {error}"));
                return Err(error);
            }
        };
        self.driver = driver;
        self.commands = commands;
        self.events = events;
        self.ready = ready;
        self.execution_count = 0;
        self.history.new_session();
        self.dead = false;
        self.events_closed = false;
        self.status(parent, ExecutionState::Starting);
        self.status(parent, ExecutionState::Idle);
        Ok(())
    }
}

fn is_answer(event: &Event) -> bool {
    matches!(
        event,
        Event::Done(_)
            | Event::CompleteReply(_)
            | Event::IsCompleteReply(_)
            | Event::InspectReply(_)
            | Event::Ready(_)
    )
}

/// Waits until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn wait_for(driver: &Arc<dyn Driver>) -> crate::backend::ExitReport {
    driver.wait().await
}

async fn wait_briefly(driver: &Arc<dyn Driver>) -> Option<crate::backend::ExitReport> {
    tokio::time::timeout(Duration::from_millis(500), driver.wait())
        .await
        .ok()
}
