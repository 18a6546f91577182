//! Job programs in fresh containers with the kernel sandbox narrowed by the job's limits: the
//! job's files reach the container's tmpfs home as a tar stream on standard input (files
//! copied into a created container would land under the tmpfs mount and be hidden by it),
//! output is streamed to the job's files with the cap, the wall timeout kills the container,
//! and the exit code, OOM kill and peak memory are read back before it is removed.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::{
    AttachContainerOptions, Config, CreateContainerOptions, KillContainerOptions, LogOutput,
    RemoveContainerOptions, StatsOptions, WaitContainerOptions,
};
use bollard::image::ListImagesOptions;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::execute::{Execution, Executor, Program};
use super::languages::BatchLanguage;
use super::output::capture;
use crate::backend::docker::RUNNER_LABEL;
use crate::backend::sandbox::{Limits, KERNEL_HOME};

/// The label that names the job a container runs.
pub const JOB_LABEL: &str = "org.cellgate.job";

/// How often the list of images is read again, so an image built after the runner started
/// becomes usable without a restart.
const IMAGES_EVERY: Duration = Duration::from_secs(30);

/// The name standard input has inside the tar stream; it is moved out of the program's
/// directory before the program starts.
const STDIN_ENTRY: &str = ".cellgate-stdin";

/// Unpacks the tar stream into the home directory, then runs the program with the job's
/// standard input. `"$@"` keeps every argument exactly as given.
const ENTRY: &str = "cd \"$HOME\" && tar -x --no-same-owner -f - && mv -- .cellgate-stdin /tmp/.cellgate-stdin && exec \"$@\" < /tmp/.cellgate-stdin";

pub struct ContainerExecutor {
    docker: Docker,
    runner_id: String,
    /// Images are `<prefix><name>:<tag>`.
    prefix: String,
    tag: String,
    limits: Limits,
    network: Option<String>,
    /// The image names (without prefix and tag) present at the last look.
    images: Arc<RwLock<HashSet<String>>>,
}

impl ContainerExecutor {
    /// Connects to the local engine, reads the list of images once (so jobs submitted right
    /// after the runner starts find them) and keeps it fresh until `shutdown`.
    pub async fn new(
        runner_id: String,
        prefix: String,
        tag: String,
        limits: Limits,
        network: Option<String>,
        shutdown: CancellationToken,
    ) -> Result<ContainerExecutor, bollard::errors::Error> {
        let docker = Docker::connect_with_local_defaults()?;
        let images = Arc::new(RwLock::new(list_images(&docker, &prefix, &tag).await?));
        tokio::spawn(watch_images(
            docker.clone(),
            prefix.clone(),
            tag.clone(),
            images.clone(),
            shutdown,
        ));
        Ok(ContainerExecutor {
            docker,
            runner_id,
            prefix,
            tag,
            limits,
            network,
            images,
        })
    }

    fn has(&self, image: &str) -> bool {
        self.images
            .read()
            .map(|images| images.contains(image))
            .unwrap_or(false)
    }
}

async fn watch_images(
    docker: Docker,
    prefix: String,
    tag: String,
    images: Arc<RwLock<HashSet<String>>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(IMAGES_EVERY) => {}
        }
        match list_images(&docker, &prefix, &tag).await {
            Ok(found) => {
                if let Ok(mut images) = images.write() {
                    *images = found;
                }
            }
            Err(error) => tracing::warn!(%error, "listing the job images failed"),
        }
    }
}

/// The names (without prefix and tag) of the images `<prefix><name>:<tag>` present now.
async fn list_images(
    docker: &Docker,
    prefix: &str,
    tag: &str,
) -> Result<HashSet<String>, bollard::errors::Error> {
    let options = ListImagesOptions::<String> {
        all: false,
        ..Default::default()
    };
    let suffix = format!(":{tag}");
    let list = docker.list_images(Some(options)).await?;
    Ok(list
        .iter()
        .flat_map(|image| image.repo_tags.iter())
        .filter_map(|name| name.strip_prefix(prefix))
        .filter_map(|name| name.strip_suffix(suffix.as_str()))
        .map(str::to_owned)
        .collect())
}

#[async_trait]
impl Executor for ContainerExecutor {
    fn has_image(&self, image: &str) -> bool {
        self.has(image)
    }

    fn has_language(&self, language: &BatchLanguage) -> bool {
        self.has(language.image)
    }

