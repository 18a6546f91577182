//! The cellgate kernel runner: kernels as long-lived language drivers, the backends that run
//! them, and the HTTP/websocket API a gateway uses to reach them.

pub mod api;
pub mod backend;
pub mod config;
pub mod error;
pub mod jobs;
pub mod kernel;
pub mod languages;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backend::docker::{DockerBackend, DockerSettings};
use crate::backend::process::ProcessBackend;
use crate::backend::Backend;
use crate::config::{BackendKind, RunnerConfig};
use crate::error::RunnerError;
use crate::kernel::{KernelManager, KernelSettings};
use crate::languages::LanguageSet;

pub use config::{RunnerArgs, RunnerConfig as Config};

/// Listens on `bind`, says where on stderr (the line tests and operators wait for), and runs
/// the runner there until `shutdown` resolves.
pub async fn listen_and_run(
    bind: std::net::SocketAddr,
    config: RunnerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let address = listener.local_addr()?;
    eprintln!(
        "cellgate-runner listening on http://{address} ({:?} backend)",
        config.backend
    );
    run(listener, config, shutdown).await?;
    Ok(())
}

/// Runs a runner on `listener` until `shutdown` resolves; then it stops taking kernels, lets
/// open sessions finish within the grace period, and shuts every kernel down.
pub async fn run(
    listener: TcpListener,
    config: RunnerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunnerError> {
    let drivers_root = config.data_dir.join("drivers");
    languages::install_drivers(&drivers_root).map_err(|source| RunnerError::Filesystem {
        path: drivers_root.clone(),
        source,
    })?;
    let backend: Arc<dyn Backend> = match config.backend {
        BackendKind::Process => Arc::new(ProcessBackend::new(drivers_root)),
        BackendKind::Docker => {
            let settings = DockerSettings {
                image_prefix: config.image_prefix.clone(),
                image_tag: config.image_tag.clone(),
                limits: config.limits,
                network: config.kernel_network.clone(),
                runner_id: config.runner_id.clone(),
                pull_missing: config.pull_images,
            };
            Arc::new(
                DockerBackend::connect(settings)
                    .await
                    .map_err(|source| RunnerError::Docker { source })?,
            )
        }
    };
    let languages = LanguageSet::new(
        languages::ALL
            .iter()
            .copied()
            .filter(|language| backend.supports(language))
            .collect(),
    );
    if languages.default_name().is_none() {
        tracing::warn!("no language runtime found on PATH: this runner can start no kernel");
    }
    let mut settings = KernelSettings::new(config.data_dir.join("kernels"));
    settings.output_cap = config.output_cap;
    settings.max_kernels = config.max_kernels;
    settings.env_allow = config.kernel_env_allow.clone();
    settings.pool_size = config.pool_size;
    settings.cull_idle = config.cull_idle;
    let manager = Arc::new(KernelManager::new(backend, languages, settings));
    // Ends the kernels' background work: the warm pool's refills and the culling sweeps.
    let stop_kernel_upkeep = CancellationToken::new();
    manager.start_pool(stop_kernel_upkeep.clone());
    manager.start_culling(stop_kernel_upkeep.clone());
    let stop_jobs = CancellationToken::new();
    let (jobs, worker) = match start_jobs(&config, stop_jobs.clone()).await? {
        Some((api, worker)) => (Some(api), Some(worker)),
        None => (None, None),
    };
    let state = Arc::new(api::AppState {
        manager: manager.clone(),
        jobs,
        secret: config.secret.clone(),
        runner_id: config.runner_id.clone(),
        max_message_size: config.max_message_size,
        ping_interval: config.ping_interval,
        closing: CancellationToken::new(),
        sessions_closing: CancellationToken::new(),
    });
    api::serve(
        listener,
        state,
        config.max_connections,
        config.grace,
        shutdown,
    )
    .await;
    stop_kernel_upkeep.cancel();
    stop_jobs.cancel();
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    manager.shutdown_all().await;
    Ok(())
}

/// The jobs API and the worker's task.
type StartedJobs = (Arc<api::jobs::JobsApi>, tokio::task::JoinHandle<()>);

/// Opens the job volume and starts the batch worker, when the runner has a volume.
async fn start_jobs(
    config: &RunnerConfig,
    shutdown: CancellationToken,
) -> Result<Option<StartedJobs>, RunnerError> {
    let Some(volume) = &config.jobs_volume else {
        return Ok(None);
    };
    let store = jobs::JobStore::open(volume).map_err(|error| RunnerError::Filesystem {
        path: volume.clone(),
        source: std::io::Error::other(error),
    })?;
    let executor: Arc<dyn jobs::execute::Executor> = match config.backend {
        BackendKind::Process => Arc::new(jobs::process::ProcessExecutor),
        BackendKind::Docker => Arc::new(
            jobs::container::ContainerExecutor::new(
                config.runner_id.clone(),
                config.image_prefix.clone(),
                config.image_tag.clone(),
                config.limits,
                config.kernel_network.clone(),
                shutdown.clone(),
            )
            .await
            .map_err(|source| RunnerError::Docker { source })?,
        ),
    };
    let mut settings = config.jobs.clone();
    settings.node = config.runner_id.clone();
    let stale_after = settings.stale_after;
    let worker = jobs::Worker::new(store, executor, settings);
    let defaults = cellgate_protocol::job::JobLimits {
        timeout_seconds: 60.0,
        cpus: config.limits.cpus,
        memory_bytes: config.limits.memory_bytes.min(512 * 1024 * 1024),
        retries: 0,
        output_bytes: 16 * 1024 * 1024,
    };
    let max = cellgate_protocol::job::JobLimits {
        timeout_seconds: 24.0 * 3600.0,
        cpus: config.limits.cpus,
        memory_bytes: config.limits.memory_bytes,
        retries: 10,
        output_bytes: 1024 * 1024 * 1024,
    };
    let api = Arc::new(api::jobs::JobsApi {
        worker: worker.clone(),
        defaults,
        max,
        max_upload_bytes: config.max_job_upload_bytes,
        stale_after,
    });
    let handle = tokio::spawn(worker.run(shutdown));
    Ok(Some((api, handle)))
}
