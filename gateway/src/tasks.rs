//! The gateway's task set and its two-step shutdown: first every task is asked to stop taking
//! work and finish (`stopping`), and tasks still running after the grace period are told to
//! drop what they hold (`aborting`).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long tasks get to notice `aborting` before the gateway stops waiting for them.
const ABORT_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stopping: CancellationToken,
    aborting: CancellationToken,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Runs `task` in the background; [`Tasks::drain`] waits for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Runs `task` on the runtime of `handle`; [`Tasks::drain`] waits for it.
    pub fn spawn_on<F>(&self, task: F, handle: &tokio::runtime::Handle)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn_on(task, handle);
    }

    /// Cancelled when shutdown starts: stop taking work and finish what is open.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Cancelled when the grace period is over: drop everything now.
    pub fn aborting(&self) -> &CancellationToken {
        &self.aborting
    }

    /// An executor for hyper's background connection tasks, so they are drained too.
    pub fn executor(&self) -> TrackedExecutor {
        TrackedExecutor(self.tracker.clone())
    }

    /// Starts shutdown and waits for every task, at most `grace` before aborting the rest.
    /// Returns how many tasks were still running when the gateway gave up on them.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.stopping.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        tracing::warn!(
            tasks = self.tracker.len(),
            ?grace,
            "tasks still running after the grace period; aborting them"
        );
        self.aborting.cancel();
        // Whatever ignores the abort is left to the runtime's own shutdown.
        let _ = tokio::time::timeout(ABORT_WAIT, self.tracker.wait()).await;
        self.tracker.len()
    }
}

/// Spawns hyper's futures on the gateway's task tracker.
#[derive(Clone)]
pub struct TrackedExecutor(TaskTracker);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(future);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_cooperative_tasks_and_aborts_stubborn_ones() {
        let tasks = Tasks::new();
        let stopping = tasks.stopping().clone();
        tasks.spawn(async move { stopping.cancelled().await });
        assert_eq!(tasks.drain(Duration::from_secs(5)).await, 0);

        let tasks = Tasks::new();
        let aborting = tasks.aborting().clone();
        tasks.spawn(async move { aborting.cancelled().await });
        let started = tokio::time::Instant::now();
        assert_eq!(tasks.drain(Duration::from_secs(5)).await, 0);
        assert!(started.elapsed() >= Duration::from_secs(5));
    }
}
