//! What every request handler shares: the auth policy, the balancer (with the kernel owners
//! and the dead kernels), the client for runners, the metrics, the cluster view, the task set
//! and the settings.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::api::jobs::JobsFront;
use crate::auth::Auth;
use crate::balancer::least_connections::LeastConnections;
use crate::balancer::Balancer;
use crate::cluster::observe::Live;
use crate::cluster::{sampler, Cluster};
use crate::config::{GatewayConfig, HealthSettings, RunnerSource, Timeouts, WebsocketSettings};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::proxy::upstream::Upstream;
use crate::tasks::Tasks;
use crate::tls::reload::CertificateReloader;

pub struct Gateway {
    pub auth: Auth,
    pub balancer: Arc<Balancer>,
    pub upstream: Upstream,
    /// The streaming client of the batch jobs routes.
    pub jobs: JobsFront,
    pub metrics: Arc<Metrics>,
    /// The cluster page's history and events, kept by a sampler task.
    pub cluster: Arc<Cluster>,
    /// The served TLS certificate, for its reload counts.
    pub certificates: Arc<CertificateReloader>,
    /// Wakes the health checker before its next interval.
    pub health_nudge: Arc<Notify>,
    pub tasks: Tasks,
    pub timeouts: Timeouts,
    pub websocket: WebsocketSettings,
    pub health: HealthSettings,
    pub max_body_bytes: usize,
}

impl Gateway {
    pub fn new(
        config: &GatewayConfig,
        tasks: Tasks,
        certificates: Arc<CertificateReloader>,
    ) -> Result<Gateway, GatewayError> {
        if let RunnerSource::Static(runners) = &config.runners {
            for runner in runners {
                if runner.host().is_none() {
                    return Err(GatewayError::InvalidRunnerUrl {
                        runner: runner.clone(),
                    });
                }
            }
        }
        let health_nudge = Arc::new(Notify::new());
        let upstream = Upstream::new(
            &config.runner_secret,
            &config.timeouts,
            config.max_body_bytes,
            tasks.executor(),
            health_nudge.clone(),
        )?;
        let jobs = JobsFront::new(
            upstream.secret(),
            &config.timeouts,
            config.jobs.clone(),
            tasks.executor(),
        );
        let balancer = Arc::new(Balancer::new(LeastConnections));
        let metrics = Arc::new(Metrics::new());
        let cluster = Arc::new(Cluster::new(balancer.events.clone(), sampler::SAMPLE_EVERY));
        // The sampler lives as long as the gateway: started here with the state it reads,
        // stopped by the same token as the health checks.
        tasks.spawn(sampler::run(
            Arc::new(Live {
                balancer: balancer.clone(),
                upstream: upstream.clone(),
                metrics: metrics.clone(),
                timeout: config.health.timeout,
            }),
            cluster.clone(),
            sampler::SAMPLE_EVERY,
            tasks.stopping().clone(),
        ));
        Ok(Gateway {
            auth: Auth::new(config.token.as_deref()),
            balancer,
            upstream,
            jobs,
            metrics,
            cluster,
            certificates,
            health_nudge,
            tasks,
            timeouts: config.timeouts.clone(),
            websocket: config.websocket.clone(),
            health: config.health.clone(),
            max_body_bytes: config.max_body_bytes,
        })
    }
}

/// What a handler knows about the connection a request came on.
#[derive(Clone)]
pub struct Connection {
    pub peer: SocketAddr,
    /// The connection's slot under the connection limit; a websocket session keeps it.
    pub permit: Arc<OwnedSemaphorePermit>,
}
