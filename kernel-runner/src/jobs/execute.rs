//! Running a `run` or `command` job's program: the request a backend gets and the report it
//! gives back. `process.rs` runs it as a local process group, `container.rs` in a sandbox.

use std::path::PathBuf;
use std::time::Instant;

use async_trait::async_trait;
use cellgate_protocol::job::{JobLimits, JobTask};
use tokio_util::sync::CancellationToken;

use super::languages;

/// One attempt of a program, ready to start.
#[derive(Debug, Clone)]
pub struct Program {
    /// The image, without prefix and tag (container backend only).
    pub image: String,
    /// The command line, the job's files named relative to the working directory.
    pub argv: Vec<String>,
    /// The job's `inputs/` directory; its files are the program's working files.
    pub inputs: PathBuf,
    /// Standard input, or none (an empty stdin).
    pub stdin: Option<PathBuf>,
    /// Where `stdout` and `stderr` go.
    pub outputs: PathBuf,
    pub limits: JobLimits,
    pub deadline: Instant,
}

impl Program {
    /// The command line of a task; `None` for kinds that run no program.
    pub fn argv(task: &JobTask) -> Option<(String, Vec<String>)> {
        match task {
            JobTask::Md5 => None,
            JobTask::Run {
                language,
                files,
                args,
            } => {
                let language = languages::find(language)?;
                let mut argv: Vec<String> = language
                    .command
                    .iter()
                    .map(|part| part.to_string())
                    .collect();
                argv.push(files.first()?.clone());
                argv.extend(args.iter().cloned());
                Some((language.image.to_owned(), argv))
            }
            JobTask::Command { image, command } => Some((
                image.clone(),
                vec!["sh".to_owned(), "-c".to_owned(), command.clone()],
            )),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Execution {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom: bool,
    pub timed_out: bool,
    /// Stopped by `stop`: a cancel request or the runner shutting down.
    pub stopped: bool,
    pub truncated: bool,
    pub peak_memory_bytes: Option<u64>,
    /// What the attempt computed, for kinds with a result (the MD5 digest).
    pub result: Option<String>,
    /// Why the program could not run at all.
    pub error: Option<String>,
}

impl Execution {
    pub fn failed_to_start(reason: String) -> Execution {
        Execution {
            error: Some(reason),
            ..Execution::default()
        }
    }

    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
            && self.error.is_none()
            && !self.timed_out
            && !self.stopped
            && !self.oom
    }
}

/// A place to run job programs.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Whether the image (without prefix and tag) can be run here.
    fn has_image(&self, image: &str) -> bool;
    /// Whether a language's programs can be run here.
    fn has_language(&self, language: &languages::BatchLanguage) -> bool;
    /// Runs the program until it ends, its deadline passes or `stop` is cancelled.
    async fn run(&self, program: Program, stop: CancellationToken) -> Execution;
}

/// The executor of a runner that cannot run programs safely: it runs MD5 jobs only. The
/// Docker backend uses it until job containers exist, so no job ever runs unsandboxed on a
/// node that promises sandboxes.
#[derive(Debug, Default)]
pub struct NoPrograms;

#[async_trait]
impl Executor for NoPrograms {
    fn has_image(&self, _image: &str) -> bool {
        false
    }

    fn has_language(&self, _language: &languages::BatchLanguage) -> bool {
        false
    }

    async fn run(&self, _program: Program, _stop: CancellationToken) -> Execution {
        Execution::failed_to_start("this runner runs no programs".to_owned())
    }
}
