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
            | RunnerError::TooManyKernels(_)
            // Asking a dead kernel for something: the request conflicts with its state.
            | RunnerError::KernelDead { .. } => Fault::Client,
            RunnerError::DriverStart { .. } | RunnerError::DriverNotReady { .. } => Fault::Kernel,
            RunnerError::Filesystem { .. }
            | RunnerError::Signal(_)
            | RunnerError::Docker { .. } => Fault::Internal,
        }
    }

    /// The HTTP status of this error, following jupyter_server's choices: the fault decides
    /// the class, the variant the exact code of a client's fault.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self.fault() {
            // jupyter_server answers 500 for a kernel that fails to start, too.
            Fault::Kernel | Fault::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Fault::Client => match self {
                RunnerError::KernelNotFound(_) | RunnerError::KernelSpecNotFound(_) => {
                    StatusCode::NOT_FOUND
                }
                RunnerError::KernelIdInUse(_) | RunnerError::KernelDead { .. } => {
                    StatusCode::CONFLICT
                }
                RunnerError::Draining | RunnerError::TooManyKernels(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// The short `reason` of the JSON error body: the status's canonical phrase.
    pub fn reason(&self) -> &'static str {
        self.status().canonical_reason().unwrap_or("Error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_of_each() -> Vec<RunnerError> {
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        vec![
            RunnerError::KernelNotFound("k".into()),
            RunnerError::KernelSpecNotFound("cobol".into()),
            RunnerError::BadKernelId("x".into()),
            RunnerError::KernelIdInUse("k".into()),
            RunnerError::BadRequest("no".into()),
            RunnerError::Draining,
            RunnerError::TooManyKernels(3),
            RunnerError::KernelDead {
                id: "k".into(),
                reason: "exited".into(),
            },
            RunnerError::DriverStart {
                language: "Python".into(),
                source: io(),
            },
            RunnerError::DriverNotReady {
                language: "Python".into(),
                reason: "timeout".into(),
            },
            RunnerError::Filesystem {
                path: "/k".into(),
                source: io(),
            },
            RunnerError::Signal(nix::Error::EPERM),
        ]
    }

    #[test]
    fn the_fault_decides_the_status_class() {
        for error in one_of_each() {
            let status = error.status();
            match error.fault() {
                Fault::Client => assert!(
                    status.is_client_error() || status == http::StatusCode::SERVICE_UNAVAILABLE,
                    "{error}: {status}"
                ),
                Fault::Kernel | Fault::Internal => {
                    assert!(status.is_server_error(), "{error}: {status}")
                }
            }
        }
    }

    #[test]
    fn statuses_follow_jupyter_server() {
        let statuses: Vec<u16> = one_of_each()
            .iter()
            .map(|error| error.status().as_u16())
            .collect();
        assert_eq!(
            statuses,
            [404, 404, 400, 409, 400, 503, 503, 409, 500, 500, 500, 500]
        );
    }
}
