//! Job programs as local processes, for the all-in-one server without Docker: each attempt
//! is its own process group, killed whole on timeout or cancel. Unsandboxed, like the
//! process backend's kernels; memory and CPU limits are enforced only in containers.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::execute::{Execution, Executor, Program};
use super::languages::BatchLanguage;
use super::output::capture;
use crate::backend::process::local_program;
use crate::languages::on_path;

/// How often the peak memory of a running program is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct ProcessExecutor;

#[async_trait]
impl Executor for ProcessExecutor {
    fn has_image(&self, _image: &str) -> bool {
        // Without containers a command line runs on this host, whatever image it names.
        true
    }

    fn has_language(&self, language: &BatchLanguage) -> bool {
        !language.compiled && on_path(language.command[0])
    }

    async fn run(&self, program: Program, stop: CancellationToken) -> Execution {
        let stdin = match &program.stdin {
            Some(path) => match std::fs::File::open(path) {
                Ok(file) => Stdio::from(file),
                Err(error) => {
                    return Execution::failed_to_start(format!("cannot open stdin: {error}"))
                }
            },
            None => Stdio::null(),
        };
        let mut command = local_program(&program.argv);
        command
            .current_dir(&program.inputs)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .env("HOME", &program.inputs)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                return Execution::failed_to_start(format!(
                    "cannot start {}: {error}",
                    program.argv[0]
                ))
            }
        };
        let pid = child.id().map(|pid| Pid::from_raw(pid as i32));
        let cap = program.limits.output_bytes;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let stdout_path = program.outputs.join("stdout");
        let stderr_path = program.outputs.join("stderr");
        let stdout = tokio::spawn(async move { capture(stdout, &stdout_path, cap).await });
        let stderr = tokio::spawn(async move { capture(stderr, &stderr_path, cap).await });

        let mut execution = Execution::default();
        let deadline = tokio::time::Instant::from_std(program.deadline);
        let mut sample = tokio::time::interval(SAMPLE_EVERY);
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                _ = tokio::time::sleep_until(deadline), if !execution.timed_out && !execution.stopped => {
                    execution.timed_out = true;
                    kill_group(pid);
                }
                _ = stop.cancelled(), if !execution.timed_out && !execution.stopped => {
                    execution.stopped = true;
                    kill_group(pid);
                }
                _ = sample.tick() => {
                    if let Some(peak) = pid.and_then(peak_memory) {
                        execution.peak_memory_bytes = Some(peak.max(execution.peak_memory_bytes.unwrap_or(0)));
                    }
                }
            }
        };
        // Whatever the program left behind in its group goes with it.
        kill_group(pid);
        match status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                execution.exit_code = status.code();
                execution.signal = status.signal();
            }
            Err(error) => {
                execution.error = Some(format!("waiting for the program failed: {error}"))
            }
        }
        for stream in [stdout, stderr] {
            match tokio::time::timeout(Duration::from_secs(5), stream).await {
                Ok(Ok(Ok(captured))) => execution.truncated |= captured.truncated,
                Ok(Ok(Err(error))) => {
                    execution.error = Some(format!("cannot write the output: {error}"))
                }
                _ => execution.error = Some("the output did not end with the program".to_owned()),
            }
        }
        execution
    }
}

fn kill_group(pid: Option<Pid>) {
    if let Some(pid) = pid {
        // The group may be gone already; that is the outcome we want.
        let _ = killpg(pid, Signal::SIGKILL);
    }
}

/// The process's peak resident memory, from `/proc`.
fn peak_memory(pid: Pid) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
