//! `GET /metrics`: the Prometheus text format (version 0.0.4), written by hand because the
//! gateway's numbers are a few atomics and one histogram. It needs the gateway token like
//! every API route; Prometheus sends it with `authorization: {type: token, credentials: T}`
//! (or as a bearer token).

use std::fmt::Write;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::StatusCode;

use super::ProxyError;
use crate::balancer::backend::Health;
use crate::response::{self, Response};
use crate::state::Gateway;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn response(gateway: &Gateway) -> Response {
    let mut response = http::Response::new(response::full(Bytes::from(render(gateway))));
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

pub fn render(gateway: &Gateway) -> String {
    let mut out = String::with_capacity(4096);
    let backends = gateway.balancer.backends();
    let runners: Vec<_> = backends
        .iter()
        .map(|backend| (escape(backend.url().as_str()), backend.counters()))
        .collect();

    type Row = (String, crate::balancer::backend::Counters);
    let per_runner =
        |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(&Row) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for row in &runners {
                let _ = writeln!(out, "{name}{{runner=\"{}\"}} {}", row.0, value(row));
            }
        };
    per_runner(
        &mut out,
        "cellgate_runner_up",
        "gauge",
        "Whether the runner answered its last health check.",
        &|(_, c)| u64::from(c.health == Health::Healthy),
    );
    per_runner(
        &mut out,
        "cellgate_runner_gone",
        "gauge",
        "Whether the runner is gone: its kernels are reported dead.",
        &|(_, c)| u64::from(c.health == Health::Gone),
    );
    per_runner(
        &mut out,
        "cellgate_runner_draining",
        "gauge",
        "Whether the runner is shutting down and takes no new kernels.",
        &|(_, c)| u64::from(c.load.draining),
    );
    per_runner(
        &mut out,
        "cellgate_runner_kernels",
        "gauge",
        "Kernels on the runner, as it last reported plus those started since.",
        &|(_, c)| c.load.kernels as u64,
    );
    per_runner(
        &mut out,
        "cellgate_runner_sessions",
        "gauge",
        "Websocket sessions on the runner from all gateways, as it last reported plus those opened here since.",
        &|(_, c)| c.load.sessions as u64,
    );
    per_runner(
        &mut out,
        "cellgate_websocket_sessions",
        "gauge",
        "Websocket sessions this gateway proxies to the runner now.",
        &|(_, c)| c.proxied_sessions as u64,
    );
    per_runner(
        &mut out,
        "cellgate_placements_total",
        "counter",
        "Kernels this gateway started on the runner.",
        &|(_, c)| c.placements,
    );

    let _ = writeln!(
        out,
        "# HELP cellgate_kernels_known Kernels whose runner this gateway knows."
    );
    let _ = writeln!(out, "# TYPE cellgate_kernels_known gauge");
    let _ = writeln!(
        out,
        "cellgate_kernels_known {}",
        gateway.balancer.owners.len()
    );
    let _ = writeln!(
        out,
        "# HELP cellgate_kernels_dead Kernels reported dead because their runner is gone."
    );
    let _ = writeln!(out, "# TYPE cellgate_kernels_dead gauge");
    let _ = writeln!(
        out,
        "cellgate_kernels_dead {}",
        gateway.balancer.graveyard.len()
    );

    let metrics = &gateway.metrics;
    let _ = writeln!(
        out,
        "# HELP cellgate_proxy_errors_total Failures between the gateway and its runners, by kind."
    );
    let _ = writeln!(out, "# TYPE cellgate_proxy_errors_total counter");
    for kind in ProxyError::ALL {
        let _ = writeln!(
            out,
            "cellgate_proxy_errors_total{{kind=\"{}\"}} {}",
            kind.label(),
            metrics.proxy_errors(kind)
        );
    }

    let _ = writeln!(
        out,
        "# HELP cellgate_execute_latency_seconds From a client's execute_request to the runner's execute_reply, seen on the proxy."
    );
    let _ = writeln!(out, "# TYPE cellgate_execute_latency_seconds histogram");
    metrics
        .execute_latency
        .render("cellgate_execute_latency_seconds", &mut out);

    let (reloads, failures) = gateway.certificates.counts();
    let _ = writeln!(
        out,
        "# HELP cellgate_tls_reloads_total TLS certificate reloads since the start, by outcome."
    );
    let _ = writeln!(out, "# TYPE cellgate_tls_reloads_total counter");
    let _ = writeln!(
        out,
        "cellgate_tls_reloads_total{{outcome=\"replaced\"}} {reloads}"
    );
    let _ = writeln!(
        out,
        "cellgate_tls_reloads_total{{outcome=\"failed\"}} {failures}"
    );
    out
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
