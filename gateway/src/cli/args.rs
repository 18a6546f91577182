//! The command line and environment of `cellgate-gateway` (and `cellgate gateway`), parsed
//! and checked in one go so every invalid value is reported before anything is bound.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::balancer::discovery::Dns;
use crate::config::{GatewayConfig, RunnerSource, TlsSettings};
use clap::Parser;
use rand::RngCore;
use url::Url;

/// The environment variable holding the runner secret. It is not a flag because a flag's
/// value shows in every process listing.
pub const RUNNER_SECRET_ENV: &str = "CELLGATE_RUNNER_SECRET";

#[derive(Debug, Parser)]
#[command(
    name = "cellgate-gateway",
    version,
    about = "The cellgate gateway: the TLS edge for Jupyter clients in front of kernel runners",
    after_help = "Environment:\n  CELLGATE_RUNNER_SECRET  the secret shared with the kernel runners (required)\n  RUST_LOG                log filter, e.g. info or cellgate_gateway=debug\n\nEvery flag can also be set with the environment variable shown next to it."
)]
pub struct Cli {
    /// Address to serve HTTPS on.
    #[arg(
        long,
        env = "CELLGATE_BIND",
        value_name = "ADDR",
        default_value = "127.0.0.1:8888"
    )]
    bind: String,

    /// Token every client must present (`Authorization: token T`, `?token=T`, or the login
    /// page). When absent a random token is made and printed. An empty token turns
    /// authentication off, which is refused unless ADDR is a loopback address.
    #[arg(long, env = "CELLGATE_TOKEN", value_name = "T", hide_env_values = true)]
    token: Option<String>,

    /// Base URLs of the kernel runners, comma-separated (plain HTTP, e.g. http://10.0.0.5:9000).
    #[arg(
        long,
        env = "CELLGATE_RUNNERS",
        value_name = "URL[,URL...]",
        value_delimiter = ','
    )]
    runners: Vec<String>,

    /// Find the runners by DNS instead: every address NAME resolves to is a runner listening
    /// on PORT (e.g. tasks.kernel-runner:9000 on a swarm). The name is resolved again every
    /// --runner-dns-refresh seconds, so runners join and leave without a restart.
    #[arg(
        long,
        env = "CELLGATE_RUNNER_DNS",
        value_name = "NAME:PORT",
        conflicts_with = "runners"
    )]
    runner_dns: Option<String>,

    /// Seconds between two lookups of --runner-dns.
    #[arg(
        long,
        env = "CELLGATE_RUNNER_DNS_REFRESH",
        value_name = "SECONDS",
        default_value_t = 5
    )]
    runner_dns_refresh: u64,

    /// PEM certificate chain. Without --tls-cert and --tls-key a self-signed certificate is used.
    #[arg(long, env = "CELLGATE_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "CELLGATE_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// Directory for state kept across restarts: the self-signed certificate, so its
    /// fingerprint stays the same. Without it the certificate is new at every start.
    #[arg(long, env = "CELLGATE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Extra host names or addresses the self-signed certificate is valid for, comma-separated.
    #[arg(
        long = "hostname",
        env = "CELLGATE_HOSTNAME",
        value_name = "NAME[,NAME...]",
        value_delimiter = ','
    )]
    hostnames: Vec<String>,

    /// Most client connections (websockets included) held at once.
    #[arg(
        long,
        env = "CELLGATE_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 10_240
    )]
    max_connections: usize,

    /// Seconds between two checks of --tls-cert and --tls-key for a renewed certificate; 0
    /// turns the checks off (SIGHUP still reloads them).
    #[arg(
        long,
        env = "CELLGATE_TLS_RELOAD_INTERVAL",
        value_name = "SECONDS",
        default_value_t = 5
    )]
    tls_reload_interval: u64,

    /// Seconds between two health checks of every runner.
    #[arg(
        long,
        env = "CELLGATE_HEALTH_INTERVAL",
        value_name = "SECONDS",
        default_value_t = 2
    )]
    health_interval: u64,

    /// Threads serving client connections, each its own event loop (0: one per CPU).
    #[arg(
        long,
        env = "CELLGATE_WORKER_THREADS",
        value_name = "N",
        default_value_t = 0
    )]
    worker_threads: usize,

    /// Seconds open connections get to finish after SIGTERM or Ctrl-C.
    #[arg(
        long,
        env = "CELLGATE_SHUTDOWN_GRACE",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    shutdown_grace: u64,

    #[command(flatten)]
    jobs: JobArgs,
}

