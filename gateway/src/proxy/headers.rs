//! Which headers cross the proxy. Hop-by-hop headers describe one connection and stay on it
//! (RFC 9110 §7.6.1); the client's credentials stay at the gateway.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that belong to one connection, whether or not `Connection` lists them.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    // Not hop-by-hop, but a non-standard header that old clients send with the same meaning.
    headers.remove("proxy-connection");
}

/// The headers of a client's request as a runner should see them.
pub fn for_runner(client: &HeaderMap, peer: IpAddr) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    // The gateway token and its cookie authenticate the client to the gateway; the runner
    // trusts the runner secret instead and must never see the user's credential.
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::COOKIE);
    // Host names the gateway; the HTTP client sets the runner's. The body is re-framed, so
    // its length is recomputed.
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    let forwarding = forwarding(client, peer);
    headers.extend(forwarding);
    headers
}

/// `X-Forwarded-For` (the client's address appended to any earlier proxies') and
/// `X-Forwarded-Proto`, so a runner's logs name the real client.
pub fn forwarding(client: &HeaderMap, peer: IpAddr) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let forwarded_for = match client
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
    {
        Some(earlier) => format!("{earlier}, {peer}"),
        None => peer.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    headers
}

/// The headers of a runner's answer as the client should see them.
pub fn for_client(runner: &HeaderMap) -> HeaderMap {
    let mut headers = runner.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_dropped() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-session-hint"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("proxy-connection", "keep-alive"),
            ("x-session-hint", "abc"),
            ("content-type", "application/json"),
            ("x-custom", "kept"),
        ]);
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|name| name.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["content-type", "x-custom"]);
    }

    #[test]
    fn runners_never_see_the_clients_credentials() {
        let client = map(&[
            ("authorization", "token s3cret"),
            ("cookie", "cellgate-session=abc"),
            ("host", "gateway.example:443"),
            ("content-length", "12"),
            ("x-forwarded-for", "10.1.1.1"),
            ("accept", "application/json"),
        ]);
        let headers = for_runner(&client, "192.0.2.7".parse().unwrap());
        for gone in ["authorization", "cookie", "host", "content-length"] {
            assert!(!headers.contains_key(gone), "{gone} leaked to the runner");
        }
        assert_eq!(headers["x-forwarded-for"], "10.1.1.1, 192.0.2.7");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["accept"], "application/json");
    }

    #[test]
    fn answers_lose_framing_headers_only() {
        let runner = map(&[
            ("content-length", "3"),
            ("transfer-encoding", "chunked"),
            ("location", "/api/kernels/x"),
        ]);
        let headers = for_client(&runner);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["location"], "/api/kernels/x");
    }
}
