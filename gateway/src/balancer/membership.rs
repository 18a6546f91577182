//! Keeping the runner set in step with discovery: the source is asked again every few
//! seconds; new runners are added (and checked at once), and runners that left are dropped,
//! their sessions closed and their kernels reported dead. A failed lookup changes nothing, so
//! a DNS hiccup does not empty the set.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::discovery::Discovery;
use super::Balancer;
use crate::cluster::events::{runner_subject, EventKind};
use crate::error::chain;

/// Asks `discovery` every `refresh` until `stopping`, after a first answer was taken by
/// [`refresh`]. A source that never changes is not asked again.
pub async fn run(
    discovery: Arc<dyn Discovery>,
    balancer: Arc<Balancer>,
    refresh_every: Duration,
    nudge: Arc<Notify>,
    stopping: CancellationToken,
) {
    if !discovery.changes() {
        return;
    }
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tokio::time::sleep(refresh_every) => {}
        }
        if refresh(discovery.as_ref(), &balancer).await {
            nudge.notify_one();
        }
    }
}

/// Takes one answer from `discovery`. Returns true when runners were added, which the health
/// checker should look at before their first interval is up.
pub async fn refresh(discovery: &dyn Discovery, balancer: &Balancer) -> bool {
    let urls = match discovery.discover().await {
        Ok(urls) => urls,
        Err(error) => {
            tracing::warn!(source = %discovery.describe(), error = %chain(&error), "runner discovery failed; keeping the runners known so far");
            return false;
        }
    };
    let change = balancer.update(&urls);
    for backend in &change.added {
        tracing::info!(runner = %backend.url(), "kernel runner joined");
        balancer.events.push(
            EventKind::RunnerJoined,
            runner_subject(backend),
            format!("{} joined the runner list", backend.url()),
        );
    }
    for backend in &change.removed {
        backend.retire();
        let reason = format!("kernel runner {} left the runner list", backend.url());
        let dead = balancer.bury_kernels_of(backend, &reason);
        tracing::warn!(runner = %backend.url(), kernels = dead, "kernel runner left; its kernels are dead");
        balancer.events.push(
            EventKind::RunnerLeft,
            runner_subject(backend),
            format!("{reason}; {dead} kernel(s) reported dead"),
        );
    }
    !change.added.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::discovery::tests::Scripted;
    use crate::balancer::discovery::Dns;
    use crate::balancer::least_connections::LeastConnections;
    use std::sync::Mutex;

    #[tokio::test]
    async fn runners_join_and_leave_as_the_name_resolves() {
        let resolver = Arc::new(Scripted(Mutex::new(Ok(vec!["10.0.0.1:9000"
            .parse()
            .unwrap()]))));
        let dns = Dns::new("tasks.kernel-runner", 9000, resolver.clone());
        let balancer = Balancer::new(LeastConnections);
        assert!(refresh(&dns, &balancer).await, "the first runner is new");
        let first = balancer.backends()[0].clone();
        let kernel = uuid::Uuid::new_v4();
        balancer.owners.record(kernel, first.id(), None);
        let first_life = first.life();

        *resolver.0.lock().unwrap() = Ok(vec![
            "10.0.0.1:9000".parse().unwrap(),
            "10.0.0.2:9000".parse().unwrap(),
        ]);
        assert!(refresh(&dns, &balancer).await);
        assert_eq!(balancer.backends().len(), 2);

        // A lookup that fails keeps both.
        *resolver.0.lock().unwrap() = Err(std::io::Error::other("SERVFAIL"));
        assert!(!refresh(&dns, &balancer).await);
        assert_eq!(balancer.backends().len(), 2);

        *resolver.0.lock().unwrap() = Ok(vec!["10.0.0.2:9000".parse().unwrap()]);
        assert!(!refresh(&dns, &balancer).await);
        let left: Vec<String> = balancer
            .backends()
            .iter()
            .map(|backend| backend.url().to_string())
            .collect();
        assert_eq!(left, vec!["http://10.0.0.2:9000/"]);
        assert!(first_life.is_cancelled(), "its websockets are closed");
        let dead = balancer.graveyard.get(&kernel).expect("its kernel is dead");
        assert_eq!(
            dead.reason.as_deref(),
            Some("kernel runner http://10.0.0.1:9000/ left the runner list")
        );
        let kinds: Vec<_> = balancer
            .events
            .recent()
            .iter()
            .rev()
            .map(|event| event.kind)
            .collect();
        use crate::cluster::events::EventKind;
        assert_eq!(
            kinds,
            vec![
                EventKind::RunnerJoined,
                EventKind::RunnerJoined,
                EventKind::RunnerLeft
            ],
            "the cluster page hears of each runner joining and leaving"
        );
    }
}
