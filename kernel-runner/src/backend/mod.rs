//! Where a driver process runs. A backend starts a driver with its stdin and stdout as the
//! driver protocol's channel, signals it, kills it and reports how it ended. The local-process
//! backend lives here; a container backend implements the same trait.

pub mod docker;
pub mod process;
pub mod sandbox;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::languages::Language;

/// Everything a backend needs to start one kernel's driver.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub kernel_id: String,
    pub language: &'static Language,
    /// The kernel's working directory (on the host for the process backend).
    pub workdir: PathBuf,
    /// The complete environment of the driver; nothing else is inherited.
    pub env: BTreeMap<String, String>,
    /// Lower resource limits the kernel's creator asked for, where the backend enforces them.
    pub limits: Option<sandbox::RequestedLimits>,
}

/// The byte streams of a started driver.
pub struct DriverIo {
    /// Command frames go here.
    pub commands: Box<dyn AsyncWrite + Send + Unpin>,
    /// Event frames come from here.
    pub events: Box<dyn AsyncRead + Send + Unpin>,
    /// The driver's own diagnostics, for the runner's log.
    pub diagnostics: Option<Box<dyn AsyncRead + Send + Unpin>>,
}

/// How a driver ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReport {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The kernel was killed for exceeding its memory limit.
    pub oom_killed: bool,
}

impl ExitReport {
    /// How a driver ended, once its reaper publishes it on `exit`; a reaper gone without a
    /// word reports nothing known.
    pub async fn when_published(exit: &watch::Receiver<Option<ExitReport>>) -> ExitReport {
        let mut exit = exit.clone();
        let report = match exit.wait_for(Option::is_some).await {
            Ok(report) => report.clone(),
            Err(_) => None,
        };
        report.unwrap_or_else(ExitReport::unknown)
    }

    fn unknown() -> ExitReport {
        ExitReport {
            code: None,
            signal: None,
            oom_killed: false,
        }
    }
}

impl fmt::Display for ExitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.oom_killed {
            return write!(f, "killed: out of memory");
        }
        match (self.code, self.signal) {
            (_, Some(signal)) => {
                let name = nix::sys::signal::Signal::try_from(signal)
                    .map(|signal| signal.as_str().to_owned())
                    .unwrap_or_else(|_| format!("signal {signal}"));
                write!(f, "killed by {name}")
            }
            (Some(code), None) => write!(f, "exited with status {code}"),
            (None, None) => write!(f, "ended for an unknown reason"),
        }
    }
}

/// A running driver that can be signalled.
#[async_trait]
pub trait Driver: Send + Sync {
    /// Interrupts the cell: SIGINT to the driver's whole process group.
    async fn interrupt(&self) -> std::io::Result<()>;
    /// Ends the driver and everything it started, at once.
    async fn kill(&self) -> std::io::Result<()>;
    /// Resolves once the driver has ended, however that happened.
    async fn wait(&self) -> ExitReport;
}

/// A place to run drivers.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A short name for logs and `/api/runner`.
    fn name(&self) -> &'static str;
    /// Whether this backend can run `language` here (runtime or image present).
    fn supports(&self, language: &Language) -> bool;
    /// The folder holding `language`'s driver files where its drivers run: what `{dir}`
    /// stands for in the language's command line, and in the kernelspec clients are shown.
    fn driver_dir(&self, language: &Language) -> PathBuf;
    /// Whether drivers see the runner's own environment variables (those of the allow-list):
    /// true for local processes, false for containers, whose images set their own.
    fn inherits_host_environment(&self) -> bool {
        true
    }
    /// Refuses resource limits this backend cannot grant, with the reason.
    fn check_limits(&self, requested: &sandbox::RequestedLimits) -> Result<(), String> {
        let _ = requested;
        Err("this runner's backend runs kernels as local processes and enforces no limits".into())
    }
    /// Starts a driver; it is ready once it sends its `ready` event.
    async fn start(&self, spec: &LaunchSpec) -> std::io::Result<(DriverIo, Arc<dyn Driver>)>;
}
