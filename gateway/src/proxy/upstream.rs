//! The gateway's HTTP client for runners: pooled keep-alive connections with TCP_NODELAY and a
//! connect timeout, the runner secret on every request, and a deadline on every exchange.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cellgate_protocol::model::RUNNER_SECRET_HEADER;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioTimer;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use url::Url;

use crate::balancer::backend::Backend;
use crate::config::Timeouts;
use crate::error::GatewayError;
use crate::tasks::TrackedExecutor;

/// Idle pooled connections are closed after this long; runners see a quiet gateway go away.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One request to a runner.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub method: Method,
    /// The path and query on the runner, e.g. `/api/kernels?x=1`.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Outbound {
    pub fn get(path_and_query: impl Into<String>) -> Outbound {
        Outbound {
            method: Method::GET,
            path_and_query: path_and_query.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }
}

/// A runner's whole answer, read within the deadline.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as `T`; `what` names it in the error.
    pub fn json<T: DeserializeOwned>(
        &self,
        runner: &Url,
        what: &'static str,
    ) -> Result<T, GatewayError> {
        serde_json::from_slice(&self.body).map_err(|source| GatewayError::RunnerInvalid {
            runner: runner.clone(),
            what,
            source,
        })
    }
}

/// Who sends a request, which decides what a failed connection means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Request,
    HealthCheck,
}

#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    secret_name: HeaderName,
    secret: HeaderValue,
    request_timeout: Duration,
    max_body_bytes: usize,
    /// Wakes the health checker when a runner could not be connected to.
    nudge: Arc<Notify>,
}

impl Upstream {
    pub fn new(
        runner_secret: &str,
        timeouts: &Timeouts,
        max_body_bytes: usize,
        executor: TrackedExecutor,
        nudge: Arc<Notify>,
    ) -> Result<Upstream, GatewayError> {
        let mut secret =
            HeaderValue::from_str(runner_secret).map_err(|_| GatewayError::InvalidRunnerSecret)?;
        // Marked sensitive so HTTP/2 encoders never index it and debug output hides it.
        secret.set_sensitive(true);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeouts.upstream_connect));
        let client = Client::builder(executor)
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(Upstream {
            client,
            secret_name: HeaderName::from_static(RUNNER_SECRET_HEADER),
            secret,
            request_timeout: timeouts.upstream_request,
            max_body_bytes,
            nudge,
        })
    }

    /// Asks the health checker to look at the runners now, e.g. after a proxied websocket
    /// lost its runner.
    pub fn nudge_health_checks(&self) {
        self.nudge.notify_one();
    }

    /// The header that proves the gateway to a runner.
    pub fn secret(&self) -> (&HeaderName, &HeaderValue) {
        (&self.secret_name, &self.secret)
    }

    /// Sends `outbound` and reads the whole answer within the default request timeout.
    pub async fn send(
        &self,
        backend: &Backend,
        outbound: Outbound,
    ) -> Result<Answer, GatewayError> {
        self.send_within(backend, outbound, self.request_timeout)
            .await
    }

    /// Sends `outbound` and reads the whole answer within `deadline`.
    pub async fn send_within(
        &self,
        backend: &Backend,
        outbound: Outbound,
        deadline: Duration,
    ) -> Result<Answer, GatewayError> {
        self.send_as(backend, outbound, deadline, Caller::Request)
            .await
    }

    /// A health check's request: its outcome is the health checker's to judge, so a failed
    /// connection neither changes the runner's state here nor asks for another check.
    pub async fn check(
        &self,
        backend: &Backend,
        outbound: Outbound,
        deadline: Duration,
    ) -> Result<Answer, GatewayError> {
        self.send_as(backend, outbound, deadline, Caller::HealthCheck)
            .await
    }

    async fn send_as(
        &self,
        backend: &Backend,
        outbound: Outbound,
        deadline: Duration,
        caller: Caller,
    ) -> Result<Answer, GatewayError> {
        let runner = backend.url();
        let exchange = self.exchange(backend, outbound, caller);
        let answer = tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| GatewayError::RunnerTimeout {
                runner: runner.clone(),
                after: deadline,
            })??;
        // Runners answer 403 only to a wrong secret. Passed on, it would read as if the
        // client's token were wrong, so it becomes the gateway's problem.
        if answer.status == StatusCode::FORBIDDEN {
            return Err(GatewayError::RunnerRejectedSecret {
                runner: runner.clone(),
            });
        }
        Ok(answer)
    }

    async fn exchange(
        &self,
        backend: &Backend,
        outbound: Outbound,
        caller: Caller,
    ) -> Result<Answer, GatewayError> {
        let runner = backend.url();
        let uri = runner_uri(runner, &outbound.path_and_query)?;
        let mut request = Request::builder()
            .method(outbound.method)
            .uri(uri)
            .body(Full::new(outbound.body))
            .map_err(|source| GatewayError::Http { source })?;
        *request.headers_mut() = outbound.headers;
        request
            .headers_mut()
            .insert(self.secret_name.clone(), self.secret.clone());
        let response = self.client.request(request).await.map_err(|error| {
            if error.is_connect() {
                // A runner we cannot connect to leaves the rotation at once, and the health
                // checker looks at it now to tell a gone runner from a passing failure; the
                // next good check brings it back.
                if caller == Caller::Request {
                    if backend.mark_unhealthy() {
                        tracing::warn!(%runner, %error, "kernel runner unreachable; marked unhealthy");
                    }
                    self.nudge.notify_one();
                }
                GatewayError::RunnerUnreachable {
                    runner: runner.clone(),
                    source: Box::new(error),
                }
            } else {
                GatewayError::RunnerConnectionLost {
                    runner: runner.clone(),
                    source: Box::new(error),
                }
            }
        })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, self.max_body_bytes)
            .collect()
            .await
            .map_err(|source| GatewayError::RunnerBody {
                runner: runner.clone(),
                source,
            })?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// The URI of `path_and_query` on `runner`, under the runner URL's own path if it has one.
pub fn runner_uri(runner: &Url, path_and_query: &str) -> Result<Uri, GatewayError> {
    let base = runner.as_str().trim_end_matches('/');
    Uri::try_from(format!("{base}{path_and_query}")).map_err(|source| GatewayError::Http {
        source: source.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_uris_keep_the_runner_base_path() {
        let plain = Url::parse("http://127.0.0.1:4000").unwrap();
        assert_eq!(
            runner_uri(&plain, "/api/kernels?x=1").unwrap(),
            "http://127.0.0.1:4000/api/kernels?x=1"
        );
        let prefixed = Url::parse("http://runner:4000/r1/").unwrap();
        assert_eq!(
            runner_uri(&prefixed, "/api/kernels").unwrap(),
            "http://runner:4000/r1/api/kernels"
        );
    }
}
