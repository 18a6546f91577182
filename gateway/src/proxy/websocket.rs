//! The two websocket handshakes of a proxied session: checking the client's upgrade request,
//! opening the runner's websocket with the client's subprotocol offer, and the `101` that
//! tells the client which subprotocol the runner chose.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use url::{Host, Url};

use super::read_ahead::ReadAhead;
use super::upstream::{runner_uri, Upstream};
use crate::config::{Timeouts, WebsocketSettings};
use crate::error::GatewayError;
use crate::response::{Body, Response};
use crate::tasks::Tasks;

/// A websocket over a hyper connection that was upgraded.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// A client's valid websocket upgrade request.
#[derive(Debug, Clone)]
pub struct ClientUpgrade {
    key: HeaderValue,
    /// The `Sec-WebSocket-Protocol` offer, passed to the runner unchanged.
    pub offer: Option<HeaderValue>,
}

impl ClientUpgrade {
    /// Checks the RFC 6455 upgrade headers of a `GET`.
    pub fn parse(headers: &HeaderMap) -> Result<ClientUpgrade, GatewayError> {
        let has_token = |name: header::HeaderName, token: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|list| list.split(','))
                .any(|item| item.trim().eq_ignore_ascii_case(token))
        };
        if !has_token(header::UPGRADE, "websocket") {
            return Err(GatewayError::NotWebsocket {
                problem: "missing `Upgrade: websocket`",
            });
        }
        if !has_token(header::CONNECTION, "upgrade") {
            return Err(GatewayError::NotWebsocket {
                problem: "missing `Connection: upgrade`",
            });
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            != Some(b"13")
        {
            return Err(GatewayError::NotWebsocket {
                problem: "`Sec-WebSocket-Version` must be 13",
            });
        }
        let key =
            headers
                .get(header::SEC_WEBSOCKET_KEY)
                .cloned()
                .ok_or(GatewayError::NotWebsocket {
                    problem: "missing `Sec-WebSocket-Key`",
                })?;
        Ok(ClientUpgrade {
            key,
            offer: headers.get(header::SEC_WEBSOCKET_PROTOCOL).cloned(),
        })
    }

    /// The `101 Switching Protocols` answer, naming the runner's chosen subprotocol.
    pub fn accept(&self, protocol: Option<HeaderValue>) -> Response {
        let mut response = http::Response::new(Body::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        // A base64 digest is always a valid header value.
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(self.key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        response
    }
}

/// Frame limits for both sides of a proxied session.
pub fn socket_config(settings: &WebsocketSettings) -> WebSocketConfig {
    WebSocketConfig {
        max_message_size: Some(settings.max_message_bytes),
        max_frame_size: Some(settings.max_message_bytes),
        // Every send is flushed, so the buffer holds at most one message plus framing; the
        // cap turns a runaway buffer into an error instead of unbounded memory.
        max_write_buffer_size: settings.max_message_bytes + (1 << 20),
        ..WebSocketConfig::default()
    }
}

/// The runner's side of a session, once its handshake succeeded.
pub struct RunnerSocket {
    pub socket: Socket,
    /// The subprotocol the runner chose, if any.
    pub protocol: Option<HeaderValue>,
}

/// What the runner handshake needs to know about the client's request.
#[derive(Debug, Clone, Copy)]
pub struct RunnerHandshake<'a> {
    pub runner: &'a Url,
    pub path_and_query: &'a str,
    pub offer: Option<&'a HeaderValue>,
    /// `X-Forwarded-For` and friends, already computed for the runner.
    pub forwarded: &'a HeaderMap,
}

/// Opens the runner's websocket for a session. A runner that answers without upgrading
/// yields [`GatewayError::RunnerStatus`] with its status, so the caller can tell a kernel the
/// runner does not know (404) from a broken runner.
pub async fn connect_runner(
    handshake: RunnerHandshake<'_>,
    upstream: &Upstream,
    timeouts: &Timeouts,
    settings: &WebsocketSettings,
    tasks: &Tasks,
) -> Result<RunnerSocket, GatewayError> {
    let runner = handshake.runner;
    let tcp = connect_tcp(runner, timeouts.upstream_connect).await?;
    let upgrade = upgrade_runner(tcp, handshake, upstream, tasks);
    let (upgraded, protocol) = tokio::time::timeout(timeouts.upstream_request, upgrade)
        .await
        .map_err(|_| GatewayError::RunnerTimeout {
            runner: runner.clone(),
            after: timeouts.upstream_request,
        })??;
    let socket = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        Some(socket_config(settings)),
    )
    .await;
    Ok(RunnerSocket { socket, protocol })
}

async fn connect_tcp(runner: &Url, deadline: Duration) -> Result<TcpStream, GatewayError> {
    let host = match runner.host() {
        Some(Host::Domain(name)) => name.to_owned(),
        Some(Host::Ipv4(address)) => address.to_string(),
        Some(Host::Ipv6(address)) => address.to_string(),
        None => {
            return Err(GatewayError::InvalidRunnerUrl {
                runner: runner.clone(),
            })
        }
    };
    let port = runner.port_or_known_default().unwrap_or(80);
    let tcp = tokio::time::timeout(deadline, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| GatewayError::RunnerTimeout {
            runner: runner.clone(),
            after: deadline,
        })?
        .map_err(|source| GatewayError::RunnerUnreachable {
            runner: runner.clone(),
            source: Box::new(source),
        })?;
    // Jupyter messages are small and latency-bound; Nagle's algorithm would hold them back.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "setting TCP_NODELAY on a runner socket failed");
    }
    Ok(tcp)
}

