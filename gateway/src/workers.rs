//! The threads that serve client connections: one single-threaded runtime per core, as nginx
//! runs one event loop per worker process. A connection, its TLS, its websocket session and
//! the session's runner socket all live on one thread, so relaying a frame needs no wakeup
//! of another thread; connections are dealt to the threads in turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;

/// How long a stopping thread waits for tasks it still has before dropping them. The
/// gateway has drained them by then; this only bounds a stubborn one.
const STOP_WAIT: Duration = Duration::from_secs(1);

pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` threads (at least one).
    pub fn start(count: usize) -> Result<Workers, GatewayError> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| GatewayError::Workers { source })?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("cellgate-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(stop.cancelled());
                    runtime.shutdown_timeout(STOP_WAIT);
                })
                .map_err(|source| GatewayError::Workers { source })?;
            threads.push(thread);
        }
        Ok(Workers {
            handles,
            threads,
            stop,
            next: AtomicUsize::new(0),
        })
    }

    /// The thread for the next connection.
    pub fn next(&self) -> &Handle {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[index]
    }

    /// Stops every thread and waits for them; call it once the gateway has drained.
    pub async fn stop(self) {
        self.stop.cancel();
        let threads = self.threads;
        // Joining blocks, so it happens off the async threads.
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_are_dealt_to_the_threads_in_turn() {
        let workers = Workers::start(2).unwrap();
        let first = workers.next().spawn(async { std::thread::current().id() });
        let second = workers.next().spawn(async { std::thread::current().id() });
        let third = workers.next().spawn(async { std::thread::current().id() });
        let (first, second, third) = (
            first.await.unwrap(),
            second.await.unwrap(),
            third.await.unwrap(),
        );
        assert_ne!(first, second);
        assert_eq!(first, third);
        workers.stop().await;
    }
}