    async fn run(&self, program: Program, stop: CancellationToken) -> Execution {
        let job = program
            .outputs
            .parent()
            .and_then(Path::file_name)
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let archive = {
            let (inputs, stdin) = (program.inputs.clone(), program.stdin.clone());
            match tokio::task::spawn_blocking(move || archive(&inputs, stdin.as_deref())).await {
                Ok(Ok(archive)) => archive,
                Ok(Err(error)) => {
                    return Execution::failed_to_start(format!(
                        "cannot pack the job's files: {error}"
                    ))
                }
                Err(error) => return Execution::failed_to_start(error.to_string()),
            }
        };
        let mut limits = self.limits;
        limits.memory_bytes = limits.memory_bytes.min(program.limits.memory_bytes);
        limits.cpus = limits.cpus.min(program.limits.cpus);
        // The home tmpfs counts against the container's memory; it must leave room to run.
        limits.home_bytes = limits.home_bytes.min(limits.memory_bytes / 2);
        let mut cmd = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            ENTRY.to_owned(),
            "sh".to_owned(),
        ];
        cmd.extend(program.argv.iter().cloned());
        let labels = HashMap::from([
            (RUNNER_LABEL.to_owned(), self.runner_id.clone()),
            (JOB_LABEL.to_owned(), job.clone()),
        ]);
        let config = Config {
            image: Some(format!("{}{}:{}", self.prefix, program.image, self.tag)),
            cmd: Some(cmd),
            entrypoint: Some(Vec::new()),
            env: Some(vec![
                format!("HOME={KERNEL_HOME}"),
                "LANG=C.UTF-8".to_owned(),
            ]),
            working_dir: Some(KERNEL_HOME.to_owned()),
            stdin_once: Some(true),
            ..limits.attached_container(self.network.as_deref(), labels)
        };
        let name = format!("cellgate-job-{job}-{}", uuid::Uuid::new_v4().simple());
        let created = match self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: name.as_str(),
                    platform: None,
                }),
                config,
            )
            .await
        {
            Ok(created) => created,
            Err(error) => {
                return Execution::failed_to_start(format!("cannot create the container: {error}"))
            }
        };
        let id = created.id;
        let execution = self
            .attend(&id, archive, &program, stop)
            .await
            .unwrap_or_else(Execution::failed_to_start);
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        if let Err(error) = self.docker.remove_container(&id, Some(options)).await {
            tracing::warn!(container = %id, %error, "removing a job container failed");
        }
        execution
    }
}

impl ContainerExecutor {
    /// Starts the created container, feeds it, collects its output and reads how it ended.
    async fn attend(
        &self,
        id: &str,
        archive: Vec<u8>,
        program: &Program,
        stop: CancellationToken,
    ) -> Result<Execution, String> {
        let attached = self
            .docker
            .attach_container(
                id,
                Some(AttachContainerOptions::<String> {
                    stdin: Some(true),
                    stdout: Some(true),
                    stderr: Some(true),
                    stream: Some(true),
                    logs: Some(false),
                    detach_keys: None,
                }),
            )
            .await
            .map_err(|error| format!("cannot attach to the container: {error}"))?;
        self.docker
            .start_container::<String>(id, None)
            .await
            .map_err(|error| format!("cannot start the container: {error}"))?;
        let mut input = attached.input;
        let feed = tokio::spawn(async move {
            // A program that exits early closes its end; what it did not read does not matter.
            let _ = input.write_all(&archive).await;
            let _ = input.shutdown().await;
        });

        let cap = program.limits.output_bytes;
        let (mut stdout_tx, stdout_rx) = tokio::io::duplex(64 * 1024);
        let (mut stderr_tx, stderr_rx) = tokio::io::duplex(64 * 1024);
        let stdout_path = program.outputs.join("stdout");
        let stderr_path = program.outputs.join("stderr");
        let stdout = tokio::spawn(async move { capture(stdout_rx, &stdout_path, cap).await });
        let stderr = tokio::spawn(async move { capture(stderr_rx, &stderr_path, cap).await });
        let mut output = attached.output;
        let pump = async move {
            while let Some(Ok(chunk)) = output.next().await {
                let result = match chunk {
                    LogOutput::StdOut { message } => stdout_tx.write_all(&message).await,
                    LogOutput::StdErr { message } => stderr_tx.write_all(&message).await,
                    _ => Ok(()),
                };
                if result.is_err() {
                    break;
                }
            }
        };
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sampler = tokio::spawn(sample_memory(
            self.docker.clone(),
            id.to_owned(),
            peak.clone(),
        ));

        let mut execution = Execution::default();
        let deadline = tokio::time::Instant::from_std(program.deadline);
        tokio::pin!(pump);
        loop {
            tokio::select! {
                () = &mut pump => break,
                () = tokio::time::sleep_until(deadline), if !execution.timed_out && !execution.stopped => {
                    execution.timed_out = true;
                    self.kill(id).await;
                }
                () = stop.cancelled(), if !execution.timed_out && !execution.stopped => {
                    execution.stopped = true;
                    self.kill(id).await;
                }
            }
        }
        feed.abort();
        let mut waited = self.docker.wait_container(
            id,
            Some(WaitContainerOptions {
                condition: "not-running",
            }),
        );
        // A non-zero exit arrives as an error from this API; the inspect below reads it.
        let _ = tokio::time::timeout(Duration::from_secs(30), waited.next()).await;
        sampler.abort();
        let inspected = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|error| format!("cannot inspect the container: {error}"))?;
        if let Some(state) = inspected.state {
            execution.oom = state.oom_killed.unwrap_or(false);
            if let Some(code) = state.exit_code {
                let code = code as i32;
                execution.exit_code = Some(code);
                if code > 128 && (execution.oom || execution.timed_out || execution.stopped) {
                    execution.signal = Some(code - 128);
                }
            }
        }
        let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
        execution.peak_memory_bytes = (peak > 0).then_some(peak);
        for stream in [stdout, stderr] {
            match tokio::time::timeout(Duration::from_secs(5), stream).await {
                Ok(Ok(Ok(captured))) => execution.truncated |= captured.truncated,
                Ok(Ok(Err(error))) => {
                    execution.error = Some(format!("cannot write the output: {error}"))
                }
                _ => execution.error = Some("the output did not end with the program".to_owned()),
            }
        }
        Ok(execution)
    }

    async fn kill(&self, id: &str) {
        let options = KillContainerOptions { signal: "SIGKILL" };
        // A container that ended on its own is the outcome the kill wanted.
        let _ = self.docker.kill_container(id, Some(options)).await;
    }
}

