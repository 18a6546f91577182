//! The Docker backend: each driver runs in a fresh container of its language's image, in the
//! sandbox of `sandbox.rs`, with its stdin and stdout attached as the driver channel. The
//! runner labels its containers, removes its own orphans when it starts, and removes every
//! container once it has ended and its exit has been read.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bollard::container::{
    AttachContainerOptions, Config, CreateContainerOptions, KillContainerOptions,
    ListContainersOptions, LogOutput, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::image::CreateImageOptions;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::sandbox::Limits;
use super::{Backend, Driver, DriverIo, ExitReport, LaunchSpec};
use crate::languages::Language;

/// The label every container of this runner carries, valued with the runner's id.
pub const RUNNER_LABEL: &str = "org.cellgate.runner";
/// The label naming the kernel a container serves.
pub const KERNEL_LABEL: &str = "org.cellgate.kernel-id";
/// Where every kernel image keeps its driver's files (each `images/*/Dockerfile` copies them
/// there, and its `CMD` is the language's command line with this folder for `{dir}`).
pub const IMAGE_DRIVER_DIR: &str = "/opt/cellgate";

#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// Images are `<prefix><language image>:<tag>`, e.g. `cellgate/python:latest`.
    pub image_prefix: String,
    pub image_tag: String,
    pub limits: Limits,
    /// A Docker network for kernels; `None` means no network at all.
    pub network: Option<String>,
    pub runner_id: String,
    /// Pull the kernel and batch images the engine lacks before serving.
    pub pull_missing: bool,
}

impl DockerSettings {
    pub fn image(&self, language: &Language) -> String {
        format!("{}{}:{}", self.image_prefix, language.image, self.image_tag)
    }
}

pub struct DockerBackend {
    docker: Docker,
    settings: DockerSettings,
    /// Images found when the runner started: kernelspecs list exactly these languages.
    images: HashSet<String>,
}

impl DockerBackend {
    /// Connects to the local engine, finds the language images and removes containers an
    /// earlier run of this runner left behind.
    pub async fn connect(
        settings: DockerSettings,
    ) -> Result<DockerBackend, bollard::errors::Error> {
        let docker = Docker::connect_with_local_defaults()?
            .negotiate_version()
            .await?;
        docker.ping().await?;
        if settings.pull_missing {
            pull_missing(&docker, &settings).await;
        }
        let mut images = HashSet::new();
        for language in crate::languages::ALL {
            let image = settings.image(language);
            if docker.inspect_image(&image).await.is_ok() {
                images.insert(image);
            }
        }
        let backend = DockerBackend {
            docker,
            settings,
            images,
        };
        backend.remove_orphans().await;
        Ok(backend)
    }

    async fn remove_orphans(&self) {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{RUNNER_LABEL}={}", self.settings.runner_id)],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters,
            ..Default::default()
        };
        let Ok(containers) = self.docker.list_containers(Some(options)).await else {
            return;
        };
        for container in containers {
            if let Some(id) = container.id {
                tracing::info!(container = %id, "removing a container left by an earlier run");
                remove(&self.docker, &id).await;
            }
        }
    }
}

/// Pulls every kernel and batch image the engine does not have, one at a time, saying what
/// it does; an image that cannot be pulled leaves its language unavailable on this node.
async fn pull_missing(docker: &Docker, settings: &DockerSettings) {
    let names: HashSet<&str> = crate::languages::ALL
        .iter()
        .map(|language| language.image)
        .chain(
            crate::jobs::languages::ALL
                .iter()
                .map(|language| language.image),
        )
        .collect();
    for name in names {
        let repository = format!("{}{name}", settings.image_prefix);
        let image = format!("{repository}:{}", settings.image_tag);
        if docker.inspect_image(&image).await.is_ok() {
            continue;
        }
        tracing::info!(%image, "pulling a missing language image");
        let options = CreateImageOptions {
            from_image: repository.as_str(),
            tag: settings.image_tag.as_str(),
            ..Default::default()
        };
        let mut progress = docker.create_image(Some(options), None, None);
        let mut failure = None;
        while let Some(step) = progress.next().await {
            if let Err(error) = step {
                failure = Some(error);
                break;
            }
        }
        match failure {
            None => tracing::info!(%image, "pulled"),
            Some(error) => {
                tracing::warn!(%image, %error, "cannot pull; its languages are off here")
            }
        }
    }
}

async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    if let Err(error) = docker.remove_container(id, Some(options)).await {
        tracing::debug!(container = %id, %error, "could not remove container");
    }
}

fn io_error(error: bollard::errors::Error) -> std::io::Error {
    std::io::Error::other(error)
}

