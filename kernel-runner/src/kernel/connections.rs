//! The websocket connections attached to one kernel, each with its own bounded outbox, and
//! the messages kept for clients that went away and may come back.
//!
//! Every message for a connection, iopub broadcasts and replies meant for it alone, goes
//! through that one queue, so a client sees a request's messages in the order the kernel made
//! them (busy, input, outputs, reply, idle). A connection whose outbox is full has stopped
//! reading; it is dropped rather than allowed to stall the kernel for everyone else.
//!
//! As jupyter_server does, when the last connection of a client session (the `session_id`
//! of its websocket URL) goes, the messages that client would have received are kept, and a
//! connection that comes back with the same session id gets them first, before anything new.
//! Unlike jupyter_server the keeping is bounded: in messages and bytes per session (the
//! oldest go first, so the client still sees how its cells ended), in sessions per kernel,
//! and in time.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cellgate_protocol::Message;
use tokio::sync::mpsc;

pub type ConnectionId = u64;

/// What a connection's writer receives.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Message(Arc<Message>),
    /// The connection must close with this websocket code and reason.
    Close(u16, String),
}

/// How much is kept for clients that went away.
#[derive(Debug, Clone, Copy)]
pub struct ReplayLimits {
    /// Messages kept per session; older ones are dropped first.
    pub messages: usize,
    /// Bytes (as JSON) kept per session; older messages are dropped first.
    pub bytes: usize,
    /// Sessions kept per kernel; the one away longest is dropped first.
    pub sessions: usize,
    /// How long a session's messages are kept after it went away.
    pub keep_for: Duration,
}

impl Default for ReplayLimits {
    fn default() -> ReplayLimits {
        ReplayLimits {
            messages: 1000,
            bytes: 8 << 20,
            sessions: 4,
            keep_for: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Default)]
pub struct Connections {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    limits: ReplayLimits,
}

#[derive(Debug, Default)]
struct Inner {
    outboxes: HashMap<ConnectionId, Outbox>,
    /// Client sessions with no connection attached, by session id.
    away: HashMap<String, Missed>,
}

#[derive(Debug)]
struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    session: Option<String>,
}

/// What one client session missed while away.
#[derive(Debug)]
struct Missed {
    messages: VecDeque<(Arc<Message>, usize)>,
    bytes: usize,
    since: Instant,
    /// The session's connections that closed: replies addressed to them are kept too.
    connections: Vec<ConnectionId>,
}

impl Connections {
    pub fn with_limits(limits: ReplayLimits) -> Connections {
        Connections {
            limits,
            ..Connections::default()
        }
    }

    /// Registers a new connection of client session `session`; its writer reads the returned
    /// queue, which starts with whatever the session missed while it was away.
    pub fn attach(
        &self,
        capacity: usize,
        session: Option<&str>,
    ) -> (ConnectionId, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(capacity);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        inner.prune(&self.limits);
        if let Some(missed) = session.and_then(|session| inner.away.remove(session)) {
            // Queued under the lock, so nothing broadcast meanwhile can overtake them.
            let replayed = missed.messages.len();
            for (message, _) in missed.messages {
                if tx.try_send(Outgoing::Message(message)).is_err() {
                    break;
                }
            }
            tracing::debug!(
                connection = id,
                replayed,
                "replaying what a returning client missed"
            );
        }
        inner.outboxes.insert(
            id,
            Outbox {
                tx,
                session: session.map(str::to_owned),
            },
        );
        (id, rx)
    }

    pub fn detach(&self, id: ConnectionId) {
        let mut inner = self.lock();
        if let Some(outbox) = inner.outboxes.remove(&id) {
            inner.went_away(id, outbox.session, &self.limits);
        }
    }

    /// Connections attached now.
    pub fn count(&self) -> usize {
        self.lock().outboxes.len()
    }

    /// Sends to every connection, and keeps it for the sessions that are away.
    pub fn broadcast(&self, message: Arc<Message>) {
        let mut inner = self.lock();
        let mut dropped = Vec::new();
        inner.outboxes.retain(|id, outbox| {
            let kept = deliver(*id, &outbox.tx, Outgoing::Message(message.clone()));
            if !kept {
                dropped.push((*id, outbox.session.take()));
            }
            kept
        });
        for (id, session) in dropped {
            inner.went_away(id, session, &self.limits);
        }
        if !inner.away.is_empty() {
            inner.prune(&self.limits);
            let size = size_of(&message);
            let sessions: Vec<String> = inner.away.keys().cloned().collect();
            for session in sessions {
                inner.keep(&session, message.clone(), size, &self.limits);
            }
        }
    }

