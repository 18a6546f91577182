//! Active health checks: every runner's `GET /api/runner` is polled on an interval; a runner
//! that answers with its status is healthy and its load is recorded, any other outcome takes
//! it out of rotation until it answers again.

use std::sync::Arc;

use cellgate_protocol::model::RunnerStatus;
use http::StatusCode;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::backend::Backend;
use super::Balancer;
use crate::config::HealthSettings;
use crate::error::{chain, GatewayError};
use crate::proxy::upstream::{Outbound, Upstream};

/// Checks every runner until `stopping` is cancelled. The first round runs at once.
pub async fn run(
    balancer: Arc<Balancer>,
    upstream: Upstream,
    settings: HealthSettings,
    stopping: CancellationToken,
) {
    let mut ticks = tokio::time::interval(settings.interval);
    // A slow round must not be followed by a burst of catch-up rounds.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = ticks.tick() => check_all(&balancer, &upstream, &settings).await,
        }
    }
}

/// One round: every runner is checked concurrently.
pub async fn check_all(balancer: &Balancer, upstream: &Upstream, settings: &HealthSettings) {
    let checks = balancer
        .backends()
        .iter()
        .map(|backend| check_one(backend, upstream, settings));
    futures_util::future::join_all(checks).await;
}

async fn check_one(backend: &Backend, upstream: &Upstream, settings: &HealthSettings) {
    let runner = backend.url();
    match status(backend, upstream, settings).await {
        Ok(status) => {
            if backend.record_status(&status) {
                tracing::info!(
                    %runner,
                    runner_id = %status.runner_id,
                    version = %status.version,
                    "kernel runner healthy"
                );
            }
        }
        Err(error) => {
            if backend.mark_unhealthy() {
                tracing::warn!(%runner, error = %chain(&error), "kernel runner unhealthy");
            }
        }
    }
}

async fn status(
    backend: &Backend,
    upstream: &Upstream,
    settings: &HealthSettings,
) -> Result<RunnerStatus, GatewayError> {
    let answer = upstream
        .send_within(backend, Outbound::get("/api/runner"), settings.timeout)
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
