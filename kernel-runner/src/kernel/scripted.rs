//! Unit tests of the kernel actor and manager against a scripted driver: a fake backend whose
//! driver speaks the real frame protocol over in-memory pipes and answers each cell by what
//! its code says (print, fail, wait for an interrupt, crash, flood), so ordering, interrupts,
//! a driver's death and the output cap are checked without any interpreter.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cellgate_protocol::content::{
    Content, ErrorInfo, ExecuteRequest, ExecutionState, LanguageInfo, ReplyStatus, StreamName,
};
use cellgate_protocol::driver::{Command, Done, Event, FrameDecoder, Ready, DEFAULT_MAX_BODY};
use cellgate_protocol::model::CreateKernel;
use cellgate_protocol::{Channel, Header, Message};
use serde_json::Map;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch, Notify};

use super::connections::{ConnectionId, Outgoing};
use super::{ClientRequest, Kernel, KernelManager, KernelSettings};
use crate::backend::{Backend, Driver, DriverIo, ExitReport, LaunchSpec};
use crate::languages::{Language, LanguageSet, BASH};

/// Starts scripted drivers, counts them and keeps the latest.
#[derive(Default)]
struct ScriptedBackend {
    /// Its drivers ignore `shutdown` and must be killed.
    stubborn: bool,
    started: AtomicUsize,
    latest: Mutex<Option<Arc<ScriptedDriver>>>,
}

impl ScriptedBackend {
    fn latest(&self) -> Arc<ScriptedDriver> {
        self.latest
            .lock()
            .unwrap()
            .clone()
            .expect("a driver started")
    }
}

struct ScriptedDriver {
    /// Wakes a cell waiting for an interrupt; one sent while no cell waits is lost, as a
    /// SIGINT to an idle interpreter is ignored.
    interrupt: Notify,
    /// A cell is waiting for an interrupt.
    waiting: AtomicBool,
    /// Interrupts (SIGINTs, for a real driver) the runner sent.
    interrupts: AtomicUsize,
    exit: watch::Sender<Option<ExitReport>>,
}

#[async_trait]
impl Driver for ScriptedDriver {
    async fn interrupt(&self) -> std::io::Result<()> {
        self.interrupts.fetch_add(1, Ordering::SeqCst);
        self.interrupt.notify_waiters();
        Ok(())
    }

    async fn kill(&self) -> std::io::Result<()> {
        self.exit.send_replace(Some(ExitReport {
            code: None,
            signal: Some(9),
            oom_killed: false,
        }));
        Ok(())
    }

    async fn wait(&self) -> ExitReport {
        ExitReport::when_published(&self.exit.subscribe()).await
    }
}

#[async_trait]
impl Backend for ScriptedBackend {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn supports(&self, _language: &Language) -> bool {
        true
    }

    fn driver_dir(&self, _language: &Language) -> PathBuf {
        PathBuf::from("/scripted")
    }

    async fn start(&self, _spec: &LaunchSpec) -> std::io::Result<(DriverIo, Arc<dyn Driver>)> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let (runner_commands, driver_commands) = tokio::io::duplex(1 << 20);
        let (driver_events, runner_events) = tokio::io::duplex(1 << 20);
        let (exit, _) = watch::channel(None);
        let driver = Arc::new(ScriptedDriver {
            interrupt: Notify::new(),
            waiting: AtomicBool::new(false),
            interrupts: AtomicUsize::new(0),
            exit,
        });
        *self.latest.lock().unwrap() = Some(driver.clone());
        tokio::spawn(script(
            driver.clone(),
            self.stubborn,
            driver_commands,
            driver_events,
        ));
        let io = DriverIo {
            commands: Box::new(runner_commands),
            events: Box::new(runner_events),
            diagnostics: None,
        };
        Ok((io, driver))
    }
}

