//! The gateway's configuration: one typed value, built and checked by the caller before any
//! port is bound, with defaults for every knob an operator rarely needs to turn.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::balancer::discovery::{Discovery, Dns, StaticList, SystemResolver};

/// Everything [`crate::run`] needs besides the listener and the TLS material.
#[derive(Clone)]
pub struct GatewayConfig {
    /// The token every client must present; `None` turns authentication off, which the caller
    /// only allows on a loopback bind.
    pub token: Option<String>,
    /// Where the kernel runners (plain HTTP) are found.
    pub runners: RunnerSource,
    /// Sent to the runners in [`cellgate_protocol::model::RUNNER_SECRET_HEADER`].
    pub runner_secret: String,
    /// Where the certificate comes from; [`crate::load_tls`] reads it.
    pub tls: TlsSettings,
    /// Client connections held at once, websockets included; more wait in the listen backlog.
    pub max_connections: usize,
    /// The largest REST body accepted from a client or a runner.
    pub max_body_bytes: usize,
    pub timeouts: Timeouts,
    pub websocket: WebsocketSettings,
    pub health: HealthSettings,
    /// The batch jobs front: upload size and time.
    pub jobs: JobsSettings,
    /// Threads serving client connections, each its own event loop; 0 means one per CPU.
    pub worker_threads: usize,
    /// How often a certificate read from files is checked for changes; `None` leaves reloads
    /// to [`crate::CertificateReloader::reload`] (the binaries call it on SIGHUP).
    pub tls_reload_interval: Option<Duration>,
}

/// Where the gateway finds its runners.
#[derive(Clone)]
pub enum RunnerSource {
    /// Base URLs, e.g. `http://127.0.0.1:41234`, fixed for the gateway's lifetime.
    Static(Vec<Url>),
    /// Every address a DNS name resolves to, each a runner on `port`, resolved again every
    /// `refresh` (Swarm's `tasks.<service>` names).
    Dns {
        name: String,
        port: u16,
        refresh: Duration,
    },
    /// Any other source, e.g. a test's.
    Custom {
        discovery: Arc<dyn Discovery>,
        refresh: Duration,
    },
}

impl RunnerSource {
    /// The source as a discovery, and how often to ask it again.
    pub fn discovery(&self) -> (Arc<dyn Discovery>, Duration) {
        match self {
            RunnerSource::Static(urls) => (Arc::new(StaticList(urls.clone())), Duration::MAX),
            RunnerSource::Dns {
                name,
                port,
                refresh,
            } => (
                Arc::new(Dns::new(name.clone(), *port, Arc::new(SystemResolver))),
                *refresh,
            ),
            RunnerSource::Custom { discovery, refresh } => (discovery.clone(), *refresh),
        }
    }
}

impl fmt::Debug for RunnerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunnerSource::Static(urls) => f.debug_tuple("Static").field(urls).finish(),
            RunnerSource::Dns {
                name,
                port,
                refresh,
            } => f
                .debug_struct("Dns")
                .field("name", name)
                .field("port", port)
                .field("refresh", refresh)
                .finish(),
            RunnerSource::Custom { discovery, refresh } => f
                .debug_struct("Custom")
                .field("discovery", &discovery.describe())
                .field("refresh", refresh)
                .finish(),
        }
    }
}

impl GatewayConfig {
    /// A configuration with the given identity and the default limits and timeouts.
    pub fn new(
        token: Option<String>,
        runners: Vec<Url>,
        runner_secret: String,
        tls: TlsSettings,
    ) -> GatewayConfig {
        GatewayConfig {
            token,
            runners: RunnerSource::Static(runners),
            runner_secret,
            tls,
            max_connections: 10_240,
            max_body_bytes: 16 << 20,
            timeouts: Timeouts::default(),
            websocket: WebsocketSettings::default(),
            health: HealthSettings::default(),
            jobs: JobsSettings::default(),
            worker_threads: 0,
            tls_reload_interval: Some(Duration::from_secs(5)),
        }
    }
}

// The token and the runner secret are credentials: a configuration printed in a log must not
// reveal them.
impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("runners", &self.runners)
            .field("runner_secret", &"<redacted>")
            .field("tls", &self.tls)
            .field("max_connections", &self.max_connections)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("timeouts", &self.timeouts)
            .field("websocket", &self.websocket)
            .field("health", &self.health)
            .field("jobs", &self.jobs)
            .field("worker_threads", &self.worker_threads)
            .field("tls_reload_interval", &self.tls_reload_interval)
            .finish()
    }
}

/// Where the gateway's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSettings {
    /// A certificate chain and its private key, both PEM files given by the operator.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate. With a directory it is made on the first run and reused
    /// afterwards, so its fingerprint stays the one users already trust; without one it is
    /// made anew at every start.
    SelfSigned { dir: Option<PathBuf> },
}

/// How long the gateway waits for each thing that can stall.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// From TCP accept to a finished TLS handshake.
    pub tls_handshake: Duration,
    /// For a client to send a request's headers, so idle or slow connections do not pin a slot.
    pub request_headers: Duration,
    /// For a TCP connection to a runner.
    pub upstream_connect: Duration,
    /// For a runner to answer a REST call or a websocket handshake; starting a cold container
    /// is the slowest legitimate case.
    pub upstream_request: Duration,
    /// For open connections and websockets to finish after shutdown starts.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tls_handshake: Duration::from_secs(10),
            request_headers: Duration::from_secs(30),
            upstream_connect: Duration::from_secs(2),
            upstream_request: Duration::from_secs(120),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// How proxied websockets are kept alive and bounded.
#[derive(Debug, Clone)]
pub struct WebsocketSettings {
    /// How often the gateway pings both ends; well under Swarm's 900 s idle cut.
    pub ping_interval: Duration,
    /// A side that sends nothing (not even a pong) for this long is taken for dead.
    pub idle_timeout: Duration,
    /// How long a closing handshake may take before the connection is dropped.
    pub close_timeout: Duration,
    /// The largest message accepted from either side; Jupyter's default is the same.
    pub max_message_bytes: usize,
}

impl Default for WebsocketSettings {
    fn default() -> WebsocketSettings {
        WebsocketSettings {
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(95),
            close_timeout: Duration::from_secs(5),
            max_message_bytes: 64 << 20,
        }
    }
}

/// The active health checks of the runners.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// Time between two checks of every runner.
    pub interval: Duration,
    /// How long one check may take before the runner counts as unhealthy.
    pub timeout: Duration,
}

impl Default for HealthSettings {
    fn default() -> HealthSettings {
        HealthSettings {
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(1500),
        }
    }
}

/// Limits of the batch jobs front, whose uploads are far bigger than any REST body.
#[derive(Debug, Clone)]
pub struct JobsSettings {
    /// The largest job upload, all files together; the runner has its own limit too.
    pub max_upload_bytes: u64,
    /// How long a job upload may take, from its first byte to the runner's answer.
    pub upload_timeout: Duration,
}

impl Default for JobsSettings {
    fn default() -> JobsSettings {
        JobsSettings {
            max_upload_bytes: 4 << 30,
            upload_timeout: Duration::from_secs(3600),
        }
    }
}
