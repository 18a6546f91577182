//! The gateway's own numbers for `/metrics`: cell latency as seen on the proxy ([`histogram`])
//! and proxy errors by kind, kept here; per-runner numbers live on each backend, and
//! [`exposition`] writes them all in the Prometheus text format.

pub mod exposition;
pub mod histogram;

use std::sync::atomic::{AtomicU64, Ordering};

use histogram::{Histogram, LATENCY_BUCKETS};

use crate::error::GatewayError;

#[derive(Debug)]
pub struct Metrics {
    /// From a client's `execute_request` to the runner's `execute_reply` naming it.
    pub execute_latency: Histogram,
    proxy_errors: [AtomicU64; ProxyError::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            execute_latency: Histogram::new(&LATENCY_BUCKETS),
            proxy_errors: Default::default(),
        }
    }

    pub fn proxy_error(&self, kind: ProxyError) {
        self.proxy_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `error` when it is a failure of the proxying (a runner's fault).
    pub fn count_error(&self, error: &GatewayError) {
        if let Some(kind) = ProxyError::of(error) {
            self.proxy_error(kind);
        }
    }

    pub fn proxy_errors(&self, kind: ProxyError) -> u64 {
        self.proxy_errors[kind as usize].load(Ordering::Relaxed)
    }
}

/// What went wrong between the gateway and a runner, the label of
/// `cellgate_proxy_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// No connection could be made.
    Unreachable,
    /// The connection broke during an exchange.
    ConnectionLost,
    Timeout,
    /// The runner answered with something the gateway could not use.
    BadAnswer,
    /// No healthy runner could take a new kernel.
    NoRunner,
    /// A call for a kernel whose runner is gone.
    KernelGone,
    /// A proxied websocket ended because its runner failed, went silent or went away.
    WebsocketLost,
}

impl ProxyError {
    pub const ALL: [ProxyError; 7] = [
        ProxyError::Unreachable,
        ProxyError::ConnectionLost,
        ProxyError::Timeout,
        ProxyError::BadAnswer,
        ProxyError::NoRunner,
        ProxyError::KernelGone,
        ProxyError::WebsocketLost,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ProxyError::Unreachable => "unreachable",
            ProxyError::ConnectionLost => "connection_lost",
            ProxyError::Timeout => "timeout",
            ProxyError::BadAnswer => "bad_answer",
            ProxyError::NoRunner => "no_runner",
            ProxyError::KernelGone => "kernel_gone",
            ProxyError::WebsocketLost => "websocket_lost",
        }
    }

    pub fn of(error: &GatewayError) -> Option<ProxyError> {
        use GatewayError::*;
        Some(match error {
            RunnerUnreachable { .. } => ProxyError::Unreachable,
            RunnerConnectionLost { .. } | RunnerBody { .. } => ProxyError::ConnectionLost,
            RunnerTimeout { .. } => ProxyError::Timeout,
            RunnerInvalid { .. }
            | RunnerStatus { .. }
            | RunnerHandshake { .. }
            | RunnerRejectedSecret { .. } => ProxyError::BadAnswer,
            NoHealthyRunner => ProxyError::NoRunner,
            KernelGone { .. } => ProxyError::KernelGone,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runner_failures_count_as_proxy_errors() {
        let metrics = Metrics::new();
        metrics.count_error(&GatewayError::NoHealthyRunner);
        metrics.count_error(&GatewayError::Forbidden);
        assert_eq!(metrics.proxy_errors(ProxyError::NoRunner), 1);
        let total: u64 = ProxyError::ALL
            .iter()
            .map(|kind| metrics.proxy_errors(*kind))
            .sum();
        assert_eq!(total, 1);
        for (index, kind) in ProxyError::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index, "ALL is in declaration order");
        }
    }
}
