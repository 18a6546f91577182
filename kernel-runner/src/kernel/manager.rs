//! The kernels of one runner: creating them (id, working directory, environment, driver),
//! finding, listing and deleting them, and the counts a gateway balances on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cellgate_protocol::content::ExecutionState;
use cellgate_protocol::model::{
    CreateKernel, KernelLimits, KernelModel, KernelSpecs, RunnerStatus,
};
use chrono::Utc;
use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::actor::Actor;
use super::connections::Connections;
use super::history::History;
use super::launch::launch;
use super::pool::WarmPool;
use super::{Kernel, KernelState};
use crate::backend::{Backend, LaunchSpec};
use crate::error::RunnerError;
use crate::languages::{Language, LanguageSet};
use tokio_util::sync::CancellationToken;

/// Variables a driver inherits from the runner's environment when present. Everything else,
/// the runner's secrets first of all, stays out of kernels.
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYENV_ROOT",
    "PYENV_VERSION",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "NODE_PATH",
    "JAVA_HOME",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
];

/// Tunables of the kernels a runner starts.
#[derive(Debug, Clone)]
pub struct KernelSettings {
    /// Where each kernel gets its working directory, `<kernels_dir>/<id>`.
    pub kernels_dir: PathBuf,
    pub ready_timeout: Duration,
    /// Bytes of stdout and stderr one cell may produce before the rest is dropped.
    pub output_cap: usize,
    /// Messages buffered for one websocket connection before it counts as stalled.
    pub outbox_capacity: usize,
    pub max_kernels: usize,
    /// Extra variable names passed from the runner's environment to kernels.
    pub env_allow: Vec<String>,
    /// Drivers kept started and waiting, per language; 0 turns the warm pool off.
    pub pool_size: usize,
    /// Kernels idle with no connection, and dead kernels, are removed after this long.
    pub cull_idle: Option<Duration>,
}

impl KernelSettings {
    pub fn new(kernels_dir: PathBuf) -> KernelSettings {
        KernelSettings {
            kernels_dir,
            ready_timeout: Duration::from_secs(30),
            output_cap: 1024 * 1024,
            outbox_capacity: 4096,
            max_kernels: 1000,
            env_allow: Vec::new(),
            pool_size: 0,
            cull_idle: None,
        }
    }
}

/// How many kernels a stopping runner shuts down at the same time.
const SHUTDOWN_CONCURRENCY: usize = 64;

pub struct KernelManager {
    kernels: DashMap<String, Arc<Kernel>>,
    /// Ids reserved by creations still under way, so two requests cannot claim one id.
    starting: Mutex<std::collections::HashSet<String>>,
    backend: Arc<dyn Backend>,
    languages: LanguageSet,
    settings: KernelSettings,
    tasks: TaskTracker,
    draining: AtomicBool,
    pool: Option<Arc<WarmPool>>,
}

impl KernelManager {
    pub fn new(
        backend: Arc<dyn Backend>,
        languages: LanguageSet,
        settings: KernelSettings,
    ) -> KernelManager {
        KernelManager {
            kernels: DashMap::new(),
            starting: Mutex::new(Default::default()),
            backend,
            languages,
            tasks: TaskTracker::new(),
            draining: AtomicBool::new(false),
            pool: (settings.pool_size > 0).then(|| Arc::new(WarmPool::new(settings.pool_size))),
            settings,
        }
    }

