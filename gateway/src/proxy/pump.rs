//! Moving frames between a client's websocket and its runner's until one side ends, then
//! closing the other side with a code and reason that say why.
//!
//! Each direction awaits its write (of the frames that had already arrived, a bounded batch)
//! before reading on, so a slow reader slows its writer down instead of filling a queue. Both directions run in one task. The gateway pings
//! both ends itself and takes an end that sends nothing (not even a pong) within the idle
//! timeout for dead. Pings from either end are passed on, so end-to-end liveness checks keep
//! working; the other end's pong comes back through the proxy. Pongs answering the gateway's
//! own keepalive pings stop here. When the runner is declared gone, the client is closed with
//! 1011 and a reason naming the runner, even if the runner's connection still looks open.

use std::borrow::Cow;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::timing::ExecuteTiming;
use crate::config::WebsocketSettings;

/// The payload of the gateway's own keepalive pings.
const KEEPALIVE: &[u8] = b"cellgate-keepalive";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Runner,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Client => Side::Runner,
            Side::Runner => Side::Client,
        }
    }
}

/// Why a session ended.
#[derive(Debug)]
pub enum Ending {
    /// One side closed the websocket (the frame is `None` for a close without a status).
    Closed {
        by: Side,
        frame: Option<CloseFrame<'static>>,
    },
    /// Reading from or writing to one side failed.
    Failed { side: Side, error: WsError },
    /// One side sent nothing for the idle timeout.
    Idle { side: Side },
    /// The gateway declared the runner gone.
    RunnerGone,
    /// The gateway is shutting down.
    ShuttingDown,
}

/// What a pump watches besides its two sockets.
pub struct Watch<'a> {
    pub settings: &'a WebsocketSettings,
    /// Cancelled when the gateway shuts down.
    pub stopping: &'a CancellationToken,
    /// Cancelled when the runner is declared gone.
    pub runner_gone: &'a CancellationToken,
    /// The runner, named in the close reason when it is gone.
    pub runner: &'a url::Url,
    pub timing: &'a ExecuteTiming<'a>,
}