/// The HTTP upgrade with the runner. It is done with hyper rather than tungstenite's client
/// because tungstenite rejects a runner that picks no subprotocol from a non-empty offer,
/// which is exactly what a Jupyter server does when offered only names it does not know.
async fn upgrade_runner(
    tcp: TcpStream,
    handshake: RunnerHandshake<'_>,
    upstream: &Upstream,
    tasks: &Tasks,
) -> Result<(Upgraded, Option<HeaderValue>), GatewayError> {
    let runner = handshake.runner;
    let lost = |source: hyper::Error| GatewayError::RunnerConnectionLost {
        runner: runner.clone(),
        source: Box::new(source),
    };
    let io = TokioIo::new(ReadAhead::new(tcp));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(lost)?;
    // The connection task ends when it hands the socket over at the upgrade, or when the
    // runner refuses and both ends are dropped.
    tasks.spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "runner websocket handshake connection ended");
        }
    });

    // The low-level connection sends the URI as given, so the request line gets the origin
    // form and the authority goes into `Host`, as a browser would send them.
    let target = runner_uri(runner, handshake.path_and_query)?;
    let origin_form = target
        .path_and_query()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let key = generate_key();
    let (secret_name, secret) = upstream.secret();
    let mut builder = Request::builder()
        .uri(origin_form)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, &key)
        .header(secret_name, secret);
    if let Some(authority) = target.authority() {
        builder = builder.header(header::HOST, authority.as_str());
    }
    if let Some(offer) = handshake.offer {
        builder = builder.header(header::SEC_WEBSOCKET_PROTOCOL, offer);
    }
    let mut request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|source| GatewayError::Http { source })?;
    for (name, value) in handshake.forwarded {
        request.headers_mut().append(name, value.clone());
    }

    let response = sender.send_request(request).await.map_err(lost)?;
    match response.status() {
        StatusCode::SWITCHING_PROTOCOLS => {}
        StatusCode::FORBIDDEN => {
            return Err(GatewayError::RunnerRejectedSecret {
                runner: runner.clone(),
            })
        }
        status => {
            return Err(GatewayError::RunnerStatus {
                runner: runner.clone(),
                what: "a websocket upgrade",
                status,
            })
        }
    }
    let accepted = response.headers().get(header::SEC_WEBSOCKET_ACCEPT);
    if accepted.map(|value| value.as_bytes()) != Some(derive_accept_key(key.as_bytes()).as_bytes())
    {
        return Err(GatewayError::RunnerHandshake {
            runner: runner.clone(),
            problem: "wrong or missing Sec-WebSocket-Accept",
        });
    }
    let protocol = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .cloned();
    if let Some(chosen) = &protocol {
        if !offered(handshake.offer, chosen) {
            return Err(GatewayError::RunnerHandshake {
                runner: runner.clone(),
                problem: "the runner chose a subprotocol the client did not offer",
            });
        }
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(lost)?;
    Ok((upgraded, protocol))
}

/// Whether `chosen` is one of the comma-separated names in `offer`.
fn offered(offer: Option<&HeaderValue>, chosen: &HeaderValue) -> bool {
    let (Some(offer), Ok(chosen)) = (offer.and_then(|o| o.to_str().ok()), chosen.to_str()) else {
        return false;
    };
    offer.split(',').any(|name| name.trim() == chosen.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        headers
    }

    #[test]
    fn a_valid_upgrade_is_accepted_with_the_rfc_example_key() {
        let upgrade = ClientUpgrade::parse(&upgrade_headers()).unwrap();
        let response = upgrade.accept(Some(HeaderValue::from_static(
            "v1.kernel.websocket.jupyter.org",
        )));
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            response.headers()[header::SEC_WEBSOCKET_PROTOCOL],
            "v1.kernel.websocket.jupyter.org"
        );
        let legacy = upgrade.accept(None);
        assert!(!legacy
            .headers()
            .contains_key(header::SEC_WEBSOCKET_PROTOCOL));
    }

    #[test]
    fn incomplete_upgrades_are_refused() {
        for missing in [
            header::UPGRADE,
            header::CONNECTION,
            header::SEC_WEBSOCKET_VERSION,
            header::SEC_WEBSOCKET_KEY,
        ] {
            let mut headers = upgrade_headers();
            headers.remove(&missing);
            assert!(
                matches!(
                    ClientUpgrade::parse(&headers),
                    Err(GatewayError::NotWebsocket { .. })
                ),
                "accepted without {missing}"
            );
        }
    }

    #[test]
    fn the_runner_must_choose_from_the_offer() {
        let offer = HeaderValue::from_static("foo, v1.kernel.websocket.jupyter.org");
        let v1 = HeaderValue::from_static("v1.kernel.websocket.jupyter.org");
        assert!(offered(Some(&offer), &v1));
        assert!(!offered(Some(&offer), &HeaderValue::from_static("bar")));
        assert!(!offered(None, &v1));
    }
}
