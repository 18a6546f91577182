//! A kernel runner as the balancer sees it: where it is, whether it is alive, the load it last
//! reported plus what the gateway has sent it since, and the signal its proxied websockets
//! watch to learn that it is gone.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use cellgate_protocol::model::RunnerStatus;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Consecutive failed health checks after which a runner that still accepts connections (but
/// does not answer) counts as gone. A refused connection makes it gone at once.
pub const GONE_AFTER_FAILURES: u32 = 3;

/// What the gateway believes about a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet: it takes no kernels until its first good check.
    Unknown,
    Healthy,
    /// Its last check failed; it takes no kernels but its sessions go on.
    Unhealthy,
    /// It is not there any more: its kernels are reported dead and its sessions are closed.
    Gone,
}

impl Health {
    fn from_u8(value: u8) -> Health {
        match value {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            3 => Health::Gone,
            _ => Health::Unknown,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Healthy => 1,
            Health::Unhealthy => 2,
            Health::Gone => 3,
        }
    }
}

/// How a health report changed the runner's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing worth logging.
    Same,
    /// It became healthy (from unknown or unhealthy).
    Recovered,
    /// It was gone and answers again: whatever kernels it had before are lost, and the ones
    /// it lists now are live.
    Revived,
    /// It stopped answering.
    Failed,
    /// It is gone now.
    Lost,
}