/// What the gateway still sends one side once the session has ended.
#[derive(Debug)]
enum Farewell {
    /// This side started the close and tungstenite has queued the echo: flushing sends it,
    /// and dropping the socket then ends the connection (RFC 6455 has the server close the
    /// TCP connection first, so waiting for the client to do it would only stall).
    Flush,
    /// Close this side with the frame, then read on until it answers.
    Close(Option<CloseFrame<'static>>),
    /// This side is broken; there is nothing left to say.
    Nothing,
}

fn close(code: CloseCode, reason: impl Into<Cow<'static, str>>) -> Farewell {
    Farewell::Close(Some(CloseFrame {
        code,
        reason: truncate(reason.into()),
    }))
}

/// Close reasons are limited to 123 bytes by RFC 6455.
fn truncate(mut reason: Cow<'static, str>) -> Cow<'static, str> {
    if reason.len() > 123 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let owned = reason.to_mut();
        owned.truncate(end);
        owned.push_str("...");
    }
    reason
}

impl Ending {
    /// What each side is told: `(client, runner)`.
    fn farewells(&self, runner: &url::Url) -> (Farewell, Farewell) {
        let (client, runner) = match self {
            Ending::Closed { by, frame } => {
                let (closer, other) = (Farewell::Flush, Farewell::Close(frame.clone()));
                return match by {
                    Side::Client => (closer, other),
                    Side::Runner => (other, closer),
                };
            }
            Ending::Failed {
                side: Side::Client,
                error,
            } => (
                too_big(error).unwrap_or(Farewell::Nothing),
                close(CloseCode::Away, "client connection lost"),
            ),
            Ending::Failed {
                side: Side::Runner,
                error,
            } => (
                close(CloseCode::Error, "kernel runner connection lost"),
                too_big(error).unwrap_or(Farewell::Nothing),
            ),
            Ending::Idle { side: Side::Client } => (
                close(CloseCode::Away, "client idle timeout"),
                close(CloseCode::Away, "client idle timeout"),
            ),
            Ending::Idle { side: Side::Runner } => (
                close(CloseCode::Error, "kernel runner stopped answering"),
                close(CloseCode::Away, "kernel runner idle timeout"),
            ),
            // The runner's connection is most likely dead: nothing is sent that could wait
            // for an answer.
            Ending::RunnerGone => (
                close(CloseCode::Error, format!("kernel runner {runner} is gone")),
                Farewell::Nothing,
            ),
            Ending::ShuttingDown => (
                close(CloseCode::Away, "gateway shutting down"),
                close(CloseCode::Away, "gateway shutting down"),
            ),
        };
        (client, runner)
    }
}

/// A message over the size limit gets the standard "too big" close.
fn too_big(error: &WsError) -> Option<Farewell> {
    matches!(error, WsError::Capacity(_)).then(|| close(CloseCode::Size, "message too big"))
}

/// Pumps frames until the session ends, closes both sides, and says why it ended.
pub async fn pump<C, R>(
    client: WebSocketStream<C>,
    runner: WebSocketStream<R>,
    watch: Watch<'_>,
) -> Ending
where
    C: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + AsyncWrite + Unpin,
{
    let settings = watch.settings;
    let (mut client_tx, mut client_rx) = client.split();
    let (mut runner_tx, mut runner_rx) = runner.split();
    let ending = tokio::select! {
        ending = forward(&mut client_rx, &mut runner_tx, Side::Client, settings, watch.timing) => ending,
        ending = forward(&mut runner_rx, &mut client_tx, Side::Runner, settings, watch.timing) => ending,
        () = watch.runner_gone.cancelled() => Ending::RunnerGone,
        () = watch.stopping.cancelled() => Ending::ShuttingDown,
    };
    let (to_client, to_runner) = ending.farewells(watch.runner);
    let goodbyes = futures_util::future::join(
        say_goodbye(&mut client_tx, &mut client_rx, to_client),
        say_goodbye(&mut runner_tx, &mut runner_rx, to_runner),
    );
    // A peer that never answers a close must not hold the session (or shutdown) open.
    let _ = tokio::time::timeout(settings.close_timeout, goodbyes).await;
    ending
}

/// Copies frames from `from` to `to` until `from` closes, fails or goes idle, or `to` fails.
async fn forward<F, T>(
    from: &mut SplitStream<WebSocketStream<F>>,
    to: &mut SplitSink<WebSocketStream<T>, Message>,
    side: Side,
    settings: &WebsocketSettings,
    timing: &ExecuteTiming<'_>,
) -> Ending
where
    F: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    // This direction owns the sink towards the other end, so it sends that end's keepalive
    // pings; their pongs arrive on the other direction and keep that end's deadline fresh.
    let mut keepalive = tokio::time::interval_at(
        Instant::now() + settings.ping_interval,
        settings.ping_interval,
    );
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The idle timer is only moved when it fires, not on every frame: each frame just notes
    // the time, and a timer that fires early is set again for the rest of the wait.
    let mut last_seen = Instant::now();
    let idle = tokio::time::sleep_until(last_seen + settings.idle_timeout);
    tokio::pin!(idle);
    loop {
        let read = tokio::select! {
            next = from.next() => {
                last_seen = Instant::now();
                classify(next, side, timing)
            }
            () = &mut idle => {
                let due = last_seen + settings.idle_timeout;
                if Instant::now() >= due {
                    return Ending::Idle { side };
                }
                idle.as_mut().reset(due);
                continue;
            }
            _ = keepalive.tick() => Read::Forward(Message::Ping(KEEPALIVE.to_vec())),
        };
        let message = match read {
            Read::Forward(message) => message,
            Read::Skip => continue,
            Read::End(ending) => return ending,
        };
        if let Err(error) = to.feed(message).await {
            return Ending::Failed {
                side: side.other(),
                error,
            };
        }
        // Whatever else has arrived already goes out in the same write: a burst of outputs
        // costs one TLS record and one system call instead of one each. Nothing waits for
        // more, so a lone message is sent at once. Any ending that follows sends a close,
        // which flushes what was fed.
        for _ in 1..MAX_BATCH {
            let Some(next) = from.next().now_or_never() else {
                break;
            };
            match classify(next, side, timing) {
                Read::Forward(message) => {
                    if let Err(error) = to.feed(message).await {
                        return Ending::Failed {
                            side: side.other(),
                            error,
                        };
                    }
                }
                Read::Skip => {}
                Read::End(ending) => return ending,
            }
        }
        if let Err(error) = to.flush().await {
            return Ending::Failed {
                side: side.other(),
                error,
            };
        }
    }
}