    /// Sends to one connection. A reply for a connection that has gone is kept when its
    /// session may come back, and dropped otherwise, as Jupyter drops replies to a client
    /// that disconnected.
    pub fn send_to(&self, id: ConnectionId, message: Arc<Message>) {
        let mut inner = self.lock();
        let delivered = inner
            .outboxes
            .get(&id)
            .map(|outbox| deliver(id, &outbox.tx, Outgoing::Message(message.clone())));
        match delivered {
            Some(true) => {}
            Some(false) => {
                if let Some(outbox) = inner.outboxes.remove(&id) {
                    inner.went_away(id, outbox.session, &self.limits);
                }
                inner.keep_for_connection(id, message, &self.limits);
            }
            None => inner.keep_for_connection(id, message, &self.limits),
        }
    }

    /// Asks every connection to close, and forgets them and every session away.
    pub fn close_all(&self, code: u16, reason: &str) {
        let outboxes: Vec<Outbox> = {
            let mut inner = self.lock();
            inner.away.clear();
            inner.outboxes.drain().map(|(_, outbox)| outbox).collect()
        };
        for outbox in outboxes {
            // A full outbox belongs to a client that stopped reading: dropping the sender
            // ends its writer all the same.
            let _ = outbox.tx.try_send(Outgoing::Close(code, reason.to_owned()));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the maps themselves consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Connection `id` of `session` is gone: if it was the session's last, start keeping
    /// what the session misses.
    fn went_away(&mut self, id: ConnectionId, session: Option<String>, limits: &ReplayLimits) {
        let Some(session) = session else {
            return;
        };
        if let Some(missed) = self.away.get_mut(&session) {
            missed.connections.push(id);
            return;
        }
        let still_attached = self
            .outboxes
            .values()
            .any(|outbox| outbox.session.as_deref() == Some(session.as_str()));
        if still_attached || limits.sessions == 0 {
            return;
        }
        if self.away.len() >= limits.sessions {
            if let Some(longest) = self
                .away
                .iter()
                .min_by_key(|(_, missed)| missed.since)
                .map(|(session, _)| session.clone())
            {
                self.away.remove(&longest);
            }
        }
        self.away.insert(
            session,
            Missed {
                messages: VecDeque::new(),
                bytes: 0,
                since: Instant::now(),
                connections: vec![id],
            },
        );
    }

    fn keep(&mut self, session: &str, message: Arc<Message>, size: usize, limits: &ReplayLimits) {
        let Some(missed) = self.away.get_mut(session) else {
            return;
        };
        missed.messages.push_back((message, size));
        missed.bytes += size;
        while missed.messages.len() > limits.messages || missed.bytes > limits.bytes {
            match missed.messages.pop_front() {
                Some((_, dropped)) => missed.bytes -= dropped,
                None => break,
            }
        }
    }

    /// Keeps a message meant for connection `id` alone, if its session is away.
    fn keep_for_connection(
        &mut self,
        id: ConnectionId,
        message: Arc<Message>,
        limits: &ReplayLimits,
    ) {
        let session = self
            .away
            .iter()
            .find(|(_, missed)| missed.connections.contains(&id))
            .map(|(session, _)| session.clone());
        if let Some(session) = session {
            self.keep(&session, message.clone(), size_of(&message), limits);
        }
    }

    fn prune(&mut self, limits: &ReplayLimits) {
        self.away
            .retain(|_, missed| missed.since.elapsed() < limits.keep_for);
    }
}

/// A message's size as a client would receive it in the JSON framing.
fn size_of(message: &Message) -> usize {
    message.to_json().len()
}

fn deliver(id: ConnectionId, tx: &mpsc::Sender<Outgoing>, item: Outgoing) -> bool {
    match tx.try_send(item) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(
                connection = id,
                "client is not reading its messages; dropping it"
            );
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellgate_protocol::content::{Content, ExecutionState, Status, Stream, StreamName};
    use cellgate_protocol::{Channel, Header};

    fn status() -> Arc<Message> {
        Arc::new(Message::reply_to(
            &Header::new("x", "s"),
            "k",
            Channel::Iopub,
            Content::Status(Status {
                execution_state: ExecutionState::Idle,
            }),
        ))
    }

    fn output(text: &str) -> Arc<Message> {
        Arc::new(Message::reply_to(
            &Header::new("execute_request", "s"),
            "k",
            Channel::Iopub,
            Content::Stream(Stream {
                name: StreamName::Stdout,
                text: text.into(),
            }),
        ))
    }

    fn texts(rx: &mut mpsc::Receiver<Outgoing>) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(Outgoing::Message(message)) = rx.try_recv() {
            seen.push(match &message.content {
                Content::Stream(stream) => stream.text.clone(),
                other => other.msg_type().to_owned(),
            });
        }
        seen
    }

    #[test]
    fn a_slow_connection_is_dropped_and_others_keep_receiving() {
        let connections = Connections::default();
        let (_slow, _slow_rx) = connections.attach(1, None);
        let (fast, mut fast_rx) = connections.attach(8, None);
        connections.broadcast(status());
        connections.broadcast(status());
        assert_eq!(connections.count(), 1);
        connections.send_to(fast, status());
        let mut received = 0;
        while fast_rx.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, 3);
    }

