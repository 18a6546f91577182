//! `/api/kernels`: listing the kernels of every runner (and those of runners that are gone,
//! as dead), starting a kernel on the runner the balancer picks, and forwarding the
//! per-kernel calls to the kernel's owner.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cellgate_protocol::model::{CreateKernel, KernelModel};
use http::request::Parts;
use http::{Method, StatusCode};
use uuid::Uuid;

use super::locate::{self, Whereabouts};
use crate::balancer::backend::{Backend, Health};
use crate::balancer::health::record_failure;
use crate::error::{chain, is_refused, GatewayError};
use crate::proxy::rest::{self, Forward};
use crate::proxy::upstream::Outbound;
use crate::response::{self, Response};
use crate::state::{Connection, Gateway};

/// `GET /api/kernels`.
pub async fn list(gateway: &Gateway) -> Result<Response, GatewayError> {
    let kernels = gather(gateway).await?;
    Ok(response::json(StatusCode::OK, &kernels))
}

/// The kernels of every runner: healthy runners are asked; for a runner that failed its last
/// check (but is not gone) the last known models stand in; kernels of runners that are gone
/// are listed as dead. Only when nothing at all is known is the list an error.
pub async fn gather(gateway: &Gateway) -> Result<Vec<KernelModel>, GatewayError> {
    let backends = gateway.balancer.backends();
    let healthy: Vec<Arc<Backend>> = backends
        .iter()
        .filter(|backend| backend.is_healthy())
        .cloned()
        .collect();
    let asked = Instant::now();
    let answers =
        futures_util::future::join_all(healthy.iter().map(|backend| fetch(gateway, backend))).await;
    let mut kernels = Vec::new();
    let mut answered = false;
    let mut first_error = None;
    let mut stale = Vec::new();
    for (backend, answer) in healthy.iter().zip(answers) {
        match answer {
            Ok(models) => {
                answered = true;
                // Listing doubles as discovery: later calls for these kernels need no search.
                gateway.balancer.record_list(backend, &models, asked);
                kernels.extend(models);
            }
            Err(error) => {
                tracing::warn!(error = %chain(&error), "kernel list of a runner unavailable");
                first_error.get_or_insert(error);
                stale.push(backend.clone());
            }
        }
    }
    stale.extend(
        backends
            .iter()
            .filter(|backend| matches!(backend.health(), Health::Unhealthy | Health::Unknown))
            .cloned(),
    );
    for backend in stale {
        kernels.extend(gateway.balancer.owners.models_of(backend.id()));
    }
    kernels.extend(gateway.balancer.graveyard.list());
    if !answered && kernels.is_empty() {
        return Err(first_error.unwrap_or(GatewayError::NoHealthyRunner));
    }
    Ok(kernels)
}

async fn fetch(gateway: &Gateway, backend: &Backend) -> Result<Vec<KernelModel>, GatewayError> {
    let answer = gateway
        .upstream
        .send(backend, Outbound::get("/api/kernels"))
        .await?;
    if answer.status != StatusCode::OK {
        return Err(GatewayError::RunnerStatus {
            runner: backend.url().clone(),
            what: "GET /api/kernels",
            status: answer.status,
        });
    }
    answer.json(backend.url(), "kernel list")
}

