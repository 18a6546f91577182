//! The batch jobs front: `/api/jobs...` and `/api/nodes` forwarded to any healthy runner, since
//! every runner works on the same shared volume. Bodies stream both ways, so a multipart upload
//! reaches the volume without being held in the gateway's memory, and server-sent events and
//! output files reach the client as the runner produces them.

use std::error::Error as StdError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioTimer;

use super::runner_target;
use crate::balancer::backend::Backend;
use crate::config::{JobsSettings, Timeouts};
use crate::error::{BoxError, GatewayError};
use crate::proxy::upstream::runner_uri;
use crate::proxy::{headers, rest};
use crate::response::Response;
use crate::state::{Connection, Gateway};
use crate::tasks::TrackedExecutor;

type OutBody = UnsyncBoxBody<Bytes, BoxError>;

/// The client that streams job requests to runners. It is apart from the REST client because
/// that one sends and reads whole bodies under one deadline, which an upload of gigabytes or
/// an event stream that lasts as long as a job cannot meet.
pub struct JobsFront {
    client: Client<HttpConnector, OutBody>,
    secret_name: HeaderName,
    secret: HeaderValue,
    settings: JobsSettings,
    /// For the runner's answer (its headers) to a request without an upload.
    request_timeout: Duration,
    /// Spreads requests over the healthy runners in turn.
    next: AtomicUsize,
}

impl JobsFront {
    pub fn new(
        secret: (&HeaderName, &HeaderValue),
        timeouts: &Timeouts,
        settings: JobsSettings,
        executor: TrackedExecutor,
    ) -> JobsFront {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeouts.upstream_connect));
        let client = Client::builder(executor)
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        JobsFront {
            client,
            secret_name: secret.0.clone(),
            secret: secret.1.clone(),
            settings,
            request_timeout: timeouts.upstream_request,
            next: AtomicUsize::new(0),
        }
    }

    /// The healthy runners, starting with the next one in turn.
    fn runners(&self, gateway: &Gateway) -> Vec<Arc<Backend>> {
        let mut healthy = gateway.balancer.healthy();
        if !healthy.is_empty() {
            let start = self.next.fetch_add(1, Ordering::Relaxed) % healthy.len();
            healthy.rotate_left(start);
        }
        healthy
    }
}

/// Forwards one jobs request to a healthy runner and streams its answer back.
pub async fn forward(
    gateway: &Gateway,
    connection: &Connection,
    request: Request<Incoming>,
) -> Result<Response, GatewayError> {
    let front = &gateway.jobs;
    let limit = front.settings.max_upload_bytes;
    if let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
    {
        if length > limit {
            return Err(GatewayError::BodyTooLarge {
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            });
        }
    }
    let (parts, body) = request.into_parts();
    let target = runner_target(&parts.uri);
    let mut outbound_headers = headers::for_runner(&parts.headers, connection.peer.ip());
    outbound_headers.insert(front.secret_name.clone(), front.secret.clone());
    // A body is only sent by uploads; the others are safe to try on a second runner when the
    // first cannot be connected to, since the request never left the gateway.
    let has_body = parts.method == Method::POST && !is_empty(&parts.headers);
    let deadline = if has_body {
        front.settings.upload_timeout
    } else {
        front.request_timeout
    };
    let runners = front.runners(gateway);
    if runners.is_empty() {
        return Err(GatewayError::NoHealthyRunner);
    }
    let mut body = Some(body);
    let mut last_error = None;
    for backend in runners.iter().take(if has_body { 1 } else { 2 }) {
        let outbound: OutBody = match body.take() {
            Some(incoming) if has_body => {
                Limited::new(incoming, usize::try_from(limit).unwrap_or(usize::MAX))
                    .map_err(BoxError::from)
                    .boxed_unsync()
            }
            _ => Empty::new().map_err(|never| match never {}).boxed_unsync(),
        };
        let uri = runner_uri(backend.url(), &target)?;
        let mut request = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .body(outbound)
            .map_err(|source| GatewayError::Http { source })?;
        *request.headers_mut() = outbound_headers.clone();
        let runner = backend.url().clone();
        let answer = tokio::time::timeout(deadline, front.client.request(request)).await;
        let response = match answer {
            Err(_) => {
                return Err(GatewayError::RunnerTimeout {
                    runner,
                    after: deadline,
                })
            }
            Ok(Ok(response)) => response,
            Ok(Err(error)) if has_limit_error(&error) => {
                return Err(GatewayError::BodyTooLarge {
                    limit: usize::try_from(limit).unwrap_or(usize::MAX),
                })
            }
            Ok(Err(error)) if error.is_connect() => {
                if backend.mark_unhealthy() {
                    tracing::warn!(%runner, %error, "kernel runner unreachable; marked unhealthy");
                }
                gateway.upstream.nudge_health_checks();
                last_error = Some(GatewayError::RunnerUnreachable {
                    runner,
                    source: Box::new(error),
                });
                continue;
            }
            Ok(Err(error)) => {
                return Err(GatewayError::RunnerConnectionLost {
                    runner,
                    source: Box::new(error),
                })
            }
        };
        // Runners answer 403 only to a wrong secret; passed on, it would blame the client.
        if response.status() == StatusCode::FORBIDDEN {
            return Err(GatewayError::RunnerRejectedSecret { runner });
        }
        return Ok(to_client(response, &runner));
    }
    Err(last_error.unwrap_or(GatewayError::NoHealthyRunner))
}

/// A request that declares no body: no length, or a zero length, and no chunked framing.
fn is_empty(headers: &http::HeaderMap) -> bool {
    let chunked = headers
        .get(header::TRANSFER_ENCODING)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(0);
    !chunked && length == 0
}

/// Whether the upload went over the limit while it streamed (a chunked upload has no length
/// to check in advance).
fn has_limit_error(error: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current.is::<LengthLimitError>() {
            return true;
        }
        cause = current.source();
    }
    false
}

/// The client's response for the runner's, its body streamed through as it arrives.
fn to_client(response: http::Response<Incoming>, runner: &url::Url) -> Response {
    let (parts, body) = response.into_parts();
    let mut headers = headers::for_client(&parts.headers);
    if let Some(location) = headers.get(header::LOCATION) {
        if let Some(rewritten) = rest::rewrite_location(location, runner) {
            headers.insert(header::LOCATION, rewritten);
        }
    }
    // A runner's file answer has a known length: keep it, so a download shows its progress.
    // The body is passed on frame by frame, so the length stays exact.
    if let Some(length) = parts.headers.get(header::CONTENT_LENGTH) {
        headers.insert(header::CONTENT_LENGTH, length.clone());
    }
    let mut client = http::Response::new(body.map_err(BoxError::from).boxed_unsync());
    *client.status_mut() = parts.status;
    *client.headers_mut() = headers;
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_without_a_body_are_recognised() {
        let mut headers = http::HeaderMap::new();
        assert!(is_empty(&headers));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(is_empty(&headers));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert!(!is_empty(&headers));
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(!is_empty(&headers));
    }

    #[tokio::test]
    async fn a_limit_error_is_found_among_the_causes() {
        let body = http_body_util::Full::new(Bytes::from_static(b"too long"));
        let source = Limited::new(body, 2).collect().await.unwrap_err();
        let wrapped = GatewayError::ClientBody { source };
        assert!(has_limit_error(&wrapped));
        assert!(!has_limit_error(&GatewayError::Forbidden));
    }
}
