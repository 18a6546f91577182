//! The driver protocol: how a kernel runner talks to a long-lived language driver.
//!
//! The driver's own stdin and stdout carry frames; the user's code never sees them, because the
//! driver points file descriptors 0, 1 and 2 of the code it runs elsewhere (stdout and stderr go
//! to pipes the driver reads and forwards as `stdout`/`stderr` frames). A frame is one ASCII
//! header line, `KIND LEN\n`, followed by exactly `LEN` bytes of body. `docs/driver-protocol.md`
//! lists every kind with its body; this module is the reference implementation of both ends.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::content::{ErrorInfo, IsCompleteStatus, LanguageInfo, MimeBundle, ReplyStatus};

/// The longest header line accepted, newline included.
pub const MAX_HEADER_LEN: usize = 64;
/// The largest body accepted by default. A bigger frame is skipped, never buffered, and the
/// runner shows a notice in its place (see [`Event::in_place_of_oversized`]).
pub const DEFAULT_MAX_BODY: usize = 64 * 1024 * 1024;

/// One frame, with its body still undecoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: String,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame header is longer than {MAX_HEADER_LEN} bytes")]
    HeaderTooLong,
    #[error("frame header {0:?} is not `KIND LEN`")]
    BadHeader(String),
    /// The decoder skips this frame's body and stays in step: the next call goes on with the
    /// frame after it.
    #[error("{kind} frame of {len} bytes is over the limit of {max}")]
    BodyTooLarge {
        kind: String,
        len: usize,
        max: usize,
    },
    #[error("{kind} frame has a malformed body: {reason}")]
    BadBody { kind: String, reason: String },
    #[error("unknown frame kind {0:?}")]
    UnknownKind(String),
}

impl Frame {
    pub fn new(kind: &str, body: impl Into<Vec<u8>>) -> Frame {
        Frame {
            kind: kind.to_owned(),
            body: body.into(),
        }
    }

    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{} {}\n", self.kind, self.body.len()).into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    fn json<T: for<'de> Deserialize<'de>>(&self) -> Result<T, FrameError> {
        serde_json::from_slice(&self.body).map_err(|e| FrameError::BadBody {
            kind: self.kind.clone(),
            reason: e.to_string(),
        })
    }

    fn text(&self) -> Result<String, FrameError> {
        String::from_utf8(self.body.clone()).map_err(|e| FrameError::BadBody {
            kind: self.kind.clone(),
            reason: e.to_string(),
        })
    }
}

/// Splits a byte stream into frames. Feed it whatever arrives; take frames as they complete.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    max_body: usize,
    /// Bytes of an oversized body still to be thrown away as they arrive.
    skipping: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_BODY)
    }
}

impl FrameDecoder {
    pub fn new(max_body: usize) -> FrameDecoder {
        FrameDecoder {
            buffer: Vec::new(),
            max_body,
            skipping: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let skipped = self.skipping.min(bytes.len());
        self.skipping -= skipped;
        self.buffer.extend_from_slice(&bytes[skipped..]);
    }

    /// The next complete frame, `None` when more bytes are needed. After
    /// [`FrameError::BodyTooLarge`] the decoder throws that body away as it arrives and goes
    /// on with the next frame; after any other error the stream is out of step and should be
    /// dropped.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(newline) = self
            .buffer
            .iter()
            .take(MAX_HEADER_LEN)
            .position(|&b| b == b'\n')
        else {
            if self.buffer.len() >= MAX_HEADER_LEN {
                return Err(FrameError::HeaderTooLong);
            }
            return Ok(None);
        };
        let header = &self.buffer[..newline];
        let header_text = String::from_utf8_lossy(header).into_owned();
        let (kind, len) = header_text
            .split_once(' ')
            .ok_or_else(|| FrameError::BadHeader(header_text.clone()))?;
        let valid_kind = !kind.is_empty()
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit());
        let valid_len = !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit());
        let len: usize = match len.parse() {
            Ok(len) if valid_kind && valid_len => len,
            _ => return Err(FrameError::BadHeader(header_text)),
        };
        if len > self.max_body {
            let kind = kind.to_owned();
            let start = newline + 1;
            let here = (self.buffer.len() - start).min(len);
            self.buffer.drain(..start + here);
            self.skipping = len - here;
            return Err(FrameError::BodyTooLarge {
                kind,
                len,
                max: self.max_body,
            });
        }
        let start = newline + 1;
        if self.buffer.len() < start + len {
            return Ok(None);
        }
        let kind = kind.to_owned();
        let body = self.buffer[start..start + len].to_vec();
        self.buffer.drain(..start + len);
        Ok(Some(Frame { kind, body }))
    }
}

