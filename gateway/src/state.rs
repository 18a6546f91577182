//! What every request handler shares: the auth policy, the balancer, the kernel owners, the
//! client for runners, the task set and the settings.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::auth::Auth;
use crate::balancer::least_connections::LeastConnections;
use crate::balancer::owners::KernelOwners;
use crate::balancer::Balancer;
use crate::config::{GatewayConfig, HealthSettings, Timeouts, WebsocketSettings};
use crate::error::GatewayError;
use crate::proxy::upstream::Upstream;
use crate::tasks::Tasks;

pub struct Gateway {
    pub auth: Auth,
    pub balancer: Arc<Balancer>,
    pub owners: KernelOwners,
    pub upstream: Upstream,
    pub tasks: Tasks,
    pub timeouts: Timeouts,
    pub websocket: WebsocketSettings,
    pub health: HealthSettings,
    pub max_body_bytes: usize,
}

impl Gateway {
    pub fn new(config: &GatewayConfig, tasks: Tasks) -> Result<Gateway, GatewayError> {
        for runner in &config.runners {
            if runner.host().is_none() {
                return Err(GatewayError::InvalidRunnerUrl {
                    runner: runner.clone(),
                });
            }
        }
        let upstream = Upstream::new(
            &config.runner_secret,
            &config.timeouts,
            config.max_body_bytes,
            tasks.executor(),
        )?;
        Ok(Gateway {
            auth: Auth::new(config.token.as_deref()),
            balancer: Arc::new(Balancer::new(&config.runners, LeastConnections)),
            owners: KernelOwners::new(),
            upstream,
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
