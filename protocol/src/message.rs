//! The Jupyter message envelope: header, parent header, metadata, typed content and channel.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::content::Content;

/// Version of the Jupyter messaging protocol spoken by cellgate kernels.
pub const PROTOCOL_VERSION: &str = "5.3";

/// The four channels a Jupyter client multiplexes over one websocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Shell,
    Iopub,
    Stdin,
    Control,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Shell => "shell",
            Channel::Iopub => "iopub",
            Channel::Stdin => "stdin",
            Channel::Control => "control",
        }
    }

    pub fn parse(name: &str) -> Option<Channel> {
        match name {
            "shell" => Some(Channel::Shell),
            "iopub" => Some(Channel::Iopub),
            "stdin" => Some(Channel::Stdin),
            "control" => Some(Channel::Control),
            _ => None,
        }
    }
}

/// A message header. Fields a client left out default to empty; fields cellgate does not know
/// are kept in `extra` so a reply's `parent_header` echoes the request's header unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub msg_id: String,
    pub msg_type: String,
    #[serde(default, deserialize_with = "lenient_text")]
    pub session: String,
    #[serde(default, deserialize_with = "lenient_text")]
    pub username: String,
    /// An ISO 8601 string from kernels; clients send what they like (jupyter_server's gateway
    /// client a number of seconds, some none at all), and it is echoed back as it came.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub date: Value,
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_version() -> String {
    PROTOCOL_VERSION.to_owned()
}

/// A header string that a client may also have sent as `null` or a number, as Python clients
/// built on jupyter_client's `Session` tolerate.
fn lenient_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(text) => text,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

impl Header {
    /// A fresh header for a message sent by a kernel.
    pub fn new(msg_type: &str, session: &str) -> Header {
        Header {
            msg_id: uuid::Uuid::new_v4().to_string(),
            msg_type: msg_type.to_owned(),
            session: session.to_owned(),
            username: "kernel".to_owned(),
            date: Value::String(timestamp_now()),
            version: PROTOCOL_VERSION.to_owned(),
            extra: Map::new(),
        }
    }
}

/// The current time in the form Jupyter uses: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn timestamp_now() -> String {
    format_timestamp(chrono::Utc::now())
}

pub fn format_timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A whole Jupyter message with its content decoded by `msg_type`.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub header: Header,
    pub parent_header: Option<Header>,
    pub metadata: Map<String, Value>,
    pub content: Content,
    pub channel: Channel,
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("message has no usable header: {0}")]
    Header(#[source] serde_json::Error),
    #[error("message names an unknown channel: {0:?}")]
    Channel(String),
    #[error("content of {msg_type} is malformed: {source}")]
    Content {
        msg_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("binary frame is malformed: {0}")]
    Frame(&'static str),
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(default)]
    header: Value,
    #[serde(default)]
    parent_header: Value,
    #[serde(default)]
    metadata: Value,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    channel: Option<String>,
}

/// The channel of a message that names none. jupyter_server's gateway client sends every
/// message without one, its answers to `input()` included; those can only be meant for stdin.
fn implied_channel(header: &Value) -> Channel {
    match header.get("msg_type").and_then(Value::as_str) {
        Some("input_reply") => Channel::Stdin,
        _ => Channel::Shell,
    }
}

impl Message {
    /// A message from the kernel answering (or caused by) `parent`.
    pub fn reply_to(parent: &Header, session: &str, channel: Channel, content: Content) -> Message {
        Message {
            header: Header::new(content.msg_type(), session),
            parent_header: Some(parent.clone()),
            metadata: Map::new(),
            content,
            channel,
        }
    }

    /// Decodes the legacy JSON websocket frame: one object with a top-level `channel`. As in
    /// jupyter_server, a message without one (or with `null`) is for the shell channel, but
    /// for `input_reply`, which only the stdin channel takes.
    pub fn from_json(text: &str) -> Result<Message, MessageError> {
        let raw: RawMessage = serde_json::from_str(text).map_err(MessageError::Json)?;
        let channel = match raw.channel {
            None => implied_channel(&raw.header),
            Some(name) => Channel::parse(&name).ok_or(MessageError::Channel(name))?,
        };
        Message::from_values(
            channel,
            raw.header,
            raw.parent_header,
            raw.metadata,
            raw.content,
        )
    }