/// The batch job options the gateway shares with `cellgate serve`.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The largest batch job upload, all files together, in MiB.
    #[arg(
        long,
        env = "CELLGATE_JOBS_MAX_UPLOAD_MB",
        value_name = "MIB",
        default_value_t = 4096
    )]
    jobs_max_upload_mb: u64,
}

impl JobArgs {
    /// The largest batch job upload, all files together, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.jobs_max_upload_mb.saturating_mul(1 << 20)
    }
}

/// The checked settings the gateway starts with.
#[derive(Debug)]
pub struct Settings {
    pub bind: SocketAddr,
    pub config: GatewayConfig,
    /// Names for a self-signed certificate besides the local ones.
    pub hostnames: Vec<String>,
    /// Whether the token was made here, so only the printed link knows it.
    pub token_generated: bool,
}

impl Cli {
    /// Checks every value; the error lists all problems, not just the first.
    pub fn into_settings(self, runner_secret: Option<String>) -> Result<Settings, Vec<String>> {
        let mut problems = Vec::new();

        let bind = match self.bind.parse::<SocketAddr>() {
            Ok(bind) => Some(bind),
            Err(error) => {
                problems.push(format!(
                    "--bind {:?}: {error} (expected IP:PORT)",
                    self.bind
                ));
                None
            }
        };

        let token_generated = self.token.is_none();
        let token = match self.token {
            None => Some(random_token()),
            Some(token) if token.is_empty() => {
                if bind.is_some_and(|bind| !bind.ip().is_loopback()) {
                    problems.push(
                        "--token '': authentication can only be turned off on a loopback --bind"
                            .to_owned(),
                    );
                }
                None
            }
            Some(token) => Some(token),
        };

        let mut runners = Vec::new();
        for text in self
            .runners
            .iter()
            .map(|r| r.trim())
            .filter(|r| !r.is_empty())
        {
            match Url::parse(text) {
                Ok(url) if url.scheme() == "http" && url.host().is_some() => runners.push(url),
                Ok(_) => problems.push(format!(
                    "--runners {text:?}: runners are plain HTTP URLs with a host, like http://127.0.0.1:9000"
                )),
                Err(error) => problems.push(format!("--runners {text:?}: {error}")),
            }
        }
        let dns = match &self.runner_dns {
            Some(text) => match Dns::parse(text) {
                Ok(name_and_port) => Some(name_and_port),
                Err(problem) => {
                    problems.push(format!("--runner-dns {problem}"));
                    None
                }
            },
            None => None,
        };
        if self.runner_dns.is_none() && self.runners.iter().all(|r| r.trim().is_empty()) {
            problems.push(
                "--runners or --runner-dns: at least one kernel runner is required".to_owned(),
            );
        }
        if self.runner_dns_refresh == 0 {
            problems.push("--runner-dns-refresh must be at least 1 second".to_owned());
        }
        if self.health_interval == 0 {
            problems.push("--health-interval must be at least 1 second".to_owned());
        }

        let runner_secret = match runner_secret {
            Some(secret) if secret.is_empty() => {
                problems.push(format!("{RUNNER_SECRET_ENV} is empty"));
                String::new()
            }
            Some(secret) if !secret.bytes().all(|b| b.is_ascii_graphic()) => {
                problems.push(format!(
                    "{RUNNER_SECRET_ENV}: only printable ASCII without spaces can be sent in a header"
                ));
                String::new()
            }
            Some(secret) => secret,
            None => {
                problems.push(format!("{RUNNER_SECRET_ENV} is not set"));
                String::new()
            }
        };

        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => TlsSettings::Files { cert, key },
            (None, None) => TlsSettings::SelfSigned {
                dir: self.data_dir.clone(),
            },
            (Some(_), None) => {
                problems.push("--tls-cert needs --tls-key".to_owned());
                TlsSettings::SelfSigned { dir: None }
            }
            (None, Some(_)) => {
                problems.push("--tls-key needs --tls-cert".to_owned());
                TlsSettings::SelfSigned { dir: None }
            }
        };

        if self.max_connections == 0 {
            problems.push("--max-connections must be at least 1".to_owned());
        }

        let mut hostnames = self.hostnames;
        hostnames.retain(|name| !name.trim().is_empty());
        if let Some(ip) = bind.map(|bind| bind.ip()).filter(|ip| !ip.is_unspecified()) {
            hostnames.push(ip.to_string());
        }

