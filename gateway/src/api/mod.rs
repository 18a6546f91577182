//! The Jupyter kernel API front: which runner answers each call ([`locate`], placement in
//! [`kernels`]), how answers from several runners are merged ([`kernelspecs`], [`kernels`]),
//! and the websocket route ([`channels`]); the batch jobs routes go to any runner ([`jobs`]).

pub mod channels;
pub mod jobs;
pub mod kernels;
pub mod kernelspecs;
pub mod locate;

use bytes::Bytes;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::json;

use crate::error::GatewayError;
use crate::response::{self, Response};
use crate::state::Gateway;

/// The whole body of a client's request, refused past `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, GatewayError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(source) if source.is::<LengthLimitError>() => Err(GatewayError::BodyTooLarge { limit }),
        Err(source) => Err(GatewayError::ClientBody { source }),
    }
}

/// The path and query to request from a runner for a client's URI. The client's `token`
/// parameter is the gateway's credential and is not passed on.
pub fn runner_target(uri: &Uri) -> String {
    match uri.query().and_then(crate::auth::query_without_token) {
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_owned(),
    }
}

/// `GET /api`, which Jupyter clients use to check they reached a Jupyter server.
pub fn version() -> Response {
    response::json(
        StatusCode::OK,
        &json!({ "version": env!("CARGO_PKG_VERSION") }),
    )
}

/// `GET /healthz`: the gateway answers while it runs; runner health is reported, not required,
/// so an orchestrator does not restart gateways because runners are down.
pub fn health(gateway: &Gateway) -> Response {
    let runners = gateway.balancer.backends().len();
    let healthy = gateway.balancer.healthy().len();
    response::json(
        StatusCode::OK,
        &json!({ "status": "ok", "runners": runners, "healthy_runners": healthy }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runners_never_see_the_token_parameter() {
        let uri: Uri = "/api/kernels/k/channels?session_id=s&token=secret"
            .parse()
            .unwrap();
        assert_eq!(runner_target(&uri), "/api/kernels/k/channels?session_id=s");
        let uri: Uri = "/api/kernels?token=secret".parse().unwrap();
        assert_eq!(runner_target(&uri), "/api/kernels");
    }
}
