//! Finding the runner that owns a kernel: the gateway's own record first, then the kernels
//! reported dead because their runner is gone, then every runner is asked, so kernels started
//! through another gateway replica, or before a restart, are still found.

use std::sync::Arc;

use cellgate_protocol::model::KernelModel;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::StatusCode;
use uuid::Uuid;

use crate::balancer::backend::Backend;
use crate::error::{chain, GatewayError};
use crate::proxy::upstream::Outbound;
use crate::state::Gateway;

/// Where a kernel is.
#[derive(Debug)]
pub enum Whereabouts {
    /// On this runner, which is not known to be gone.
    Runner(Arc<Backend>),
    /// Its runner is gone; this is its last known model, marked dead.
    Dead(KernelModel),
}

pub async fn find(gateway: &Gateway, kernel: Uuid) -> Result<Whereabouts, GatewayError> {
    let balancer = &gateway.balancer;
    let known = balancer
        .owners
        .get(&kernel)
        .and_then(|id| balancer.backend(id));
    if let Some(backend) = known {
        return Ok(Whereabouts::Runner(backend));
    }
    if let Some(dead) = balancer.graveyard.get(&kernel) {
        return Ok(Whereabouts::Dead(dead));
    }
    discover(gateway, kernel).await.map(Whereabouts::Runner)
}

/// The kernel's live runner; a kernel whose runner is gone is an error here.
pub async fn owner(gateway: &Gateway, kernel: Uuid) -> Result<Arc<Backend>, GatewayError> {
    match find(gateway, kernel).await? {
        Whereabouts::Runner(backend) => Ok(backend),
        Whereabouts::Dead(model) => Err(GatewayError::KernelGone {
            kernel_id: model.id,
            reason: model.reason.unwrap_or_default(),
        }),
    }
}

/// Asks every runner that is not gone, healthy or not (one just restarted may not have been
/// checked yet), and takes the first that knows the kernel.
async fn discover(gateway: &Gateway, kernel: Uuid) -> Result<Arc<Backend>, GatewayError> {
    let backends = gateway.balancer.backends();
    let mut asking: FuturesUnordered<_> = backends
        .iter()
        .filter(|backend| !backend.is_gone())
        .map(|backend| async move {
            let outbound = Outbound::get(format!("/api/kernels/{kernel}"));
            let answer = gateway
                .upstream
                .send_within(backend, outbound, gateway.health.timeout)
                .await;
            (backend, answer)
        })
        .collect();
    while let Some((backend, answer)) = asking.next().await {
        match answer {
            Ok(answer) if answer.status == StatusCode::OK => {
                let model: Option<KernelModel> = answer.json(backend.url(), "kernel model").ok();
                gateway.balancer.owners.record(kernel, backend.id(), model);
                tracing::debug!(%kernel, runner = %backend.url(), "kernel owner discovered");
                return Ok(backend.clone());
            }
            Ok(_) => {}
            Err(error) => {
                // A runner that cannot answer cannot be serving the kernel's clients either;
                // to the client the kernel is gone, so the answer stays 404.
                tracing::debug!(%kernel, error = %chain(&error), "runner not asked about kernel");
            }
        }
    }
    Err(GatewayError::KernelNotFound {
        kernel_id: kernel.to_string(),
    })
}
