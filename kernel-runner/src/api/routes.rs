//! Routing of the runner API and its REST handlers. Every route but `/healthz` needs the
//! runner secret: in its own header, as gateways send it, or for `/metrics` alone also as
//! `Authorization: Bearer SECRET`, the form Prometheus sends.

use std::sync::Arc;

use bytes::Bytes;
use cellgate_protocol::model::{CreateKernel, RUNNER_SECRET_HEADER};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use super::metrics::RunnerMetrics;
use super::prometheus;
use super::response::{self, Body};
use super::{channels, AppState};

/// The largest REST body accepted: kernel creation requests are small.
const MAX_BODY: usize = 1024 * 1024;

pub async fn route(
    request: Request<Incoming>,
    state: Arc<AppState>,
    metrics: Arc<RunnerMetrics>,
    tasks: TaskTracker,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    if path == "/healthz" {
        return response::text(StatusCode::OK, "ok\n");
    }
    if path == "/metrics" {
        if !authorized(&request, &state.secret) && !bearer_authorized(&request, &state.secret) {
            return response::error(
                StatusCode::FORBIDDEN,
                "the runner's metrics need the runner secret, in its header or as a bearer token",
            );
        }
        if request.method() != Method::GET {
            return response::error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on /metrics", request.method()),
            );
        }
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)
            .body(response::full(metrics.render(&state)))
            .expect("static response parts are valid");
    }
    if !authorized(&request, &state.secret) {
        return response::error(
            StatusCode::FORBIDDEN,
            "this runner only serves its gateway: the runner secret is missing or wrong",
        );
    }
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    if let ["api", "jobs", ..] | ["api", "nodes"] = segments.as_slice() {
        let Some(jobs) = state.jobs.clone() else {
            return response::error(StatusCode::NOT_FOUND, "this runner has no job volume");
        };
        let cancel = request.method() == Method::POST
            && matches!(segments.as_slice(), ["api", "jobs", _, "cancel"]);
        return match super::jobs::route(request, &segments, &jobs, &tasks, &state.closing).await {
            Ok(response) => {
                // 200 is a queued job cancelled here (202 a running one asked to stop, which
                // its own runner counts when it ends).
                if cancel && response.status() == StatusCode::OK {
                    metrics.queued_job_cancelled();
                }
                response
            }
            Err(_) => response::error(StatusCode::NOT_FOUND, format!("no route for {path}")),
        };
    }
    let method = request.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, ["api"]) => response::json(
            StatusCode::OK,
            &serde_json::json!({"version": env!("CARGO_PKG_VERSION")}),
        ),
        (Method::GET, ["api", "runner"]) => response::json(StatusCode::OK, &metrics.report(&state)),
        (Method::GET, ["api", "kernelspecs"]) => {
            response::json(StatusCode::OK, &state.manager.kernelspecs())
        }
        (Method::GET, ["api", "kernelspecs", name]) => {
            match state.manager.kernelspecs().kernelspecs.get(*name) {
                Some(spec) => response::json(StatusCode::OK, spec),
                None => response::error(
                    StatusCode::NOT_FOUND,
                    format!("no kernelspec named {name:?}"),
                ),
            }
        }
        (Method::GET, ["api", "kernels"]) => response::json(StatusCode::OK, &state.manager.list()),
        (Method::POST, ["api", "kernels"]) => {
            let response = create(request, &state).await;
            if response.status() == StatusCode::CREATED {
                metrics.kernel_started();
            }
            response
        }
        (Method::GET, ["api", "kernels", id]) => match state.manager.get(id) {
            Ok(kernel) => response::json(StatusCode::OK, &kernel.model()),
            Err(error) => response::runner_error(&error),
        },
        (Method::DELETE, ["api", "kernels", id]) => match state.manager.delete(id).await {
            Ok(()) => response::empty(StatusCode::NO_CONTENT),
            Err(error) => response::runner_error(&error),
        },
        (Method::POST, ["api", "kernels", id, "interrupt"]) => {
            let result = match state.manager.get(id) {
                Ok(kernel) => kernel.interrupt().await,
                Err(error) => Err(error),
            };
            match result {
                Ok(()) => response::empty(StatusCode::NO_CONTENT),
                Err(error) => response::runner_error(&error),
            }
        }
        (Method::POST, ["api", "kernels", id, "restart"]) => {
            let kernel = match state.manager.get(id) {
                Ok(kernel) => kernel,
                Err(error) => return response::runner_error(&error),
            };
            match kernel.restart().await {
                Ok(()) => response::json(StatusCode::OK, &kernel.model()),
                Err(error) => response::runner_error(&error),
            }
        }
        (Method::GET, ["api", "kernels", id, "channels"]) => {
            channels::upgrade(request, id, &state, &tasks)
        }
        (_, ["api", ..]) if known_path(segments.as_slice()) => response::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on {path}", request.method()),
        ),
        _ => response::error(StatusCode::NOT_FOUND, format!("no route for {path}")),
    }
}

fn known_path(segments: &[&str]) -> bool {
    matches!(
        segments,
        ["api"]
            | ["api", "runner"]
            | ["api", "kernelspecs"]
            | ["api", "kernelspecs", _]
            | ["api", "kernels"]
            | ["api", "kernels", _]
            | ["api", "kernels", _, "interrupt" | "restart" | "channels"]
    )
}

fn authorized(request: &Request<Incoming>, secret: &str) -> bool {
    request
        .headers()
        .get(RUNNER_SECRET_HEADER)
        .map(|given| constant_time_eq(given.as_bytes(), secret.as_bytes()))
        .unwrap_or(false)
}

/// `Authorization: Bearer SECRET`, which a Prometheus scrape job sends from a secret file.
fn bearer_authorized(request: &Request<Incoming>, secret: &str) -> bool {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, token)| constant_time_eq(token.trim().as_bytes(), secret.as_bytes()))
}

/// Compares without an early exit, so response timing says nothing about the secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn create(request: Request<Incoming>, state: &AppState) -> Response<Body> {
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let create: CreateKernel = if body.iter().all(u8::is_ascii_whitespace) {
        CreateKernel::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(create) => create,
            Err(error) => {
                return response::error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not a kernel request: {error}"),
                )
            }
        }
    };
    match state.manager.create(create).await {
        Ok(model) => {
            let mut response = response::json(StatusCode::CREATED, &model);
            let location = format!("/api/kernels/{}", model.id);
            if let Ok(value) = header::HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
        }
        Err(error) => response::runner_error(&error),
    }
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(response::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("could not read the body (at most {MAX_BODY} bytes): {error}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