/// One runner. Counters are atomics so request handlers and the health checker update them
/// without a lock.
#[derive(Debug)]
pub struct Backend {
    id: usize,
    url: Url,
    health: AtomicU8,
    /// Set when discovery dropped the runner: it stays gone whatever a check still in flight
    /// reports.
    retired: AtomicBool,
    failures: AtomicU32,
    draining: AtomicBool,
    sessions: AtomicUsize,
    /// Kernels as the runner last reported them.
    kernels: AtomicUsize,
    /// Kernels this gateway started there and has not deleted: exact for this gateway's own
    /// kernels, where a report may be a moment behind or ahead of the answers to starts.
    own_kernels: AtomicUsize,
    in_flight: AtomicUsize,
    runner_id: Mutex<Option<String>>,
    /// Cancelled when the runner is declared gone, then replaced by a fresh token, so a
    /// session opened after the runner came back watches the new one.
    life: Mutex<CancellationToken>,
    /// The kernel count the runner reported when its kernel list was last read, and when.
    synced: Mutex<Option<(usize, Instant)>>,
    /// Websocket sessions this gateway proxies to the runner right now.
    proxied_sessions: AtomicUsize,
    /// Kernels this gateway has started on the runner.
    placements: AtomicU64,
}

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
    pub fn new(id: usize, url: Url) -> Backend {
        Backend {
            id,
            url,
            health: AtomicU8::new(Health::Unknown.as_u8()),
            retired: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            sessions: AtomicUsize::new(0),
            kernels: AtomicUsize::new(0),
            own_kernels: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            runner_id: Mutex::new(None),
            life: Mutex::new(CancellationToken::new()),
            synced: Mutex::new(None),
            proxied_sessions: AtomicUsize::new(0),
            placements: AtomicU64::new(0),
        }
    }

    /// Its id in the balancer: never reused for another runner during the gateway's lifetime.
    pub fn id(&self) -> usize {
        self.id
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    pub fn is_healthy(&self) -> bool {
        self.health() == Health::Healthy
    }

    pub fn is_gone(&self) -> bool {
        self.health() == Health::Gone
    }

    pub fn load(&self) -> Load {
        Load {
            healthy: self.is_healthy(),
            draining: self.draining.load(Ordering::Relaxed),
            sessions: self.sessions.load(Ordering::Relaxed),
            kernels: self
                .kernels
                .load(Ordering::Relaxed)
                .max(self.own_kernels.load(Ordering::Relaxed)),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }

    /// The id the runner reported about itself, once it has been checked.
    pub fn runner_id(&self) -> Option<String> {
        lock(&self.runner_id).clone()
    }

    /// Takes a good health report.
    pub fn record_status(&self, status: &RunnerStatus) -> Transition {
        if self.retired.load(Ordering::Relaxed) {
            return Transition::Same;
        }
        self.sessions.store(status.sessions, Ordering::Relaxed);
        self.kernels.store(status.kernels, Ordering::Relaxed);
        self.draining.store(status.draining, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        *lock(&self.runner_id) = Some(status.runner_id.clone());
        match Health::from_u8(self.health.swap(Health::Healthy.as_u8(), Ordering::Relaxed)) {
            Health::Healthy => Transition::Same,
            Health::Gone => {
                // What was learnt about its kernels before it went away is stale.
                *lock(&self.synced) = None;
                Transition::Revived
            }
            Health::Unknown | Health::Unhealthy => Transition::Recovered,
        }
    }

    /// Takes a failed health check (or a failed connection). `refused` says the runner's
    /// address answered that nothing listens there, which no live runner does.
    pub fn record_failure(&self, refused: bool) -> Transition {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if refused || failures >= GONE_AFTER_FAILURES {
            return self.mark_gone();
        }
        match Health::from_u8(self.health.load(Ordering::Relaxed)) {
            Health::Gone | Health::Unhealthy => Transition::Same,
            Health::Unknown | Health::Healthy => {
                self.health
                    .store(Health::Unhealthy.as_u8(), Ordering::Relaxed);
                Transition::Failed
            }
        }
    }

    /// Takes the runner out of rotation after a failed connection outside the health checks,
    /// until the next check decides. Returns true when it was in rotation.
    pub fn mark_unhealthy(&self) -> bool {
        let healthy = Health::Healthy.as_u8();
        self.health
            .compare_exchange(
                healthy,
                Health::Unhealthy.as_u8(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Declares the runner gone and tells its sessions. Returns [`Transition::Lost`] only the
    /// first time, so the caller reports its kernels dead once.
    pub fn mark_gone(&self) -> Transition {
        if Health::from_u8(self.health.swap(Health::Gone.as_u8(), Ordering::Relaxed))
            == Health::Gone
        {
            return Transition::Same;
        }
        let mut life = lock(&self.life);
        life.cancel();
        *life = CancellationToken::new();
        Transition::Lost
    }

    /// Takes the runner out for good: discovery no longer lists it.
    pub fn retire(&self) -> Transition {
        self.retired.store(true, Ordering::Relaxed);
        self.mark_gone()
    }

    /// Cancelled when the runner is declared gone.
    pub fn life(&self) -> CancellationToken {
        lock(&self.life).clone()
    }

    /// The runner refused a kernel because it is shutting down; the next report confirms it.
    pub fn mark_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the kernel list should be read again: the reported count changed since the
    /// last read, or the read is older than `max_age`, or there was none.
    pub fn needs_sync(&self, max_age: std::time::Duration) -> bool {
        match *lock(&self.synced) {
            None => true,
            Some((count, at)) => {
                count != self.kernels.load(Ordering::Relaxed) || at.elapsed() >= max_age
            }
        }
    }

    /// The kernel list was read when the runner reported `count` kernels.
    pub fn synced(&self, count: usize) {
        *lock(&self.synced) = Some((count, Instant::now()));
    }

    // The runner's own counts arrive with each health check. Between two checks the gateway
    // adds what it caused itself, so a burst of placements spreads out instead of piling onto
    // the runner that looked idlest at the last check. For kernels, a report taken while
    // starts are being answered may or may not include them, so the gateway's exact count of
    // its own kernels is kept apart and the larger of the two is used; for sessions the next
    // report simply overwrites the guess.

    /// A kernel start was sent; it counts until [`Backend::placement_answered`].
    pub fn placement_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn placement_answered(&self, kernel_started: bool) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if kernel_started {
            self.own_kernels.fetch_add(1, Ordering::Relaxed);
            self.placements.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A kernel was deleted through this gateway.
    pub fn kernel_deleted(&self) {
        let _ = self
            .own_kernels
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| {
                count.checked_sub(1)
            });
    }

    /// A websocket session to this runner was opened through this gateway; it counts as
    /// proxied until the returned guard is dropped.
    pub fn session_opened(self: &std::sync::Arc<Self>) -> SessionGuard {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.proxied_sessions.fetch_add(1, Ordering::Relaxed);
        SessionGuard {
            backend: self.clone(),
        }
    }

    /// Numbers for `/metrics`.
    pub fn counters(&self) -> Counters {
        Counters {
            load: self.load(),
            health: self.health(),
            proxied_sessions: self.proxied_sessions.load(Ordering::Relaxed),
            placements: self.placements.load(Ordering::Relaxed),
        }
    }
}

/// A runner's numbers at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Counters {
    pub load: Load,
    pub health: Health,
    pub proxied_sessions: usize,
    pub placements: u64,
}

/// Counts one proxied session for as long as it lives.
#[derive(Debug)]
pub struct SessionGuard {
    backend: std::sync::Arc<Backend>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.backend
            .proxied_sessions
            .fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value behind these locks is replaced whole, so a panic cannot leave one torn.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn status(sessions: usize, kernels: usize) -> RunnerStatus {
        RunnerStatus {
            runner_id: "r1".into(),
            version: "0".into(),
            sessions,
            kernels,
            draining: false,
        }
    }

    fn backend() -> Arc<Backend> {
        Arc::new(Backend::new(0, Url::parse("http://127.0.0.1:1").unwrap()))
    }

    #[test]
    fn health_reports_replace_local_guesses() {
        let backend = backend();
        assert!(!backend.is_healthy());
        assert_eq!(backend.record_status(&status(1, 1)), Transition::Recovered);
        assert_eq!(backend.record_status(&status(1, 1)), Transition::Same);
        backend.placement_started();
        assert_eq!(backend.load().in_flight, 1);
        backend.placement_answered(true);
        let guard = backend.session_opened();
        assert_eq!((backend.load().sessions, backend.load().kernels), (2, 1));
        assert_eq!(backend.counters().proxied_sessions, 1);
        drop(guard);
        assert_eq!(backend.counters().proxied_sessions, 0);
        assert_eq!(backend.counters().placements, 1);
        // A report that predates the start does not hide it; one that counts more wins.
        backend.record_status(&status(1, 0));
        assert_eq!(backend.load().kernels, 1);
        backend.kernel_deleted();
        backend.kernel_deleted();
        assert_eq!(backend.load().kernels, 0);
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
    }

    #[test]
    fn a_refused_connection_makes_a_runner_gone_at_once() {
        let backend = backend();
        backend.record_status(&status(0, 0));
        let life = backend.life();
        assert_eq!(backend.record_failure(true), Transition::Lost);
        assert!(life.is_cancelled(), "its sessions are told");
        assert!(
            !backend.life().is_cancelled(),
            "later sessions watch a fresh signal"
        );
        assert_eq!(backend.record_failure(true), Transition::Same);
        assert_eq!(backend.record_status(&status(0, 0)), Transition::Revived);
        assert!(backend.is_healthy());
        assert_eq!(backend.retire(), Transition::Lost);
        assert_eq!(backend.record_status(&status(0, 0)), Transition::Same);
        assert!(
            backend.is_gone(),
            "a late answer does not revive a retired runner"
        );
    }

    #[test]
    fn a_silent_runner_is_gone_after_repeated_failures() {
        let backend = backend();
        backend.record_status(&status(0, 0));
        assert_eq!(backend.record_failure(false), Transition::Failed);
        for _ in 1..GONE_AFTER_FAILURES - 1 {
            assert_eq!(backend.record_failure(false), Transition::Same);
        }
        assert_eq!(backend.health(), Health::Unhealthy);
        assert_eq!(backend.record_failure(false), Transition::Lost);
        assert!(backend.is_gone());
        // One good answer resets the count.
        backend.record_status(&status(0, 0));
        assert_eq!(backend.record_failure(false), Transition::Failed);
    }

    #[test]
    fn kernel_lists_are_reread_when_the_count_moves_or_ages() {
        let backend = backend();
        let max_age = std::time::Duration::from_secs(3600);
        assert!(backend.needs_sync(max_age));
        backend.record_status(&status(0, 2));
        backend.synced(2);
        assert!(!backend.needs_sync(max_age));
        backend.record_status(&status(0, 3));
        assert!(backend.needs_sync(max_age));
        assert!(backend.needs_sync(std::time::Duration::ZERO));
    }
}
