//! A Jupyter websocket client for one kernel, as a notebook front end would use it.

use std::time::Duration;

use cellgate_protocol::content::{Content, ErrorInfo, ExecuteReply, ExecutionState, StreamName};
use cellgate_protocol::wire::{self, Framing, Payload};
use cellgate_protocol::{Channel, Header, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// How long any single expected message may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct KernelSocket {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub framing: Framing,
    pub session: String,
    /// The subprotocol the server accepted, if any.
    pub accepted_protocol: Option<String>,
}

/// Everything one request produced, in arrival order.
#[derive(Debug)]
pub struct Execution {
    pub messages: Vec<Message>,
}

impl Execution {
    pub fn types(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|message| message.header.msg_type.clone())
            .collect()
    }

    pub fn stream(&self, name: StreamName) -> String {
        self.messages
            .iter()
            .filter_map(|message| match &message.content {
                Content::Stream(stream) if stream.name == name => Some(stream.text.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn stdout(&self) -> String {
        self.stream(StreamName::Stdout)
    }

    pub fn stderr(&self) -> String {
        self.stream(StreamName::Stderr)
    }

    /// The `text/plain` of the execute_result, if any.
    pub fn result(&self) -> Option<String> {
        self.messages
            .iter()
            .find_map(|message| match &message.content {
                Content::ExecuteResult(result) => {
                    result.data["text/plain"].as_str().map(str::to_owned)
                }
                _ => None,
            })
    }

    pub fn error(&self) -> Option<ErrorInfo> {
        self.messages
            .iter()
            .find_map(|message| match &message.content {
                Content::Error(error) => Some(error.clone()),
                _ => None,
            })
    }

    pub fn displays(&self) -> Vec<serde_json::Map<String, Value>> {
        self.messages
            .iter()
            .filter_map(|message| match &message.content {
                Content::DisplayData(display) => Some(display.data.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn reply(&self) -> ExecuteReply {
        self.messages
            .iter()
            .find_map(|message| match &message.content {
                Content::ExecuteReply(reply) => Some(reply.clone()),
                _ => None,
            })
            .expect("an execute_reply arrived")
    }
}

impl KernelSocket {
    /// Connects with the token in the `Authorization` header, legacy framing.
    pub async fn connect(address: &str, token: &str, kernel_id: &str) -> KernelSocket {
        KernelSocket::connect_with(address, Some(token), kernel_id, None)
            .await
            .expect("websocket connects")
    }

    pub async fn connect_with(
        address: &str,
        token: Option<&str>,
        kernel_id: &str,
        subprotocol: Option<&str>,
    ) -> Result<KernelSocket, tokio_tungstenite::tungstenite::Error> {
        let session = uuid::Uuid::new_v4().to_string();
        KernelSocket::connect_as(address, token, kernel_id, subprotocol, &session).await
    }

    /// Connects as client session `session`, e.g. to come back as a client that went away.
    pub async fn connect_as(
        address: &str,
        token: Option<&str>,
        kernel_id: &str,
        subprotocol: Option<&str>,
        session: &str,
    ) -> Result<KernelSocket, tokio_tungstenite::tungstenite::Error> {
        let session = session.to_owned();
        let url = format!("wss://{address}/api/kernels/{kernel_id}/channels?session_id={session}");
        let mut request = url.into_client_request()?;
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("token {token}").parse().unwrap());
        }
        if let Some(protocol) = subprotocol {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", protocol.parse().unwrap());
        }
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let connector = Connector::Rustls(super::client::tls_config());
        let (socket, response) =
            tokio_tungstenite::client_async_tls_with_config(request, tcp, None, Some(connector))
                .await?;
        let accepted_protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let framing = Framing::negotiate(accepted_protocol.as_deref());
        Ok(KernelSocket {
            socket,
            framing,
            session,
            accepted_protocol,
        })
    }

    /// Builds a request message from this client's session.
    pub fn message(&self, channel: Channel, msg_type: &str, content: Value) -> Message {
        let mut header = Header::new(msg_type, &self.session);
        header.username = "test".to_owned();
        Message {
            content: Content::from_value(msg_type, content).expect("test content is valid"),
            header,
            parent_header: None,
            metadata: Default::default(),
            channel,
        }
    }

    /// Sends a request and returns its msg_id.
    pub async fn send(&mut self, channel: Channel, msg_type: &str, content: Value) -> String {
        let message = self.message(channel, msg_type, content);
        let id = message.header.msg_id.clone();
        let frame = match wire::encode(&message, self.framing) {
            Payload::Text(text) => WsMessage::Text(text),
            Payload::Binary(bytes) => WsMessage::Binary(bytes),
        };
        self.socket.send(frame).await.expect("frame is sent");
        id
    }

    pub async fn send_raw(&mut self, frame: WsMessage) {
        self.socket.send(frame).await.expect("frame is sent");
    }

    /// Sends a frame the server may refuse by closing the connection while it arrives.
    pub async fn try_send_raw(
        &mut self,
        frame: WsMessage,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.socket.send(frame).await
    }

    /// The next frame of any kind, pings and pongs skipped.
    pub async fn recv_raw(&mut self) -> Option<WsMessage> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("the server sends something in time");
            match frame {
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                Some(Ok(frame)) => return Some(frame),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next Jupyter message.
    pub async fn recv(&mut self) -> Message {
        let frame = self.recv_raw().await.expect("the connection stays open");
        let payload = match frame {
            WsMessage::Text(text) => Payload::Text(text),
            WsMessage::Binary(bytes) => Payload::Binary(bytes),
            other => panic!("expected a message, got {other:?}"),
        };
        wire::decode(&payload).expect("the server sends valid messages")
    }

    /// Collects every message whose parent is `msg_id` until its reply and the idle status
    /// that follows have both arrived.
    pub async fn collect(&mut self, msg_id: &str) -> Execution {
        let mut messages = Vec::new();
        let (mut replied, mut idle) = (false, false);
        while !(replied && idle) {
            let message = self.recv().await;
            let ours = message
                .parent_header
                .as_ref()
                .map(|parent| parent.msg_id == msg_id)
                .unwrap_or(false);
            if !ours {
                continue;
            }
            if message.header.msg_type.ends_with("_reply") {
                replied = true;
            }
            if let Content::Status(status) = &message.content {
                // A kernel that died mid-request never goes idle again.
                idle |= matches!(
                    status.execution_state,
                    ExecutionState::Idle | ExecutionState::Dead
                );
            }
            messages.push(message);
        }
        Execution { messages }
    }

    /// Waits for the first message with parent `msg_id` that `matches` accepts.
    pub async fn wait_for(
        &mut self,
        msg_id: &str,
        mut matches: impl FnMut(&Message) -> bool,
    ) -> Message {
        loop {
            let message = self.recv().await;
            let ours = message
                .parent_header
                .as_ref()
                .map(|parent| parent.msg_id == msg_id)
                .unwrap_or(false);
            if ours && matches(&message) {
                return message;
            }
        }
    }

    /// Waits for the reply to `msg_id`, ignoring everything else.
    pub async fn reply_to(&mut self, msg_id: &str) -> Message {
        self.wait_for(msg_id, |message| {
            message.header.msg_type.ends_with("_reply")
        })
        .await
    }

    pub async fn execute(&mut self, code: &str) -> Execution {
        let id = self.send_execute(code).await;
        self.collect(&id).await
    }

    pub async fn send_execute(&mut self, code: &str) -> String {
        self.send(
            Channel::Shell,
            "execute_request",
            json!({"code": code, "silent": false, "store_history": true,
                   "user_expressions": {}, "allow_stdin": true, "stop_on_error": true}),
        )
        .await
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
