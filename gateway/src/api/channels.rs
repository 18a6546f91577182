//! `GET /api/kernels/{id}/channels`: the kernel's websocket. Everything that can fail is done
//! before the client's upgrade is accepted (checking it, finding the owner, opening the
//! runner's websocket), so failures reach the client as ordinary JSON errors.

use http::header::{self, HeaderMap};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use uuid::Uuid;

use super::locate;
use crate::auth::Credential;
use crate::balancer::health::record_failure;
use crate::error::{is_refused, GatewayError};
use crate::proxy::headers;
use crate::proxy::session::Session;
use crate::proxy::websocket::{self, ClientUpgrade, RunnerHandshake};
use crate::response::Response;
use crate::state::{Connection, Gateway};

pub async fn open(
    gateway: &Gateway,
    connection: &Connection,
    kernel: Uuid,
    credential: Credential,
    mut request: Request<Incoming>,
) -> Result<Response, GatewayError> {
    let upgrade = ClientUpgrade::parse(request.headers())?;
    if credential == Credential::Cookie {
        same_origin(request.headers())?;
    }
    let backend = locate::owner(gateway, kernel).await?;
    let target = super::runner_target(request.uri());
    let forwarded = headers::forwarding(request.headers(), connection.peer.ip());
    let handshake = RunnerHandshake {
        runner: backend.url(),
        path_and_query: &target,
        offer: upgrade.offer.as_ref(),
        forwarded: &forwarded,
    };
    let runner = websocket::connect_runner(
        handshake,
        &gateway.upstream,
        &gateway.timeouts,
        &gateway.websocket,
        &gateway.tasks,
    )
    .await
    .map_err(|error| match error {
        GatewayError::RunnerStatus {
            status: StatusCode::NOT_FOUND,
            ..
        } => {
            gateway.balancer.owners.forget(&kernel);
            GatewayError::KernelNotFound {
                kernel_id: kernel.to_string(),
            }
        }
        other => {
            // Nothing listens where the runner was: it is gone, and the kernel with it.
            if is_refused(&other) && record_failure(&gateway.balancer, &backend, &other) {
                if let Some(model) = gateway.balancer.graveyard.get(&kernel) {
                    return GatewayError::KernelGone {
                        kernel_id: model.id,
                        reason: model.reason.unwrap_or_default(),
                    };
                }
            }
            other
        }
    })?;
    Session {
        kernel,
        runner_url: backend.url().clone(),
        runner: runner.socket,
        client: hyper::upgrade::on(&mut request),
        settings: gateway.websocket.clone(),
        permit: connection.permit.clone(),
        counted: backend.session_opened(),
        runner_gone: backend.life(),
        metrics: gateway.metrics.clone(),
        upstream: gateway.upstream.clone(),
    }
    .spawn(&gateway.tasks);
    Ok(upgrade.accept(runner.protocol))
}

/// Browsers send cookies with websocket requests from any page, so a websocket authenticated
/// only by the cookie must come from a page of this gateway. API clients that send the token
/// themselves are not affected.
fn same_origin(headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        // Only browsers send Origin, and they always do for websockets.
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    // Compared as (host, port), the port defaulting to 443: the gateway only serves HTTPS.
    let origin_site = url::Url::parse(origin).ok().and_then(|url| {
        Some((
            url.host_str()?.to_ascii_lowercase(),
            url.port_or_known_default()?,
        ))
    });
    let host_site = host.parse::<http::uri::Authority>().ok().map(|authority| {
        (
            authority.host().to_ascii_lowercase(),
            authority.port_u16().unwrap_or(443),
        )
    });
    match (origin_site, host_site) {
        (Some(origin_site), Some(host_site)) if origin_site == host_site => Ok(()),
        _ => Err(GatewayError::CrossOrigin {
            origin: origin.to_owned(),
            host: host.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_static(origin));
        }
        headers
    }

    #[test]
    fn cookie_websockets_must_come_from_the_gateways_own_pages() {
        assert!(same_origin(&headers(Some("https://gw.example:8888"), "gw.example:8888")).is_ok());
        assert!(same_origin(&headers(Some("https://gw.example"), "gw.example")).is_ok());
        assert!(same_origin(&headers(Some("https://GW.example"), "gw.example:443")).is_ok());
        assert!(same_origin(&headers(Some("https://[::1]:8888"), "[::1]:8888")).is_ok());
        assert!(same_origin(&headers(Some("https://gw.example:9999"), "gw.example")).is_err());
        assert!(same_origin(&headers(None, "gw.example")).is_ok());
        assert!(same_origin(&headers(Some("https://evil.example"), "gw.example")).is_err());
        assert!(same_origin(&headers(Some("null"), "gw.example")).is_err());
    }
}
