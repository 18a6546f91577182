//! The kernel websocket, `/api/kernels/{id}/channels`: one client connection attached to a
//! kernel, speaking the legacy JSON framing or the v1 binary one.

use std::sync::Arc;

use cellgate_protocol::wire::{self, Framing, Payload, V1_SUBPROTOCOL};
use cellgate_protocol::{Channel, Content, Header, Message};
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;

use super::response::{self, Body};
use super::AppState;
use crate::kernel::connections::Outgoing;
use crate::kernel::{ClientRequest, Kernel};

/// Answers the upgrade request and hands the connection to a session task.
pub fn upgrade(
    mut request: Request<Incoming>,
    id: &str,
    state: &Arc<AppState>,
    tasks: &TaskTracker,
) -> Response<Body> {
    let kernel = match state.manager.get(id) {
        Ok(kernel) => kernel,
        Err(error) => return response::runner_error(&error),
    };
    let headers = request.headers();
    let wants_websocket = headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.eq_ignore_ascii_case("websocket"))
        .unwrap_or(false);
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return response::error(StatusCode::BAD_REQUEST, "this route only speaks websocket");
    };
    if !wants_websocket {
        return response::error(StatusCode::BAD_REQUEST, "this route only speaks websocket");
    }
    let offered = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok());
    let framing = Framing::negotiate(offered);
    let client_session = client_session(request.uri().query());
    let on_upgrade = hyper::upgrade::on(&mut request);
    let state = state.clone();
    tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig {
                    max_message_size: Some(state.max_message_size),
                    max_frame_size: Some(state.max_message_size),
                    ..Default::default()
                };
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                session(socket, kernel, framing, state, client_session).await;
            }
            Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
        }
    });
    let mut response = response::empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if framing == Framing::V1 {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(V1_SUBPROTOCOL),
        );
    }
    response
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Messages written to a connection at most before it is flushed.
const MAX_BATCH: usize = 64;

fn ws_frame(message: &cellgate_protocol::Message, framing: Framing) -> WsMessage {
    match wire::encode(message, framing) {
        Payload::Text(text) => WsMessage::Text(text),
        Payload::Binary(bytes) => WsMessage::Binary(bytes),
    }
}

/// The client's `session_id` query parameter: a client that reconnects with the same one
/// gets the messages it missed while away.
fn client_session(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(name, value)| name == "session_id" && !value.is_empty())
        .map(|(_, value)| value.into_owned())
}

/// Pumps one connection: client frames into the kernel's queues, the kernel's messages for
/// this connection out (starting with what its session missed while away), pings in between.
async fn session(
    socket: Socket,
    kernel: Arc<Kernel>,
    framing: Framing,
    state: Arc<AppState>,
    client_session: Option<String>,
) {
    let (connection, mut outbox) = kernel
        .connections
        .attach(state.manager.outbox_capacity(), client_session.as_deref());
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval(state.ping_interval);
    ping.reset();
    let close = loop {
        tokio::select! {
            outgoing = outbox.recv() => {
                // What is already queued goes out in the same write: a cell's burst of
                // outputs costs one system call rather than one per message.
                let mut next = outgoing;
                let mut sent = 0;
                let stop = loop {
                    match next {
                        Some(Outgoing::Message(message)) => {
                            if sink.feed(ws_frame(&message, framing)).await.is_err() {
                                break Some(None);
                            }
                        }
                        Some(Outgoing::Close(code, reason)) => {
                            break Some(Some((CloseCode::from(code), reason)));
                        }
                        None => break Some(Some((
                            CloseCode::Policy,
                            "this client fell too far behind the kernel's output".to_owned(),
                        ))),
                    }
                    sent += 1;
                    if sent == MAX_BATCH {
                        break None;
                    }
                    next = match outbox.try_recv() {
                        Ok(item) => Some(item),
                        Err(mpsc::error::TryRecvError::Empty) => break None,
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                    };
                };
                // An ending sends a close frame below, which flushes what was fed.
                if let Some(close) = stop {
                    break close;
                }
                if sink.flush().await.is_err() {
                    break None;
                }
            }
            frame = stream.next() => match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    if let Some(close) = receive(&kernel, connection, Payload::Text(text)) {
                        break Some(close);
                    }
                }
                Some(Ok(WsMessage::Binary(bytes))) => {
                    if let Some(close) = receive(&kernel, connection, Payload::Binary(bytes)) {
                        break Some(close);
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None => break None,
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
                    break match error {
                        Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => Some((
                            CloseCode::Size,
                            format!("message of {size} bytes is over the limit of {max_size}"),
                        )),
                        _ => None,
                    };
                }
            },
            _ = ping.tick() => {
                if sink.send(WsMessage::Ping(Vec::new())).await.is_err() {
                    break None;
                }
            }
            _ = state.sessions_closing.cancelled() => {
                break Some((CloseCode::Away, "the runner is shutting down".to_owned()));
            }
        }
    };
    kernel.connections.detach(connection);
    // A client leaving counts as activity: an idle kernel is culled only once it has been
    // without clients for the whole idle time, so a page reload finds it still there.
    kernel.touch();
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: truncate_reason(reason).into(),
        };
        let _ = sink.send(WsMessage::Close(Some(frame))).await;
    }
    let _ = sink.close().await;
}

/// Hands one client frame to the kernel. A frame that cannot be understood is answered with
/// an error reply when it names a request, and closes the connection when it does not.
fn receive(kernel: &Kernel, connection: u64, payload: Payload) -> Option<(CloseCode, String)> {
    match wire::decode(&payload) {
        Ok(message) => {
            kernel.submit(ClientRequest {
                from: connection,
                message,
            });
            None
        }
        Err(error) => match salvage_header(&payload) {
            Some((header, channel)) => {
                let request = ClientRequest {
                    from: connection,
                    message: Message {
                        content: Content::Other {
                            msg_type: header.msg_type.clone(),
                            content: serde_json::Value::Null,
                        },
                        header,
                        parent_header: None,
                        metadata: Default::default(),
                        channel,
                    },
                };
                kernel.refuse(&request, "BadMessage", &error.to_string());
                None
            }
            None => Some((CloseCode::Invalid, format!("malformed message: {error}"))),
        },
    }
}

/// The header and channel of a JSON frame whose content was malformed.
fn salvage_header(payload: &Payload) -> Option<(Header, Channel)> {
    let Payload::Text(text) = payload else {
        return None;
    };
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let header: Header = serde_json::from_value(value.get("header")?.clone()).ok()?;
    let channel = value
        .get("channel")
        .and_then(|channel| channel.as_str())
        .and_then(Channel::parse)
        .unwrap_or(Channel::Shell);
    Some((header, channel))
}

/// Close reasons are limited to 123 bytes by the websocket protocol.
fn truncate_reason(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    reason
}