#[async_trait]
impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn supports(&self, language: &Language) -> bool {
        self.images.contains(&self.settings.image(language))
    }

    fn driver_dir(&self, _language: &Language) -> PathBuf {
        PathBuf::from(IMAGE_DRIVER_DIR)
    }

    fn inherits_host_environment(&self) -> bool {
        false
    }

    fn check_limits(&self, requested: &super::sandbox::RequestedLimits) -> Result<(), String> {
        self.settings.limits.narrowed(requested).map(|_| ())
    }

    async fn start(&self, spec: &LaunchSpec) -> std::io::Result<(DriverIo, Arc<dyn Driver>)> {
        let limits =
            match &spec.limits {
                Some(requested) => self.settings.limits.narrowed(requested).map_err(|reason| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, reason)
                })?,
                None => self.settings.limits,
            };
        let labels = HashMap::from([
            (RUNNER_LABEL.to_owned(), self.settings.runner_id.clone()),
            (KERNEL_LABEL.to_owned(), spec.kernel_id.clone()),
            (
                "org.cellgate.language".to_owned(),
                spec.language.kernel_name.to_owned(),
            ),
        ]);
        let config = Config {
            image: Some(self.settings.image(spec.language)),
            env: Some(
                spec.env
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect(),
            ),
            stdin_once: Some(false),
            ..limits.attached_container(self.settings.network.as_deref(), labels)
        };
        let name = format!("cellgate-{}", spec.kernel_id);
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: name.as_str(),
                    platform: None,
                }),
                config,
            )
            .await
            .map_err(io_error)?;
        let id = created.id;
        // Attach before starting, so not one byte of the driver's output is missed.
        let attached = self
            .docker
            .attach_container(
                &id,
                Some(AttachContainerOptions::<String> {
                    stdin: Some(true),
                    stdout: Some(true),
                    stderr: Some(true),
                    stream: Some(true),
                    logs: Some(false),
                    detach_keys: None,
                }),
            )
            .await;
        let attached = match attached {
            Ok(attached) => attached,
            Err(error) => {
                remove(&self.docker, &id).await;
                return Err(io_error(error));
            }
        };
        if let Err(error) = self.docker.start_container::<String>(&id, None).await {
            remove(&self.docker, &id).await;
            return Err(io_error(error));
        }
        let (events_tx, events_rx) = tokio::io::duplex(256 * 1024);
        let (diagnostics_tx, diagnostics_rx) = tokio::io::duplex(64 * 1024);
        tokio::spawn(demultiplex(attached.output, events_tx, diagnostics_tx));
        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(watch_exit(self.docker.clone(), id.clone(), exit_tx));
        let io = DriverIo {
            commands: Box::new(attached.input),
            events: Box::new(events_rx),
            diagnostics: Some(Box::new(diagnostics_rx)),
        };
        let driver = ContainerDriver {
            docker: self.docker.clone(),
            id,
            exit: exit_rx,
        };
        Ok((io, Arc::new(driver)))
    }
}

/// Splits the container's multiplexed output: stdout carries driver events, stderr the
/// driver's diagnostics.
async fn demultiplex(
    mut output: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
    mut events: tokio::io::DuplexStream,
    mut diagnostics: tokio::io::DuplexStream,
) {
    while let Some(Ok(chunk)) = output.next().await {
        let result = match chunk {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                events.write_all(&message).await
            }
            LogOutput::StdErr { message } => diagnostics.write_all(&message).await,
            LogOutput::StdIn { .. } => Ok(()),
        };
        if result.is_err() {
            break;
        }
    }
}

/// Waits for the container to end, reads how it ended, removes it and publishes the report.
async fn watch_exit(docker: Docker, id: String, exit: watch::Sender<Option<ExitReport>>) {
    let mut waiting = docker.wait_container(
        &id,
        Some(WaitContainerOptions {
            condition: "not-running",
        }),
    );
    // A non-zero exit arrives as an error item; either way the container has stopped.
    let _ = waiting.next().await;
    let report = match docker.inspect_container(&id, None).await {
        Ok(details) => {
            let state = details.state.unwrap_or_default();
            let code = state.exit_code.map(|code| code as i32);
            // Exit codes above 128 are a signal's number plus 128, as a shell reports them.
            let signal = code.filter(|code| *code > 128).map(|code| code - 128);
            ExitReport {
                code: if signal.is_some() { None } else { code },
                signal,
                oom_killed: state.oom_killed.unwrap_or(false),
            }
        }
        Err(_) => ExitReport {
            code: None,
            signal: None,
            oom_killed: false,
        },
    };
    remove(&docker, &id).await;
    let _ = exit.send(Some(report));
}

struct ContainerDriver {
    docker: Docker,
    id: String,
    exit: watch::Receiver<Option<ExitReport>>,
}

impl ContainerDriver {
    async fn signal(&self, signal: &str) -> std::io::Result<()> {
        if self.exit.borrow().is_some() {
            return Ok(());
        }
        match self
            .docker
            .kill_container(&self.id, Some(KillContainerOptions { signal }))
            .await
        {
            Ok(()) => Ok(()),
            // The container stopped in the meantime: nothing left to signal.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(error) => Err(io_error(error)),
        }
    }
}

#[async_trait]
impl Driver for ContainerDriver {
    async fn interrupt(&self) -> std::io::Result<()> {
        self.signal("SIGINT").await
    }

    async fn kill(&self) -> std::io::Result<()> {
        self.signal("SIGKILL").await
    }

    async fn wait(&self) -> ExitReport {
        ExitReport::when_published(&self.exit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The kernelspecs a Docker runner serves name each language's command with the image's
    /// driver folder; that is only true while each image runs exactly that command.
    #[test]
    fn each_image_runs_the_command_its_kernelspec_shows() {
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        for language in crate::languages::ALL {
            let path = images.join(language.image).join("Dockerfile");
            let dockerfile = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            let cmd = dockerfile
                .lines()
                .filter_map(|line| line.strip_prefix("CMD "))
                .next_back()
                .unwrap_or_else(|| panic!("{} has no CMD", path.display()));
            let cmd: Vec<String> = serde_json::from_str(cmd).unwrap_or_else(|error| {
                panic!("{}: CMD is not a JSON list: {error}", path.display())
            });
            assert_eq!(
                cmd,
                language.command(Path::new(IMAGE_DRIVER_DIR)),
                "{}",
                path.display()
            );
        }
    }
}
