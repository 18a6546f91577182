//! Forwarding one Jupyter REST call to a runner, and turning the runner's answer into the
//! client's: same status, body and end-to-end headers, with `Location` pointing at the gateway.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::Method;
use url::Url;

use super::headers;
use super::upstream::{Answer, Outbound, Upstream};
use crate::balancer::backend::Backend;
use crate::error::GatewayError;
use crate::response::{self, Response};

/// The parts of a client's request that are forwarded.
#[derive(Debug, Clone)]
pub struct Forward<'a> {
    pub method: Method,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub peer: IpAddr,
    pub body: Bytes,
}

pub async fn forward(
    upstream: &Upstream,
    backend: &Backend,
    request: Forward<'_>,
) -> Result<Answer, GatewayError> {
    let outbound = Outbound {
        method: request.method,
        path_and_query: request.path_and_query.to_owned(),
        headers: headers::for_runner(request.headers, request.peer),
        body: request.body,
    };
    upstream.send(backend, outbound).await
}

/// The client's response for a runner's answer.
pub fn to_client(answer: Answer, runner: &Url) -> Response {
    let mut response = http::Response::new(response::full(answer.body));
    *response.status_mut() = answer.status;
    let mut headers = headers::for_client(&answer.headers);
    if let Some(location) = headers.get(header::LOCATION) {
        if let Some(rewritten) = rewrite_location(location, runner) {
            headers.insert(header::LOCATION, rewritten);
        }
    }
    *response.headers_mut() = headers;
    response
}

/// A `Location` that points into the runner, rewritten to the same path on the gateway.
/// Relative locations already resolve against the gateway and stay; a runner URL with a base
/// path has it removed. Returns `None` when nothing needs to change.
pub fn rewrite_location(location: &HeaderValue, runner: &Url) -> Option<HeaderValue> {
    let text = location.to_str().ok()?;
    let base_path = runner.path().trim_end_matches('/');
    let path_and_query = if text.starts_with('/') && !text.starts_with("//") {
        text.to_owned()
    } else {
        let absolute = Url::parse(text).ok()?;
        let same_runner = absolute.host() == runner.host()
            && absolute.port_or_known_default() == runner.port_or_known_default();
        if !same_runner {
            return None;
        }
        match absolute.query() {
            Some(query) => format!("{}?{query}", absolute.path()),
            None => absolute.path().to_owned(),
        }
    };
    let on_gateway = match path_and_query.strip_prefix(base_path) {
        Some(rest) if !base_path.is_empty() && rest.starts_with('/') => rest,
        _ => path_and_query.as_str(),
    };
    if on_gateway == text {
        return None;
    }
    HeaderValue::from_str(on_gateway).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(location: &str, runner: &str) -> Option<String> {
        rewrite_location(
            &HeaderValue::from_str(location).unwrap(),
            &Url::parse(runner).unwrap(),
        )
        .map(|value| value.to_str().unwrap().to_owned())
    }

    #[test]
    fn locations_into_the_runner_point_at_the_gateway() {
        let runner = "http://127.0.0.1:4000";
        assert_eq!(rewrite("/api/kernels/abc", runner), None);
        assert_eq!(
            rewrite("http://127.0.0.1:4000/api/kernels/abc", runner).as_deref(),
            Some("/api/kernels/abc")
        );
        assert_eq!(
            rewrite("http://127.0.0.1:4000/api/kernels?x=1", runner).as_deref(),
            Some("/api/kernels?x=1")
        );
        assert_eq!(rewrite("https://elsewhere.example/x", runner), None);
    }

    #[test]
    fn a_runner_base_path_is_removed() {
        let runner = "http://runner:4000/r1/";
        assert_eq!(
            rewrite("/r1/api/kernels/abc", runner).as_deref(),
            Some("/api/kernels/abc")
        );
        assert_eq!(
            rewrite("http://runner:4000/r1/api/kernels/abc", runner).as_deref(),
            Some("/api/kernels/abc")
        );
        assert_eq!(rewrite("/r10/api", runner), None);
    }

    #[test]
    fn answers_keep_status_and_body() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("http://127.0.0.1:4000/api/kernels/k"),
        );
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let answer = Answer {
            status: http::StatusCode::CREATED,
            headers,
            body: Bytes::from_static(b"{}"),
        };
        let response = to_client(answer, &Url::parse("http://127.0.0.1:4000").unwrap());
        assert_eq!(response.status(), http::StatusCode::CREATED);
        assert_eq!(response.headers()[header::LOCATION], "/api/kernels/k");
        assert!(!response.headers().contains_key(header::CONNECTION));
    }
}
