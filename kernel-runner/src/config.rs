//! The runner's configuration, parsed and checked once before any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Local processes, unsandboxed: for one person's machine and for tests.
    Process,
    /// A sandboxed Docker container per kernel.
    Docker,
}

/// `cellgate-runner`'s command line; every flag can also come from `CELLGATE_<FLAG>`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "cellgate-runner",
    version,
    about = "cellgate kernel runner: runs Jupyter kernels for a cellgate gateway.",
    long_about = "cellgate kernel runner: runs Jupyter kernels (Python, JavaScript, Bash) for a \
                  cellgate gateway and serves the Jupyter kernel API to it over plain HTTP. \
                  Every request must carry the shared runner secret, read from the environment \
                  variable CELLGATE_RUNNER_SECRET, so only gateways can use it."
)]
pub struct RunnerArgs {
    /// Address to listen on.
    #[arg(long, env = "CELLGATE_BIND", default_value = "127.0.0.1:8889")]
    pub bind: SocketAddr,
    /// Where kernels run.
    #[arg(long, value_enum, env = "CELLGATE_BACKEND", default_value = "process")]
    pub backend: BackendKind,
    /// Directory for drivers and kernels' working directories.
    #[arg(long, env = "CELLGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Name of this runner in status reports (default: host name and port).
    #[arg(long, env = "CELLGATE_RUNNER_ID")]
    pub runner_id: Option<String>,
    /// Bytes of output one cell may print before the rest is dropped.
    #[arg(long, env = "CELLGATE_OUTPUT_CAP", default_value_t = 1024 * 1024)]
    pub output_cap: usize,
    /// Kernels this runner holds at most.
    #[arg(long, env = "CELLGATE_MAX_KERNELS", default_value_t = 1000)]
    pub max_kernels: usize,
    /// Extra environment variables passed through to kernels (comma-separated names).
    #[arg(long, env = "CELLGATE_KERNEL_ENV_ALLOW", value_delimiter = ',')]
    pub kernel_env_allow: Vec<String>,
    /// Seconds open sessions get to finish on shutdown.
    #[arg(long, env = "CELLGATE_GRACE_SECONDS", default_value_t = 30)]
    pub grace_seconds: u64,
    /// Drivers kept started and waiting per language (default: 1 with docker, 0 otherwise).
    #[arg(long, env = "CELLGATE_POOL_SIZE")]
    pub pool_size: Option<usize>,
    /// Docker backend: images are PREFIX + language + ':' + TAG.
    #[arg(long, env = "CELLGATE_IMAGE_PREFIX", default_value = "cellgate/")]
    pub image_prefix: String,
    /// Docker backend: the tag of the language images.
    #[arg(long, env = "CELLGATE_IMAGE_TAG", default_value = "latest")]
    pub image_tag: String,
    /// Docker backend: memory per kernel in MiB (swap is not allowed on top).
    #[arg(long, env = "CELLGATE_KERNEL_MEMORY_MB", default_value_t = 1024)]
    pub kernel_memory_mb: u64,
    /// Docker backend: CPUs per kernel (0.5 is half a core).
    #[arg(long, env = "CELLGATE_KERNEL_CPUS", default_value_t = 1.0)]
    pub kernel_cpus: f64,
    /// Docker backend: processes and threads per kernel.
    #[arg(long, env = "CELLGATE_KERNEL_PIDS", default_value_t = 256)]
    pub kernel_pids: u64,
    /// Docker backend: a Docker network for kernels; without it kernels have no network.
    #[arg(long, env = "CELLGATE_KERNEL_NETWORK")]
    pub kernel_network: Option<String>,
    /// Docker backend: pull the language images this node lacks before serving (a swarm
    /// worker pulls them from the swarm's registry, which the image prefix names).
    #[arg(long, env = "CELLGATE_PULL_IMAGES", default_value_t = false)]
    pub pull_images: bool,
    /// The volume batch jobs live on, shared by every runner (default: the data directory).
    #[arg(long, env = "CELLGATE_JOBS_VOLUME")]
    pub jobs_volume: Option<PathBuf>,
    /// Batch jobs run at once on this runner (default: the number of cores).
    #[arg(long, env = "CELLGATE_JOB_SLOTS")]
    pub job_slots: Option<usize>,
    /// Seconds without a heartbeat after which a node's jobs go to other runners.
    #[arg(long, env = "CELLGATE_NODE_STALE_SECONDS", default_value_t = 15.0)]
    pub node_stale_seconds: f64,
    /// Shut down kernels that have been idle with no client connected for this many seconds,
    /// and forget dead ones as long; 0 keeps them until they are deleted.
    #[arg(long, env = "CELLGATE_CULL_IDLE_SECONDS", default_value_t = 0)]
    pub cull_idle_seconds: u64,
    /// The largest batch job upload, all files together, in MiB.
    #[arg(
        long,
        env = "CELLGATE_JOBS_MAX_UPLOAD_MB",
        value_name = "MIB",
        default_value_t = 4096
    )]
    pub jobs_max_upload_mb: u64,
}

/// A checked runner configuration.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub backend: BackendKind,
    pub data_dir: PathBuf,
    pub runner_id: String,
    pub secret: String,
    pub output_cap: usize,
    pub max_kernels: usize,
    pub kernel_env_allow: Vec<String>,
    /// How long a kernel may stay idle and unconnected (or dead) before it is removed.
    pub cull_idle: Option<Duration>,
    pub grace: Duration,
    pub max_connections: usize,
    pub max_message_size: usize,
    pub ping_interval: Duration,
    pub pool_size: usize,
    pub image_prefix: String,
    pub image_tag: String,
    pub limits: crate::backend::sandbox::Limits,
    pub kernel_network: Option<String>,
    pub pull_images: bool,
    /// The job volume; `None` turns the batch worker off.
    pub jobs_volume: Option<PathBuf>,
    pub jobs: crate::jobs::worker::WorkerSettings,
    /// The largest job upload, all files together.
    pub max_job_upload_bytes: u64,
}

