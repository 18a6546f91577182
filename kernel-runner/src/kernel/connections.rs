//! The websocket connections attached to one kernel, each with its own bounded outbox.
//!
//! Every message for a connection, iopub broadcasts and replies meant for it alone, goes
//! through that one queue, so a client sees a request's messages in the order the kernel made
//! them (busy, input, outputs, reply, idle). A connection whose outbox is full has stopped
//! reading; it is dropped rather than allowed to stall the kernel for everyone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

#[derive(Debug, Default)]
pub struct Connections {
    outboxes: Mutex<HashMap<ConnectionId, mpsc::Sender<Outgoing>>>,
    next_id: AtomicU64,
}

impl Connections {
    /// Registers a new connection; its writer reads the returned queue.
    pub fn attach(&self, capacity: usize) -> (ConnectionId, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(capacity);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, tx);
        (id, rx)
    }

    pub fn detach(&self, id: ConnectionId) {
        self.lock().remove(&id);
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Sends to every connection.
    pub fn broadcast(&self, message: Arc<Message>) {
        let mut outboxes = self.lock();
        outboxes.retain(|id, tx| deliver(*id, tx, Outgoing::Message(message.clone())));
    }

    /// Sends to one connection; a message for a connection that has gone is dropped, as
    /// Jupyter drops replies to a client that disconnected.
    pub fn send_to(&self, id: ConnectionId, message: Arc<Message>) {
        let mut outboxes = self.lock();
        let keep = match outboxes.get(&id) {
            Some(tx) => deliver(id, tx, Outgoing::Message(message)),
            None => return,
        };
        if !keep {
            outboxes.remove(&id);
        }
    }

    /// Asks every connection to close, and forgets them.
    pub fn close_all(&self, code: u16, reason: &str) {
        let outboxes: Vec<_> = self.lock().drain().collect();
        for (_, tx) in outboxes {
            // A full outbox belongs to a client that stopped reading: dropping the sender
            // ends its writer all the same.
            let _ = tx.try_send(Outgoing::Close(code, reason.to_owned()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, mpsc::Sender<Outgoing>>> {
        // A panic while holding this lock leaves the map itself consistent.
        self.outboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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
    use cellgate_protocol::content::{Content, Status};
    use cellgate_protocol::{Channel, Header};

    fn status() -> Arc<Message> {
        Arc::new(Message::reply_to(
            &Header::new("x", "s"),
            "k",
            Channel::Iopub,
            Content::Status(Status {
                execution_state: "idle".into(),
            }),
        ))
    }

    #[test]
    fn a_slow_connection_is_dropped_and_others_keep_receiving() {
        let connections = Connections::default();
        let (_slow, _slow_rx) = connections.attach(1);
        let (fast, mut fast_rx) = connections.attach(8);
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
        let (_, mut rx) = connections.attach(4);
        connections.close_all(1001, "kernel deleted");
        assert_eq!(connections.count(), 0);
        assert!(matches!(rx.try_recv(), Ok(Outgoing::Close(1001, _))));
    }
}
