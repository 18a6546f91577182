//! The two websocket framings of Jupyter messages: the legacy JSON text frame, and the binary
//! `v1.kernel.websocket.jupyter.org` frame that jupyter_server speaks when a client offers it.

use serde_json::Value;

use crate::message::{Channel, Message, MessageError};

/// The websocket subprotocol name of the v1 binary framing.
pub const V1_SUBPROTOCOL: &str = "v1.kernel.websocket.jupyter.org";

/// Which framing one websocket connection speaks, fixed at the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    LegacyJson,
    V1,
}

impl Framing {
    /// The framing to speak given the client's `Sec-WebSocket-Protocol` offer.
    pub fn negotiate(offered: Option<&str>) -> Framing {
        let offers_v1 = offered
            .map(|list| list.split(',').any(|name| name.trim() == V1_SUBPROTOCOL))
            .unwrap_or(false);
        if offers_v1 {
            Framing::V1
        } else {
            Framing::LegacyJson
        }
    }
}

/// One websocket data frame's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Text(String),
    Binary(Vec<u8>),
}

/// Encodes a message for a connection speaking `framing`.
pub fn encode(message: &Message, framing: Framing) -> Payload {
    match framing {
        Framing::LegacyJson => Payload::Text(message.to_json()),
        Framing::V1 => {
            let header = serde_json::to_vec(&message.header).unwrap_or_default();
            let parent = message.parent_header_value().to_string().into_bytes();
            let metadata = Value::Object(message.metadata.clone())
                .to_string()
                .into_bytes();
            let content = message.content.to_value().to_string().into_bytes();
            let parts = [
                message.channel.as_str().as_bytes(),
                &header,
                &parent,
                &metadata,
                &content,
            ];
            Payload::Binary(encode_v1_parts(&parts))
        }
    }
}

/// Lays out parts (the channel first) as a v1 frame: the number of offsets, the offsets, then
/// the parts; every integer is a little-endian u64 and the last offset is the frame's end.
pub fn encode_v1_parts(parts: &[&[u8]]) -> Vec<u8> {
    let offset_count = parts.len() + 1;
    let mut offsets = Vec::with_capacity(offset_count);
    let mut at = 8 * (offset_count + 1);
    offsets.push(at);
    for part in parts {
        at += part.len();
        offsets.push(at);
    }
    let mut out = Vec::with_capacity(at);
    out.extend_from_slice(&(offset_count as u64).to_le_bytes());
    for offset in offsets {
        out.extend_from_slice(&(offset as u64).to_le_bytes());
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// Splits a v1 frame into its parts (channel first), checking every offset.
pub fn decode_v1_parts(frame: &[u8]) -> Result<Vec<&[u8]>, MessageError> {
    let read_u64 = |at: usize| -> Result<usize, MessageError> {
        let bytes = frame
            .get(at..at + 8)
            .ok_or(MessageError::Frame("truncated offset table"))?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        usize::try_from(u64::from_le_bytes(word))
            .map_err(|_| MessageError::Frame("offset out of range"))
    };
    let count = read_u64(0)?;
    if count < 2 || count > frame.len() / 8 {
        return Err(MessageError::Frame("bad offset count"));
    }
    let mut offsets = Vec::with_capacity(count);
    for index in 0..count {
        offsets.push(read_u64(8 * (index + 1))?);
    }
    let mut parts = Vec::with_capacity(count - 1);
    for pair in offsets.windows(2) {
        let (start, end) = (pair[0], pair[1]);
        if start > end || end > frame.len() || start < 8 * (count + 1) {
            return Err(MessageError::Frame("offsets out of order or past the end"));
        }
        parts.push(&frame[start..end]);
    }
    Ok(parts)
}

/// Decodes one frame from a client speaking `framing`.
pub fn decode(payload: &Payload) -> Result<Message, MessageError> {
    match payload {
        Payload::Text(text) => Message::from_json(text),
        Payload::Binary(bytes) => {
            let parts = decode_v1_parts(bytes)?;
            if parts.len() < 5 {
                return Err(MessageError::Frame("fewer than five parts"));
            }
            let channel_name = String::from_utf8_lossy(parts[0]).into_owned();
            let channel =
                Channel::parse(&channel_name).ok_or(MessageError::Channel(channel_name))?;
            let json = |bytes: &[u8]| -> Result<Value, MessageError> {
                if bytes.is_empty() {
                    return Ok(Value::Null);
                }
                serde_json::from_slice(bytes).map_err(MessageError::Json)
            };
            Message::from_values(
                channel,
                json(parts[1])?,
                json(parts[2])?,
                json(parts[3])?,
                json(parts[4])?,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{Content, Stream, StreamName};
    use crate::message::Header;

    fn sample() -> Message {
        Message::reply_to(
            &Header::new("execute_request", "client"),
            "kernel",
            Channel::Iopub,
            Content::Stream(Stream {
                name: StreamName::Stdout,
                text: "hi\n".into(),
            }),
        )
    }

    #[test]
    fn v1_round_trip() {
        let message = sample();
        let payload = encode(&message, Framing::V1);
        assert!(matches!(payload, Payload::Binary(_)));
        assert_eq!(decode(&payload).unwrap(), message);
    }

    #[test]
    fn legacy_round_trip() {
        let message = sample();
        let payload = encode(&message, Framing::LegacyJson);
        assert_eq!(decode(&payload).unwrap(), message);
    }

    #[test]
    fn negotiation_picks_v1_only_when_offered() {
        assert_eq!(Framing::negotiate(None), Framing::LegacyJson);
        assert_eq!(Framing::negotiate(Some("foo, bar")), Framing::LegacyJson);
        assert_eq!(
            Framing::negotiate(Some("x, v1.kernel.websocket.jupyter.org")),
            Framing::V1
        );
    }

    #[test]
    fn hostile_v1_frames_are_rejected() {
        assert!(decode_v1_parts(&[]).is_err());
        assert!(decode_v1_parts(&u64::MAX.to_le_bytes()).is_err());
        let mut frame = encode_v1_parts(&[b"shell", b"{}"]);
        frame[8..16].copy_from_slice(&1000u64.to_le_bytes());
        assert!(decode_v1_parts(&frame).is_err());
        let short = encode_v1_parts(&[b"shell", b"{}"]);
        assert!(decode(&Payload::Binary(short)).is_err());
    }
}
