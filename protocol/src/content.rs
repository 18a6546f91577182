//! Typed contents of the Jupyter messages cellgate sends and understands.
//!
//! MIME bundles and metadata stay raw JSON: the messaging spec leaves them open.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::names::closed_names;

/// A MIME bundle: `{"text/plain": "...", "image/png": "<base64>", ...}`.
pub type MimeBundle = Map<String, Value>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    pub code: String,
    #[serde(default)]
    pub silent: bool,
    #[serde(default = "yes")]
    pub store_history: bool,
    #[serde(default)]
    pub user_expressions: Map<String, Value>,
    #[serde(default = "yes")]
    pub allow_stdin: bool,
    #[serde(default = "yes")]
    pub stop_on_error: bool,
}

fn yes() -> bool {
    true
}

/// `ok`, `error` or `aborted`, the outcome every reply carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyStatus {
    Ok,
    Error,
    Aborted,
}

/// The error fields of a reply or of an `error` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub ename: String,
    pub evalue: String,
    #[serde(default)]
    pub traceback: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteReply {
    pub status: ReplyStatus,
    pub execution_count: u64,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(default)]
    pub user_expressions: Map<String, Value>,
    #[serde(default)]
    pub payload: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanguageInfo {
    pub name: String,
    pub version: String,
    pub mimetype: String,
    pub file_extension: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pygments_lexer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codemirror_mode: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelInfoReply {
    pub status: ReplyStatus,
    pub protocol_version: String,
    pub implementation: String,
    pub implementation_version: String,
    pub language_info: LanguageInfo,
    pub banner: String,
    #[serde(default)]
    pub help_links: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompleteRequest {
    pub code: String,
    pub cursor_pos: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompleteReply {
    pub status: ReplyStatus,
    pub matches: Vec<String>,
    pub cursor_start: usize,
    pub cursor_end: usize,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsCompleteRequest {
    pub code: String,
}

closed_names! {
    /// Whether code is ready to run, as an `is_complete_reply` judges it.
    pub enum IsCompleteStatus: "is_complete status" {
        /// It can run as it is.
        Complete = "complete",
        /// It needs more lines; `indent` says how the next one starts.
        Incomplete = "incomplete",
        /// It cannot run, whatever follows.
        Invalid = "invalid",
        /// The kernel cannot tell.
        Unknown = "unknown",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsCompleteReply {
    pub status: IsCompleteStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectRequest {
    pub code: String,
    pub cursor_pos: usize,
    #[serde(default)]
    pub detail_level: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectReply {
    pub status: ReplyStatus,
    pub found: bool,
    #[serde(default)]
    pub data: MimeBundle,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// Which part of the input history a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryAccess {
    /// The last `n` entries.
    Tail,
    /// Entries `start..stop` of one session.
    Range,
    /// Entries whose input matches a glob `pattern`.
    Search,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRequest {
    /// Whether each entry carries its output too.
    #[serde(default)]
    pub output: bool,
    #[serde(default)]
    pub raw: bool,
    #[serde(default = "tail")]
    pub hist_access_type: HistoryAccess,
    /// For `range`: the session, counted from the current one (0) backwards when negative.
    #[serde(default)]
    pub session: i64,
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub stop: Option<i64>,
    /// For `tail` and `search`: how many entries at most.
    #[serde(default)]
    pub n: Option<usize>,
    #[serde(default)]
    pub pattern: String,
    /// For `search`: each input once, its latest occurrence.
    #[serde(default)]
    pub unique: bool,
}

fn tail() -> HistoryAccess {
    HistoryAccess::Tail
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryReply {
    pub status: ReplyStatus,
    /// `[session, line, input]`, or `[session, line, [input, output]]` when output was asked.
    pub history: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommInfoReply {
    pub status: ReplyStatus,
    pub comms: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShutdownRequest {
    #[serde(default)]
    pub restart: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShutdownReply {
    pub status: ReplyStatus,
    pub restart: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimpleReply {
    pub status: ReplyStatus,
}

/// A reply refusing a request, with the reason in the error fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub status: ReplyStatus,
    /// Present on refused `execute_request`s, whose replies always carry a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_count: Option<u64>,
    #[serde(flatten)]
    pub error: ErrorInfo,
}

closed_names! {
    /// A kernel's execution state: what iopub `status` messages announce (`starting`, `busy`,
    /// `idle`, and `restarting` and `dead` as Jupyter servers add them) and what the REST
    /// model of a kernel reports.
    pub enum ExecutionState: "execution state" {
        Starting = "starting",
        Idle = "idle",
        Busy = "busy",
        Restarting = "restarting",
        Dead = "dead",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub execution_state: ExecutionState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteInput {
    pub code: String,
    pub execution_count: u64,
}

closed_names! {
    /// The output stream a `stream` message carries text of.
    pub enum StreamName: "stream name" {
        Stdout = "stdout",
        Stderr = "stderr",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    pub name: StreamName,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisplayData {
    pub data: MimeBundle,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub transient: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteResult {
    pub execution_count: u64,
    pub data: MimeBundle,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClearOutput {
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRequest {
    pub prompt: String,
    #[serde(default)]
    pub password: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputReply {
    pub value: String,
}

/// The content of a message, decoded according to its header's `msg_type`.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    ExecuteRequest(ExecuteRequest),
    ExecuteReply(ExecuteReply),
    KernelInfoRequest,
    KernelInfoReply(Box<KernelInfoReply>),
    CompleteRequest(CompleteRequest),
    CompleteReply(CompleteReply),
    IsCompleteRequest(IsCompleteRequest),
    IsCompleteReply(IsCompleteReply),
    InspectRequest(InspectRequest),
    InspectReply(InspectReply),
    HistoryRequest(HistoryRequest),
    HistoryReply(HistoryReply),
    CommInfoRequest(Map<String, Value>),
    CommInfoReply(CommInfoReply),
    ShutdownRequest(ShutdownRequest),
    ShutdownReply(ShutdownReply),
    InterruptRequest,
    InterruptReply(SimpleReply),
    Status(Status),
    ExecuteInput(ExecuteInput),
    Stream(Stream),
    DisplayData(DisplayData),
    /// Replaces what an earlier `display_data` with the same `transient.display_id` showed.
    UpdateDisplayData(DisplayData),
    ExecuteResult(ExecuteResult),
    Error(ErrorInfo),
    ClearOutput(ClearOutput),
    InputRequest(InputRequest),
    InputReply(InputReply),
    /// A reply that refuses the request it answers (`status: error`); `msg_type` names it.
    ErrorReply {
        msg_type: String,
        reply: ErrorReply,
    },
    /// A message type cellgate does not handle; kept whole so it can be answered or relayed.
    Other {
        msg_type: String,
        content: Value,
    },
}

/// Missing content (`null`) reads as `{}`, as jupyter_server passes it on to kernels.
fn parse<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    match value {
        Value::Null => serde_json::from_value(Value::Object(Map::new())),
        value => serde_json::from_value(value),
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl Content {
    /// Decodes `value` as the content of a `msg_type` message.
    pub fn from_value(msg_type: &str, value: Value) -> Result<Content, serde_json::Error> {
        Ok(match msg_type {
            "execute_request" => Content::ExecuteRequest(parse(value)?),
            "execute_reply" => Content::ExecuteReply(parse(value)?),
            "kernel_info_request" => Content::KernelInfoRequest,
            "kernel_info_reply" => Content::KernelInfoReply(Box::new(parse(value)?)),
            "complete_request" => Content::CompleteRequest(parse(value)?),
            "complete_reply" => Content::CompleteReply(parse(value)?),
            "is_complete_request" => Content::IsCompleteRequest(parse(value)?),
            "is_complete_reply" => Content::IsCompleteReply(parse(value)?),
            "inspect_request" => Content::InspectRequest(parse(value)?),
            "inspect_reply" => Content::InspectReply(parse(value)?),
            "history_request" => Content::HistoryRequest(parse(value)?),
            "history_reply" => Content::HistoryReply(parse(value)?),
            "comm_info_request" => Content::CommInfoRequest(object(value)),
            "comm_info_reply" => Content::CommInfoReply(parse(value)?),
            "shutdown_request" => Content::ShutdownRequest(parse(value)?),
            "shutdown_reply" => Content::ShutdownReply(parse(value)?),
            "interrupt_request" => Content::InterruptRequest,
            "interrupt_reply" => Content::InterruptReply(parse(value)?),
            "status" => Content::Status(parse(value)?),
            "execute_input" => Content::ExecuteInput(parse(value)?),
            "stream" => Content::Stream(parse(value)?),
            "display_data" => Content::DisplayData(parse(value)?),
            "update_display_data" => Content::UpdateDisplayData(parse(value)?),
            "execute_result" => Content::ExecuteResult(parse(value)?),
            "error" => Content::Error(parse(value)?),
            "clear_output" => Content::ClearOutput(parse(value)?),
            "input_request" => Content::InputRequest(parse(value)?),
            "input_reply" => Content::InputReply(parse(value)?),
            other => Content::Other {
                msg_type: other.to_owned(),
                content: value,
            },
        })
    }

    /// The `msg_type` a header must carry for this content.
    pub fn msg_type(&self) -> &str {
        match self {
            Content::ExecuteRequest(_) => "execute_request",
            Content::ExecuteReply(_) => "execute_reply",
            Content::KernelInfoRequest => "kernel_info_request",
            Content::KernelInfoReply(_) => "kernel_info_reply",
            Content::CompleteRequest(_) => "complete_request",
            Content::CompleteReply(_) => "complete_reply",
            Content::IsCompleteRequest(_) => "is_complete_request",
            Content::IsCompleteReply(_) => "is_complete_reply",
            Content::InspectRequest(_) => "inspect_request",
            Content::InspectReply(_) => "inspect_reply",
            Content::HistoryRequest(_) => "history_request",
            Content::HistoryReply(_) => "history_reply",
            Content::CommInfoRequest(_) => "comm_info_request",
            Content::CommInfoReply(_) => "comm_info_reply",
            Content::ShutdownRequest(_) => "shutdown_request",
            Content::ShutdownReply(_) => "shutdown_reply",
            Content::InterruptRequest => "interrupt_request",
            Content::InterruptReply(_) => "interrupt_reply",
            Content::Status(_) => "status",
            Content::ExecuteInput(_) => "execute_input",
            Content::Stream(_) => "stream",
            Content::DisplayData(_) => "display_data",
            Content::UpdateDisplayData(_) => "update_display_data",
            Content::ExecuteResult(_) => "execute_result",
            Content::Error(_) => "error",
            Content::ClearOutput(_) => "clear_output",
            Content::InputRequest(_) => "input_request",
            Content::InputReply(_) => "input_reply",
            Content::ErrorReply { msg_type, .. } => msg_type,
            Content::Other { msg_type, .. } => msg_type,
        }
    }

    /// The content as the JSON object that goes on the wire.
    pub fn to_value(&self) -> Value {
        fn json<T: Serialize>(value: &T) -> Value {
            serde_json::to_value(value).unwrap_or(Value::Null)
        }
        match self {
            Content::ExecuteRequest(c) => json(c),
            Content::ExecuteReply(c) => json(c),
            Content::KernelInfoRequest | Content::InterruptRequest => Value::Object(Map::new()),
            Content::KernelInfoReply(c) => json(c),
            Content::CompleteRequest(c) => json(c),
            Content::CompleteReply(c) => json(c),
            Content::IsCompleteRequest(c) => json(c),
            Content::IsCompleteReply(c) => json(c),
            Content::InspectRequest(c) => json(c),
            Content::InspectReply(c) => json(c),
            Content::HistoryRequest(c) => json(c),
            Content::CommInfoRequest(c) => Value::Object(c.clone()),
            Content::HistoryReply(c) => json(c),
            Content::CommInfoReply(c) => json(c),
            Content::ShutdownRequest(c) => json(c),
            Content::ShutdownReply(c) => json(c),
            Content::InterruptReply(c) => json(c),
            Content::Status(c) => json(c),
            Content::ExecuteInput(c) => json(c),
            Content::Stream(c) => json(c),
            Content::DisplayData(c) | Content::UpdateDisplayData(c) => json(c),
            Content::ExecuteResult(c) => json(c),
            Content::Error(c) => json(c),
            Content::ClearOutput(c) => json(c),
            Content::InputRequest(c) => json(c),
            Content::InputReply(c) => json(c),
            Content::ErrorReply { reply, .. } => json(reply),
            Content::Other { content, .. } => content.clone(),
        }
    }

    /// The reply type for a request type, following the `_request` -> `_reply` convention.
    pub fn reply_type(request_type: &str) -> String {
        match request_type.strip_suffix("_request") {
            Some(stem) => format!("{stem}_reply"),
            None => format!("{request_type}_reply"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn execute_reply_error_flattens_its_fields() {
        let reply = ExecuteReply {
            status: ReplyStatus::Error,
            execution_count: 3,
            error: Some(ErrorInfo {
                ename: "ZeroDivisionError".into(),
                evalue: "division by zero".into(),
                traceback: vec!["line 1".into()],
            }),
            user_expressions: Map::new(),
            payload: Vec::new(),
        };
        let value = Content::ExecuteReply(reply.clone()).to_value();
        assert_eq!(value["status"], "error");
        assert_eq!(value["ename"], "ZeroDivisionError");
        assert_eq!(value["execution_count"], 3);
        let back = Content::from_value("execute_reply", value).unwrap();
        assert_eq!(back, Content::ExecuteReply(reply));
    }

    #[test]
    fn ok_reply_has_no_error_fields() {
        let value = Content::ExecuteReply(ExecuteReply {
            status: ReplyStatus::Ok,
            execution_count: 1,
            error: None,
            user_expressions: Map::new(),
            payload: Vec::new(),
        })
        .to_value();
        assert!(value.get("ename").is_none());
        assert_eq!(value["user_expressions"], json!({}));
    }

    #[test]
    fn execute_request_defaults_follow_the_spec() {
        let content = Content::from_value("execute_request", json!({"code": "x"})).unwrap();
        let Content::ExecuteRequest(request) = content else {
            panic!("not an execute request")
        };
        assert!(request.store_history && request.allow_stdin && request.stop_on_error);
        assert!(!request.silent);
    }

    #[test]
    fn malformed_known_content_is_an_error() {
        assert!(Content::from_value("execute_request", json!({"code": 5})).is_err());
        assert!(Content::from_value("complete_request", json!({})).is_err());
    }

    #[test]
    fn kernel_states_keep_their_jupyter_names() {
        crate::names::assert_round_trips(
            ExecutionState::ALL,
            &["starting", "idle", "busy", "restarting", "dead"],
        );
        let busy = Content::Status(Status {
            execution_state: ExecutionState::Busy,
        });
        assert_eq!(busy.to_value(), json!({"execution_state": "busy"}));
        let idle = Content::from_value("status", json!({"execution_state": "idle"})).unwrap();
        assert_eq!(
            idle,
            Content::Status(Status {
                execution_state: ExecutionState::Idle
            })
        );
        assert!(Content::from_value("status", json!({"execution_state": "Idle"})).is_err());
    }

    #[test]
    fn stream_names_keep_their_jupyter_names() {
        crate::names::assert_round_trips(StreamName::ALL, &["stdout", "stderr"]);
        let stream = Content::Stream(Stream {
            name: StreamName::Stderr,
            text: "oops\n".into(),
        });
        assert_eq!(
            stream.to_value(),
            json!({"name": "stderr", "text": "oops\n"})
        );
        assert_eq!(
            Content::from_value("stream", stream.to_value()).unwrap(),
            stream
        );
        assert!(Content::from_value("stream", json!({"name": "stdin", "text": ""})).is_err());
    }

    #[test]
    fn is_complete_statuses_keep_their_jupyter_names() {
        crate::names::assert_round_trips(
            IsCompleteStatus::ALL,
            &["complete", "incomplete", "invalid", "unknown"],
        );
        let reply = Content::IsCompleteReply(IsCompleteReply {
            status: IsCompleteStatus::Incomplete,
            indent: Some("    ".into()),
        });
        assert_eq!(
            reply.to_value(),
            json!({"status": "incomplete", "indent": "    "})
        );
        let complete =
            Content::from_value("is_complete_reply", json!({"status": "complete"})).unwrap();
        assert_eq!(
            complete,
            Content::IsCompleteReply(IsCompleteReply {
                status: IsCompleteStatus::Complete,
                indent: None,
            })
        );
    }

    #[test]
    fn reply_type_follows_convention() {
        assert_eq!(
            Content::reply_type("kernel_info_request"),
            "kernel_info_reply"
        );
        assert_eq!(Content::reply_type("odd"), "odd_reply");
    }
}