/// What a runner asks of a driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run a cell; the driver answers with output frames and then one `done`.
    Execute {
        code: String,
    },
    Complete {
        code: String,
        cursor_pos: usize,
    },
    IsComplete {
        code: String,
    },
    Inspect {
        code: String,
        cursor_pos: usize,
        detail_level: u8,
    },
    /// The user's answer to the driver's last `input_request`.
    InputReply {
        value: String,
    },
    /// No answer will come to the last `input_request` (the client has no stdin).
    InputAbort,
    /// Exit cleanly.
    Shutdown,
}

#[derive(Serialize, Deserialize)]
struct CursorBody {
    code: String,
    #[serde(default)]
    cursor_pos: usize,
    #[serde(default)]
    detail_level: u8,
}

impl Command {
    pub fn to_frame(&self) -> Frame {
        let cursor = |code: &str, cursor_pos: usize, detail_level: u8| {
            serde_json::to_vec(&CursorBody {
                code: code.to_owned(),
                cursor_pos,
                detail_level,
            })
            .unwrap_or_default()
        };
        match self {
            Command::Execute { code } => Frame::new("execute", code.as_bytes()),
            Command::Complete { code, cursor_pos } => {
                Frame::new("complete", cursor(code, *cursor_pos, 0))
            }
            Command::IsComplete { code } => Frame::new("is_complete", cursor(code, 0, 0)),
            Command::Inspect {
                code,
                cursor_pos,
                detail_level,
            } => Frame::new("inspect", cursor(code, *cursor_pos, *detail_level)),
            Command::InputReply { value } => Frame::new("input_reply", value.as_bytes()),
            Command::InputAbort => Frame::new("input_abort", Vec::new()),
            Command::Shutdown => Frame::new("shutdown", Vec::new()),
        }
    }

    pub fn from_frame(frame: &Frame) -> Result<Command, FrameError> {
        Ok(match frame.kind.as_str() {
            "execute" => Command::Execute {
                code: frame.text()?,
            },
            "complete" => {
                let body: CursorBody = frame.json()?;
                Command::Complete {
                    code: body.code,
                    cursor_pos: body.cursor_pos,
                }
            }
            "is_complete" => Command::IsComplete {
                code: frame.json::<CursorBody>()?.code,
            },
            "inspect" => {
                let body: CursorBody = frame.json()?;
                Command::Inspect {
                    code: body.code,
                    cursor_pos: body.cursor_pos,
                    detail_level: body.detail_level,
                }
            }
            "input_reply" => Command::InputReply {
                value: frame.text()?,
            },
            "input_abort" => Command::InputAbort,
            "shutdown" => Command::Shutdown,
            other => return Err(FrameError::UnknownKind(other.to_owned())),
        })
    }
}

/// What a driver says once it is loaded and ready for its first command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    pub implementation: String,
    pub implementation_version: String,
    pub language_info: LanguageInfo,
    #[serde(default)]
    pub banner: String,
}

