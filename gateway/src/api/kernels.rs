//! `/api/kernels`: listing the kernels of every runner, starting a kernel on the runner the
//! balancer picks, and forwarding the per-kernel calls to the kernel's owner.

use std::sync::Arc;

use bytes::Bytes;
use cellgate_protocol::model::{CreateKernel, KernelModel};
use http::request::Parts;
use http::{Method, StatusCode};
use uuid::Uuid;

use super::locate;
use crate::balancer::backend::Backend;
use crate::error::{chain, GatewayError};
use crate::proxy::rest::{self, Forward};
use crate::proxy::upstream::Outbound;
use crate::response::{self, Response};
use crate::state::{Connection, Gateway};

/// `GET /api/kernels`.
pub async fn list(gateway: &Gateway) -> Result<Response, GatewayError> {
    let kernels = gather(gateway).await?;
    Ok(response::json(StatusCode::OK, &kernels))
}

/// The kernels of every healthy runner. A runner that fails is left out (and logged) rather
/// than failing the whole list; only when no runner answers is the list an error.
pub async fn gather(gateway: &Gateway) -> Result<Vec<KernelModel>, GatewayError> {
    let healthy: Vec<Arc<Backend>> = gateway.balancer.healthy().cloned().collect();
    let answers =
        futures_util::future::join_all(healthy.iter().map(|backend| fetch(gateway, backend))).await;
    let mut kernels = Vec::new();
    let mut answered = false;
    let mut first_error = None;
    for (backend, answer) in healthy.iter().zip(answers) {
        match answer {
            Ok(models) => {
                answered = true;
                for model in &models {
                    // Listing doubles as discovery: later calls for these kernels need no
                    // search.
                    if let Ok(kernel) = Uuid::parse_str(&model.id) {
                        gateway.owners.record(kernel, backend.index());
                    }
                }
                kernels.extend(models);
            }
            Err(error) => {
                tracing::warn!(error = %chain(&error), "kernel list of a runner unavailable");
                first_error.get_or_insert(error);
            }
        }
    }
    if answered {
        Ok(kernels)
    } else {
        Err(first_error.unwrap_or(GatewayError::NoHealthyRunner))
    }
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
            if gateway.owners.get(&kernel).is_some() {
                return Err(GatewayError::KernelIdInUse {
                    kernel_id: kernel_id.clone(),
                });
            }
        }
    }
    // A runner that cannot be connected to never saw the request, so the next best runner
    // may try; any later failure could mean a started kernel and is not retried.
    let target = super::runner_target(&parts.uri);
    for _ in 0..gateway.balancer.backends().len() {
        let placement = gateway
            .balancer
            .place()
            .ok_or(GatewayError::NoHealthyRunner)?;
        let backend = placement.backend().clone();
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
        if answer.status.is_success() {
            let model: KernelModel = answer.json(backend.url(), "kernel model")?;
            if let Ok(kernel) = Uuid::parse_str(&model.id) {
                gateway.owners.record(kernel, backend.index());
            }
            placement.succeeded();
            tracing::info!(kernel = %model.id, name = %model.name, runner = %backend.url(), "kernel started");
        }
        return Ok(rest::to_client(answer, backend.url()));
    }
    Err(GatewayError::NoHealthyRunner)
}

/// `GET`/`DELETE /api/kernels/{id}`, `POST .../interrupt`, `POST .../restart`: forwarded to
/// the kernel's owner as they are.
pub async fn forward(
    gateway: &Gateway,
    connection: &Connection,
    kernel: Uuid,
    parts: &Parts,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let backend = locate::owner(gateway, kernel).await?;
    let target = super::runner_target(&parts.uri);
    let forward = Forward {
        method: parts.method.clone(),
        path_and_query: &target,
        headers: &parts.headers,
        peer: connection.peer.ip(),
        body,
    };
    let answer = rest::forward(&gateway.upstream, &backend, forward).await?;
    let gone = answer.status == StatusCode::NOT_FOUND
        || (parts.method == Method::DELETE && answer.status.is_success());
    if gone {
        gateway.owners.forget(&kernel);
    }
    Ok(rest::to_client(answer, backend.url()))
}
