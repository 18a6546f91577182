//! The task that samples the cluster: every couple of seconds it takes one look
//! ([`Source::observe`]) and folds it into the cluster view, until the gateway stops. It is
//! started with the gateway and tracked by its task set; a look in progress when shutdown
//! starts is dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::observe::Source;
use super::Cluster;

/// The time between two samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Samples every `every` until `stopping` is cancelled; the first sample is taken at once.
pub async fn run(
    source: Arc<dyn Source>,
    cluster: Arc<Cluster>,
    every: Duration,
    stopping: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    // A slow look (a runner timing out) must not be followed by a burst of catch-up looks.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let observation = tokio::select! {
            () = stopping.cancelled() => return,
            observation = source.observe() => observation,
        };
        let now = Instant::now();
        cluster.record(observation, now - last);
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::least_connections::LeastConnections;
    use crate::balancer::Balancer;
    use crate::cluster::events::Events;
    use crate::cluster::observe::Observation;
    use crate::cluster::view::HISTORY_SAMPLES;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Ten more cells at every look.
    struct Counting(AtomicU64);

    #[async_trait]
    impl Source for Counting {
        async fn observe(&self) -> Observation {
            let looks = self.0.fetch_add(1, Ordering::Relaxed) + 1;
            Observation {
                cells_total: looks * 10,
                runners: Vec::new(),
                nodes: Some(Vec::new()),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn samples_keep_ten_minutes_and_stop_with_the_gateway() {
        let cluster = Arc::new(Cluster::new(Arc::new(Events::default()), SAMPLE_EVERY));
        let mut samples = cluster.subscribe();
        let source = Arc::new(Counting(AtomicU64::new(0)));
        let stopping = CancellationToken::new();
        let task = tokio::spawn(run(
            source.clone(),
            cluster.clone(),
            SAMPLE_EVERY,
            stopping.clone(),
        ));
        samples.changed().await.unwrap();
        assert_eq!(
            source.0.load(Ordering::Relaxed),
            1,
            "the first look is at once"
        );

        tokio::time::sleep(Duration::from_secs(20 * 60)).await;
        let looks = source.0.load(Ordering::Relaxed);
        assert!((600..=601).contains(&looks), "{looks} looks in 20 minutes");
        let snapshot = cluster.snapshot(&Balancer::new(LeastConnections));
        let rates = &snapshot.throughput.cells_per_second;
        assert_eq!(rates.len(), HISTORY_SAMPLES, "ten minutes are kept");
        assert!(rates.iter().all(|rate| *rate == 5.0), "{rates:?}");

        stopping.cancel();
        task.await.unwrap();
        let after = source.0.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            source.0.load(Ordering::Relaxed),
            after,
            "no look after the stop"
        );
    }
}
