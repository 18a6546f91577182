//! Warm pools: per language, drivers started ahead of time and waiting at their `ready`
//! event, so a new kernel starts in the time it takes to hand one over. A pooled driver serves
//! exactly one kernel and is never returned to the pool.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::launch::{launch, Launched};
use crate::backend::{Backend, LaunchSpec};
use crate::languages::Language;

/// A started driver waiting for a kernel, with the spec it was started with.
pub struct Warm {
    pub spec: LaunchSpec,
    pub launched: Launched,
}

pub struct WarmPool {
    /// Drivers kept ready per language.
    size: usize,
    ready: Mutex<HashMap<&'static str, VecDeque<Warm>>>,
    wanted: Notify,
}

impl WarmPool {
    pub fn new(size: usize) -> WarmPool {
        WarmPool {
            size,
            ready: Mutex::new(HashMap::new()),
            wanted: Notify::new(),
        }
    }

    /// A ready driver for `language`, if one is waiting; the pool refills in the background.
    pub fn take(&self, language: &Language) -> Option<Warm> {
        let warm = self
            .lock()
            .get_mut(language.kernel_name)
            .and_then(VecDeque::pop_front);
        self.wanted.notify_one();
        warm
    }

    pub fn len(&self, language: &Language) -> usize {
        self.lock()
            .get(language.kernel_name)
            .map(VecDeque::len)
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.lock().values().all(VecDeque::is_empty)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, VecDeque<Warm>>> {
        self.ready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps every language's pool full until `stop`, then kills what is still waiting.
    /// `spec_for` makes the launch spec of a new pooled driver.
    pub async fn refill(
        self: Arc<Self>,
        backend: Arc<dyn Backend>,
        languages: Vec<&'static Language>,
        spec_for: impl Fn(&'static Language) -> LaunchSpec + Send,
        ready_timeout: Duration,
        stop: CancellationToken,
    ) {
        loop {
            for &language in &languages {
                while self.len(language) < self.size && !stop.is_cancelled() {
                    let spec = spec_for(language);
                    // Never abandon a launch half-way: the container would outlive the runner.
                    match launch(backend.as_ref(), &spec, ready_timeout).await {
                        Ok(launched) if stop.is_cancelled() => {
                            let _ = launched.driver.kill().await;
                            launched.driver.wait().await;
                        }
                        Ok(launched) => self
                            .lock()
                            .entry(language.kernel_name)
                            .or_default()
                            .push_back(Warm { spec, launched }),
                        Err(error) => {
                            tracing::warn!(language = language.kernel_name, %error, "could not fill the warm pool");
                            // Do not spin on a broken image: try again later.
                            break;
                        }
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wanted.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
        let waiting: Vec<Warm> = self.lock().drain().flat_map(|(_, queue)| queue).collect();
        for warm in waiting {
            let _ = warm.launched.driver.kill().await;
            warm.launched.driver.wait().await;
        }
    }
}