    #[test]
    fn close_all_tells_every_writer() {
        let connections = Connections::default();
        let (_, mut rx) = connections.attach(4, Some("s"));
        connections.close_all(1001, "kernel deleted");
        assert_eq!(connections.count(), 0);
        assert!(matches!(rx.try_recv(), Ok(Outgoing::Close(1001, _))));
    }

    #[test]
    fn a_returning_session_gets_what_it_missed_first_and_others_do_not() {
        let connections = Connections::default();
        let (first, _rx) = connections.attach(16, Some("s1"));
        let (_other, mut other_rx) = connections.attach(16, Some("s2"));
        connections.detach(first);
        connections.broadcast(output("while away"));
        // The reply to a request of the closed connection is kept too.
        connections.send_to(first, output("reply"));
        assert_eq!(texts(&mut other_rx), vec!["while away"]);

        let (_back, mut back_rx) = connections.attach(16, Some("s1"));
        connections.broadcast(output("live"));
        assert_eq!(texts(&mut back_rx), vec!["while away", "reply", "live"]);

        // A new session starts with nothing; neither does a client without a session id.
        let (_new, mut new_rx) = connections.attach(16, Some("s3"));
        assert!(texts(&mut new_rx).is_empty());
        let (anonymous, _) = connections.attach(16, None);
        connections.detach(anonymous);
        connections.broadcast(output("x"));
        let (_again, mut again_rx) = connections.attach(16, None);
        assert!(texts(&mut again_rx).is_empty());
    }

    #[test]
    fn nothing_is_kept_while_another_connection_of_the_session_is_attached() {
        let connections = Connections::default();
        let (first, _first_rx) = connections.attach(16, Some("s"));
        let (_second, mut second_rx) = connections.attach(16, Some("s"));
        connections.detach(first);
        connections.broadcast(output("seen live"));
        assert_eq!(texts(&mut second_rx), vec!["seen live"]);
        let (_third, mut third_rx) = connections.attach(16, Some("s"));
        assert!(texts(&mut third_rx).is_empty());
    }

    #[test]
    fn keeping_is_bounded_in_messages_bytes_sessions_and_time() {
        let limits = ReplayLimits {
            messages: 3,
            bytes: 1 << 20,
            sessions: 2,
            keep_for: Duration::from_secs(3600),
        };
        let connections = Connections::with_limits(limits);
        for session in ["a", "b", "c"] {
            let (id, _) = connections.attach(16, Some(session));
            connections.detach(id);
        }
        for n in 0..5 {
            connections.broadcast(output(&n.to_string()));
        }
        let (_, mut c) = connections.attach(16, Some("c"));
        assert_eq!(texts(&mut c), vec!["2", "3", "4"], "the newest are kept");
        let (_, mut a) = connections.attach(16, Some("a"));
        assert!(
            texts(&mut a).is_empty(),
            "the session away longest was dropped"
        );

        let small = Connections::with_limits(ReplayLimits {
            bytes: size_of(&output("0")) * 2,
            ..limits
        });
        let (id, _) = small.attach(16, Some("s"));
        small.detach(id);
        for n in 0..3 {
            small.broadcast(output(&n.to_string()));
        }
        let (_, mut s) = small.attach(16, Some("s"));
        assert_eq!(texts(&mut s), vec!["1", "2"]);

        let expired = Connections::with_limits(ReplayLimits {
            keep_for: Duration::ZERO,
            ..limits
        });
        let (id, _) = expired.attach(16, Some("s"));
        expired.detach(id);
        expired.broadcast(output("late"));
        let (_, mut s) = expired.attach(16, Some("s"));
        assert!(texts(&mut s).is_empty());
    }

    #[test]
    fn a_client_dropped_for_not_reading_can_catch_up_when_it_returns() {
        let connections = Connections::default();
        let (_slow, _slow_rx) = connections.attach(1, Some("s"));
        connections.broadcast(output("0"));
        connections.broadcast(output("1"));
        assert_eq!(connections.count(), 0);
        let (_back, mut back_rx) = connections.attach(16, Some("s"));
        assert_eq!(texts(&mut back_rx), vec!["1"]);
    }
}