impl RunnerConfig {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(data_dir: PathBuf, runner_id: String, secret: String) -> RunnerConfig {
        RunnerConfig {
            backend: BackendKind::Process,
            data_dir,
            runner_id,
            secret,
            output_cap: 1024 * 1024,
            max_kernels: 1000,
            kernel_env_allow: Vec::new(),
            cull_idle: None,
            grace: Duration::from_secs(30),
            max_connections: 20_000,
            max_message_size: 64 * 1024 * 1024,
            ping_interval: Duration::from_secs(30),
            pool_size: 0,
            image_prefix: "cellgate/".to_owned(),
            image_tag: "latest".to_owned(),
            limits: crate::backend::sandbox::Limits::default(),
            kernel_network: None,
            pull_images: false,
            jobs_volume: None,
            jobs: crate::jobs::worker::WorkerSettings::new(String::new()),
            max_job_upload_bytes: 4 * 1024 * 1024 * 1024,
        }
    }

    /// Checks the command line and the secret together, reporting every problem at once.
    pub fn from_args(
        args: &RunnerArgs,
        secret: Option<String>,
    ) -> Result<RunnerConfig, Vec<String>> {
        let mut problems = Vec::new();
        let secret = match secret {
            Some(secret) if secret.len() >= 16 => secret,
            Some(_) => {
                problems.push("CELLGATE_RUNNER_SECRET must be at least 16 characters".to_owned());
                String::new()
            }
            None => {
                problems.push(
                    "CELLGATE_RUNNER_SECRET is not set: the runner must share a secret with its gateways"
                        .to_owned(),
                );
                String::new()
            }
        };
        if args.output_cap < 1024 {
            problems.push(format!(
                "--output-cap {} is below 1024 bytes",
                args.output_cap
            ));
        }
        if args.max_kernels == 0 {
            problems.push("--max-kernels must be at least 1".to_owned());
        }
        for name in &args.kernel_env_allow {
            if name.starts_with("CELLGATE_") {
                problems.push(format!("--kernel-env-allow may not pass {name}: cellgate's own settings stay out of kernels"));
            }
        }
        if args.kernel_memory_mb < 32 {
            problems.push(format!(
                "--kernel-memory-mb {} is below 32",
                args.kernel_memory_mb
            ));
        }
        if !(args.kernel_cpus > 0.0 && args.kernel_cpus <= 256.0) {
            problems.push(format!("--kernel-cpus {} is not above 0", args.kernel_cpus));
        }
        if args.kernel_pids < 16 {
            problems.push(format!("--kernel-pids {} is below 16", args.kernel_pids));
        }
        if args.job_slots == Some(0) || args.job_slots.unwrap_or(0) > 1024 {
            problems.push("--job-slots is not between 1 and 1024".to_owned());
        }
        if !(args.node_stale_seconds >= 1.0 && args.node_stale_seconds <= 3600.0) {
            problems.push(format!(
                "--node-stale-seconds {} is not between 1 and 3600",
                args.node_stale_seconds
            ));
        }
        if args.pool_size.unwrap_or(0) > 64 {
            problems.push("--pool-size is above 64".to_owned());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let runner_id = args.runner_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "runner".to_owned());
            format!("{host}:{}", args.bind.port())
        });
        let mut config = RunnerConfig::new(
            args.data_dir.clone().unwrap_or_else(default_data_dir),
            runner_id,
            secret,
        );
        config.backend = args.backend;
        config.output_cap = args.output_cap;
        config.max_kernels = args.max_kernels;
        config.kernel_env_allow = args.kernel_env_allow.clone();
        config.grace = Duration::from_secs(args.grace_seconds);
        config.cull_idle =
            (args.cull_idle_seconds > 0).then(|| Duration::from_secs(args.cull_idle_seconds));
        config.pool_size = args.pool_size.unwrap_or(match args.backend {
            BackendKind::Docker => 1,
            BackendKind::Process => 0,
        });
        config.image_prefix = args.image_prefix.clone();
        config.image_tag = args.image_tag.clone();
        config.limits.memory_bytes = args.kernel_memory_mb * 1024 * 1024;
        config.limits.cpus = args.kernel_cpus;
        config.limits.pids = args.kernel_pids;
        config.kernel_network = args.kernel_network.clone();
        config.pull_images = args.pull_images;
        config.jobs_volume = Some(
            args.jobs_volume
                .clone()
                .unwrap_or_else(|| config.data_dir.clone()),
        );
        if let Some(slots) = args.job_slots {
            config.jobs.slots = slots;
        }
        config.jobs.stale_after = Duration::from_secs_f64(args.node_stale_seconds);
        config.max_job_upload_bytes = args.jobs_max_upload_mb.saturating_mul(1 << 20);
        config.jobs.heartbeat_interval =
            (config.jobs.stale_after / 5).max(Duration::from_millis(200));
        Ok(config)
    }
}

/// `$XDG_DATA_HOME/cellgate`, else `~/.local/share/cellgate`, else a folder in /tmp.
pub fn default_data_dir() -> PathBuf {
    if let Some(data) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(data).join("cellgate");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/cellgate");
    }
    std::env::temp_dir().join("cellgate")
}
