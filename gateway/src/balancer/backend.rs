//! A kernel runner as the balancer sees it: where it is, whether it is healthy, and the load
//! it last reported plus what the gateway has sent it since.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use cellgate_protocol::model::RunnerStatus;
use url::Url;

/// One runner. Counters are atomics so request handlers and the health checker update them
/// without a lock.
#[derive(Debug)]
pub struct Backend {
    index: usize,
    url: Url,
    health: AtomicU8,
    draining: AtomicBool,
    sessions: AtomicUsize,
    kernels: AtomicUsize,
    in_flight: AtomicUsize,
    runner_id: Mutex<Option<String>>,
}

// A runner's health: not checked yet, or the outcome of its last check. `Unknown` is kept
// apart from `Unhealthy` so the first failed check of a runner is reported too.
const UNKNOWN: u8 = 0;
const HEALTHY: u8 = 1;
const UNHEALTHY: u8 = 2;

/// A snapshot of one runner's load, the input of a [`super::selection::Selection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Load {
    pub healthy: bool,
    pub draining: bool,
    /// Open websocket sessions.
    pub sessions: usize,
    pub kernels: usize,
    /// Kernel starts this gateway has sent that the runner has not answered yet.
    pub in_flight: usize,
}

impl Backend {
    /// A runner not checked yet; it takes no kernels until its first good health check.
    pub fn new(index: usize, url: Url) -> Backend {
        Backend {
            index,
            url,
            health: AtomicU8::new(UNKNOWN),
            draining: AtomicBool::new(false),
            sessions: AtomicUsize::new(0),
            kernels: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            runner_id: Mutex::new(None),
        }
    }

    /// Its position in the balancer's list; stable for the gateway's lifetime.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn is_healthy(&self) -> bool {
        self.health.load(Ordering::Relaxed) == HEALTHY
    }

    pub fn load(&self) -> Load {
        Load {
            healthy: self.is_healthy(),
            draining: self.draining.load(Ordering::Relaxed),
            sessions: self.sessions.load(Ordering::Relaxed),
            kernels: self.kernels.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }

    /// The id the runner reported about itself, once it has been checked.
    pub fn runner_id(&self) -> Option<String> {
        self.runner_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Takes a good health report. Returns true when the runner was not healthy before.
    pub fn record_status(&self, status: &RunnerStatus) -> bool {
        self.sessions.store(status.sessions, Ordering::Relaxed);
        self.kernels.store(status.kernels, Ordering::Relaxed);
        self.draining.store(status.draining, Ordering::Relaxed);
        *self
            .runner_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(status.runner_id.clone());
        self.health.swap(HEALTHY, Ordering::Relaxed) != HEALTHY
    }

    /// Takes the runner out of rotation. Returns true when it was not already marked
    /// unhealthy (it was healthy, or not checked yet).
    pub fn mark_unhealthy(&self) -> bool {
        self.health.swap(UNHEALTHY, Ordering::Relaxed) != UNHEALTHY
    }

    // The runner's own counts arrive with each health check. Between two checks the gateway
    // adds what it caused itself, so a burst of placements spreads out instead of piling onto
    // the runner that looked idlest at the last check. The next report overwrites these
    // guesses with the truth, which is why nothing is ever subtracted here.

    /// A kernel start was sent; it counts until [`Backend::placement_answered`].
    pub fn placement_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn placement_answered(&self, kernel_started: bool) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if kernel_started {
            self.kernels.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A websocket session to this runner was opened through this gateway.
    pub fn session_opened(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(sessions: usize, kernels: usize) -> RunnerStatus {
        RunnerStatus {
            runner_id: "r1".into(),
            version: "0".into(),
            sessions,
            kernels,
            draining: false,
        }
    }

    #[test]
    fn health_reports_replace_local_guesses() {
        let backend = Backend::new(0, Url::parse("http://127.0.0.1:1").unwrap());
        assert!(!backend.is_healthy());
        assert!(backend.record_status(&status(1, 1)));
        assert!(!backend.record_status(&status(1, 1)), "already healthy");
        backend.placement_started();
        assert_eq!(backend.load().in_flight, 1);
        backend.placement_answered(true);
        backend.session_opened();
        assert_eq!((backend.load().sessions, backend.load().kernels), (2, 2));
        backend.record_status(&status(1, 2));
        assert_eq!(
            backend.load(),
            Load {
                healthy: true,
                draining: false,
                sessions: 1,
                kernels: 2,
                in_flight: 0
            }
        );
        assert_eq!(backend.runner_id().as_deref(), Some("r1"));
        assert!(backend.mark_unhealthy());
        assert!(!backend.mark_unhealthy());
        let unchecked = Backend::new(1, Url::parse("http://127.0.0.1:2").unwrap());
        assert!(unchecked.mark_unhealthy(), "a first failure is news");
    }
}