/// The scripted driver: `ready`, then one answer per command until it crashes or is told to
/// shut down.
async fn script(
    driver: Arc<ScriptedDriver>,
    stubborn: bool,
    mut commands: DuplexStream,
    mut events: DuplexStream,
) {
    let ready = Event::Ready(Box::new(Ready {
        implementation: "scripted".into(),
        implementation_version: "1".into(),
        language_info: LanguageInfo {
            name: "scripted".into(),
            version: "1".into(),
            mimetype: "text/plain".into(),
            file_extension: ".txt".into(),
            pygments_lexer: None,
            codemirror_mode: None,
        },
        banner: String::new(),
    }));
    if send(&mut events, &ready).await.is_err() {
        return;
    }
    let mut decoder = FrameDecoder::new(64 << 20);
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let frame = match decoder.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => match commands.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => {
                    decoder.push(&buffer[..read]);
                    continue;
                }
            },
            Err(_) => return,
        };
        let answer = match Command::from_frame(&frame) {
            Ok(Command::Execute { code }) if code.starts_with("huge ") => {
                if send_oversized(&mut events, &code["huge ".len()..])
                    .await
                    .is_err()
                {
                    return;
                }
                vec![done(ReplyStatus::Ok)]
            }
            Ok(Command::Execute { code }) => execute(&driver, &code).await,
            Ok(Command::Shutdown) if stubborn => continue,
            Ok(Command::Shutdown) => {
                driver.exit.send_replace(Some(ExitReport {
                    code: Some(0),
                    signal: None,
                    oom_killed: false,
                }));
                return;
            }
            Ok(_) => vec![done(ReplyStatus::Ok)],
            Err(_) => return,
        };
        if answer.is_empty() {
            // A crash: the event pipe closes and the process is gone.
            driver.exit.send_replace(Some(ExitReport {
                code: Some(3),
                signal: None,
                oom_killed: false,
            }));
            return;
        }
        for event in answer {
            if send(&mut events, &event).await.is_err() {
                return;
            }
        }
    }
}

/// What a cell of scripted code does; an empty answer is a crash.
async fn execute(driver: &ScriptedDriver, code: &str) -> Vec<Event> {
    let failure = |ename: &str| {
        vec![
            Event::Error(ErrorInfo {
                ename: ename.into(),
                evalue: String::new(),
                traceback: Vec::new(),
            }),
            done(ReplyStatus::Error),
        ]
    };
    match code.split_once(' ').unwrap_or((code, "")) {
        ("print", text) => vec![
            Event::Stdout(format!("{text}\n").into_bytes()),
            done(ReplyStatus::Ok),
        ],
        ("warn", text) => vec![
            Event::Stdout(b"before\n".to_vec()),
            Event::Stderr(format!("{text}\n").into_bytes()),
            Event::Stdout(b"after\n".to_vec()),
            done(ReplyStatus::Ok),
        ],
        ("fail", _) => failure("ScriptError"),
        ("wait", _) => {
            let interrupted = driver.interrupt.notified();
            tokio::pin!(interrupted);
            interrupted.as_mut().enable();
            driver.waiting.store(true, Ordering::SeqCst);
            interrupted.await;
            driver.waiting.store(false, Ordering::SeqCst);
            failure("KeyboardInterrupt")
        }
        ("flood", megabytes) => {
            let bytes = megabytes.parse::<usize>().unwrap_or(1) << 20;
            vec![Event::Stdout(vec![b'x'; bytes]), done(ReplyStatus::Ok)]
        }
        ("crash", _) => Vec::new(),
        _ => vec![done(ReplyStatus::Ok)],
    }
}

fn done(status: ReplyStatus) -> Event {
    Event::Done(Done {
        status,
        payload: Vec::new(),
    })
}

async fn send(events: &mut DuplexStream, event: &Event) -> std::io::Result<()> {
    events.write_all(&event.to_frame().encode()).await
}

/// Writes a `kind` frame one MiB over the runner's limit, as a driver without a size check
/// would.
async fn send_oversized(events: &mut DuplexStream, kind: &str) -> std::io::Result<()> {
    let len = DEFAULT_MAX_BODY + (1 << 20);
    events
        .write_all(format!("{kind} {len}\n").as_bytes())
        .await?;
    let filler = vec![b'x'; 1 << 20];
    for _ in 0..len >> 20 {
        events.write_all(&filler).await?;
    }
    Ok(())
}

