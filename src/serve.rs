//! `cellgate serve`: one gateway and N runners, wired together over loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use cellgate_gateway::cli::args::JobArgs;
use cellgate_gateway::{GatewayConfig, TlsSettings};
use cellgate_kernel_runner::config::BackendKind;
use cellgate_kernel_runner::Config as RunnerConfig;
use rand::distributions::Alphanumeric;
use rand::Rng;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::signals::shutdown_signal;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address the gateway listens on (HTTPS).
    #[arg(long, env = "CELLGATE_BIND", default_value = "127.0.0.1:8888")]
    bind: SocketAddr,
    /// Access token clients must present; random when absent; '' turns authentication off
    /// (loopback binds only).
    #[arg(long, env = "CELLGATE_TOKEN")]
    token: Option<String>,
    /// Where kernels run.
    #[arg(long, value_enum, env = "CELLGATE_BACKEND", default_value = "process")]
    backend: BackendKind,
    /// Number of kernel runners behind the gateway.
    #[arg(long, env = "CELLGATE_RUNNERS", default_value_t = 1)]
    runners: usize,
    /// Directory for drivers, kernels' working directories and the generated certificate.
    #[arg(long, env = "CELLGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PEM certificate chain for TLS (with --tls-key); self-signed when absent.
    #[arg(long, env = "CELLGATE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "CELLGATE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    jobs: JobArgs,
}

/// The token to use and whether it was generated.
fn resolve_token(args: &ServeArgs, problems: &mut Vec<String>) -> Option<String> {
    match args.token.as_deref() {
        Some("") => {
            if !args.bind.ip().is_loopback() {
                problems.push(format!(
                    "--token '' turns authentication off, which is only allowed on a loopback address, not {}",
                    args.bind
                ));
            }
            None
        }
        Some(token) => Some(token.to_owned()),
        None => Some(random_string(48)),
    }
}

/// This installation's id, kept in the data directory: runners are named after it, so a
/// restarted server recognises (and removes) containers its earlier run left behind, while two
/// servers with different data directories never touch each other's.
fn instance_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("instance-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Ok(id.to_owned());
        }
    }
    let id = format!("cellgate-{}", random_string(12).to_ascii_lowercase());
    std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

fn random_string(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let token = resolve_token(&args, &mut problems);
    if args.runners == 0 || args.runners > 64 {
        problems.push(format!(
            "--runners {} is not between 1 and 64",
            args.runners
        ));
    }
    if args.backend == BackendKind::Process && !args.bind.ip().is_loopback() {
        problems.push(format!(
            "the process backend runs code unsandboxed, so it only binds to loopback, not {}; use --backend docker to serve others",
            args.bind
        ));
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("cellgate: {problem}");
        }
        bail!("invalid configuration ({} problems)", problems.len());
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(cellgate_kernel_runner::config::default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    if token.is_none() {
        eprintln!(
            "cellgate: WARNING: authentication is off; anyone who can reach {} can run code",
            args.bind
        );
    }
    if args.backend == BackendKind::Process {
        eprintln!(
            "cellgate: kernels run as local processes, unsandboxed, with this user's rights; serving on loopback only"
        );
    }

    let instance = instance_id(&data_dir)?;
    let secret = random_string(48);
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let mut runner_urls = Vec::new();
    for index in 0..args.runners {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind a loopback port for a runner")?;
        let address = listener.local_addr()?;
        runner_urls.push(url::Url::parse(&format!("http://{address}"))?);
        let mut config = RunnerConfig::new(
            data_dir.join("runners").join(index.to_string()),
            format!("{instance}-{index}"),
            secret.clone(),
        );
        config.backend = args.backend;
        // Every runner works on the same job volume: the data directory itself.
        config.jobs_volume = Some(data_dir.clone());
        config.max_job_upload_bytes = args.jobs.max_upload_bytes();
        if args.backend == BackendKind::Docker {
            // Containers take a few hundred milliseconds to start: keep one ready per language.
            config.pool_size = 1;
        }
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) =
                cellgate_kernel_runner::run(listener, config, stop.cancelled_owned()).await
            {
                eprintln!("cellgate: runner {index} failed: {error}");
            }
        });
    }

    let tls_settings = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => TlsSettings::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => TlsSettings::SelfSigned {
            dir: Some(data_dir.join("tls")),
        },
    };
    let hostnames = vec![args.bind.ip().to_string()];
    let tls = cellgate_gateway::load_tls(&tls_settings, &hostnames).context("cannot set up TLS")?;
    let fingerprint = tls.sha256_fingerprint.clone();
    let listener = TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let address = listener.local_addr()?;
    let mut config = GatewayConfig::new(token.clone(), runner_urls, secret, tls_settings);
    config.jobs.max_upload_bytes = args.jobs.max_upload_bytes();
    // Watched before the ready line, so SIGHUP reloads the certificate instead of ending the
    // process from the moment the server says it is ready.
    tasks.spawn(
        cellgate_gateway::cli::Hangups::watch()
            .reload_on_each(tls.certificates.clone(), shutdown.clone()),
    );
    let stop = shutdown.clone();
    let gateway = tokio::spawn(cellgate_gateway::run(
        listener,
        config,
        tls,
        stop.cancelled_owned(),
    ));

    eprintln!("cellgate: TLS certificate SHA-256 fingerprint {fingerprint}");
    match &token {
        Some(token) => println!("cellgate ready: https://{address}/?token={token}"),
        None => println!("cellgate ready: https://{address}/"),
    }

    let mut gateway = gateway;
    tokio::select! {
        _ = shutdown_signal() => {}
        result = &mut gateway => {
            shutdown.cancel();
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(anyhow::anyhow!("the gateway stopped: {error}")),
                Err(error) => Err(anyhow::anyhow!("the gateway task failed: {error}")),
            };
        }
    }
    eprintln!("cellgate: shutting down");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(40), gateway).await;
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(40), tasks.wait())
        .await
        .is_err()
    {
        eprintln!("cellgate: runners did not stop in time");
    }
    Ok(())
}