    /// Builds a message from its parts, as both websocket framings carry them.
    pub fn from_values(
        channel: Channel,
        header: Value,
        parent_header: Value,
        metadata: Value,
        content: Value,
    ) -> Result<Message, MessageError> {
        let header: Header = serde_json::from_value(header).map_err(MessageError::Header)?;
        let parent_header = match parent_header {
            Value::Object(map) if map.is_empty() => None,
            Value::Null => None,
            other => serde_json::from_value(other).ok(),
        };
        let metadata = match metadata {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let content = Content::from_value(&header.msg_type, content).map_err(|source| {
            MessageError::Content {
                msg_type: header.msg_type.clone(),
                source,
            }
        })?;
        Ok(Message {
            header,
            parent_header,
            metadata,
            content,
            channel,
        })
    }

    /// The message as a JSON object in the legacy websocket framing.
    pub fn to_json_value(&self) -> Value {
        let mut object = Map::new();
        let header = serde_json::to_value(&self.header).unwrap_or(Value::Null);
        object.insert("msg_id".into(), Value::String(self.header.msg_id.clone()));
        object.insert(
            "msg_type".into(),
            Value::String(self.header.msg_type.clone()),
        );
        object.insert("header".into(), header);
        object.insert("parent_header".into(), self.parent_header_value());
        object.insert("metadata".into(), Value::Object(self.metadata.clone()));
        object.insert("content".into(), self.content.to_value());
        object.insert("buffers".into(), Value::Array(Vec::new()));
        object.insert(
            "channel".into(),
            Value::String(self.channel.as_str().into()),
        );
        Value::Object(object)
    }

    pub fn to_json(&self) -> String {
        self.to_json_value().to_string()
    }

    pub fn parent_header_value(&self) -> Value {
        match &self.parent_header {
            Some(header) => serde_json::to_value(header).unwrap_or(Value::Null),
            None => Value::Object(Map::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{ExecuteRequest, ExecutionState, Status};
    use serde_json::json;

    #[test]
    fn legacy_frame_round_trips_execute_request() {
        let text = json!({
            "header": {"msg_id": "a1", "msg_type": "execute_request", "session": "s",
                       "username": "u", "date": "", "version": "5.3", "subshell_id": null},
            "parent_header": {},
            "metadata": {},
            "content": {"code": "1+1", "silent": false},
            "channel": "shell"
        })
        .to_string();
        let message = Message::from_json(&text).unwrap();
        assert_eq!(message.channel, Channel::Shell);
        assert!(message.parent_header.is_none());
        match &message.content {
            Content::ExecuteRequest(ExecuteRequest { code, silent, .. }) => {
                assert_eq!(code, "1+1");
                assert!(!silent);
            }
            other => panic!("decoded as {other:?}"),
        }
        let value = message.to_json_value();
        assert_eq!(value["msg_id"], "a1");
        assert_eq!(value["msg_type"], "execute_request");
        assert_eq!(value["header"]["subshell_id"], Value::Null);
        assert!(value["header"]
            .as_object()
            .unwrap()
            .contains_key("subshell_id"));
    }

    #[test]
    fn reply_keeps_the_request_header_as_parent() {
        let parent = Header::new("execute_request", "client");
        let reply = Message::reply_to(
            &parent,
            "kernel",
            Channel::Iopub,
            Content::Status(Status {
                execution_state: ExecutionState::Busy,
            }),
        );
        let value = reply.to_json_value();
        assert_eq!(value["parent_header"]["msg_id"], parent.msg_id.as_str());
        assert_eq!(value["header"]["msg_type"], "status");
        assert_eq!(value["channel"], "iopub");
        let date = value["header"]["date"].as_str().unwrap();
        assert_eq!(date.len(), "2024-01-01T00:00:00.000000Z".len(), "{date}");
    }

    #[test]
    fn rejects_unknown_channel_and_bad_json() {
        assert!(matches!(
            Message::from_json("{\"header\":{\"msg_id\":\"x\",\"msg_type\":\"y\"},\"channel\":\"nope\"}"),
            Err(MessageError::Channel(name)) if name == "nope"
        ));
        assert!(matches!(
            Message::from_json("{"),
            Err(MessageError::Json(_))
        ));
        assert!(matches!(
            Message::from_json("{\"header\":{},\"channel\":\"shell\"}"),
            Err(MessageError::Header(_))
        ));
        assert!(matches!(
            Message::from_json("{\"channel\":\"shell\"}"),
            Err(MessageError::Header(_))
        ));
    }

    #[test]
    fn accepts_what_jupyter_servers_gateway_client_sends() {
        // jupyter_server's GatewayKernelClient: a numeric date, no top-level channel, no
        // parent_header, metadata or buffers.
        let text = json!({
            "header": {"msg_id": "m1", "msg_type": "execute_request", "session": "s",
                       "username": "u", "date": 1796643177.02, "version": "5.3"},
            "content": {"code": "1+1"}
        })
        .to_string();
        let message = Message::from_json(&text).unwrap();
        assert_eq!(message.channel, Channel::Shell);
        assert!(message.parent_header.is_none());
        assert!(message.metadata.is_empty());
        let reply = Message::reply_to(
            &message.header,
            "kernel",
            Channel::Shell,
            Content::Status(Status {
                execution_state: ExecutionState::Idle,
            }),
        );
        assert_eq!(
            reply.to_json_value()["parent_header"]["date"],
            json!(1796643177.02)
        );
    }

    #[test]
    fn an_input_reply_without_a_channel_is_for_stdin() {
        let text = json!({
            "header": {"msg_id": "m3", "msg_type": "input_reply", "date": 1.5},
            "content": {"value": "42"}
        })
        .to_string();
        assert_eq!(Message::from_json(&text).unwrap().channel, Channel::Stdin);
    }

    #[test]
    fn a_header_without_date_or_with_null_fields_is_accepted() {
        let text = json!({
            "header": {"msg_id": "m2", "msg_type": "kernel_info_request", "session": null,
                       "username": 7},
            "channel": null, "parent_header": null, "metadata": null, "content": null
        })
        .to_string();
        let message = Message::from_json(&text).unwrap();
        assert_eq!(message.channel, Channel::Shell);
        assert_eq!(message.header.session, "");
        assert_eq!(message.header.username, "7");
        assert!(message.header.date.is_null());
        let echoed = serde_json::to_value(&message.header).unwrap();
        assert!(echoed.get("date").is_none(), "{echoed}");
        assert!(matches!(message.content, Content::KernelInfoRequest));
    }

    #[test]
    fn unknown_message_type_is_kept_for_an_error_reply() {
        let text = json!({"header": {"msg_id": "1", "msg_type": "frobnicate_request"},
                          "content": {"x": 1}, "channel": "shell"})
        .to_string();
        let message = Message::from_json(&text).unwrap();
        assert!(matches!(message.content, Content::Other { .. }));
        assert_eq!(message.content.msg_type(), "frobnicate_request");
    }
}