/// A kernel of the scripted backend with one client connection.
struct Session {
    manager: Arc<KernelManager>,
    backend: Arc<ScriptedBackend>,
    kernel: Arc<Kernel>,
    connection: ConnectionId,
    outbox: mpsc::Receiver<Outgoing>,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Session {
    async fn start(output_cap: usize) -> Session {
        Session::with(output_cap, None).await
    }

    async fn with(output_cap: usize, cull_idle: Option<Duration>) -> Session {
        let dir = std::env::temp_dir().join(format!("cellgate-scripted-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let backend = Arc::new(ScriptedBackend::default());
        let mut settings = KernelSettings::new(dir.clone());
        settings.output_cap = output_cap;
        settings.ready_timeout = Duration::from_secs(5);
        settings.cull_idle = cull_idle;
        let manager = Arc::new(KernelManager::new(
            backend.clone(),
            LanguageSet::new(vec![&BASH]),
            settings,
        ));
        let model = manager
            .create(CreateKernel {
                name: Some(BASH.kernel_name.into()),
                ..CreateKernel::default()
            })
            .await
            .unwrap();
        let kernel = manager.get(&model.id).unwrap();
        let (connection, outbox) = kernel.connections.attach(1024, Some("client"));
        Session {
            manager,
            backend,
            kernel,
            connection,
            outbox,
            _dir: TempDir(dir),
        }
    }

    /// Sends a cell; returns its request header.
    fn execute(&self, code: &str) -> Header {
        let header = Header::new("execute_request", "client");
        self.kernel.submit(ClientRequest {
            from: self.connection,
            message: execute_request(header.clone(), code),
        });
        header
    }

    /// Every message the client gets for `request`, up to and including its idle status.
    async fn until_idle(&mut self, request: &Header) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            let outgoing = tokio::time::timeout(Duration::from_secs(10), self.outbox.recv())
                .await
                .expect("the kernel answers")
                .expect("the connection stays open");
            let Outgoing::Message(message) = outgoing else {
                panic!("the connection was closed");
            };
            let ours = message
                .parent_header
                .as_ref()
                .is_some_and(|parent| parent.msg_id == request.msg_id);
            if !ours {
                continue;
            }
            let idle = matches!(
                &message.content,
                Content::Status(status) if status.execution_state == ExecutionState::Idle
            );
            messages.push((*message).clone());
            if idle {
                return messages;
            }
        }
    }
}

/// A shell `execute_request` for `code`, without stdin.
fn execute_request(header: Header, code: &str) -> Message {
    Message {
        header,
        parent_header: None,
        metadata: Map::new(),
        content: Content::ExecuteRequest(ExecuteRequest {
            code: code.into(),
            silent: false,
            store_history: true,
            user_expressions: Map::new(),
            allow_stdin: false,
            stop_on_error: true,
        }),
        channel: Channel::Shell,
    }
}

/// The reply, and the stream text by stream in order, of one cell's messages.
fn outcome(messages: &[Message]) -> (ReplyStatus, u64, Vec<(StreamName, String)>) {
    let mut reply = None;
    let mut streams: Vec<(StreamName, String)> = Vec::new();
    for message in messages {
        match &message.content {
            Content::ExecuteReply(execute) => {
                reply = Some((execute.status, execute.execution_count));
            }
            Content::Stream(stream) => match streams.last_mut() {
                Some((name, text)) if *name == stream.name => text.push_str(&stream.text),
                _ => streams.push((stream.name, stream.text.clone())),
            },
            _ => {}
        }
    }
    let (status, count) = reply.expect("an execute_reply");
    (status, count, streams)
}

fn stdout(text: &str) -> (StreamName, String) {
    (StreamName::Stdout, text.to_owned())
}

#[tokio::test]
async fn queued_cells_run_one_at_a_time_in_order() {
    let mut session = Session::start(1 << 20).await;
    let first = session.execute("print one");
    let second = session.execute("print two");
    let third = session.execute("fail");
    let first = outcome(&session.until_idle(&first).await);
    let second = outcome(&session.until_idle(&second).await);
    let third = outcome(&session.until_idle(&third).await);
    assert_eq!(first, (ReplyStatus::Ok, 1, vec![stdout("one\n")]));
    assert_eq!(second, (ReplyStatus::Ok, 2, vec![stdout("two\n")]));
    assert_eq!(third.0, ReplyStatus::Error);
    assert_eq!(third.1, 3);
}

#[tokio::test]
async fn stdout_and_stderr_keep_their_order() {
    let mut session = Session::start(1 << 20).await;
    let cell = session.execute("warn careful");
    let (status, _, streams) = outcome(&session.until_idle(&cell).await);
    assert_eq!(status, ReplyStatus::Ok);
    assert_eq!(
        streams,
        vec![
            stdout("before\n"),
            (StreamName::Stderr, "careful\n".to_owned()),
            stdout("after\n"),
        ]
    );
}

#[tokio::test]
async fn an_interrupt_ends_a_busy_cell_and_leaves_an_idle_kernel_working() {
    let mut session = Session::start(1 << 20).await;
    // While idle: nothing to stop, so no signal (one a driver handles late would end the
    // next cell), and the next cell runs normally.
    session.kernel.interrupt().await.unwrap();
    let driver = session.backend.latest();
    assert_eq!(driver.interrupts.load(Ordering::SeqCst), 0);
    let cell = session.execute("print still here");
    assert_eq!(
        outcome(&session.until_idle(&cell).await).2,
        vec![stdout("still here\n")]
    );
    // While busy: the cell ends with the interrupt's error, and the kernel keeps going.
    let waiting = session.execute("wait");
    while !driver.waiting.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(session.kernel.model().execution_state, ExecutionState::Busy);
    session.kernel.interrupt().await.unwrap();
    let messages = session.until_idle(&waiting).await;
    assert_eq!(outcome(&messages).0, ReplyStatus::Error);
    assert!(messages.iter().any(|message| matches!(
        &message.content,
        Content::Error(error) if error.ename == "KeyboardInterrupt"
    )));
    let after = session.execute("print after");
    assert_eq!(
        outcome(&session.until_idle(&after).await),
        (ReplyStatus::Ok, 3, vec![stdout("after\n")])
    );
    assert_eq!(session.backend.started.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_driver_that_dies_mid_cell_fails_the_cell_and_is_started_again() {
    let mut session = Session::start(1 << 20).await;
    let crash = session.execute("crash");
    let (status, _, _) = outcome(&session.until_idle(&crash).await);
    assert_eq!(status, ReplyStatus::Error, "the cell that died fails");
    let after = session.execute("print back");
    let (status, _, streams) = outcome(&session.until_idle(&after).await);
    assert_eq!((status, streams), (ReplyStatus::Ok, vec![stdout("back\n")]));
    assert_eq!(
        session.backend.started.load(Ordering::SeqCst),
        2,
        "the driver was started again"
    );
    assert!(!session.kernel.is_dead());
}

#[tokio::test]
async fn output_past_the_cap_is_cut_without_killing_the_kernel() {
    let cap = 64 * 1024;
    let mut session = Session::start(cap).await;
    let flood = session.execute("flood 1");
    let (status, _, streams) = outcome(&session.until_idle(&flood).await);
    assert_eq!(status, ReplyStatus::Ok);
    let shown: usize = streams.iter().map(|(_, text)| text.len()).sum();
    assert!(shown < 1 << 20, "{shown} bytes of a 1 MiB flood were shown");
    let after = session.execute("print fine");
    let (status, _, streams) = outcome(&session.until_idle(&after).await);
    assert_eq!(status, ReplyStatus::Ok);
    assert!(streams.ends_with(&[stdout("fine\n")]), "{streams:?}");
    assert_eq!(session.backend.started.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_oversized_frame_becomes_a_notice_and_the_kernel_goes_on() {
    let mut session = Session::start(1 << 20).await;
    for kind in ["display", "stdout", "result"] {
        let huge = session.execute(&format!("huge {kind}"));
        let messages = session.until_idle(&huge).await;
        let (status, _, _) = outcome(&messages);
        assert_eq!(status, ReplyStatus::Ok, "a cell with an oversized {kind}");
        let notice = messages.iter().find_map(|message| match &message.content {
            Content::Stream(stream) => Some(stream.text.clone()),
            Content::DisplayData(display) => display.data["text/plain"].as_str().map(String::from),
            Content::ExecuteResult(result) => result.data["text/plain"].as_str().map(String::from),
            _ => None,
        });
        let notice = notice.unwrap_or_else(|| panic!("no notice for the {kind}: {messages:?}"));
        assert!(
            notice.contains("65.0 MiB") && notice.contains("still running"),
            "{notice}"
        );
    }
    let after = session.execute("print fine");
    let (status, _, streams) = outcome(&session.until_idle(&after).await);
    assert_eq!((status, streams), (ReplyStatus::Ok, vec![stdout("fine\n")]));
    assert_eq!(
        session.backend.started.load(Ordering::SeqCst),
        1,
        "never restarted"
    );
}

#[tokio::test]
async fn shutting_down_stops_the_driver() {
    let session = Session::start(1 << 20).await;
    let id = session.kernel.id.clone();
    session.manager.delete(&id).await.unwrap();
    assert!(session.manager.get(&id).is_err());
    assert!(session.manager.list().is_empty());
}

#[tokio::test]
async fn only_idle_kernels_without_a_client_are_culled() {
    let idle = Duration::from_millis(200);
    let session = Session::with(1 << 20, Some(idle)).await;
    let stop = tokio_util::sync::CancellationToken::new();
    session.manager.start_culling(stop.clone());
    let busy = session
        .manager
        .create(CreateKernel {
            name: Some(BASH.kernel_name.into()),
            ..CreateKernel::default()
        })
        .await
        .unwrap();
    let busy_kernel = session.manager.get(&busy.id).unwrap();
    let (connection, _outbox) = busy_kernel.connections.attach(16, None);
    busy_kernel.submit(ClientRequest {
        from: connection,
        message: execute_request(Header::new("execute_request", "other"), "wait"),
    });
    while busy_kernel.model().execution_state != ExecutionState::Busy {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    busy_kernel.connections.detach(connection);
    // Well past the idle time, the kernel with a client and the busy one are both kept.
    tokio::time::sleep(idle * 4).await;
    assert!(
        session.manager.get(&session.kernel.id).is_ok(),
        "it has a client"
    );
    assert!(
        session.manager.get(&busy.id).is_ok(),
        "it is running a cell"
    );
    // Once its client leaves, the idle kernel goes.
    session.kernel.connections.detach(session.connection);
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while session.manager.get(&session.kernel.id).is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "an idle kernel without a client is culled");
    assert!(session.manager.get(&busy.id).is_ok());
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_stopping_runner_shuts_its_kernels_down_together() {
    let dir = std::env::temp_dir().join(format!("cellgate-scripted-{}", uuid::Uuid::new_v4()));
    let _dir = TempDir(dir.clone());
    let backend = Arc::new(ScriptedBackend {
        stubborn: true,
        ..ScriptedBackend::default()
    });
    let manager = KernelManager::new(
        backend.clone(),
        LanguageSet::new(vec![&BASH]),
        KernelSettings::new(dir),
    );
    let kernels = 10;
    for _ in 0..kernels {
        manager
            .create(CreateKernel {
                name: Some(BASH.kernel_name.into()),
                ..CreateKernel::default()
            })
            .await
            .unwrap();
    }
    // Each driver ignores `shutdown` and is killed after its grace (virtual time).
    let started = tokio::time::Instant::now();
    manager.shutdown_all().await;
    let took = started.elapsed();
    assert!(manager.list().is_empty());
    assert!(
        took < super::actor::SHUTDOWN_GRACE * 2,
        "{kernels} kernels took {took:?}: one at a time would be {:?}",
        super::actor::SHUTDOWN_GRACE * kernels
    );
    assert!(took >= super::actor::SHUTDOWN_GRACE, "each got its grace");
}
