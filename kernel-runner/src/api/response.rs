//! Building HTTP responses: JSON bodies and Jupyter-style `{reason, message}` errors.

use bytes::Bytes;
use cellgate_protocol::model::ApiError;
use http::{header, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use crate::error::RunnerError;

/// Boxed, so job event streams and file downloads can stream while other answers are buffered.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A buffered body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("static response parts are valid")
}

pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &ApiError {
            reason: status.canonical_reason().unwrap_or("Error").to_owned(),
            message: message.into(),
        },
    )
}

pub fn runner_error(error: &RunnerError) -> Response<Body> {
    // A full or draining runner answers 503, but that is no failure of the runner's.
    if error.fault() != crate::error::Fault::Client {
        tracing::error!(fault = ?error.fault(), "{error}");
    }
    json(
        error.status(),
        &ApiError {
            reason: error.reason().to_owned(),
            message: error.to_string(),
        },
    )
}

pub fn empty(status: StatusCode) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(full(Bytes::new()))
        .expect("static response parts are valid")
}

pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(Bytes::from_static(body.as_bytes())))
        .expect("static response parts are valid")
}
