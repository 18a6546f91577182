//! The jobs error type, classified by who is at fault so the API can pick a status code.

use std::path::PathBuf;

use cellgate_protocol::UnknownName;
use http::StatusCode;

use crate::error::Fault;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no job with id {0:?}")]
    NotFound(String),
    #[error("bad job: {0}")]
    BadRequest(String),
    #[error("bad {parameter} parameter: {source}")]
    BadParameter {
        parameter: &'static str,
        #[source]
        source: UnknownName,
    },
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("job {id} is already {state}")]
    AlreadyFinal { id: String, state: &'static str },
    #[error("job {id} is running: cancel it before deleting it")]
    StillRunning { id: String },
    #[error("job {id} has no output file {name:?}")]
    NoSuchOutput { id: String, name: String },
    #[error("the requested range is not satisfiable")]
    BadRange,
    #[error("the job volume cannot be used at {path}: {source}")]
    Volume {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds invalid JSON: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("a blocking job-store task failed: {0}")]
    Blocking(#[source] tokio::task::JoinError),
}

impl JobError {
    pub fn volume(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> JobError {
        let path = path.into();
        move |source| JobError::Volume { path, source }
    }

    pub fn fault(&self) -> Fault {
        match self {
            JobError::NotFound(_)
            | JobError::BadRequest(_)
            | JobError::BadParameter { .. }
            | JobError::TooLarge { .. }
            | JobError::AlreadyFinal { .. }
            | JobError::StillRunning { .. }
            | JobError::NoSuchOutput { .. }
            | JobError::BadRange => Fault::Client,
            JobError::Volume { .. } | JobError::Corrupt { .. } | JobError::Blocking(_) => {
                Fault::Internal
            }
        }
    }

    /// The fault decides the class, the variant the exact code of a client's fault.
    pub fn status(&self) -> StatusCode {
        match self.fault() {
            Fault::Kernel | Fault::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Fault::Client => match self {
                JobError::NotFound(_) | JobError::NoSuchOutput { .. } => StatusCode::NOT_FOUND,
                JobError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                JobError::AlreadyFinal { .. } | JobError::StillRunning { .. } => {
                    StatusCode::CONFLICT
                }
                JobError::BadRange => StatusCode::RANGE_NOT_SATISFIABLE,
                _ => StatusCode::BAD_REQUEST,
            },
        }
    }
}
