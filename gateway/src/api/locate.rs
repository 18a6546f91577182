//! Finding the runner that owns a kernel: the gateway's own record first, then every runner
//! is asked, so kernels started through another gateway replica, or before a restart, are
//! still found.

use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use http::StatusCode;
use uuid::Uuid;

use crate::balancer::backend::Backend;
use crate::error::{chain, GatewayError};
use crate::proxy::upstream::Outbound;
use crate::state::Gateway;

pub async fn owner(gateway: &Gateway, kernel: Uuid) -> Result<Arc<Backend>, GatewayError> {
    let known = gateway
        .owners
        .get(&kernel)
        .and_then(|index| gateway.balancer.backend(index));
    match known {
        Some(backend) => Ok(backend.clone()),
        None => discover(gateway, kernel).await,
    }
}

/// Asks every runner, healthy or not (one just restarted may not have been checked yet), and
/// takes the first that knows the kernel.
async fn discover(gateway: &Gateway, kernel: Uuid) -> Result<Arc<Backend>, GatewayError> {
    let mut asking: FuturesUnordered<_> = gateway
        .balancer
        .backends()
        .iter()
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
                gateway.owners.record(kernel, backend.index());
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
