//! `GET /`: the kernelspecs on offer, the kernels running and the runners behind the gateway.

use askama::Template;
use cellgate_protocol::content::ExecutionState;
use http::StatusCode;

use super::render;
use crate::api::{kernels, kernelspecs};
use crate::error::GatewayError;
use crate::response::Response;
use crate::state::Gateway;

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    problems: Vec<String>,
    kernelspecs: Vec<SpecRow>,
    kernels: Vec<KernelRow>,
    runners: Vec<RunnerRow>,
    auth_enabled: bool,
    version: &'static str,
}

struct SpecRow {
    name: String,
    display_name: String,
    language: String,
    is_default: bool,
}

struct KernelRow {
    id: String,
    name: String,
    execution_state: ExecutionState,
    connections: usize,
    last_activity: String,
}

struct RunnerRow {
    url: String,
    runner_id: Option<String>,
    healthy: bool,
    draining: bool,
    sessions: usize,
    kernels: usize,
}

pub async fn page(gateway: &Gateway) -> Result<Response, GatewayError> {
    let (specs, running) = tokio::join!(kernelspecs::gather(gateway), kernels::gather(gateway));
    // The page shows what it can: a failure to list one thing is a notice, not an error page.
    let mut problems = Vec::new();
    let kernelspecs = match specs {
        Ok(specs) => specs
            .kernelspecs
            .into_values()
            .map(|spec| SpecRow {
                is_default: spec.name == specs.default,
                name: spec.name,
                display_name: spec.spec.display_name,
                language: spec.spec.language,
            })
            .collect(),
        Err(error) => {
            problems.push(format!(
                "Kernel specs unavailable: {}",
                error.client_message()
            ));
            Vec::new()
        }
    };
    let kernels = match running {
        Ok(models) => models
            .into_iter()
            .map(|model| KernelRow {
                id: model.id,
                name: model.name,
                execution_state: model.execution_state,
                connections: model.connections,
                last_activity: model.last_activity,
            })
            .collect(),
        Err(error) => {
            problems.push(format!("Kernels unavailable: {}", error.client_message()));
            Vec::new()
        }
    };
    let runners = gateway
        .balancer
        .backends()
        .iter()
        .map(|backend| {
            let load = backend.load();
            RunnerRow {
                url: backend.url().to_string(),
                runner_id: backend.runner_id(),
                healthy: load.healthy,
                draining: load.draining,
                sessions: load.sessions,
                kernels: load.kernels,
            }
        })
        .collect();
    let page = IndexPage {
        problems,
        kernelspecs,
        kernels,
        runners,
        auth_enabled: gateway.auth.is_enabled(),
        version: env!("CARGO_PKG_VERSION"),
    };
    render(StatusCode::OK, "home", &page)
}
