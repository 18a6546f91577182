//! Every way a gateway operation fails, classified by who is at fault, which decides the HTTP
//! status a client sees.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::Duration;

use http::{Method, StatusCode};
use url::Url;

/// Who caused a failure: the client (4xx), a kernel runner (502, 503, 504) or the gateway
/// itself (500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Client,
    Runner,
    Internal,
}

/// Boxed causes from body readers, which report `Box<dyn Error>`.
pub type BoxError = Box<dyn StdError + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    // --- The client's fault.
    #[error("invalid or missing token")]
    Forbidden,
    #[error("websocket from origin {origin} refused: it does not match the host {host}")]
    CrossOrigin { origin: String, host: String },
    #[error("no route for {method} {path}")]
    RouteNotFound { method: Method, path: String },
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed {
        method: Method,
        path: String,
        allowed: &'static [Method],
    },
    #[error("Kernel does not exist: {kernel_id}")]
    KernelNotFound { kernel_id: String },
    #[error("No such kernel spec: {name}")]
    KernelSpecNotFound { name: String },
    #[error("Kernel id in use: {kernel_id}")]
    KernelIdInUse { kernel_id: String },
    #[error("request body is not valid JSON")]
    InvalidJson {
        #[source]
        source: serde_json::Error,
    },
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("reading the request body failed")]
    ClientBody {
        #[source]
        source: BoxError,
    },
    #[error("not a websocket upgrade request: {problem}")]
    NotWebsocket { problem: &'static str },

    // --- A kernel runner's fault.
    #[error("no healthy kernel runner can take the request")]
    NoHealthyRunner,
    /// No connection to the runner could be made: the request never left the gateway.
    #[error("kernel runner {runner} is unreachable")]
    RunnerUnreachable {
        runner: Url,
        #[source]
        source: BoxError,
    },
    /// The request may have reached the runner before the connection broke, so it must not
    /// be retried elsewhere (unlike [`GatewayError::RunnerUnreachable`]).
    #[error("the connection to kernel runner {runner} broke during the request")]
    RunnerConnectionLost {
        runner: Url,
        #[source]
        source: BoxError,
    },
    #[error("kernel runner {runner} did not answer within {after:?}")]
    RunnerTimeout { runner: Url, after: Duration },
    #[error("reading the answer of kernel runner {runner} failed")]
    RunnerBody {
        runner: Url,
        #[source]
        source: BoxError,
    },
    #[error("kernel runner {runner} sent an invalid {what}")]
    RunnerInvalid {
        runner: Url,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("kernel runner {runner} refused the gateway's runner secret")]
    RunnerRejectedSecret { runner: Url },
    #[error("kernel runner {runner} answered {status} to {what}")]
    RunnerStatus {
        runner: Url,
        what: &'static str,
        status: StatusCode,
    },
    #[error("websocket handshake with kernel runner {runner} failed: {problem}")]
    RunnerHandshake { runner: Url, problem: &'static str },
    /// The kernel's runner is gone; the kernel is reported dead and can no longer be used.
    #[error("kernel {kernel_id} is dead: {reason}")]
    KernelGone { kernel_id: String, reason: String },
    #[error("looking up the kernel runners at {name} failed")]
    RunnerDns {
        name: String,
        #[source]
        source: std::io::Error,
    },

    // --- The gateway's own fault, or its operator's.
    #[error("reading {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoPrivateKey { path: PathBuf },
    #[error("generating the self-signed certificate failed")]
    Certificate {
        #[source]
        source: rcgen::Error,
    },
    #[error("the TLS certificate or key was refused")]
    Tls {
        #[source]
        source: rustls::Error,
    },
    #[error("the runner secret cannot be sent as an HTTP header value")]
    InvalidRunnerSecret,
    #[error("runner URL {runner} has no host")]
    InvalidRunnerUrl { runner: Url },
    #[error("rendering the {page} page failed")]
    Template {
        page: &'static str,
        #[source]
        source: askama::Error,
    },
    #[error("starting the gateway's worker threads failed")]
    Workers {
        #[source]
        source: std::io::Error,
    },
    #[error("building an HTTP message failed")]
    Http {
        #[source]
        source: http::Error,
    },
}

impl GatewayError {
    pub fn kind(&self) -> ErrorKind {
        use GatewayError::*;
        match self {
            Forbidden
            | CrossOrigin { .. }
            | RouteNotFound { .. }
            | MethodNotAllowed { .. }
            | KernelNotFound { .. }
            | KernelSpecNotFound { .. }
            | KernelIdInUse { .. }
            | InvalidJson { .. }
            | BodyTooLarge { .. }
            | ClientBody { .. }
            | NotWebsocket { .. } => ErrorKind::Client,
            NoHealthyRunner
            | RunnerUnreachable { .. }
            | RunnerConnectionLost { .. }
            | RunnerTimeout { .. }
            | RunnerBody { .. }
            | RunnerInvalid { .. }
            | RunnerRejectedSecret { .. }
            | RunnerStatus { .. }
            | RunnerHandshake { .. }
            | KernelGone { .. }
            | RunnerDns { .. } => ErrorKind::Runner,
            ReadFile { .. }
            | WriteFile { .. }
            | NoCertificate { .. }
            | NoPrivateKey { .. }
            | Certificate { .. }
            | Tls { .. }
            | InvalidRunnerSecret
            | InvalidRunnerUrl { .. }
            | Template { .. }
            | Workers { .. }
            | Http { .. } => ErrorKind::Internal,
        }
    }

    /// The status a client sees: the kind decides the class, the variant the exact code.
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self.kind() {
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Runner => match self {
                NoHealthyRunner => StatusCode::SERVICE_UNAVAILABLE,
                RunnerTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            },
            ErrorKind::Client => match self {
                Forbidden | CrossOrigin { .. } => StatusCode::FORBIDDEN,
                RouteNotFound { .. } | KernelNotFound { .. } | KernelSpecNotFound { .. } => {
                    StatusCode::NOT_FOUND
                }
                MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
                KernelIdInUse { .. } => StatusCode::CONFLICT,
                BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// The message shown to the client. Internal details stay in the gateway's log, but a
    /// client or runner failure names its causes so the user can act on them.
    pub fn client_message(&self) -> String {
        match self.kind() {
            ErrorKind::Internal => "internal gateway error; see the gateway log".to_owned(),
            ErrorKind::Client | ErrorKind::Runner => chain(self),
        }
    }
}

/// The innermost cause of an error, which says what actually happened (e.g. "Connection
/// refused") without the layers that wrapped it.
pub fn root_cause(error: &dyn StdError) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// Whether a connection was refused somewhere in the error's causes: nothing listens at the
/// address, which is how a runner that was killed or stopped looks from the gateway.
pub fn is_refused(error: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cause = current.source();
    }
    false
}

/// An error and its causes, joined with `: `, for messages and logs.
pub fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner() -> Url {
        Url::parse("http://127.0.0.1:9/").unwrap()
    }

    #[test]
    fn statuses_follow_who_is_at_fault() {
        let cases = [
            (GatewayError::Forbidden, StatusCode::FORBIDDEN),
            (
                GatewayError::KernelNotFound {
                    kernel_id: "k".into(),
                },
                StatusCode::NOT_FOUND,
            ),
            (
                GatewayError::NoHealthyRunner,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                GatewayError::RunnerTimeout {
                    runner: runner(),
                    after: Duration::from_secs(1),
                },
                StatusCode::GATEWAY_TIMEOUT,
            ),
            (
                GatewayError::RunnerRejectedSecret { runner: runner() },
                StatusCode::BAD_GATEWAY,
            ),
            (
                GatewayError::InvalidRunnerSecret,
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(error.status(), status, "{error}");
        }
    }

    #[test]
    fn runner_failures_name_their_cause_but_internal_ones_do_not() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let unreachable = GatewayError::RunnerUnreachable {
            runner: runner(),
            source: Box::new(io),
        };
        assert_eq!(
            unreachable.client_message(),
            "kernel runner http://127.0.0.1:9/ is unreachable: refused"
        );
        assert!(is_refused(&unreachable));
        assert_eq!(root_cause(&unreachable), "refused");
        let internal = GatewayError::ReadFile {
            path: "/secret/path".into(),
            source: std::io::Error::other("nope"),
        };
        assert!(!internal.client_message().contains("/secret/path"));
    }
}