/// Messages taken from one side at most before the other side is flushed.
const MAX_BATCH: usize = 64;

/// What to do with one read from a side.
enum Read {
    Forward(Message),
    Skip,
    End(Ending),
}

fn classify(
    next: Option<Result<Message, WsError>>,
    side: Side,
    timing: &ExecuteTiming<'_>,
) -> Read {
    let message = match next {
        None => {
            return Read::End(Ending::Closed {
                by: side,
                frame: None,
            })
        }
        Some(Err(error)) => return Read::End(Ending::Failed { side, error }),
        Some(Ok(message)) => message,
    };
    match message {
        Message::Close(frame) => Read::End(Ending::Closed { by: side, frame }),
        Message::Pong(payload) if payload == KEEPALIVE => Read::Skip,
        // Reading never yields raw frames; nothing to pass on.
        Message::Frame(_) => Read::Skip,
        message => {
            match side {
                Side::Client => timing.client_frame(&message),
                Side::Runner => timing.runner_frame(&message),
            }
            Read::Forward(message)
        }
    }
}

/// Sends one side its farewell. After sending a close, reads on until the peer's answer
/// arrives, which completes the closing handshake.
async fn say_goodbye<S>(
    tx: &mut SplitSink<WebSocketStream<S>, Message>,
    rx: &mut SplitStream<WebSocketStream<S>>,
    farewell: Farewell,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match farewell {
        Farewell::Nothing => {}
        Farewell::Flush => {
            let _ = tx.flush().await;
        }
        Farewell::Close(frame) => {
            if tx.send(Message::Close(frame)).await.is_ok() {
                while let Some(Ok(_)) = rx.next().await {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::{Histogram, LATENCY_BUCKETS};
    use std::time::Duration;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    type Ws = WebSocketStream<DuplexStream>;

    /// A connected pair: the server end (as the gateway holds a client) and the client end.
    async fn pair(gateway_role: Role) -> (Ws, Ws) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let peer_role = match gateway_role {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
        };
        let gateway = WebSocketStream::from_raw_socket(a, gateway_role, None).await;
        let peer = WebSocketStream::from_raw_socket(b, peer_role, None).await;
        (gateway, peer)
    }

    fn settings() -> WebsocketSettings {
        WebsocketSettings {
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(95),
            close_timeout: Duration::from_secs(5),
            max_message_bytes: 1 << 20,
        }
    }

    struct Session {
        client: Ws,
        runner: Ws,
        stopping: CancellationToken,
        runner_gone: CancellationToken,
        pump: tokio::task::JoinHandle<Ending>,
    }

    async fn session() -> Session {
        let (gateway_client, client) = pair(Role::Server).await;
        let (gateway_runner, runner) = pair(Role::Client).await;
        let stopping = CancellationToken::new();
        let runner_gone = CancellationToken::new();
        let (token, gone) = (stopping.clone(), runner_gone.clone());
        let pump = tokio::spawn(async move {
            let histogram = Histogram::new(&LATENCY_BUCKETS);
            let timing = ExecuteTiming::new(&histogram);
            let url = url::Url::parse("http://127.0.0.1:4000").unwrap();
            let watch = Watch {
                settings: &settings(),
                stopping: &token,
                runner_gone: &gone,
                runner: &url,
                timing: &timing,
            };
            pump(gateway_client, gateway_runner, watch).await
        });
        Session {
            client,
            runner,
            stopping,
            runner_gone,
            pump,
        }
    }

    /// Reads the next message, which must be a close, then reads on so the stream sends its
    /// answer, and drops the stream as a real peer would once its side is closed.
    async fn closed_with(mut ws: Ws) -> (CloseCode, String) {
        let received = match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => (frame.code, frame.reason.into_owned()),
            other => panic!("expected a close frame, got {other:?}"),
        };
        while let Some(Ok(_)) = ws.next().await {}
        received
    }

    #[tokio::test]
    async fn data_frames_and_pings_pass_both_ways() {
        let mut s = session().await;
        s.client.send(Message::Text("hello".into())).await.unwrap();
        assert_eq!(
            s.runner.next().await.unwrap().unwrap(),
            Message::Text("hello".into())
        );
        s.runner.send(Message::Binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(
            s.client.next().await.unwrap().unwrap(),
            Message::Binary(vec![1, 2, 3])
        );
        s.client
            .send(Message::Ping(b"are you there".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            s.runner.next().await.unwrap().unwrap(),
            Message::Ping(b"are you there".to_vec())
        );
    }

    #[tokio::test]
    async fn a_client_close_reaches_the_runner_with_its_code_and_reason() {
        let mut s = session().await;
        s.client
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "done".into(),
            })))
            .await
            .unwrap();
        assert_eq!(
            closed_with(s.runner).await,
            (CloseCode::Normal, "done".into())
        );
        // The gateway answered the client's close itself.
        assert_eq!(closed_with(s.client).await.0, CloseCode::Normal);
        assert!(matches!(
            s.pump.await.unwrap(),
            Ending::Closed {
                by: Side::Client,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_runner_close_reaches_the_client() {
        let mut s = session().await;
        s.runner
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Library(4001),
                reason: "kernel died".into(),
            })))
            .await
            .unwrap();
        assert_eq!(
            closed_with(s.client).await,
            (CloseCode::Library(4001), "kernel died".into())
        );
        // The gateway answered the runner's close itself.
        assert_eq!(closed_with(s.runner).await.0, CloseCode::Library(4001));
        assert!(matches!(
            s.pump.await.unwrap(),
            Ending::Closed {
                by: Side::Runner,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_lost_runner_closes_the_client_with_an_error_code() {
        let s = session().await;
        drop(s.runner);
        let (code, reason) = closed_with(s.client).await;
        assert_eq!(code, CloseCode::Error);
        assert_eq!(reason, "kernel runner connection lost");
        assert!(matches!(
            s.pump.await.unwrap(),
            Ending::Failed {
                side: Side::Runner,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_runner_declared_gone_closes_the_client_with_its_name() {
        let s = session().await;
        s.runner_gone.cancel();
        let (code, reason) = closed_with(s.client).await;
        assert_eq!(code, CloseCode::Error);
        assert_eq!(reason, "kernel runner http://127.0.0.1:4000/ is gone");
        assert!(matches!(s.pump.await.unwrap(), Ending::RunnerGone));
    }

    #[test]
    fn long_close_reasons_are_cut_to_the_protocol_limit() {
        let long: String = "é".repeat(100);
        let cut = truncate(Cow::Owned(long));
        assert!(cut.len() <= 123 && cut.ends_with("..."));
        assert_eq!(truncate(Cow::Borrowed("short")), "short");
    }

    #[tokio::test]
    async fn shutdown_closes_both_sides_as_going_away() {
        let s = session().await;
        s.stopping.cancel();
        let (client, runner) = tokio::join!(closed_with(s.client), closed_with(s.runner));
        assert_eq!(client, (CloseCode::Away, "gateway shutting down".into()));
        assert_eq!(runner, (CloseCode::Away, "gateway shutting down".into()));
        assert!(matches!(s.pump.await.unwrap(), Ending::ShuttingDown));
    }

    #[tokio::test(start_paused = true)]
    async fn the_gateway_pings_and_a_silent_client_times_out() {
        let mut s = session().await;
        // The client's stream answers pings by itself whenever it is read, so reading
        // shows the gateway's keepalive; the runner sees its own keepalive too.
        let ping = s.client.next().await.unwrap().unwrap();
        assert_eq!(ping, Message::Ping(KEEPALIVE.to_vec()));
        assert_eq!(
            s.runner.next().await.unwrap().unwrap(),
            Message::Ping(KEEPALIVE.to_vec())
        );
        // A runner that keeps answering stays; a client that stops reading (and so stops
        // answering) is closed after the idle timeout.
        let runner = tokio::spawn(async move {
            let mut runner = s.runner;
            let mut last = None;
            while let Some(Ok(message)) = runner.next().await {
                last = Some(message);
            }
            last
        });
        let ending = s.pump.await.unwrap();
        assert!(
            matches!(ending, Ending::Idle { side: Side::Client }),
            "{ending:?}"
        );
        match runner.await.unwrap() {
            Some(Message::Close(Some(frame))) => assert_eq!(frame.reason, "client idle timeout"),
            other => panic!("runner saw {other:?}"),
        }
    }
}
