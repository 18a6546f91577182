//! `GET /api/kernelspecs` and `GET /api/kernelspecs/{name}`: the union of what the healthy
//! runners offer, so a kernel name works whichever runner the kernel lands on.

use std::sync::Arc;

use cellgate_protocol::model::KernelSpecs;
use http::StatusCode;

use crate::balancer::backend::Backend;
use crate::error::{chain, GatewayError};
use crate::proxy::rest;
use crate::proxy::upstream::Outbound;
use crate::response::{self, Response};
use crate::state::Gateway;

pub async fn list(gateway: &Gateway) -> Result<Response, GatewayError> {
    let specs = gather(gateway).await?;
    Ok(response::json(StatusCode::OK, &specs))
}

/// The kernelspecs of every healthy runner. The default and any name offered twice come from
/// the first runner in the configured order, so the answer does not flap between calls.
pub async fn gather(gateway: &Gateway) -> Result<KernelSpecs, GatewayError> {
    let healthy: Vec<Arc<Backend>> = gateway.balancer.healthy();
    let answers =
        futures_util::future::join_all(healthy.iter().map(|backend| fetch(gateway, backend))).await;
    let mut merged: Option<KernelSpecs> = None;
    let mut first_error = None;
    for answer in answers {
        match answer {
            Ok(specs) => match &mut merged {
                None => merged = Some(specs),
                Some(merged) => {
                    for (name, spec) in specs.kernelspecs {
                        merged.kernelspecs.entry(name).or_insert(spec);
                    }
                }
            },
            Err(error) => {
                tracing::warn!(error = %chain(&error), "kernelspecs of a runner unavailable");
                first_error.get_or_insert(error);
            }
        }
    }
    merged.ok_or_else(|| first_error.unwrap_or(GatewayError::NoHealthyRunner))
}

async fn fetch(gateway: &Gateway, backend: &Backend) -> Result<KernelSpecs, GatewayError> {
    let answer = gateway
        .upstream
        .send(backend, Outbound::get("/api/kernelspecs"))
        .await?;
    if answer.status != StatusCode::OK {
        return Err(GatewayError::RunnerStatus {
            runner: backend.url().clone(),
            what: "GET /api/kernelspecs",
            status: answer.status,
        });
    }
    answer.json(backend.url(), "kernelspec list")
}

/// One kernelspec, from the first healthy runner that has it.
pub async fn get(gateway: &Gateway, name: &str) -> Result<Response, GatewayError> {
    let healthy: Vec<Arc<Backend>> = gateway.balancer.healthy();
    if healthy.is_empty() {
        return Err(GatewayError::NoHealthyRunner);
    }
    let mut first_error = None;
    for backend in &healthy {
        let outbound = Outbound::get(format!("/api/kernelspecs/{name}"));
        match gateway.upstream.send(backend, outbound).await {
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => {}
            Ok(answer) => return Ok(rest::to_client(answer, backend.url())),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    // Every runner that answered lacks it; a runner that failed might have had it, and then
    // its failure is the more useful answer.
    Err(
        first_error.unwrap_or_else(|| GatewayError::KernelSpecNotFound {
            name: name.to_owned(),
        }),
    )
}
