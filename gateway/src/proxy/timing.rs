//! Timing cells on the proxy: a client's `execute_request` starts a clock under its `msg_id`,
//! and the runner's `execute_reply` whose parent is that id stops it. Frames are only peeked
//! at: a substring test rules out almost every frame, and the few left have just their
//! headers parsed (the JSON text of the legacy framing, or the header parts of a v1 frame),
//! never the content.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use cellgate_protocol::wire::decode_v1_parts;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::histogram::Histogram;

/// Requests timed at once on one session; past this, new ones go untimed rather than letting
/// a client that never gets replies grow the map.
const MAX_PENDING: usize = 256;

/// The clocks of one proxied session. Both directions of the session use it from one task,
/// so the lock is never contended; it is there because each direction holds a reference.
pub struct ExecuteTiming<'a> {
    pending: Mutex<HashMap<String, Instant>>,
    histogram: &'a Histogram,
}

impl<'a> ExecuteTiming<'a> {
    pub fn new(histogram: &'a Histogram) -> ExecuteTiming<'a> {
        ExecuteTiming {
            pending: Mutex::new(HashMap::new()),
            histogram,
        }
    }

    /// A frame from the client, about to be sent to the runner.
    pub fn client_frame(&self, frame: &Message) {
        let Some(msg_id) = execute_request_id(frame) else {
            return;
        };
        let mut pending = self.lock();
        if pending.len() < MAX_PENDING {
            pending.insert(msg_id, Instant::now());
        }
    }

    /// A frame from the runner, about to be sent to the client.
    pub fn runner_frame(&self, frame: &Message) {
        if self.lock().is_empty() {
            return;
        }
        let Some(parent) = execute_reply_parent(frame) else {
            return;
        };
        if let Some(started) = self.lock().remove(&parent) {
            self.histogram.observe(started.elapsed());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The parts of a header the timing needs; everything else in the frame is skipped.
#[derive(Deserialize)]
struct HeaderPeek<'a> {
    #[serde(borrow, default)]
    msg_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    msg_type: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LegacyPeek<'a> {
    #[serde(borrow, default)]
    header: Option<HeaderPeek<'a>>,
    #[serde(borrow, default)]
    parent_header: Option<HeaderPeek<'a>>,
}

/// The `msg_id` of an `execute_request` frame.
fn execute_request_id(frame: &Message) -> Option<String> {
    match frame {
        Message::Text(text) => {
            if !text.contains("execute_request") {
                return None;
            }
            let peek: LegacyPeek = serde_json::from_str(text).ok()?;
            let header = peek.header?;
            (header.msg_type.as_deref() == Some("execute_request"))
                .then(|| header.msg_id.map(Cow::into_owned))
                .flatten()
        }
        Message::Binary(bytes) => {
            let parts = decode_v1_parts(bytes).ok()?;
            let header = parts.get(1)?;
            if !contains(header, b"execute_request") {
                return None;
            }
            let header: HeaderPeek = serde_json::from_slice(header).ok()?;
            (header.msg_type.as_deref() == Some("execute_request"))
                .then(|| header.msg_id.map(Cow::into_owned))
                .flatten()
        }
        _ => None,
    }
}

/// The parent `msg_id` of an `execute_reply` frame.
fn execute_reply_parent(frame: &Message) -> Option<String> {
    match frame {
        Message::Text(text) => {
            if !text.contains("execute_reply") {
                return None;
            }
            let peek: LegacyPeek = serde_json::from_str(text).ok()?;
            if peek.header?.msg_type.as_deref() != Some("execute_reply") {
                return None;
            }
            peek.parent_header?.msg_id.map(Cow::into_owned)
        }
        Message::Binary(bytes) => {
            let parts = decode_v1_parts(bytes).ok()?;
            if parts.first().copied() != Some(b"shell".as_slice()) {
                return None;
            }
            let header = parts.get(1)?;
            if !contains(header, b"execute_reply") {
                return None;
            }
            let header: HeaderPeek = serde_json::from_slice(header).ok()?;
            if header.msg_type.as_deref() != Some("execute_reply") {
                return None;
            }
            let parent: HeaderPeek = serde_json::from_slice(parts.get(2)?).ok()?;
            parent.msg_id.map(Cow::into_owned)
        }
        _ => None,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::LATENCY_BUCKETS;
    use cellgate_protocol::wire::encode_v1_parts;
    use serde_json::json;

    fn legacy(msg_type: &str, msg_id: &str, parent: &str) -> Message {
        Message::Text(
            json!({
                "header": {"msg_id": msg_id, "msg_type": msg_type, "session": "s"},
                "parent_header": if parent.is_empty() { json!({}) } else { json!({"msg_id": parent}) },
                "metadata": {}, "content": {"code": "execute_reply?"}, "channel": "shell",
            })
            .to_string(),
        )
    }

    fn v1(channel: &str, msg_type: &str, msg_id: &str, parent: &str) -> Message {
        let header = json!({"msg_id": msg_id, "msg_type": msg_type}).to_string();
        let parent = json!({"msg_id": parent}).to_string();
        Message::Binary(encode_v1_parts(&[
            channel.as_bytes(),
            header.as_bytes(),
            parent.as_bytes(),
            b"{}",
            b"{}",
        ]))
    }

    #[test]
    fn a_reply_to_a_timed_request_is_observed_once_in_either_framing() {
        let histogram = Histogram::new(&LATENCY_BUCKETS);
        let timing = ExecuteTiming::new(&histogram);
        timing.client_frame(&legacy("execute_request", "a", ""));
        timing.client_frame(&v1("shell", "execute_request", "b", ""));
        timing.client_frame(&legacy("kernel_info_request", "c", ""));
        // Output that mentions a reply, and replies to other requests, stop no clock.
        timing.runner_frame(&legacy("stream", "x", "a"));
        timing.runner_frame(&legacy("execute_reply", "y", "zzz"));
        assert_eq!(histogram.count(), 0);
        timing.runner_frame(&legacy("execute_reply", "r1", "a"));
        timing.runner_frame(&legacy("execute_reply", "r1", "a"));
        assert_eq!(histogram.count(), 1);
        timing.runner_frame(&v1("iopub", "execute_reply", "r2", "b"));
        assert_eq!(histogram.count(), 1, "replies come on shell");
        timing.runner_frame(&v1("shell", "execute_reply", "r2", "b"));
        assert_eq!(histogram.count(), 2);
        timing.runner_frame(&Message::Text("not json execute_reply".into()));
        timing.client_frame(&Message::Binary(b"execute_request".to_vec()));
    }
}
