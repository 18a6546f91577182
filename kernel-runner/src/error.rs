//! The runner's error type, classified by who is at fault so the API can pick a status code.

use std::path::PathBuf;

/// Who caused an error: it decides the HTTP status an API caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request was wrong (4xx).
    Client,
    /// The kernel or its driver failed (5xx, the kernel's fault).
    Kernel,
    /// The runner itself failed (500).
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("no kernel with id {0}")]
    KernelNotFound(String),
    #[error("no kernelspec named {0:?}")]
    KernelSpecNotFound(String),
    #[error("kernel id {0:?} is not a UUID")]
    BadKernelId(String),
    #[error("kernel id {0} is already in use")]
    KernelIdInUse(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the runner is shutting down and takes no new kernels")]
    Draining,
    #[error("the runner holds its maximum of {0} kernels")]
    TooManyKernels(usize),
    #[error("could not start the {language} driver: {source}")]
    DriverStart {
        language: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {language} driver did not become ready: {reason}")]
    DriverNotReady { language: String, reason: String },
    #[error("kernel {id} is dead: {reason}")]
    KernelDead { id: String, reason: String },
    #[error("could not prepare {path}: {source}")]
    Filesystem {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signal to the driver failed: {0}")]
    Signal(#[source] nix::Error),
    #[error("the Docker engine cannot be used: {source}")]
    Docker {
        #[source]
        source: bollard::errors::Error,
    },
}

impl RunnerError {
    pub fn fault(&self) -> Fault {
        match self {
            RunnerError::KernelNotFound(_)
            | RunnerError::KernelSpecNotFound(_)
            | RunnerError::BadKernelId(_)
            | RunnerError::KernelIdInUse(_)
            | RunnerError::BadRequest(_)
            | RunnerError::Draining
            | RunnerError::TooManyKernels(_) => Fault::Client,
            RunnerError::DriverStart { .. }
            | RunnerError::DriverNotReady { .. }
            | RunnerError::KernelDead { .. } => Fault::Kernel,
            RunnerError::Filesystem { .. }
            | RunnerError::Signal(_)
            | RunnerError::Docker { .. } => Fault::Internal,
        }
    }

    /// The HTTP status of this error, following jupyter_server's choices.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            RunnerError::KernelNotFound(_) | RunnerError::KernelSpecNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            RunnerError::BadKernelId(_) | RunnerError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RunnerError::KernelIdInUse(_) => StatusCode::CONFLICT,
            RunnerError::Draining | RunnerError::TooManyKernels(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RunnerError::KernelDead { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The short `reason` of the JSON error body: the status's canonical phrase.
    pub fn reason(&self) -> &'static str {
        self.status().canonical_reason().unwrap_or("Error")
    }
}