/// Records the container's peak memory: the cgroup's own maximum, read from the host's
/// cgroup v1 file while it exists (short programs end before Docker's first stats sample),
/// and the stats stream's figures otherwise.
async fn sample_memory(docker: Docker, id: String, peak: Arc<std::sync::atomic::AtomicU64>) {
    let file = format!("/sys/fs/cgroup/memory/docker/{id}/memory.max_usage_in_bytes");
    let from_file = {
        let peak = peak.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                let Ok(text) = tokio::fs::read_to_string(&file).await else {
                    continue;
                };
                if let Ok(bytes) = text.trim().parse::<u64>() {
                    peak.fetch_max(bytes, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    };
    let from_stats = async move {
        let mut stats = docker.stats(
            &id,
            Some(StatsOptions {
                stream: true,
                one_shot: false,
            }),
        );
        while let Some(Ok(stats)) = stats.next().await {
            let memory = stats.memory_stats;
            let seen = memory.max_usage.or(memory.usage).unwrap_or(0);
            peak.fetch_max(seen, std::sync::atomic::Ordering::Relaxed);
        }
        std::future::pending::<()>().await;
    };
    tokio::join!(from_file, from_stats);
}

/// The job's files and standard input as a tar stream (POSIX ustar, with a pax header for
/// names longer than ustar holds).
fn archive(inputs: &Path, stdin: Option<&Path>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(inputs)?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|entry| {
            entry
                .file_type()
                .map(|kind| kind.is_file())
                .unwrap_or(false)
        })
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        append(&mut out, &name, &std::fs::read(entry.path())?);
    }
    let stdin = match stdin {
        Some(path) => std::fs::read(path)?,
        None => Vec::new(),
    };
    append(&mut out, STDIN_ENTRY, &stdin);
    out.extend_from_slice(&[0u8; 1024]);
    Ok(out)
}

fn append(out: &mut Vec<u8>, name: &str, content: &[u8]) {
    if name.len() > 99 {
        let mut record = format!(" path={name}\n");
        // The record's length counts its own digits.
        let mut length = record.len() + 1;
        while format!("{length}{record}").len() != length {
            length += 1;
        }
        record = format!("{length}{record}");
        out.extend_from_slice(&header("pax", record.len() as u64, b'x'));
        pad(out, record.as_bytes());
    }
    let short: String = name.chars().take(90).collect();
    out.extend_from_slice(&header(&short, content.len() as u64, b'0'));
    pad(out, content);
}

fn pad(out: &mut Vec<u8>, content: &[u8]) {
    out.extend_from_slice(content);
    let rest = content.len() % 512;
    if rest != 0 {
        out.resize(out.len() + 512 - rest, 0);
    }
}

fn header(name: &str, size: u64, kind: u8) -> [u8; 512] {
    let mut header = [0u8; 512];
    let name = name.as_bytes();
    header[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0001750\0");
    header[116..124].copy_from_slice(b"0001750\0");
    header[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = kind;
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&byte| u32::from(byte)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_what_tar_unpacks() {
        let dir = std::env::temp_dir().join(format!("cellgate-tar-{}", uuid::Uuid::new_v4()));
        let inputs = dir.join("inputs");
        std::fs::create_dir_all(&inputs).unwrap();
        let long = format!("{}.txt", "n".repeat(150));
        std::fs::write(inputs.join("main.py"), "print(1)\n").unwrap();
        std::fs::write(inputs.join(&long), vec![7u8; 1000]).unwrap();
        std::fs::write(dir.join("stdin"), "in\n").unwrap();
        let tar = archive(&inputs, Some(&dir.join("stdin"))).unwrap();
        assert_eq!(tar.len() % 512, 0);
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let mut child = std::process::Command::new("tar")
            .args(["-x", "-f", "-", "-C"])
            .arg(&out)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), &tar).unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(out.join("main.py")).unwrap(), b"print(1)\n");
        assert_eq!(std::fs::read(out.join(&long)).unwrap(), vec![7u8; 1000]);
        assert_eq!(std::fs::read(out.join(STDIN_ENTRY)).unwrap(), b"in\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
