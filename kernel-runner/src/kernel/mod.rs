//! One kernel: its shared handle (state, connections, request queues) and the actor task that
//! owns its driver. Everything that changes a kernel goes through the actor's queues, so the
//! driver is only ever used from one task.

mod actor;
pub mod connections;
pub mod history;
pub mod launch;
pub mod manager;
pub mod pool;
#[cfg(test)]
mod scripted;
pub mod stream_text;

use std::sync::{Arc, Mutex};

use cellgate_protocol::content::{Content, ErrorInfo, ErrorReply, ExecutionState, ReplyStatus};
use cellgate_protocol::message::format_timestamp;
use cellgate_protocol::model::KernelModel;
use cellgate_protocol::{Channel, Message};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::error::RunnerError;
use crate::languages::Language;
use connections::{ConnectionId, Connections};

pub use manager::{KernelManager, KernelSettings};

/// A Jupyter message from one websocket connection.
#[derive(Debug)]
pub struct ClientRequest {
    pub from: ConnectionId,
    pub message: Message,
}

/// Work for the actor that must not wait behind queued cells.
pub(crate) enum ControlOp {
    /// A message on the control channel (boxed: it is far bigger than the other variants).
    Message(Box<ClientRequest>),
    Interrupt(oneshot::Sender<Result<(), RunnerError>>),
    Restart(oneshot::Sender<Result<(), RunnerError>>),
    Shutdown(oneshot::Sender<()>),
    /// Stop the driver and keep the kernel, dead: what a client's `shutdown_request` asks.
    StopDriver,
}

#[derive(Debug)]
struct KernelState {
    execution_state: ExecutionState,
    last_activity: DateTime<Utc>,
    reason: Option<String>,
}

/// The shared face of a kernel, held by the manager and by every connection.
pub struct Kernel {
    pub id: String,
    pub language: &'static Language,
    /// The `session` of every message this kernel sends.
    pub session: String,
    /// The kernel's working directory on the host; unused by container kernels.
    pub workdir: std::path::PathBuf,
    pub connections: Connections,
    state: Mutex<KernelState>,
    shell: mpsc::Sender<ClientRequest>,
    stdin: mpsc::Sender<ClientRequest>,
    control: mpsc::Sender<ControlOp>,
}

impl Kernel {
    pub fn model(&self) -> KernelModel {
        let state = self.lock_state();
        KernelModel {
            id: self.id.clone(),
            name: self.language.kernel_name.to_owned(),
            last_activity: format_timestamp(state.last_activity),
            execution_state: state.execution_state,
            connections: self.connections.count(),
            reason: state.reason.clone(),
        }
    }

    /// The execution state, and how long ago the kernel was last active.
    pub fn activity(&self, now: DateTime<Utc>) -> (ExecutionState, std::time::Duration) {
        let state = self.lock_state();
        let quiet = (now - state.last_activity).to_std().unwrap_or_default();
        (state.execution_state, quiet)
    }

    pub fn is_dead(&self) -> bool {
        self.lock_state().execution_state == ExecutionState::Dead
    }

    /// Queues a client's message on the channel it came by. A full queue is answered with an
    /// error reply instead of blocking the client's reader, and so is a kernel being deleted.
    pub fn submit(&self, request: ClientRequest) {
        use mpsc::error::TrySendError;
        self.touch();
        let refused = match request.message.channel {
            Channel::Shell => self.shell.try_send(request).err(),
            Channel::Stdin => self.stdin.try_send(request).err(),
            Channel::Control => {
                match self.control.try_send(ControlOp::Message(Box::new(request))) {
                    Ok(()) => None,
                    Err(TrySendError::Full(ControlOp::Message(request))) => {
                        Some(TrySendError::Full(*request))
                    }
                    Err(TrySendError::Closed(ControlOp::Message(request))) => {
                        Some(TrySendError::Closed(*request))
                    }
                    Err(_) => None,
                }
            }
            // Clients have nothing to say on iopub; jupyter_server drops such messages too.
            Channel::Iopub => None,
        };
        match refused {
            Some(TrySendError::Full(request)) => self.refuse(
                &request,
                "QueueFull",
                "the kernel has too many requests waiting; try again when it is idle",
            ),
            Some(TrySendError::Closed(request)) => self.refuse(
                &request,
                "KernelGone",
                "the kernel has been shut down and deleted",
            ),
            None => {}
        }
    }

    /// Answers `request` with an error reply on its own channel.
    pub fn refuse(&self, request: &ClientRequest, ename: &str, evalue: &str) {
        self.refuse_counted(request, ename, evalue, 0);
    }

    /// Like `refuse`, with the execution count an `execute_reply` must carry.
    pub fn refuse_counted(
        &self,
        request: &ClientRequest,
        ename: &str,
        evalue: &str,
        execution_count: u64,
    ) {
        let header = &request.message.header;
        let is_execute = header.msg_type == "execute_request";
        let content = Content::ErrorReply {
            msg_type: Content::reply_type(&header.msg_type),
            reply: ErrorReply {
                status: ReplyStatus::Error,
                execution_count: is_execute.then_some(execution_count),
                error: ErrorInfo {
                    ename: ename.to_owned(),
                    evalue: evalue.to_owned(),
                    traceback: Vec::new(),
                },
            },
        };
        let channel = match request.message.channel {
            Channel::Iopub => Channel::Shell,
            other => other,
        };
        let reply = Message::reply_to(header, &self.session, channel, content);
        self.connections.send_to(request.from, Arc::new(reply));
    }

    pub async fn interrupt(&self) -> Result<(), RunnerError> {
        self.ask(ControlOp::Interrupt).await?
    }

    pub async fn restart(&self) -> Result<(), RunnerError> {
        self.ask(ControlOp::Restart).await?
    }

    /// Stops the driver and the actor; returns once both are gone.
    pub async fn shutdown(&self) {
        let _ = self.ask(ControlOp::Shutdown).await;
    }

    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<T>) -> ControlOp,
    ) -> Result<T, RunnerError> {
        let (tx, rx) = oneshot::channel();
        let gone = || RunnerError::KernelNotFound(self.id.clone());
        self.control.send(op(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    pub fn touch(&self) {
        self.lock_state().last_activity = Utc::now();
    }

    fn set_execution_state(&self, execution_state: ExecutionState) {
        let mut state = self.lock_state();
        state.execution_state = execution_state;
        state.last_activity = Utc::now();
        if execution_state != ExecutionState::Dead {
            state.reason = None;
        }
    }

    fn mark_dead(&self, reason: String) {
        let mut state = self.lock_state();
        state.execution_state = ExecutionState::Dead;
        state.reason = Some(reason);
        // Dying is the kernel's last activity: a dead kernel is culled the idle time after.
        state.last_activity = Utc::now();
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, KernelState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