    pub fn kernelspecs(&self) -> KernelSpecs {
        self.languages
            .kernelspecs(|language| self.backend.driver_dir(language))
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    pub fn outbox_capacity(&self) -> usize {
        self.settings.outbox_capacity
    }

    pub async fn create(&self, request: CreateKernel) -> Result<KernelModel, RunnerError> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(RunnerError::Draining);
        }
        let name = match request.name.as_deref() {
            None | Some("") => self.languages.default_name().unwrap_or("python3"),
            Some(name) => name,
        };
        let language = self
            .languages
            .get(name)
            .ok_or_else(|| RunnerError::KernelSpecNotFound(name.to_owned()))?;
        let requested_id = request
            .kernel_id
            .clone()
            .or_else(|| request.env.get("KERNEL_ID").cloned());
        let requested_id = match requested_id {
            Some(id) => Some(
                uuid::Uuid::parse_str(&id)
                    .map_err(|_| RunnerError::BadKernelId(id.clone()))?
                    .hyphenated()
                    .to_string(),
            ),
            None => None,
        };
        if let Some(limits) = &request.limits {
            self.backend
                .check_limits(limits)
                .map_err(RunnerError::BadRequest)?;
        }
        let kernel_env: BTreeMap<String, String> = request
            .env
            .iter()
            .filter(|(name, _)| name.starts_with("KERNEL_") && name.as_str() != "KERNEL_ID")
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        // A pooled driver was started with the default environment and limits, so only a
        // plain request can take one.
        let plain = kernel_env.is_empty() && request.limits.is_none();
        let warm = match (&self.pool, plain) {
            (Some(pool), true) => pool.take(language),
            _ => None,
        };
        let id = requested_id
            .or_else(|| warm.as_ref().map(|warm| warm.spec.kernel_id.clone()))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let _reservation = self.reserve(&id)?;
        let (spec, launched) = match warm {
            Some(warm) => {
                let mut spec = warm.spec;
                spec.kernel_id = id.clone();
                (spec, warm.launched)
            }
            None => {
                let spec = self.spec(language, &id, &request.env, request.limits)?;
                let launched =
                    match launch(self.backend.as_ref(), &spec, self.settings.ready_timeout).await {
                        Ok(launched) => launched,
                        Err(error) => {
                            let _ = std::fs::remove_dir_all(&spec.workdir);
                            return Err(error);
                        }
                    };
                (spec, launched)
            }
        };
        let (shell_tx, shell_rx) = mpsc::channel(256);
        let (stdin_tx, stdin_rx) = mpsc::channel(16);
        let (control_tx, control_rx) = mpsc::channel(64);
        let kernel = Arc::new(Kernel {
            id: id.clone(),
            language,
            session: uuid::Uuid::new_v4().to_string(),
            workdir: spec.workdir.clone(),
            connections: Connections::default(),
            state: Mutex::new(KernelState {
                execution_state: ExecutionState::Starting,
                last_activity: Utc::now(),
                reason: None,
            }),
            shell: shell_tx,
            stdin: stdin_tx,
            control: control_tx,
        });
        let actor = Actor {
            kernel: kernel.clone(),
            backend: self.backend.clone(),
            spec,
            ready_timeout: self.settings.ready_timeout,
            output_cap: self.settings.output_cap,
            driver: launched.driver,
            commands: launched.commands,
            events: launched.events,
            ready: launched.ready,
            shell: shell_rx,
            stdin: stdin_rx,
            control: control_rx,
            execution_count: 0,
            history: History::default(),
            crash_restarts: Default::default(),
            crashed: None,
            dead: false,
            events_closed: false,
            in_request: false,
            last_parent: None,
        };
        kernel.set_execution_state(ExecutionState::Idle);
        self.tasks.spawn(actor.run());
        self.kernels.insert(id.clone(), kernel.clone());
        tracing::info!(kernel = %id, language = language.kernel_name, "kernel started");
        Ok(kernel.model())
    }

    /// The launch spec of a new driver. Local processes get a working directory on the host;
    /// containers have theirs inside.
    fn spec(
        &self,
        language: &'static Language,
        id: &str,
        requested_env: &BTreeMap<String, String>,
        limits: Option<KernelLimits>,
    ) -> Result<LaunchSpec, RunnerError> {
        let workdir = self.settings.kernels_dir.join(id);
        if self.backend.inherits_host_environment() {
            std::fs::create_dir_all(&workdir).map_err(|source| RunnerError::Filesystem {
                path: workdir.clone(),
                source,
            })?;
        }
        Ok(LaunchSpec {
            kernel_id: id.to_owned(),
            language,
            workdir,
            env: self.environment(id, requested_env),
            limits,
        })
    }

    /// Starts keeping `size` drivers per language ready, until `stop`.
    pub fn start_pool(self: &Arc<Self>, stop: CancellationToken) {
        let Some(pool) = self.pool.clone() else {
            return;
        };
        let manager = Arc::downgrade(self);
        let spec_for = move |language: &'static Language| {
            let id = uuid::Uuid::new_v4().to_string();
            let env = BTreeMap::new();
            let workdir = PathBuf::new();
            match manager.upgrade() {
                Some(manager) => LaunchSpec {
                    kernel_id: id.clone(),
                    language,
                    workdir: manager.settings.kernels_dir.join(&id),
                    env: manager.environment(&id, &env),
                    limits: None,
                },
                None => LaunchSpec {
                    kernel_id: id,
                    language,
                    workdir,
                    env,
                    limits: None,
                },
            }
        };
        let languages: Vec<&'static Language> = self.languages.iter().collect();
        self.tasks.spawn(pool.refill(
            self.backend.clone(),
            languages,
            spec_for,
            self.settings.ready_timeout,
            stop,
        ));
    }

    /// Removes, until `stop`, the kernels nobody uses: idle (never busy or starting) with no
    /// client connected, or dead, since `cull_idle` or longer. A shared cluster's memory is
    /// not held by notebooks whose tabs were closed hours ago.
    pub fn start_culling(self: &Arc<Self>, stop: CancellationToken) {
        let Some(idle) = self.settings.cull_idle else {
            return;
        };
        let every = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
        let manager = Arc::downgrade(self);
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                manager.cull(idle).await;
            }
        });
    }

    async fn cull(&self, idle: Duration) {
        let unused = |kernel: &Kernel| {
            let (state, quiet) = kernel.activity(Utc::now());
            let unused = match state {
                ExecutionState::Dead => true,
                ExecutionState::Idle => kernel.connections.count() == 0,
                ExecutionState::Starting | ExecutionState::Busy | ExecutionState::Restarting => {
                    false
                }
            };
            unused && quiet >= idle
        };
        let candidates: Vec<String> = self
            .kernels
            .iter()
            .filter(|entry| unused(entry.value()))
            .map(|entry| entry.key().clone())
            .collect();
        for id in candidates {
            // Checked again as it is taken: earlier removals may have taken long enough for a
            // client to come back to this one.
            if let Some((_, kernel)) = self.kernels.remove_if(&id, |_, kernel| unused(kernel)) {
                tracing::info!(kernel = %id, idle_seconds = idle.as_secs(), "culling an unused kernel");
                self.retire(kernel).await;
            }
        }
    }

    fn reserve(&self, id: &str) -> Result<Reservation<'_>, RunnerError> {
        let mut starting = self
            .starting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.kernels.contains_key(id) || !starting.insert(id.to_owned()) {
            return Err(RunnerError::KernelIdInUse(id.to_owned()));
        }
        if self.kernels.len() + starting.len() > self.settings.max_kernels {
            starting.remove(id);
            return Err(RunnerError::TooManyKernels(self.settings.max_kernels));
        }
        Ok(Reservation {
            manager: self,
            id: id.to_owned(),
        })
    }

    /// The driver's whole environment: an allow-list from the runner's, `KERNEL_*` variables
    /// from the request, and cellgate's own.
    fn environment(
        &self,
        id: &str,
        requested: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let host_defaults: &[&str] = if self.backend.inherits_host_environment() {
            INHERITED_ENV
        } else {
            &[]
        };
        let inherited = host_defaults
            .iter()
            .map(|name| name.to_string())
            .chain(self.settings.env_allow.iter().cloned());
        for name in inherited {
            if let Ok(value) = std::env::var(&name) {
                env.insert(name, value);
            }
        }
        for (name, value) in requested {
            if name.starts_with("KERNEL_") && !value.contains('\0') {
                env.insert(name.clone(), value.clone());
            }
        }
        env.entry("LANG".to_owned())
            .or_insert_with(|| "C.UTF-8".to_owned());
        env.entry("MPLBACKEND".to_owned())
            .or_insert_with(|| "Agg".to_owned());
        env.insert("KERNEL_ID".to_owned(), id.to_owned());
        env.insert("JPY_PARENT_PID".to_owned(), std::process::id().to_string());
        env
    }

    pub fn get(&self, id: &str) -> Result<Arc<Kernel>, RunnerError> {
        self.kernels
            .get(id)
            .map(|kernel| kernel.value().clone())
            .ok_or_else(|| RunnerError::KernelNotFound(id.to_owned()))
    }

    pub fn list(&self) -> Vec<KernelModel> {
        let kernels: Vec<Arc<Kernel>> = self.kernels.iter().map(|k| k.value().clone()).collect();
        kernels.iter().map(|kernel| kernel.model()).collect()
    }

    pub async fn delete(&self, id: &str) -> Result<(), RunnerError> {
        let (_, kernel) = self
            .kernels
            .remove(id)
            .ok_or_else(|| RunnerError::KernelNotFound(id.to_owned()))?;
        self.retire(kernel).await;
        Ok(())
    }

    /// Shuts down a kernel already taken out of the map, and removes its directory.
    async fn retire(&self, kernel: Arc<Kernel>) {
        kernel.shutdown().await;
        match tokio::fs::remove_dir_all(&kernel.workdir).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(kernel = %kernel.id, %error, "could not remove the kernel's directory");
            }
            _ => {}
        }
        tracing::info!(kernel = %kernel.id, "kernel deleted");
    }

    pub fn status(&self, runner_id: &str) -> RunnerStatus {
        let kernels: Vec<Arc<Kernel>> = self.kernels.iter().map(|k| k.value().clone()).collect();
        RunnerStatus {
            runner_id: runner_id.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            sessions: kernels.iter().map(|k| k.connections.count()).sum(),
            kernels: kernels.len(),
            draining: self.draining.load(Ordering::Relaxed),
        }
    }

    /// Stops taking new kernels.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Shuts every kernel down, many at once, and waits for their actors to finish: a runner
    /// stopping with a hundred kernels takes about one driver's grace, not a hundred.
    pub async fn shutdown_all(&self) {
        use futures_util::StreamExt;
        self.drain();
        let ids: Vec<String> = self.kernels.iter().map(|k| k.key().clone()).collect();
        futures_util::stream::iter(ids)
            .for_each_concurrent(SHUTDOWN_CONCURRENCY, |id| async move {
                let _ = self.delete(&id).await;
            })
            .await;
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Releases a reserved kernel id when creation ends, however it ends.
struct Reservation<'a> {
    manager: &'a KernelManager,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.manager
            .starting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.id);
    }
}
