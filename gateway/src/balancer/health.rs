//! Active health checks: every runner's `GET /api/runner` is polled on an interval (and at
//! once when a proxied session saw its runner fail). A runner that answers is healthy and its
//! load is recorded; one that fails takes no new kernels; one that refuses connections, or
//! fails several checks in a row, is gone: its sessions close and its kernels are reported
//! dead. Each check also keeps the gateway's copy of the runner's kernel list fresh enough to
//! answer for those kernels if the runner goes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cellgate_protocol::model::{KernelModel, RunnerStatus};
use http::StatusCode;
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, Health, Transition};
use super::Balancer;
use crate::cluster::events::{runner_subject, EventKind};
use crate::config::HealthSettings;
use crate::error::{chain, is_refused, root_cause, GatewayError};
use crate::proxy::upstream::{Outbound, Upstream};

/// The shortest time between two rounds, however often the checker is nudged.
const MIN_ROUND_GAP: Duration = Duration::from_millis(100);

/// A runner's kernel list is read again when its kernel count changes, and at least this
/// often, so kernels started through other gateways are known before their runner can fail.
const KERNEL_LIST_MAX_AGE: Duration = Duration::from_secs(10);

/// Checks every runner until `stopping` is cancelled: every interval, and whenever `nudge`
/// is notified.
pub async fn run(
    balancer: Arc<Balancer>,
    upstream: Upstream,
    settings: HealthSettings,
    nudge: Arc<Notify>,
    stopping: CancellationToken,
) {
    let mut ticks = tokio::time::interval(settings.interval);
    // A slow round must not be followed by a burst of catch-up rounds.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_round = Instant::now() - MIN_ROUND_GAP;
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = ticks.tick() => {}
            () = nudge.notified() => {
                // Several sessions of one runner fail together; one round answers them all.
                tokio::time::sleep_until((last_round + MIN_ROUND_GAP).into()).await;
            }
        }
        last_round = Instant::now();
        check_all(&balancer, &upstream, &settings).await;
    }
}

/// One round: every runner is checked concurrently.
pub async fn check_all(balancer: &Balancer, upstream: &Upstream, settings: &HealthSettings) {
    let backends = balancer.backends();
    let checks = backends
        .iter()
        .map(|backend| check_one(balancer, backend, upstream, settings));
    futures_util::future::join_all(checks).await;
}

async fn check_one(
    balancer: &Balancer,
    backend: &Backend,
    upstream: &Upstream,
    settings: &HealthSettings,
) {
    let runner = backend.url();
    match status(backend, upstream, settings).await {
        Ok(status) => {
            let before = backend.health();
            let transition = backend.record_status(&status);
            match transition {
                Transition::Recovered => {
                    tracing::info!(
                        %runner,
                        runner_id = %status.runner_id,
                        version = %status.version,
                        "kernel runner healthy"
                    );
                    // A first good check is no news: discovery reported the runner joining.
                    if before == Health::Unhealthy {
                        balancer.events.push(
                            EventKind::RunnerBack,
                            runner_subject(backend),
                            format!("{runner} answers its health checks again"),
                        );
                    }
                }
                Transition::Revived => {
                    tracing::warn!(
                        %runner,
                        runner_id = %status.runner_id,
                        "kernel runner is back; kernels it no longer lists stay dead"
                    );
                    balancer.events.push(
                        EventKind::RunnerBack,
                        runner_subject(backend),
                        format!("{runner} is back; the kernels it no longer lists stay dead"),
                    );
                }
                _ => {}
            }
            if transition == Transition::Revived || backend.needs_sync(KERNEL_LIST_MAX_AGE) {
                sync_kernels(balancer, backend, upstream, settings).await;
            }
        }
        Err(error) => {
            record_failure(balancer, backend, &error);
        }
    }
}

/// Takes a failed exchange with `backend`, from a health check or a request: the runner
/// leaves the rotation, and when it is gone its kernels are reported dead. Returns true when
/// the runner is gone now.
pub fn record_failure(balancer: &Balancer, backend: &Backend, error: &GatewayError) -> bool {
    let runner = backend.url();
    match backend.record_failure(is_refused(error)) {
        Transition::Failed => {
            tracing::warn!(%runner, error = %chain(error), "kernel runner unhealthy");
            balancer.events.push(
                EventKind::RunnerUnhealthy,
                runner_subject(backend),
                format!(
                    "{runner} failed a check ({}): it takes no new kernels",
                    root_cause(error)
                ),
            );
        }
        Transition::Lost => {
            let reason = format!("kernel runner {runner} is gone: {}", root_cause(error));
            let dead = balancer.bury_kernels_of(backend, &reason);
            tracing::warn!(%runner, kernels = dead, error = %chain(error), "kernel runner gone; its kernels are dead");
            balancer.events.push(
                EventKind::RunnerGone,
                runner_subject(backend),
                format!("{reason}; {dead} kernel(s) reported dead"),
            );
        }
        _ => {}
    }
    backend.is_gone()
}

async fn status(
    backend: &Backend,
    upstream: &Upstream,
    settings: &HealthSettings,
) -> Result<RunnerStatus, GatewayError> {
    let answer = upstream
        .check(backend, Outbound::get("/api/runner"), settings.timeout)
        .await?;
    if answer.status != StatusCode::OK {
        return Err(GatewayError::RunnerStatus {
            runner: backend.url().clone(),
            what: "a health check",
            status: answer.status,
        });
    }
    answer.json(backend.url(), "runner status")
}

/// Reads the runner's kernel list into the owners map. A failure is only logged: the next
/// round tries again.
async fn sync_kernels(
    balancer: &Balancer,
    backend: &Backend,
    upstream: &Upstream,
    settings: &HealthSettings,
) {
    let asked = Instant::now();
    let listed = async {
        let answer = upstream
            .check(backend, Outbound::get("/api/kernels"), settings.timeout)
            .await?;
        if answer.status != StatusCode::OK {
            return Err(GatewayError::RunnerStatus {
                runner: backend.url().clone(),
                what: "GET /api/kernels",
                status: answer.status,
            });
        }
        answer.json::<Vec<KernelModel>>(backend.url(), "kernel list")
    };
    match listed.await {
        Ok(models) => balancer.record_list(backend, &models, asked),
        Err(error) => {
            tracing::debug!(runner = %backend.url(), error = %chain(&error), "reading a runner's kernel list failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::least_connections::LeastConnections;
    use crate::cluster::events::EventKind;
    use cellgate_protocol::model::RunnerStatus;

    #[test]
    fn failures_and_losses_are_reported_as_events() {
        let balancer = Balancer::new(LeastConnections);
        balancer.update(&[url::Url::parse("http://127.0.0.1:9").unwrap()]);
        let backend = balancer.backends()[0].clone();
        backend.record_status(&RunnerStatus {
            runner_id: "node0".into(),
            version: "0".into(),
            sessions: 0,
            kernels: 0,
            draining: false,
        });
        let timeout = GatewayError::RunnerTimeout {
            runner: backend.url().clone(),
            after: Duration::from_secs(1),
        };
        for _ in 0..super::super::backend::GONE_AFTER_FAILURES {
            record_failure(&balancer, &backend, &timeout);
        }
        let events = balancer.events.recent();
        let kinds: Vec<EventKind> = events.iter().map(|event| event.kind).collect();
        assert_eq!(
            kinds,
            vec![EventKind::RunnerGone, EventKind::RunnerUnhealthy]
        );
        assert_eq!(events[0].subject, "node0");
        assert!(
            events[0].message.contains("is gone") && events[0].message.contains("0 kernel(s)"),
            "{}",
            events[0].message
        );
    }
}
