//! What happened in the cluster, as this gateway saw it: runners joining, failing, going,
//! coming back and draining, nodes going stale or stopping, jobs run again. The balancer
//! reports runner changes the moment it decides them; the cluster view reports node and job
//! changes when a sample shows them. The last few hundred are kept, newest first.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ring::Ring;
use crate::balancer::backend::Backend;

/// Events kept; older ones are dropped.
pub const EVENTS_KEPT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Discovery found a runner.
    RunnerJoined,
    /// Discovery no longer lists a runner: it is gone for good.
    RunnerLeft,
    /// A runner failed a check: it takes no new kernels, its sessions go on.
    RunnerUnhealthy,
    /// A runner is gone: its sessions are closed and its kernels reported dead.
    RunnerGone,
    /// A runner that failed or was gone answers again.
    RunnerBack,
    /// A runner is shutting down: no new kernels, open sessions may finish.
    RunnerDraining,
    /// A node's first heartbeat, after this gateway's first look.
    NodeJoined,
    /// A node's heartbeat stopped changing: its jobs go back to the queue.
    NodeStale,
    /// A node said it stopped.
    NodeStopped,
    /// A stale or stopped node beats again.
    NodeBack,
    /// A job runs again, at a higher attempt, after its node died or an attempt failed.
    JobRequeued,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Increases by one per event, so a page can tell which ones it has shown.
    pub id: u64,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    /// The runner, node or job it is about.
    pub subject: String,
    pub message: String,
}

#[derive(Debug)]
pub struct Events {
    ring: Mutex<(Ring<Event>, u64)>,
}

impl Default for Events {
    fn default() -> Events {
        Events::new(EVENTS_KEPT)
    }
}

impl Events {
    pub fn new(capacity: usize) -> Events {
        Events {
            ring: Mutex::new((Ring::new(capacity), 0)),
        }
    }

    pub fn push(&self, kind: EventKind, subject: impl Into<String>, message: impl Into<String>) {
        let subject = subject.into();
        let message = message.into();
        tracing::debug!(?kind, %subject, %message, "cluster event");
        let mut ring = self.lock();
        ring.1 += 1;
        let event = Event {
            id: ring.1,
            at: Utc::now(),
            kind,
            subject,
            message,
        };
        ring.0.push(event);
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<Event> {
        self.lock().0.iter().rev().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Ring<Event>, u64)> {
        // The ring is only ever pushed to whole; a panic cannot leave it torn.
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a runner's events are about: its own id once it has reported one, else its URL.
pub fn runner_subject(backend: &Backend) -> String {
    backend
        .runner_id()
        .unwrap_or_else(|| backend.url().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_and_bounded() {
        let events = Events::new(2);
        events.push(EventKind::RunnerGone, "a", "one");
        events.push(EventKind::RunnerBack, "a", "two");
        events.push(EventKind::NodeStale, "n", "three");
        let recent = events.recent();
        let messages: Vec<&str> = recent.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, vec!["three", "two"]);
        assert_eq!(recent[0].id, 3);
        assert!(recent[0].at >= recent[1].at);
        assert_eq!(
            serde_json::to_value(&recent[0]).unwrap()["kind"],
            "node_stale"
        );
    }
}
