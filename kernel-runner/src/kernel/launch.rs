//! Starting a driver through a backend and waiting for its `ready` event.

use std::sync::Arc;
use std::time::Duration;

use cellgate_protocol::driver::{Command, Event, FrameDecoder, FrameError, Ready};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::backend::{Backend, Driver, ExitReport, LaunchSpec};
use crate::error::RunnerError;

/// What comes out of the driver's event stream.
#[derive(Debug)]
pub enum Incoming {
    Event(Event),
    /// The stream broke: a malformed frame, or a read error. The driver is unusable.
    Broken(DriverFailure),
}

/// Why a driver can no longer be used. Its text is what the user reads in the `KernelDied`
/// error of the cell it ended.
#[derive(Debug, thiserror::Error)]
pub enum DriverFailure {
    #[error("reading the driver failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("the driver sent a bad frame: {0}")]
    BadFrame(#[source] FrameError),
    #[error("the driver stopped reading commands: {0}")]
    CommandsClosed(#[source] std::io::Error),
    #[error("the {language} driver {exit}")]
    Exited {
        language: &'static str,
        exit: ExitReport,
    },
    #[error("the driver broke the protocol: it answered {request} with {event:?}")]
    WrongAnswer {
        request: &'static str,
        event: Box<Event>,
    },
    #[error("the kernel is shutting down")]
    ShuttingDown,
}

/// A started driver that said it is ready.
pub struct Launched {
    pub driver: Arc<dyn Driver>,
    pub commands: CommandWriter,
    pub events: mpsc::Receiver<Incoming>,
    pub ready: Ready,
}

/// Writes command frames to a driver.
pub struct CommandWriter {
    sink: Box<dyn AsyncWrite + Send + Unpin>,
}

impl CommandWriter {
    pub async fn send(&mut self, command: &Command) -> std::io::Result<()> {
        self.sink.write_all(&command.to_frame().encode()).await?;
        self.sink.flush().await
    }
}

/// Starts `spec`'s driver and waits up to `ready_timeout` for its `ready` event.
pub async fn launch(
    backend: &dyn Backend,
    spec: &LaunchSpec,
    ready_timeout: Duration,
) -> Result<Launched, RunnerError> {
    let language = spec.language.kernel_name.to_owned();
    let (io, driver) = backend
        .start(spec)
        .await
        .map_err(|source| RunnerError::DriverStart {
            language: language.clone(),
            source,
        })?;
    let (tx, mut events) = mpsc::channel(1024);
    tokio::spawn(read_events(io.events, tx));
    if let Some(diagnostics) = io.diagnostics {
        tokio::spawn(log_diagnostics(diagnostics, spec.kernel_id.clone()));
    }
    let first = tokio::time::timeout(ready_timeout, events.recv()).await;
    let not_ready = |reason: String| RunnerError::DriverNotReady {
        language: language.clone(),
        reason,
    };
    let ready = match first {
        Ok(Some(Incoming::Event(Event::Ready(ready)))) => *ready,
        Ok(Some(Incoming::Event(other))) => {
            let _ = driver.kill().await;
            return Err(not_ready(format!("its first event was {other:?}")));
        }
        Ok(Some(Incoming::Broken(failure))) => {
            let _ = driver.kill().await;
            return Err(not_ready(failure.to_string()));
        }
        Ok(None) => {
            let exit = driver.wait().await;
            return Err(not_ready(format!("the driver {exit} before it was ready")));
        }
        Err(_) => {
            let _ = driver.kill().await;
            return Err(not_ready(format!(
                "no ready event within {} s",
                ready_timeout.as_secs_f32()
            )));
        }
    };
    Ok(Launched {
        driver,
        commands: CommandWriter { sink: io.commands },
        events,
        ready,
    })
}

/// Decodes frames from the driver until its stdout closes. The channel is bounded, so a
/// kernel that cannot keep up stops reading and the driver blocks on its writes. A frame over
/// the size limit is skipped as it arrives, never held in memory, and a notice or an empty
/// answer of its kind goes on in its place: whatever a driver prints, it does not kill the
/// kernel.
async fn read_events(
    mut source: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    events: mpsc::Sender<Incoming>,
) {
    let mut decoder = FrameDecoder::default();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match source.read(&mut buffer).await {
            Ok(0) => return,
            Ok(read) => read,
            Err(error) => {
                let _ = events
                    .send(Incoming::Broken(DriverFailure::Read(error)))
                    .await;
                return;
            }
        };
        decoder.push(&buffer[..read]);
        loop {
            let incoming = match decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => match Event::from_frame(&frame) {
                    Ok(event) => Incoming::Event(event),
                    Err(error) => Incoming::Broken(DriverFailure::BadFrame(error)),
                },
                Err(error) => stand_in_for(error),
            };
            let broken = matches!(incoming, Incoming::Broken(_));
            if events.send(incoming).await.is_err() || broken {
                return;
            }
        }
    }
}

/// What goes on after a frame the decoder refused: a stand-in for an oversized one that has
/// one, the end of the driver otherwise.
fn stand_in_for(error: FrameError) -> Incoming {
    if let FrameError::BodyTooLarge { kind, len, max } = &error {
        if let Some(stand_in) = Event::in_place_of_oversized(kind, *len, *max) {
            tracing::warn!(
                kind,
                len,
                max,
                "the driver sent an oversized frame; skipped"
            );
            return Incoming::Event(stand_in);
        }
    }
    Incoming::Broken(DriverFailure::BadFrame(error))
}

async fn log_diagnostics(source: Box<dyn tokio::io::AsyncRead + Send + Unpin>, kernel: String) {
    let mut lines = BufReader::new(source).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(kernel = %kernel, "driver: {line}");
    }
}