/// Rich output: a MIME bundle with its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RichOutput {
    pub data: MimeBundle,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// `{"display_id": ...}` for a display that a later `update_display` replaces.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub transient: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub status: ReplyStatus,
    /// The execute reply's payloads, such as `{"source": "page", "data": {...}, "start": 0}`
    /// for help shown in a pager (Python's `obj?`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payload: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputPrompt {
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub password: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completions {
    pub matches: Vec<String>,
    pub cursor_start: usize,
    pub cursor_end: usize,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completeness {
    pub status: IsCompleteStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inspection {
    pub found: bool,
    #[serde(default)]
    pub data: MimeBundle,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClearOutputEvent {
    #[serde(default)]
    pub wait: bool,
}

/// What a driver tells its runner.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Ready(Box<Ready>),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Display(RichOutput),
    /// New content for the display whose `transient.display_id` it names.
    UpdateDisplay(RichOutput),
    Result(RichOutput),
    Error(ErrorInfo),
    InputRequest(InputPrompt),
    ClearOutput(ClearOutputEvent),
    Done(Done),
    CompleteReply(Completions),
    IsCompleteReply(Completeness),
    InspectReply(Inspection),
    /// A diagnostic line for the runner's log; never shown to the user.
    Log(String),
}

impl Event {
    pub fn from_frame(frame: &Frame) -> Result<Event, FrameError> {
        Ok(match frame.kind.as_str() {
            "ready" => Event::Ready(Box::new(frame.json()?)),
            "stdout" => Event::Stdout(frame.body.clone()),
            "stderr" => Event::Stderr(frame.body.clone()),
            "display" => Event::Display(frame.json()?),
            "update_display" => Event::UpdateDisplay(frame.json()?),
            "result" => Event::Result(frame.json()?),
            "error" => Event::Error(frame.json()?),
            "input_request" => Event::InputRequest(frame.json()?),
            "clear_output" => Event::ClearOutput(frame.json()?),
            "done" => Event::Done(frame.json()?),
            "complete_reply" => Event::CompleteReply(frame.json()?),
            "is_complete_reply" => Event::IsCompleteReply(frame.json()?),
            "inspect_reply" => Event::InspectReply(frame.json()?),
            "log" => Event::Log(String::from_utf8_lossy(&frame.body).into_owned()),
            other => return Err(FrameError::UnknownKind(other.to_owned())),
        })
    }

    pub fn to_frame(&self) -> Frame {
        fn json<T: Serialize>(kind: &str, value: &T) -> Frame {
            Frame::new(kind, serde_json::to_vec(value).unwrap_or_default())
        }
        match self {
            Event::Ready(ready) => json("ready", ready.as_ref()),
            Event::Stdout(bytes) => Frame::new("stdout", bytes.clone()),
            Event::Stderr(bytes) => Frame::new("stderr", bytes.clone()),
            Event::Display(output) => json("display", output),
            Event::UpdateDisplay(output) => json("update_display", output),
            Event::Result(output) => json("result", output),
            Event::Error(error) => json("error", error),
            Event::InputRequest(prompt) => json("input_request", prompt),
            Event::ClearOutput(clear) => json("clear_output", clear),
            Event::Done(done) => json("done", done),
            Event::CompleteReply(reply) => json("complete_reply", reply),
            Event::IsCompleteReply(reply) => json("is_complete_reply", reply),
            Event::InspectReply(reply) => json("inspect_reply", reply),
            Event::Log(line) => Frame::new("log", line.as_bytes()),
        }
    }

    /// What the runner passes on instead of a `kind` frame of `len` bytes that was over the
    /// limit of `max` and skipped: a notice where the output would have been, and for the
    /// answers a client waits for (the cell's end, an error, a reply) an empty answer of the
    /// same kind, so that the kernel goes on. `None` for `ready` (a driver that cannot start
    /// is broken), `log` (nobody waits for it) and kinds the protocol does not have.
    pub fn in_place_of_oversized(kind: &str, len: usize, max: usize) -> Option<Event> {
        const MIB: f64 = 1024.0 * 1024.0;
        let notice = format!(
            "[cellgate: a {kind} output of {:.1} MiB was over the limit of {:.1} MiB and was dropped. The kernel is still running.]",
            len as f64 / MIB,
            max as f64 / MIB
        );
        let text = |notice: String| {
            let mut data = MimeBundle::new();
            data.insert("text/plain".into(), Value::String(notice));
            RichOutput {
                data,
                metadata: Map::new(),
                transient: Map::new(),
            }
        };
        Some(match kind {
            "stdout" | "stderr" => Event::Stderr(format!("\n{notice}\n").into_bytes()),
            // Without the display id there is nothing to update; the notice stands alone.
            "display" | "update_display" => Event::Display(text(notice)),
            "result" => Event::Result(text(notice)),
            "error" => Event::Error(ErrorInfo {
                ename: "OutputTooLarge".into(),
                evalue: notice.clone(),
                traceback: vec![notice],
            }),
            "input_request" => Event::InputRequest(InputPrompt {
                prompt: String::new(),
                password: false,
            }),
            "clear_output" => Event::ClearOutput(ClearOutputEvent { wait: false }),
            "done" => Event::Done(Done {
                status: ReplyStatus::Ok,
                payload: Vec::new(),
            }),
            "complete_reply" => Event::CompleteReply(Completions {
                matches: Vec::new(),
                cursor_start: 0,
                cursor_end: 0,
                metadata: Map::new(),
            }),
            "is_complete_reply" => Event::IsCompleteReply(Completeness {
                status: IsCompleteStatus::Unknown,
                indent: None,
            }),
            "inspect_reply" => Event::InspectReply(Inspection {
                found: false,
                data: MimeBundle::new(),
                metadata: Map::new(),
            }),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], chunk: usize) -> Result<Vec<Frame>, FrameError> {
        let mut decoder = FrameDecoder::default();
        let mut frames = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            decoder.push(piece);
            while let Some(frame) = decoder.next_frame()? {
                frames.push(frame);
            }
        }
        Ok(frames)
    }

    #[test]
    fn frames_survive_any_split() {
        let mut wire = Vec::new();
        let sent = vec![
            Event::Stdout(b"hi\n\x00\xff".to_vec()),
            Event::Done(Done {
                status: ReplyStatus::Ok,
                payload: Vec::new(),
            }),
            Event::Stderr(Vec::new()),
            Event::IsCompleteReply(Completeness {
                status: IsCompleteStatus::Incomplete,
                indent: Some("  ".into()),
            }),
            Event::UpdateDisplay(RichOutput {
                data: serde_json::from_str(r#"{"text/plain": "2"}"#).unwrap(),
                metadata: Map::new(),
                transient: serde_json::from_str(r#"{"display_id": "d"}"#).unwrap(),
            }),
            Event::Done(Done {
                status: ReplyStatus::Ok,
                payload: vec![serde_json::json!({"source": "page", "start": 0,
                                                 "data": {"text/plain": "help"}})],
            }),
        ];
        for event in &sent {
            wire.extend(event.to_frame().encode());
        }
        for chunk in [1, 2, 3, 7, 1000] {
            let frames = decode_all(&wire, chunk).unwrap();
            let events: Vec<Event> = frames
                .iter()
                .map(|frame| Event::from_frame(frame).unwrap())
                .collect();
            assert_eq!(events, sent, "chunk size {chunk}");
        }
    }

    #[test]
    fn commands_round_trip() {
        let commands = [
            Command::Execute {
                code: "print('é')\n".into(),
            },
            Command::Complete {
                code: "pri".into(),
                cursor_pos: 3,
            },
            Command::IsComplete {
                code: "if x:".into(),
            },
            Command::Inspect {
                code: "len".into(),
                cursor_pos: 2,
                detail_level: 1,
            },
            Command::InputReply { value: "42".into() },
            Command::InputAbort,
            Command::Shutdown,
        ];
        for command in commands {
            let frames = decode_all(&command.to_frame().encode(), 5).unwrap();
            assert_eq!(Command::from_frame(&frames[0]).unwrap(), command);
        }
    }

    #[test]
    fn header_is_strict() {
        for bad in [
            &b"stdout\n"[..],
            b"stdout -1\n",
            b"stdout +1\nx",
            b"Stdout 1\nx",
            b" 1\nx",
            b"stdout 1 2\nx",
        ] {
            assert!(
                matches!(decode_all(bad, 100), Err(FrameError::BadHeader(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'a'; MAX_HEADER_LEN + 1];
        assert_eq!(decode_all(&long, 100), Err(FrameError::HeaderTooLong));
    }

    #[test]
    fn oversized_body_is_refused_before_it_is_read() {
        let mut decoder = FrameDecoder::new(10);
        decoder.push(b"stdout 11\n");
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::BodyTooLarge {
                kind: "stdout".into(),
                len: 11,
                max: 10
            })
        );
    }

    #[test]
    fn an_oversized_body_is_skipped_and_the_next_frame_read_in_any_split() {
        let mut wire = b"display 25\n".to_vec();
        wire.extend_from_slice(&[b'x'; 25]);
        wire.extend_from_slice(&Frame::new("stdout", "after").encode());
        for chunk in 1..wire.len() {
            let mut decoder = FrameDecoder::new(10);
            let mut seen = Vec::new();
            for piece in wire.chunks(chunk) {
                decoder.push(piece);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => seen.push(Ok(frame)),
                        Ok(None) => break,
                        Err(error) => seen.push(Err(error)),
                    }
                }
            }
            assert_eq!(
                seen,
                vec![
                    Err(FrameError::BodyTooLarge {
                        kind: "display".into(),
                        len: 25,
                        max: 10
                    }),
                    Ok(Frame::new("stdout", "after")),
                ],
                "in pieces of {chunk}"
            );
            assert!(decoder.buffer.is_empty(), "in pieces of {chunk}");
        }
    }

    #[test]
    fn every_oversized_event_but_ready_and_log_has_a_stand_in() {
        let kinds = [
            "stdout",
            "stderr",
            "display",
            "update_display",
            "result",
            "error",
            "input_request",
            "clear_output",
            "done",
            "complete_reply",
            "is_complete_reply",
            "inspect_reply",
        ];
        for kind in kinds {
            let event = Event::in_place_of_oversized(kind, 70 << 20, 64 << 20);
            let event = event.unwrap_or_else(|| panic!("{kind} has a stand-in"));
            let expected = match kind {
                "stdout" => "stderr",
                "update_display" => "display",
                kind => kind,
            };
            assert_eq!(event.to_frame().kind, expected, "the stand-in of {kind}");
        }
        let notice = Event::in_place_of_oversized("stdout", 70 << 20, 64 << 20);
        let Some(Event::Stderr(text)) = notice else {
            panic!("an oversized stdout is a notice on stderr: {notice:?}");
        };
        assert!(String::from_utf8_lossy(&text).contains("70.0 MiB"));
        assert_eq!(
            Event::in_place_of_oversized("ready", 70 << 20, 64 << 20),
            None
        );
        assert_eq!(
            Event::in_place_of_oversized("log", 70 << 20, 64 << 20),
            None
        );
        assert_eq!(
            Event::in_place_of_oversized("bogus", 70 << 20, 64 << 20),
            None
        );
    }

    #[test]
    fn completeness_reads_what_drivers_send() {
        let frame = Frame::new(
            "is_complete_reply",
            r#"{"status":"incomplete","indent":""}"#,
        );
        assert_eq!(
            Event::from_frame(&frame).unwrap(),
            Event::IsCompleteReply(Completeness {
                status: IsCompleteStatus::Incomplete,
                indent: Some(String::new()),
            })
        );
        let unknown = Frame::new("is_complete_reply", r#"{"status":"unknown"}"#);
        assert!(matches!(
            Event::from_frame(&unknown),
            Ok(Event::IsCompleteReply(Completeness {
                status: IsCompleteStatus::Unknown,
                indent: None,
            }))
        ));
        assert!(matches!(
            Event::from_frame(&Frame::new("is_complete_reply", r#"{"status":"maybe"}"#)),
            Err(FrameError::BadBody { .. })
        ));
    }

    #[test]
    fn bad_bodies_and_kinds_are_reported() {
        assert!(matches!(
            Event::from_frame(&Frame::new("done", "{")),
            Err(FrameError::BadBody { .. })
        ));
        assert!(matches!(
            Event::from_frame(&Frame::new("bogus", "")),
            Err(FrameError::UnknownKind(_))
        ));
        assert!(matches!(
            Command::from_frame(&Frame::new("execute", vec![0xff])),
            Err(FrameError::BadBody { .. })
        ));
    }
}
