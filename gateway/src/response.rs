//! The responses the gateway builds itself: JSON, HTML pages, redirects and `{reason, message}`
//! errors. They are buffered; the one body type also carries the streamed answers of the jobs
//! front ([`crate::api::jobs`]).

use bytes::Bytes;
use cellgate_protocol::model::ApiError;
use http::header::{self, HeaderValue};
use http::StatusCode;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use crate::error::{chain, BoxError, ErrorKind, GatewayError};

pub type Body = UnsyncBoxBody<Bytes, BoxError>;
pub type Response = http::Response<Body>;

/// A whole body already in memory.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Pages load nothing from elsewhere and run no script, so a strict policy costs nothing and
/// blunts any markup that slipped through escaping.
const PAGE_POLICY: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
);

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_type(status, JSON, bytes.into()),
        Err(source) => {
            // Our own models always serialize; reaching this is a bug worth a loud log line.
            tracing::error!(error = %source, "serializing a JSON response failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal gateway error")
        }
    }
}

pub fn html(status: StatusCode, page: String) -> Response {
    let mut response = with_type(
        status,
        HeaderValue::from_static("text/html; charset=utf-8"),
        page.into(),
    );
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, PAGE_POLICY);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub fn plain(status: StatusCode, text: &'static str) -> Response {
    with_type(
        status,
        HeaderValue::from_static("text/plain; charset=utf-8"),
        Bytes::from_static(text.as_bytes()),
    )
}

/// An answer without a body, e.g. `204 No Content`.
pub fn empty(status: StatusCode) -> Response {
    let mut response = http::Response::new(Body::default());
    *response.status_mut() = status;
    response
}

/// A redirect to a path on this gateway. A location that is not a valid header value (it
/// only comes from our own path building) falls back to the home page.
pub fn redirect(status: StatusCode, location: &str) -> Response {
    let location =
        HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"));
    let mut response = http::Response::new(Body::default());
    *response.status_mut() = status;
    response.headers_mut().insert(header::LOCATION, location);
    response
}

/// The `{reason, message}` answer for a failure, logged at a level fitting who is at fault.
pub fn error(error: &GatewayError) -> Response {
    let status = error.status();
    match error.kind() {
        ErrorKind::Client => tracing::debug!(%status, error = %chain(error), "client error"),
        ErrorKind::Runner => tracing::warn!(%status, error = %chain(error), "runner error"),
        ErrorKind::Internal => tracing::error!(%status, error = %chain(error), "internal error"),
    }
    let body = ApiError {
        reason: status.canonical_reason().unwrap_or("Error").to_owned(),
        message: error.client_message(),
    };
    let mut response = json(status, &body);
    if let GatewayError::MethodNotAllowed { allowed, .. } = error {
        let list = allowed
            .iter()
            .map(|method| method.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(value) = HeaderValue::from_str(&list) {
            response.headers_mut().insert(header::ALLOW, value);
        }
    }
    response
}

pub fn with_type(status: StatusCode, content_type: HeaderValue, body: Bytes) -> Response {
    let mut response = http::Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn errors_are_jupyter_json_with_allow_on_405() {
        let response = error(&GatewayError::MethodNotAllowed {
            method: Method::PUT,
            path: "/api/kernels".into(),
            allowed: &[Method::GET, Method::POST],
        });
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, POST");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: ApiError = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.reason, "Method Not Allowed");
        assert_eq!(body.message, "method PUT not allowed on /api/kernels");
    }
}