/// `POST /api/kernels`: starts a kernel on the least loaded healthy runner.
pub async fn create(
    gateway: &Gateway,
    connection: &Connection,
    parts: &Parts,
    body: Bytes,
) -> Result<Response, GatewayError> {
    // Jupyter accepts an empty body (the default kernel); anything else must be the model.
    let request: CreateKernel = if body.iter().all(u8::is_ascii_whitespace) {
        CreateKernel::default()
    } else {
        serde_json::from_slice(&body).map_err(|source| GatewayError::InvalidJson { source })?
    };
    // Each runner only knows its own kernels, so a client-chosen id is checked here too.
    if let Some(kernel_id) = &request.kernel_id {
        if let Ok(kernel) = Uuid::parse_str(kernel_id) {
            let balancer = &gateway.balancer;
            if balancer.owners.get(&kernel).is_some() || balancer.graveyard.get(&kernel).is_some() {
                return Err(GatewayError::KernelIdInUse {
                    kernel_id: kernel_id.clone(),
                });
            }
        }
    }
    // A runner that cannot be connected to never saw the request, and one that answers 503
    // (shutting down, or full) did not start the kernel, so the next best runner may try;
    // any other failure could mean a started kernel and is not retried.
    let target = super::runner_target(&parts.uri);
    let mut tried = Vec::new();
    let mut refused = None;
    loop {
        let Some(placement) = gateway.balancer.place_avoiding(&tried) else {
            return match refused {
                Some((answer, runner)) => Ok(rest::to_client(answer, &runner)),
                None => Err(GatewayError::NoHealthyRunner),
            };
        };
        let backend = placement.backend().clone();
        tried.push(backend.id());
        let forward = Forward {
            method: Method::POST,
            path_and_query: &target,
            headers: &parts.headers,
            peer: connection.peer.ip(),
            body: body.clone(),
        };
        let answer = match rest::forward(&gateway.upstream, &backend, forward).await {
            Ok(answer) => answer,
            Err(GatewayError::RunnerUnreachable { runner, source }) => {
                tracing::warn!(%runner, error = %source, "kernel start not delivered; trying another runner");
                continue;
            }
            Err(error) => return Err(error),
        };
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::info!(runner = %backend.url(), "runner takes no kernel now; trying another runner");
            backend.mark_draining();
            refused = Some((answer, backend.url().clone()));
            continue;
        }
        if answer.status.is_success() {
            let model: KernelModel = answer.json(backend.url(), "kernel model")?;
            if let Ok(kernel) = Uuid::parse_str(&model.id) {
                gateway
                    .balancer
                    .record_owner(kernel, &backend, Some(model.clone()));
            }
            placement.succeeded();
            tracing::info!(kernel = %model.id, name = %model.name, runner = %backend.url(), "kernel started");
        }
        return Ok(rest::to_client(answer, backend.url()));
    }
}

/// `GET`/`DELETE /api/kernels/{id}`, `POST .../interrupt`, `POST .../restart`: forwarded to
/// the kernel's owner as they are. A kernel whose runner is gone is shown as dead and can be
/// deleted; it can no longer be interrupted or restarted.
pub async fn forward(
    gateway: &Gateway,
    connection: &Connection,
    kernel: Uuid,
    parts: &Parts,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let backend = match locate::find(gateway, kernel).await? {
        Whereabouts::Runner(backend) => backend,
        Whereabouts::Dead(model) => return dead(gateway, kernel, &parts.method, model),
    };
    let target = super::runner_target(&parts.uri);
    let forward = Forward {
        method: parts.method.clone(),
        path_and_query: &target,
        headers: &parts.headers,
        peer: connection.peer.ip(),
        body,
    };
    let answer = match rest::forward(&gateway.upstream, &backend, forward).await {
        Ok(answer) => answer,
        Err(error) => {
            // Nothing listens where the runner was: it is gone, and the kernel with it.
            if is_refused(&error) && record_failure(&gateway.balancer, &backend, &error) {
                if let Some(model) = gateway.balancer.graveyard.get(&kernel) {
                    return dead(gateway, kernel, &parts.method, model);
                }
            }
            return Err(error);
        }
    };
    let gone = answer.status == StatusCode::NOT_FOUND
        || (parts.method == Method::DELETE && answer.status.is_success());
    if gone {
        gateway.balancer.owners.forget(&kernel);
        if parts.method == Method::DELETE && answer.status.is_success() {
            backend.kernel_deleted();
        }
    } else if parts.method == Method::GET && answer.status == StatusCode::OK {
        if let Ok(model) = answer.json::<KernelModel>(backend.url(), "kernel model") {
            gateway.balancer.record_owner(kernel, &backend, Some(model));
        }
    }
    Ok(rest::to_client(answer, backend.url()))
}

/// The answer for a kernel whose runner is gone.
fn dead(
    gateway: &Gateway,
    kernel: Uuid,
    method: &Method,
    model: KernelModel,
) -> Result<Response, GatewayError> {
    if *method == Method::GET {
        return Ok(response::json(StatusCode::OK, &model));
    }
    if *method == Method::DELETE {
        gateway.balancer.graveyard.remove(&kernel);
        return Ok(response::empty(StatusCode::NO_CONTENT));
    }
    Err(GatewayError::KernelGone {
        kernel_id: model.id,
        reason: model.reason.unwrap_or_default(),
    })
}
