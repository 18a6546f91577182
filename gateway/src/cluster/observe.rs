//! One look at the cluster, the input of a sample: every runner's report of itself
//! (`GET /api/runner`, with its node, kernels started and jobs finished), the nodes'
//! heartbeats as one runner reads them from the job volume (`GET /api/nodes`), and the
//! count of cells this gateway has timed. The [`Source`] trait lets the sampler be tested
//! with scripted looks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cellgate_protocol::job::NodeReport;
use cellgate_protocol::model::RunnerReport;
use http::StatusCode;

use crate::balancer::backend::Backend;
use crate::balancer::Balancer;
use crate::error::{chain, GatewayError};
use crate::metrics::Metrics;
use crate::proxy::upstream::{Outbound, Upstream};

/// What one look saw.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Execute replies this gateway has timed since it started.
    pub cells_total: u64,
    pub runners: Vec<RunnerSeen>,
    /// `None` when no runner could say (none is healthy, or none has a job volume).
    pub nodes: Option<Vec<NodeReport>>,
}

/// One runner of the balancer, and its report when it gave one.
#[derive(Debug, Clone)]
pub struct RunnerSeen {
    /// Its balancer id.
    pub id: usize,
    pub url: String,
    pub draining: bool,
    pub report: Option<RunnerReport>,
}

#[async_trait]
pub trait Source: Send + Sync + 'static {
    async fn observe(&self) -> Observation;
}

/// Looks at the real cluster through the gateway's runner client.
pub struct Live {
    pub balancer: Arc<Balancer>,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    /// How long one runner may take to answer.
    pub timeout: Duration,
}

#[async_trait]
impl Source for Live {
    async fn observe(&self) -> Observation {
        let backends = self.balancer.backends();
        let reports = futures_util::future::join_all(backends.iter().map(|backend| async {
            // A gone runner is not asked: the health checker decides when it is back.
            let report = if backend.is_gone() {
                None
            } else {
                self.report(backend).await
            };
            RunnerSeen {
                id: backend.id(),
                url: backend.url().to_string(),
                draining: backend.load().draining,
                report,
            }
        }));
        let (runners, nodes) = tokio::join!(reports, self.nodes());
        Observation {
            cells_total: self.metrics.execute_latency.count(),
            runners,
            nodes,
        }
    }
}

impl Live {
    async fn report(&self, backend: &Backend) -> Option<RunnerReport> {
        let answer = self
            .upstream
            .check(backend, Outbound::get("/api/runner"), self.timeout)
            .await
            .and_then(|answer| {
                if answer.status != StatusCode::OK {
                    return Err(GatewayError::RunnerStatus {
                        runner: backend.url().clone(),
                        what: "a runner report",
                        status: answer.status,
                    });
                }
                answer.json::<RunnerReport>(backend.url(), "runner report")
            });
        match answer {
            Ok(report) => Some(report),
            Err(error) => {
                // The health checker judges runners; a missed report is a gap in the charts.
                tracing::debug!(runner = %backend.url(), error = %chain(&error), "no runner report this time");
                None
            }
        }
    }

    /// The heartbeats, from the first of two healthy runners that answers.
    async fn nodes(&self) -> Option<Vec<NodeReport>> {
        for backend in self.balancer.healthy().iter().take(2) {
            let answer = self
                .upstream
                .check(backend, Outbound::get("/api/nodes"), self.timeout)
                .await;
            match answer {
                Ok(answer) if answer.status == StatusCode::OK => {
                    match answer.json::<Vec<NodeReport>>(backend.url(), "node list") {
                        Ok(nodes) => return Some(nodes),
                        Err(error) => {
                            tracing::debug!(error = %chain(&error), "unreadable node list");
                        }
                    }
                }
                // A runner without a job volume has no heartbeats to show.
                Ok(answer) if answer.status == StatusCode::NOT_FOUND => return None,
                Ok(answer) => {
                    tracing::debug!(runner = %backend.url(), status = %answer.status, "no node list this time");
                }
                Err(error) => {
                    tracing::debug!(runner = %backend.url(), error = %chain(&error), "no node list this time");
                }
            }
        }
        None
    }
}
