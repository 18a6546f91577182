//! The cluster as a whole, for the `/cluster` page and `GET /api/cluster`: nodes with their
//! state, load and last ten minutes of CPU and memory, the runners, the job counts, cells per
//! second and jobs per minute, and what happened lately. A background task ([`sampler`])
//! takes a look ([`observe`]) every couple of seconds and folds it into the [`view`]; rates
//! come from counters ([`throughput`]); what changed is kept as [`events`], in a bounded
//! [`ring`] like the history. [`api`] serves the [`snapshot`], once or as a stream of
//! server-sent events.

pub mod api;
pub mod events;
pub mod observe;
pub mod ring;
pub mod sampler;
pub mod snapshot;
pub mod throughput;
pub mod view;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::balancer::Balancer;
use events::Events;
use observe::Observation;
use snapshot::Snapshot;
use view::View;

pub struct Cluster {
    view: Mutex<View>,
    /// Shared with the balancer, which reports runner changes into it.
    events: Arc<Events>,
    /// Counts the samples taken; pages streaming the snapshot wait on it.
    sampled: watch::Sender<u64>,
    sample_every: Duration,
}

impl Cluster {
    pub fn new(events: Arc<Events>, sample_every: Duration) -> Cluster {
        Cluster {
            view: Mutex::new(View::default()),
            events,
            sampled: watch::Sender::new(0),
            sample_every,
        }
    }

    /// Folds in a look taken `elapsed` after the one before.
    pub fn record(&self, observation: Observation, elapsed: Duration) {
        self.lock()
            .record(observation, elapsed, chrono::Utc::now(), &self.events);
        self.sampled.send_modify(|samples| *samples += 1);
    }

    /// The cluster now: the samples so far, with the balancer's runners as they are.
    pub fn snapshot(&self, balancer: &Balancer) -> Snapshot {
        self.lock()
            .snapshot(balancer, &self.events, self.sample_every)
    }

    /// Changes after every sample.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sampled.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, View> {
        // The view is changed in one call per sample; a panic in one leaves the last sample
        // half folded in at worst, which the next one corrects.
        self.view
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