        let Some(bind) = bind else {
            return Err(problems);
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut config = GatewayConfig::new(token, runners, runner_secret, tls);
        if let Some((name, port)) = dns {
            config.runners = RunnerSource::Dns {
                name,
                port,
                refresh: Duration::from_secs(self.runner_dns_refresh),
            };
        }
        config.max_connections = self.max_connections;
        config.worker_threads = self.worker_threads;
        config.timeouts.shutdown_grace = Duration::from_secs(self.shutdown_grace);
        config.jobs.max_upload_bytes = self.jobs.max_upload_bytes();
        config.tls_reload_interval =
            (self.tls_reload_interval > 0).then(|| Duration::from_secs(self.tls_reload_interval));
        config.health.interval = Duration::from_secs(self.health_interval);
        // A check must end before the next one is due.
        config.health.timeout = config.health.timeout.min(config.health.interval);
        Ok(Settings {
            bind,
            config,
            hostnames,
            token_generated,
        })
    }
}

/// 32 random bytes in hex: as strong as the token needs to be, and safe in a URL.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The address to print in the ready line: a wildcard bind is reachable on localhost.
pub fn display_address(bound: SocketAddr) -> String {
    let host = match bound.ip() {
        ip if ip.is_unspecified() => "localhost".to_owned(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    format!("{host}:{}", bound.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut argv = vec!["cellgate-gateway"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap()
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let problems = cli(&[
            "--bind",
            "nowhere",
            "--runners",
            "ftp://x,not a url",
            "--tls-cert",
            "c.pem",
        ])
        .into_settings(None)
        .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        let none = cli(&[]).into_settings(Some("s".into())).unwrap_err();
        assert_eq!(none.len(), 1, "{none:?}");
    }

    #[test]
    fn a_full_configuration_parses() {
        let settings = cli(&[
            "--bind",
            "127.0.0.1:0",
            "--runners",
            "http://127.0.0.1:9001, http://127.0.0.1:9002",
            "--token",
            "t",
        ])
        .into_settings(Some("s3cret".into()))
        .unwrap();
        assert!(
            matches!(&settings.config.runners, RunnerSource::Static(urls) if urls.len() == 2),
            "{:?}",
            settings.config.runners
        );
        assert_eq!(settings.config.token.as_deref(), Some("t"));
        assert!(!settings.token_generated);
        assert_eq!(settings.hostnames, vec!["127.0.0.1".to_owned()]);
    }

    #[test]
    fn auth_can_only_be_turned_off_on_loopback() {
        let local = cli(&[
            "--bind",
            "127.0.0.1:0",
            "--runners",
            "http://r:1",
            "--token",
            "",
        ])
        .into_settings(Some("s".into()))
        .unwrap();
        assert_eq!(local.config.token, None);
        let public = cli(&[
            "--bind",
            "0.0.0.0:0",
            "--runners",
            "http://r:1",
            "--token",
            "",
        ])
        .into_settings(Some("s".into()))
        .unwrap_err();
        assert_eq!(public.len(), 1, "{public:?}");
    }

    #[test]
    fn runners_can_be_found_by_dns_instead() {
        let settings = cli(&["--runner-dns", "tasks.kernel-runner:9000"])
            .into_settings(Some("s".into()))
            .unwrap();
        assert!(matches!(
            &settings.config.runners,
            RunnerSource::Dns { name, port: 9000, .. } if name == "tasks.kernel-runner"
        ));
        let problems = cli(&["--runner-dns", "tasks.kernel-runner"])
            .into_settings(Some("s".into()))
            .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(Cli::try_parse_from([
            "cellgate-gateway",
            "--runners",
            "http://r:1",
            "--runner-dns",
            "r:1"
        ])
        .is_err());
    }

    #[test]
    fn a_missing_token_is_generated() {
        let settings = cli(&["--runners", "http://r:1"])
            .into_settings(Some("s".into()))
            .unwrap();
        assert!(settings.token_generated);
        assert_eq!(settings.config.token.map(|t| t.len()), Some(64));
    }

    #[test]
    fn ready_addresses_are_browsable() {
        assert_eq!(
            display_address("0.0.0.0:8888".parse().unwrap()),
            "localhost:8888"
        );
        assert_eq!(display_address("[::1]:8888".parse().unwrap()), "[::1]:8888");
    }
}
